"""ClusterLda: the E-steps of online LDA spread over the cluster's `engine worker`s.

The model (engine.documents.lda.LdaModel, `distributed=True`) trains as on one machine,
chunk by chunk with the same updates, and hands each chunk's E-step here: its documents
are split over the nodes alive, in parts of about equal nonzeros. A thread per node takes
the next part (one whose documents it already holds first), sends its documents if the node
does not hold them yet (CSR over the part's own terms: they stay on the node's disk for the
later passes), sends the rows of exp(E[log beta]) of that part's terms only, alpha and the
documents' starting gamma (drawn by the model as local training draws them), and polls for
the result: gamma and the part's statistics, again only for its terms. So the bytes of an
E-step grow with the terms a part holds, never with the vocabulary, and the dispatcher holds
one chunk, never the corpus. A node that fails, is killed or stops answering (every call has
a deadline; a running E-step is polled and may take ten times what the slowest finished one
took) is dropped and its part goes to another node. Each document's result depends on its
words, the topics and its starting gamma only, so the model is local training's, whoever
computed what, up to the order in which statistics add up.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque

import numpy as np
import scipy.sparse

from ..errors import ClusterError
from . import transport
from .discovery import NODE_FAILURES as _FAILURES, close_remote_job, open_nodes, running_limit
from .protocol import (
    PIECE_BYTES,
    check_int,
    pack_array,
    row_pieces,
    unpack_array,
    unpack_rows_compact,
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
    documents and their starting gamma; `terms` the distinct term ids it holds (found by
    marking, not sorting), `local()` its CSR over them (built only when the node does not
    hold the part yet)."""

    def __init__(self, key: int, m: scipy.sparse.csr_matrix, gamma: np.ndarray,
                 mark: np.ndarray):
        self.key, self.gamma, self.m = int(key), gamma, m
        mark[m.indices] = True
        self.terms = np.flatnonzero(mark).astype(np.int32)
        mark[self.terms] = False                 # clean for the next part
        self.n_docs = m.shape[0]

    def local(self, n_terms: int) -> scipy.sparse.csr_matrix:
        number = np.empty(n_terms, np.int32)
        number[self.terms] = np.arange(len(self.terms), dtype=np.int32)
        m = self.m
        return scipy.sparse.csr_matrix((m.data, number[m.indices], m.indptr),
                                       shape=(m.shape[0], len(self.terms)))


MAX_PARTS = 1 << 10


def split_rows(m: scipy.sparse.csr_matrix, parts: int) -> list[tuple[int, int]]:
    """About equal nonzeros in each of at most `parts` runs of rows, none empty."""
    parts = max(1, min(parts, m.shape[0]))
    cuts = np.searchsorted(m.indptr, np.linspace(0, m.nnz, parts + 1)[1:-1])
    bounds = [0, *sorted(set(cuts.tolist()) - {0, m.shape[0]}), m.shape[0]]
    return list(zip(bounds[:-1], bounds[1:]))


class ClusterLda:
    """`open(...)`, then `estep_chunk(...)` per chunk, then `close()`. `on_event(what,
    node, key)` (tests, logs): "sent" when a node runs a part's E-step, "done" when its
    result is back; key >> 20 is the chunk's key, (key >> 10) & 1023 the number of parts
    it was split into, key & 1023 the part."""

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
                    eb_t: np.ndarray, alpha: np.ndarray
                    ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """A chunk's E-step (documents x terms CSR; `gamma` its documents' starting topic
        weights), its documents split over the nodes alive in parts of about equal
        nonzeros: (gamma after it, [(a part's term ids, their statistics (terms x topics,
        times exp(E[log beta])))]). Each document's result depends on its own words, the
        topics and its starting gamma only, so the split changes nothing but the order in
        which the statistics add up."""
        live = sum(not n.dropped for n in self.nodes)      # none: _run_round says so
        runs = split_rows(m, min(live, MAX_PARTS - 1))
        if key >= 1 << 42:
            raise ValueError(f"chunk key {key}: expected below 2**42")
        mark = np.zeros(self.n_terms, bool)
        tasks = [ChunkTask((key << 20) | (len(runs) << 10) | i, m[a:b], gamma[a:b], mark)
                 for i, (a, b) in enumerate(runs)]
        got = self._run_round(tasks, eb_t, alpha)
        return (np.concatenate([g for g, _ in got]) if got else gamma,
                [(t.terms, st) for t, (_, st) in zip(tasks, got)])

    def _run_round(self, tasks: list[ChunkTask], eb_t: np.ndarray, alpha: np.ndarray
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
        pending = deque(range(len(tasks)))
        results: dict[int, tuple] = {}
        failure: list[BaseException] = []
        self.chunks += 1
        while len(results) < len(tasks):
            live = [n for n in self.nodes if not n.dropped]
            if not live:
                raise ClusterError("every node was lost: " + "; ".join(
                    f"{n.address}: {n.dropped}" for n in self.nodes))
            threads = [threading.Thread(target=self._work,
                                        args=(n, tasks, pending, results, eb_t, alpha,
                                              failure),
                                        name=f"lda-node-{n.name}", daemon=True)
                       for n in live]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if failure:
                raise failure[0]
        return [results[i] for i in range(len(tasks))]

    def _work(self, node: _LdaNode, tasks, pending: deque, results: dict, eb_t, alpha,
              failure: list) -> None:
        index = None
        try:
            while True:
                with self.lock:
                    if not pending or failure:
                        return
                    # a part this node holds first: its documents need not travel again
                    index = next((i for i in pending if tasks[i].key in node.cached),
                                 pending[0])
                    pending.remove(index)
                results_i = self._compute(node, tasks[index], eb_t, alpha)
                with self.lock:
                    results[index] = results_i
                index = None
        except _FAILURES as exc:
            self._drop(node, index, tasks, pending, f"{type(exc).__name__}: {exc}")
        except BaseException as exc:             # a bug: stop the job with it
            with self.lock:
                failure.append(exc)

    def _compute(self, node: _LdaNode, task: ChunkTask, eb_t: np.ndarray,
                 alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.monotonic()
        proxy, key, job = node.proxy, task.key, self.job_id
        if key not in node.cached:
            m = task.local(self.n_terms)
            arrays = (m.indptr.astype("<i8"), m.indices.astype("<i4"),
                      m.data.astype(self.dtype, copy=False))
            proxy.lda_put(job, key, len(task.terms), *(pack_array(a) for a in arrays))
            node.bytes_out += sum(a.nbytes for a in arrays)
            node.cached.add(key)
        rows = eb_t[task.terms]                  # the part's terms only
        for a, b in row_pieces(rows.shape[0], self.num_topics * rows.itemsize, PIECE_BYTES):
            proxy.lda_rows(job, key, a, pack_array(rows[a:b]))
            node.bytes_out += rows[a:b].nbytes
        proxy.lda_estep(job, key, pack_array(np.ascontiguousarray(task.gamma, "<f8")),
                        pack_array(np.asarray(alpha, "<f8")))
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
                limit = self._limit(task.n_docs)
                if time.monotonic() - t0 > limit:
                    raise RuntimeError(f"part {key} still running after {limit:.0f} s "
                                       f"(ten times what the slowest finished part took)")
        finally:
            transport.set_timeout(proxy, self.cfg.timeout_seconds)
        t2 = time.monotonic()
        node.seconds["wait"] += t2 - t1
        gamma = unpack_array(reply["gamma"], "<f8", 2, (task.n_docs, self.num_topics),
                             "gamma").copy()
        if not np.isfinite(gamma).all():
            raise ValueError(f"part {key}: gamma is not finite")
        u = len(task.terms)
        sstats = np.empty((u, self.num_topics), self.dtype)
        covered = 0
        for piece in range(check_int(reply.get("pieces"), 0, 1 << 30, "pieces")):
            got = proxy.lda_pull(job, key, piece)
            part, sent = unpack_rows_compact(got, self.dtype.str, self.num_topics,
                                             "statistics")
            a = check_int(got.get("start"), 0, u, f"part {key} rows start")
            if a != covered or a + part.shape[0] > u:
                raise ValueError(f"part {key}: statistics at row {a}, expected {covered}")
            if not np.isfinite(part).all():
                raise ValueError(f"part {key}: statistics are not finite")
            sstats[a:a + part.shape[0]] = part
            covered += part.shape[0]
            node.bytes_in += sent
        if covered != u:
            raise ValueError(f"part {key}: statistics for {covered} of {u} terms")
        node.bytes_in += gamma.nbytes
        node.bytes_out += task.gamma.nbytes
        proxy.lda_forget(job, key)
        node.seconds["receive"] += time.monotonic() - t2
        with self.lock:
            self.seconds_per_doc = max(self.seconds_per_doc,
                                       (time.monotonic() - t0) / max(task.n_docs, 1))
            node.parts += 1
            node.busy_seconds += time.monotonic() - t0
        self._event("done", node, key)
        return gamma, sstats

    def _limit(self, n_docs: int) -> float:
        """How long a part's E-step may run (running_limit, per document)."""
        with self.lock:
            rate = self.seconds_per_doc
        return running_limit(rate, n_docs, self.cfg)

    def _event(self, what: str, node: _LdaNode, key: int) -> None:
        if self.on_event is not None:
            self.on_event(what, node, key)

    def _drop(self, node: _LdaNode, index, tasks, pending: deque, why: str) -> None:
        with self.lock:
            node.dropped = why
            if index is not None:
                pending.appendleft(index)
                self.recomputed.append({"part": tasks[index].key, "lost_on": node.name,
                                        "why": why})
            alive = sum(not n.dropped for n in self.nodes)
        log.warning("node %s dropped (%s)%s; %d node(s) left", node.name, why,
                    f"; part {tasks[index].key} goes to another node"
                    if index is not None else "", alive)
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
