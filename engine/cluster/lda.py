"""ClusterLda: the E-steps of online LDA spread over the cluster's `engine worker`s.

The model (engine.documents.lda.LdaModel, `distributed=True`) trains as on one machine,
chunk by chunk with the same updates, and hands each chunk's E-step here (a *round*). The
chunk is cut into parts, large ones first and small ones last (guided_rows), and a thread
per node alive takes the next part as its node frees up (one whose documents the node holds
first), so that the nodes finish about together however their documents converge and their
cores run. For a part it sends the rows of exp(E[log beta]) of the part's terms the node
does not hold yet in this round (so a node is sent each of its parts' terms once a round,
never the vocabulary), the documents if the node does not hold them (CSR over the chunk's
term numbers, about two bytes a term: pack_documents; they stay on the node's disk for the
later passes), alpha and the documents'
starting gamma (drawn by the model as local training draws them), and polls for the part's
gamma. The node adds its parts' statistics up; once no part is left, the thread pulls them,
once a node and round, only for the terms the node was sent. The dispatcher holds one chunk,
never the corpus. A node that fails, is killed or stops answering (every call has a
deadline; a running E-step is polled and may take ten times what the slowest finished one
took) is dropped, and its running part and those whose statistics it still held go to the
other nodes. Each document's result depends on its words, the topics and its starting gamma
only, so the model is local training's, whoever computed what, up to the order in which
statistics add up.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque

import numpy as np
import scipy.sparse

from ..documents.lda import run_estep
from ..errors import ClusterError
from . import transport
from .discovery import NODE_FAILURES as _FAILURES, close_remote_job, open_nodes, running_limit
from .protocol import (
    PIECE_BYTES,
    add_rows_compact,
    check_int,
    check_rows_compact,
    pack_array,
    pack_documents,
    row_pieces,
    unpack_array,
)

log = logging.getLogger("engine")


class _LdaNode:
    def __init__(self, address: str, name: str):
        self.address, self.name = address, name
        self.proxy = None
        self.workers = 0
        self.cached: set[int] = set()
        self.parts = 0
        self.busy_seconds = 0.0
        self.bytes_out = self.bytes_in = 0
        self.seconds = {"send": 0.0, "wait": 0.0, "receive": 0.0}
        self.dropped = ""


class ChunkTask:
    """One part of a chunk: its key (the same part in every pass while the split holds),
    documents, their starting gamma, and `numbers`: the chunk's term numbers its documents
    hold (found by marking, not sorting)."""

    def __init__(self, key: int, m: scipy.sparse.csr_matrix, gamma: np.ndarray,
                 number: np.ndarray, mark: np.ndarray):
        self.key, self.gamma, self.m = int(key), gamma, m
        self.indices = number[m.indices]         # over the chunk's term numbers
        mark[self.indices] = True
        self.numbers = np.flatnonzero(mark).astype(np.int32)
        mark[self.numbers] = False               # clean for the next part
        self.n_docs = m.shape[0]

    def local(self, n_rows: int) -> scipy.sparse.csr_matrix:
        m = self.m
        return scipy.sparse.csr_matrix((m.data, self.indices, m.indptr),
                                       shape=(m.shape[0], n_rows))


class _Round:
    """A chunk's E-step on the cluster: its terms, its parts, which are left, their gamma,
    which rows each node was sent, and `out`, where the statistics pulled are added."""

    def __init__(self, round_id: int, terms: np.ndarray, tasks: list[ChunkTask],
                 out: np.ndarray):
        self.id, self.terms, self.tasks, self.out = round_id, terms, tasks, out
        self.pending = deque(range(len(tasks)))
        self.gamma: dict[int, np.ndarray] = {}
        self.sent: dict[int, np.ndarray] = {}      # id(node) -> the chunk's terms it holds
        self.unpulled: dict[int, list[int]] = {}   # id(node) -> parts whose statistics
        self.counted: set[int] = set()             # are still on it; parts added to out


MAX_PARTS = 1 << 10
GUIDED_ROUNDS = 5


def _cut(m: scipy.sparse.csr_matrix, at: np.ndarray) -> list[tuple[int, int]]:
    cuts = np.searchsorted(m.indptr, at)
    bounds = [0, *sorted(set(cuts.tolist()) - {0, m.shape[0]}), m.shape[0]]
    return list(zip(bounds[:-1], bounds[1:]))


def guided_rows(m: scipy.sparse.csr_matrix, nodes: int) -> list[tuple[int, int]]:
    """Runs of rows (none empty) for `nodes` nodes that take the next run as they free up:
    rounds of `nodes` runs, each round half the nonzeros of the one before (1/2 of the
    chunk, 1/4, ...; the last round as large as the one before it), so that the runs left
    at the end are small and the nodes finish about together, however their documents
    converge and their cores run. One node: one run."""
    if nodes <= 1 or m.shape[0] <= 1:
        return [(0, m.shape[0])]
    sizes = [2.0 ** -min(r, GUIDED_ROUNDS - 1) / nodes
             for r in range(1, GUIDED_ROUNDS + 1) for _ in range(nodes)][:MAX_PARTS - 1]
    return _cut(m, np.cumsum(sizes)[:-1] / sum(sizes) * m.nnz)


def part_key(chunk_key: int, nodes: int, part: int) -> int:
    """A part's key: the chunk's, the node count it was split for (guided_rows depends on
    the chunk and that count only, so a key names the same documents in every pass), the
    part's number."""
    return (chunk_key << 20) | (min(nodes, 1023) << 10) | part


class ClusterLda:
    """`open(...)`, then `estep_chunk(...)` per chunk, then `close()`. `on_event(what,
    node, key)` (tests, logs): "sent" when a node runs a part's E-step, "done" when its
    result is back; key >> 20 is the chunk's key, (key >> 10) & 1023 the number of nodes
    it was split for (part_key), key & 1023 the part."""

    def __init__(self, cfg, key: bytes | None, on_event=None):
        self.cfg, self.key, self.on_event = cfg, key, on_event
        self.nodes: list[_LdaNode] = []
        self.recomputed: list[dict] = []
        self.seconds_per_doc = 0.0
        self.chunks = 0

    # ---- nodes ------------------------------------------------------------------------------
    def open(self, n_terms: int, num_topics: int, dtype, iterations: int,
             gamma_threshold: float) -> int:
        """Open the job on every node that answers; returns how many."""
        self.job_id = f"lda-{secrets.token_hex(6)}"
        self.n_terms, self.num_topics = int(n_terms), int(num_topics)
        self.iterations, self.gamma_threshold = int(iterations), float(gamma_threshold)
        self.dtype = np.dtype(dtype)
        self.lock = threading.Lock()
        spec = {"job": self.job_id, "kind": "lda", "n_terms": self.n_terms,
                "num_topics": self.num_topics, "dtype": self.dtype.name,
                "iterations": int(iterations), "gamma_threshold": float(gamma_threshold),
                "workers": int(self.cfg.node_workers),
                "timeout_seconds": float(self.cfg.timeout_seconds + self.cfg.round_seconds + 30)}
        self.nodes = open_nodes(self.cfg, self.key, spec, _LdaNode)
        log.info("LDA on the cluster: %d topics x %d terms, %d node(s): %s", num_topics,
                 n_terms, len(self.nodes), ", ".join(n.name for n in self.nodes))
        return len(self.nodes)

    def close(self) -> None:
        for node in self.nodes:
            close_remote_job(None if node.dropped else node.proxy, self.job_id,
                             self.cfg.timeout_seconds, node.name)

    # ---- a chunk ----------------------------------------------------------------------------
    def estep_chunk(self, key: int, m: scipy.sparse.csr_matrix, gamma: np.ndarray,
                    eb_t: np.ndarray, alpha: np.ndarray, out: np.ndarray) -> np.ndarray:
        """A chunk's E-step (documents x terms CSR; `gamma` its documents' starting topic
        weights): gamma after it, the statistics (times exp(E[log beta])) added into `out`
        (topics x terms, as LdaState's). Its parts (guided_rows) are taken by the nodes as
        they free up. Each document's result depends on its own words, the topics and its
        starting gamma only, so who computed what changes nothing but the order in which
        the statistics add up."""
        live = sum(not n.dropped for n in self.nodes)      # none: _run_round says so
        runs = guided_rows(m, live)
        if key >= 1 << 42:
            raise ValueError(f"chunk key {key}: expected below 2**42")
        mark = np.zeros(max(self.n_terms, 1), bool)
        mark[m.indices] = True
        terms = np.flatnonzero(mark).astype(np.int32)
        mark[terms] = False
        number = np.zeros(self.n_terms, np.int32)
        number[terms] = np.arange(len(terms), dtype=np.int32)
        tasks = [ChunkTask(part_key(key, live, i), m[a:b], gamma[a:b], number, mark)
                 for i, (a, b) in enumerate(runs)]
        self.chunks += 1
        rnd = _Round(self.chunks, terms, tasks, out)
        for i, task in enumerate(tasks):
            if task.m.nnz == 0:                  # no words: nothing to send, no statistics
                g = task.gamma.copy()
                run_estep(task.m, eb_t, alpha, g, np.zeros((0, 0), self.dtype),
                          self.iterations, self.gamma_threshold, 1, None, [])
                rnd.gamma[i] = g
                rnd.counted.add(i)
                rnd.pending.remove(i)
        self._run_round(rnd, eb_t, alpha)
        return np.concatenate([rnd.gamma[i] for i in range(len(tasks))])

    def _run_round(self, rnd: _Round, eb_t: np.ndarray, alpha: np.ndarray) -> None:
        failure: list[BaseException] = []
        while len(rnd.counted) < len(rnd.tasks):
            live = [n for n in self.nodes if not n.dropped]
            if not live:
                raise ClusterError("every node was lost: " + "; ".join(
                    f"{n.address}: {n.dropped}" for n in self.nodes))
            threads = [threading.Thread(target=self._work,
                                        args=(n, rnd, eb_t, alpha, failure),
                                        name=f"lda-node-{n.name}", daemon=True)
                       for n in live]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if failure:
                raise failure[0]

    def _work(self, node: _LdaNode, rnd: _Round, eb_t: np.ndarray, alpha: np.ndarray,
              failure: list) -> None:
        index = None
        try:
            while True:
                with self.lock:
                    if failure:
                        return
                    index = None
                    if rnd.pending:
                        # a part this node holds first: its documents need not travel again
                        index = next((i for i in rnd.pending
                                      if rnd.tasks[i].key in node.cached), rnd.pending[0])
                        rnd.pending.remove(index)
                if index is None:
                    break
                gamma = self._compute(node, rnd, rnd.tasks[index], eb_t, alpha)
                with self.lock:
                    rnd.gamma[index] = gamma
                    rnd.unpulled.setdefault(id(node), []).append(index)
                index = None
            if rnd.unpulled.get(id(node)):
                self._pull(node, rnd)
        except _FAILURES as exc:
            self._drop(node, rnd, index, f"{type(exc).__name__}: {exc}")
        except BaseException as exc:             # a bug: stop the job with it
            with self.lock:
                failure.append(exc)

    def _send_rows(self, node: _LdaNode, rnd: _Round, task: ChunkTask,
                   eb_t: np.ndarray) -> None:
        """The rows of the part's terms the node does not hold yet in this round, with
        their chunk term numbers."""
        sent = rnd.sent.get(id(node))
        if sent is None:
            sent = rnd.sent[id(node)] = np.zeros(len(rnd.terms), bool)
        missing = task.numbers[~sent[task.numbers]]
        if not len(missing):
            return
        rows = eb_t[rnd.terms[missing]]
        for a, b in row_pieces(len(missing), self.num_topics * rows.itemsize + 4,
                               PIECE_BYTES):
            node.proxy.lda_rows(self.job_id, rnd.id, len(rnd.terms),
                                pack_array(missing[a:b].astype("<i4", copy=False)),
                                pack_array(rows[a:b]))
            node.bytes_out += rows[a:b].nbytes + 4 * (b - a)
        sent[missing] = True

    def _compute(self, node: _LdaNode, rnd: _Round, task: ChunkTask, eb_t: np.ndarray,
                 alpha: np.ndarray) -> np.ndarray:
        t0 = time.monotonic()
        proxy, key, job = node.proxy, task.key, self.job_id
        self._send_rows(node, rnd, task, eb_t)
        if key not in node.cached:
            m = task.local(len(rnd.terms))
            docs = pack_documents(m.indptr, m.indices, m.data.astype(self.dtype, copy=False))
            proxy.lda_put(job, key, len(rnd.terms), docs)
            node.bytes_out += sum(len(a["data"]) for a in docs.values())
            node.cached.add(key)
        proxy.lda_estep(job, key, rnd.id, pack_array(np.ascontiguousarray(task.gamma, "<f8")),
                        pack_array(np.asarray(alpha, "<f8")))
        node.bytes_out += task.gamma.nbytes
        t1 = time.monotonic()
        node.seconds["send"] += t1 - t0
        self._event("sent", node, key)
        wait = min(self.cfg.round_seconds, self.cfg.timeout_seconds / 2)
        transport.set_timeout(proxy, self.cfg.timeout_seconds + wait)
        try:
            while True:
                reply = proxy.lda_result(job, key, wait)
                if reply["state"] == "done":
                    break
                limit = self._limit(task)
                if time.monotonic() - t1 > limit:
                    raise RuntimeError(f"part {key} still running after {limit:.0f} s")
        finally:
            transport.set_timeout(proxy, self.cfg.timeout_seconds)
        t2 = time.monotonic()
        node.seconds["wait"] += t2 - t1
        gamma = unpack_array(reply["gamma"], "<f8", 2, (task.n_docs, self.num_topics),
                             "gamma").copy()
        if not np.isfinite(gamma).all():
            raise ValueError(f"part {key}: gamma is not finite")
        node.bytes_in += gamma.nbytes
        node.seconds["receive"] += time.monotonic() - t2
        with self.lock:
            self.seconds_per_doc = max(self.seconds_per_doc, (t2 - t1) / max(task.n_docs, 1))
            node.parts += 1
            node.busy_seconds += time.monotonic() - t0
        self._event("done", node, key)
        return gamma

    def _pull(self, node: _LdaNode, rnd: _Round) -> None:
        """The summed statistics of the parts this node E-stepped in the round since the
        last pull, for the terms it was sent (in the order of their chunk numbers): all
        pieces received and checked before any is added."""
        t0 = time.monotonic()
        proxy, job = node.proxy, self.job_id
        mine = rnd.unpulled[id(node)]
        rows = np.flatnonzero(rnd.sent[id(node)])
        got = proxy.lda_statistics(job, rnd.id)
        keys = got.get("parts") if isinstance(got, dict) else None
        if not isinstance(keys, list) or sorted(keys) != sorted(rnd.tasks[i].key
                                                                for i in mine):
            raise ValueError(f"round {rnd.id}: the node's statistics hold parts {keys}, "
                             f"expected {[rnd.tasks[i].key for i in mine]}")
        u = len(rows)
        if check_int(got.get("rows"), 0, len(rnd.terms), "rows") != u:
            raise ValueError(f"round {rnd.id}: statistics for {got.get('rows')} terms, "
                             f"expected the {u} it was sent")
        spans = row_pieces(u, self.num_topics * self.dtype.itemsize)
        if check_int(got.get("pieces"), 0, 1 << 30, "pieces") != len(spans):
            raise ValueError(f"round {rnd.id}: statistics in {got.get('pieces')} pieces, "
                             f"expected {len(spans)}")
        pieces, sent = [], 0
        for piece, (a, b) in enumerate(spans):
            reply = proxy.lda_pull(job, rnd.id, piece)
            if not isinstance(reply, dict) or reply.get("start") != a:
                raise ValueError(f"round {rnd.id}: statistics piece {piece} not at row {a}")
            checked, nbytes = check_rows_compact(reply, self.dtype.str, b - a,
                                                 self.num_topics, "statistics")
            pieces.append((rows[a:b], checked))
            sent += nbytes
        with self.lock:
            for ids, checked in pieces:
                add_rows_compact(checked, rnd.terms[ids], rnd.out, transposed=True)
            rnd.counted.update(mine)
            rnd.unpulled[id(node)] = []
            node.bytes_in += sent
            node.seconds["receive"] += time.monotonic() - t0
            node.busy_seconds += time.monotonic() - t0

    def _limit(self, task: ChunkTask) -> float:
        """How long a part's E-step may run (running_limit per document; before any part
        has finished, every word's every iteration over every topic, about four
        multiply-adds each)."""
        with self.lock:
            rate = self.seconds_per_doc
        return running_limit(rate, task.n_docs, self.cfg,
                             4 * task.m.nnz * self.iterations * self.num_topics)

    def _event(self, what: str, node: _LdaNode, key: int) -> None:
        if self.on_event is not None:
            self.on_event(what, node, key)

    def _drop(self, node: _LdaNode, rnd: _Round, index, why: str) -> None:
        """A lost node: its running part and those whose statistics it still held go back
        to the others."""
        with self.lock:
            node.dropped = why
            lost = ([] if index is None else [index]) + rnd.unpulled.pop(id(node), [])
            for i in sorted(lost, reverse=True):
                rnd.pending.appendleft(i)
                rnd.gamma.pop(i, None)
                self.recomputed.append({"part": rnd.tasks[i].key, "lost_on": node.name,
                                        "why": why})
            alive = sum(not n.dropped for n in self.nodes)
        log.warning("node %s dropped (%s)%s; %d node(s) left", node.name, why,
                    f"; {len(lost)} part(s) go to other nodes" if lost else "", alive)
        transport.release(node.proxy)

    def report(self) -> dict:
        return {
            "nodes_used": len(self.nodes), "chunks": self.chunks,
            "recomputed": self.recomputed,
            "dropped": [{"node": n.name, "address": n.address, "why": n.dropped}
                        for n in self.nodes if n.dropped],
            "bytes_to_nodes": sum(n.bytes_out for n in self.nodes),
            "bytes_from_nodes": sum(n.bytes_in for n in self.nodes),
            "per_node": [{"node": n.name, "address": n.address, "threads": n.workers,
                          "parts": n.parts, "busy_seconds": round(n.busy_seconds, 3),
                          "seconds": {k: round(v, 3) for k, v in n.seconds.items()},
                          "dropped": n.dropped} for n in self.nodes],
        }
