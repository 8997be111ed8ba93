"""ClusterLsi: an LSI decomposition spread over the cluster's `engine worker`s.

The documents matrix (the TF-IDF blocks the local engine cached) is cut into shares fixed
before any node starts (engine.documents.lsi.plan_shares: about equal work, `shares` of them,
by default one per node). A thread per node takes the next share, sends its blocks,
has the node decompose it (num_topics + extra_samples factors, all the node's threads)
and brings back U and S; the dispatcher merges the shares' decompositions in share order
in a fixed binary tree (engine.documents.svd.merge_all), as they become available. A node that
fails, is killed or stops answering (every call has a deadline, and a computing node is
polled) is dropped and its share goes back to the queue for another node. Each share's
sketch depends only on its documents' numbers, so the result depends on the shares, never
on which node computed which, beyond floating point.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque

import numpy as np

from ..documents.blocks import row_runs
from ..documents.lsi import (
    SvdSettings,
    TrainReport,
    plan_shares,
    share_pieces,
    share_rank,
)
from ..documents.parallel import Split, cpu_count
from ..documents.svd import Decomposition, merge_all
from ..errors import ClusterError
from ..runtime.signals import signals_as_interrupt
from . import transport
from .discovery import NODE_FAILURES as _FAILURES, close_remote_job, open_nodes, running_limit
from .protocol import PIECE_BYTES, check_int, pack_array, unpack_array

log = logging.getLogger("engine")

PUT_NNZ = PIECE_BYTES // 12    # nonzeros per message (index + value + row ptr)
# one share a node: each share repeats the dense steps over all terms, so more shares
# only spread a lost node's work thinner (see docs/benchmarks.md, "LSI")
SHARES_PER_NODE = 1


class _LsiNode:
    def __init__(self, address: str, name: str):
        self.address, self.name = address, name
        self.proxy = None
        self.workers = 0
        self.shares_done: list[int] = []
        self.busy_seconds = 0.0
        self.bytes_out = self.bytes_in = 0
        self.dropped = ""
        self.idle = False                # its thread found no share left and returned
        self.thread: threading.Thread | None = None


class ClusterLsi:
    """`decompose(blocks, n_terms, settings)` as engine.documents.lsi.train_decomposition, on
    the nodes of a [cluster] configuration. `on_event(what, node, share)` (tests, logs):
    "sent" when a node has a share's blocks and computes it, "done" when its result is
    back."""

    def __init__(self, cfg, key: bytes | None, shares: int = 0, on_event=None):
        self.cfg = cfg
        self.key = key
        self.shares = shares
        self.on_event = on_event

    def decompose(self, blocks, n_terms: int, settings: SvdSettings
                  ) -> tuple[Decomposition, TrainReport]:
        settings.check()
        start = time.perf_counter()
        self.job_id = f"lsi-{secrets.token_hex(6)}"
        self.n_terms = int(n_terms)
        self.settings = settings
        self.rank = share_rank(settings, n_terms)
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.results: dict[int, Decomposition] = {}
        self.done_by: dict[int, str] = {}
        self.recomputed: list[dict] = []
        self.seconds_per_nnz = 0.0               # the slowest finished share's
        n_docs = sum(b.n_docs for b in blocks)
        nnz = sum(b.nnz for b in blocks)
        self.nodes = self._open_nodes()
        try:                                     # from here on the nodes hold a job
            self.plan = plan_shares(blocks, self.shares or SHARES_PER_NODE * len(self.nodes))
            self.pending: deque[int] = deque(range(len(self.plan)))
            log.info("LSI on the cluster: %d documents x %d terms (%d nonzeros) in %d "
                     "share(s) of %d factors each, %d node(s): %s", n_docs, n_terms, nnz,
                     len(self.plan), self.rank, len(self.nodes),
                     ", ".join(n.name for n in self.nodes))
            with signals_as_interrupt():
                for node in self.nodes:
                    node.thread = threading.Thread(target=self._node_loop, args=(node,),
                                                   name=f"lsi-node-{node.name}", daemon=True)
                    node.thread.start()
                result = merge_all(self._in_order(), settings.num_topics, 1.0, cpu_count())
        finally:
            self.stop.set()
            with self.lock:
                self.ready.notify_all()
            for node in self.nodes:
                if node.thread is not None:
                    node.thread.join(timeout=self.cfg.timeout_seconds + 5)
                self._close(node)
        if result is None:
            result = Decomposition(np.zeros((n_terms, 0), settings.dtype),
                                   np.zeros(0, settings.dtype))
        seconds = time.perf_counter() - start
        split = Split(len(self.nodes), max(n.workers for n in self.nodes),
                      f"{len(self.nodes)} node(s) of the cluster")
        report = TrainReport("cluster merge", split, seconds, n_docs, nnz,
                             self._report(seconds))
        log.info("LSI on the cluster: %d factors in %.1f s (%d share(s) recomputed after "
                 "a lost node)", len(result.s), seconds, len(self.recomputed))
        return result, report

    # ---- nodes ------------------------------------------------------------------------------
    def _open_nodes(self) -> list[_LsiNode]:
        s = self.settings
        spec = {"job": self.job_id, "kind": "lsi", "n_terms": self.n_terms,
                "rank": self.rank, "workers": int(self.cfg.node_workers),
                "timeout_seconds": float(self.cfg.timeout_seconds + self.cfg.round_seconds + 30),
                "settings": {"num_topics": s.num_topics, "chunksize": s.chunksize,
                             "power_iters": s.power_iters, "extra_samples": s.extra_samples,
                             "dtype": np.dtype(s.dtype).name, "seed": int(s.seed)}}
        return open_nodes(self.cfg, self.key, spec, _LsiNode)

    def _node_loop(self, node: _LsiNode) -> None:
        share = None
        try:
            while not self.stop.is_set():
                with self.lock:
                    if not self.pending:
                        node.idle = True         # a share given back later restarts it
                        return
                    share = self.pending.popleft()
                self._compute(node, share)
                share = None
        except _FAILURES as exc:
            if not self.stop.is_set():
                self._drop(node, share, f"{type(exc).__name__}: {exc}")
        except BaseException as exc:             # a bug: stop the job with it
            with self.lock:
                self.failure = exc
                self.ready.notify_all()

    def _compute(self, node: _LsiNode, index: int) -> None:
        t0 = time.monotonic()
        share = self.plan[index]
        first_doc = share.first_doc
        dtype = np.dtype(self.settings.dtype)
        proxy = node.proxy
        for m in share_pieces(share, self.n_terms, dtype):
            for start, stop in row_runs(m, max_nnz=PUT_NNZ):   # far below the message limit
                part = m[start:stop]
                proxy.lsi_put(self.job_id, index, first_doc,
                              pack_array(part.indptr.astype("<i8")),
                              pack_array(part.indices.astype("<i4")),
                              pack_array(part.data))
                node.bytes_out += part.data.nbytes + part.indices.nbytes + part.indptr.nbytes
        proxy.lsi_decompose(self.job_id, index)
        self._event("sent", node, index)
        wait = min(self.cfg.round_seconds, self.cfg.timeout_seconds / 2)
        transport.set_timeout(proxy, self.cfg.timeout_seconds + wait)
        try:
            while True:
                reply = proxy.lsi_result(self.job_id, index, wait)
                if reply["state"] == "done":
                    break
                if self.stop.is_set():
                    return
                limit = self._share_limit(share)
                if time.monotonic() - t0 > limit:
                    raise RuntimeError(f"share {index} still running after {limit:.0f} s")
        finally:
            transport.set_timeout(proxy, self.cfg.timeout_seconds)
        rank = check_int(reply.get("rank"), 1, self.rank, f"share {index} rank")
        s = unpack_array(reply["s"], dtype.str, 1, (rank,), "s").copy()
        if not np.isfinite(s).all():
            raise ValueError(f"share {index}: S is not finite")
        u = np.empty((self.n_terms, rank), dtype)
        covered = 0
        for piece in range(int(reply["pieces"])):
            got = proxy.lsi_pull(self.job_id, index, piece)
            rows = unpack_array(got["u"], dtype.str, 2, (None, rank), "u")
            if not np.isfinite(rows).all():
                raise ValueError(f"share {index}: U is not finite")
            a = check_int(got.get("start"), 0, self.n_terms, f"share {index} U start")
            if a != covered or a + rows.shape[0] > self.n_terms:
                raise ValueError(f"share {index}: U piece {piece} at row {a}, expected {covered}")
            u[a:a + rows.shape[0]] = rows
            covered += rows.shape[0]
            node.bytes_in += rows.nbytes
        if covered != self.n_terms:
            raise ValueError(f"share {index}: U has {covered} of {self.n_terms} rows")
        proxy.lsi_forget(self.job_id, index)
        with self.lock:
            self.results[index] = Decomposition(u, s)
            self.seconds_per_nnz = max(self.seconds_per_nnz,
                                       (time.monotonic() - t0) / max(share.nnz, 1))
            self.done_by[index] = node.name
            node.shares_done.append(index)
            node.busy_seconds += time.monotonic() - t0
            self.ready.notify_all()
        self._event("done", node, index)

    def _share_limit(self, share) -> float:
        """How long a share may run (running_limit per nonzero; before any share has
        finished, its multiply-adds: each chunk's power iterations over its nonzeros, the
        orthogonalizations and merges over every term)."""
        with self.lock:
            rate = self.seconds_per_nnz
        s, r = self.settings, self.rank
        chunks = max(1, -(-share.n_docs // max(int(s.chunksize), 1)))
        ops = r * (share.nnz * (2 * s.power_iters + 2)
                   + chunks * self.n_terms * r * (s.power_iters + 2))
        return running_limit(rate, share.nnz, self.cfg, ops)

    def _event(self, what: str, node: _LsiNode, index: int) -> None:
        if self.on_event is not None:
            self.on_event(what, node, index)

    def _drop(self, node: _LsiNode, share: int | None, why: str) -> None:
        with self.lock:
            node.dropped = why
            if share is not None and share not in self.results:
                self.pending.appendleft(share)
                self.recomputed.append({"share": share, "lost_on": node.name, "why": why})
            alive = [n for n in self.nodes if not n.dropped]
            idle = [n for n in alive if n.idle] if share is not None else []
            for n in idle:
                n.idle = False
            self.ready.notify_all()
        log.warning("node %s dropped (%s)%s; %d node(s) left", node.name, why,
                    f"; share {share} goes to another node" if share is not None else "",
                    len(alive))
        # a node whose thread had already run out of shares takes the share up
        for other in idle:
            if other.thread is not None:
                other.thread.join()              # it has returned, or is just returning
            other.thread = threading.Thread(target=self._node_loop, args=(other,),
                                            name=f"lsi-node-{other.name}", daemon=True)
            other.thread.start()
        transport.release(node.proxy)

    def _in_order(self):
        """The shares' decompositions in share order, each as soon as it and all before
        it are back (so the merge tree is the same whoever computed what)."""
        for index in range(len(self.plan)):
            with self.lock:
                while index not in self.results:
                    if self.failure is not None:
                        raise self.failure
                    if all(n.dropped for n in self.nodes):
                        raise ClusterError("every node was lost: " + "; ".join(
                            f"{n.address}: {n.dropped}" for n in self.nodes))
                    self.ready.wait(1.0)
                part = self.results.pop(index)
            yield part

    def _close(self, node: _LsiNode) -> None:
        close_remote_job(None if node.dropped else node.proxy, self.job_id,
                         self.cfg.timeout_seconds, node.name)

    def _report(self, seconds: float) -> dict:
        return {
            "nodes_used": len(self.nodes), "shares": len(self.plan), "share_rank": self.rank,
            "seconds": round(seconds, 3),
            "recomputed": self.recomputed,
            "dropped": [{"node": n.name, "address": n.address, "why": n.dropped}
                        for n in self.nodes if n.dropped],
            "bytes_to_nodes": sum(n.bytes_out for n in self.nodes),
            "bytes_from_nodes": sum(n.bytes_in for n in self.nodes),
            "done_by": {str(k): v for k, v in sorted(self.done_by.items())},
            "per_node": [{"node": n.name, "address": n.address, "threads": n.workers,
                          "shares": n.shares_done, "busy_seconds": round(n.busy_seconds, 3),
                          "dropped": n.dropped} for n in self.nodes],
        }
