"""An LSI job on one `engine worker`: decompose the shares of a documents matrix it is sent.

The dispatcher (engine.cluster.lsi) opens the job with the matrix's width and the SVD
settings, sends a share's TF-IDF blocks (CSR, in pieces; written to a scratch BlockCache,
so memory does not grow with the share), asks for its decomposition, and polls for it;
the node computes it in the background on all its threads (engine.documents.lsi's
decompose_part, the same function the local engine runs) and hands back U in row pieces
and S. Everything that arrives is checked (types, ranges, shapes, term ids < width)
before it is written.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np
import scipy.sparse

from ..documents.blocks import BlockCache
from ..documents.lsi import SvdSettings, decompose_part
from ..documents.svd import Decomposition
from .jobs import CallGuard
from .protocol import (
    MAX_JOB_TIMEOUT,
    check_int as _int,
    check_num as _num,
    pack_array,
    row_pieces,
    unpack_array,
)

log = logging.getLogger("engine")

MAX_TERMS = (1 << 31) - 1
MAX_SHARES = 1 << 20


class _Share:
    def __init__(self, first_doc: int):
        self.first_doc = first_doc
        self.blocks: list = []
        self.n_docs = 0
        self.state = "receiving"            # -> running -> done | failed
        self.result: Decomposition | None = None
        self.pieces: list[tuple[int, int]] = []
        self.error = ""
        self.seconds = 0.0


class LsiNodeJob(CallGuard):
    """One LSI job on this node (the counterpart of node.NodeJob for word vectors)."""

    def __init__(self, spec: dict, workers: int):
        super().__init__(spec["job"])
        self.n_terms = _int(spec["n_terms"], 1, MAX_TERMS, "n_terms")
        self.rank = _int(spec["rank"], 1, 100_000, "rank")
        s = spec["settings"]
        dtype = s["dtype"]
        if dtype not in ("float32", "float64"):
            raise ValueError(f"settings dtype: expected float32 or float64, got {dtype!r}")
        self.settings = SvdSettings(
            num_topics=_int(s["num_topics"], 1, 100_000, "num_topics"),
            chunksize=_int(s["chunksize"], 1, 10_000_000, "chunksize"),
            power_iters=_int(s["power_iters"], 0, 100, "power_iters"),
            extra_samples=_int(s["extra_samples"], 0, 100_000, "extra_samples"),
            dtype=dtype, seed=_int(s["seed"], 0, (1 << 63) - 1, "seed"),
            method="stochastic")
        self.timeout = _num(spec["timeout_seconds"], 0.5, MAX_JOB_TIMEOUT, "timeout_seconds")
        self.workers = min(workers, _int(spec.get("workers") or workers, 1, 4096, "workers"))
        self.cache = BlockCache()
        self.shares: dict[int, _Share] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stop = threading.Event()
        self.last_call = time.monotonic()
        self.documents = 0
        self.thread: threading.Thread | None = None

    # ---- receiving --------------------------------------------------------------------------
    def _share(self, index) -> _Share:
        share = self.shares.get(index) if isinstance(index, int) else None
        if share is None:
            raise ValueError(f"share {index!r} is not on this node")
        return share

    def put_block(self, index, first_doc, indptr, indices, data) -> None:
        """One CSR block of share `index` (documents in order; the first call of a share
        names its first document)."""
        _int(index, 0, MAX_SHARES, "share")
        with self.lock:
            share = self.shares.get(index)
            if share is None:
                share = self.shares[index] = _Share(_int(first_doc, 0, 1 << 62, "first_doc"))
            if share.state != "receiving":
                raise ValueError(f"share {index}: already {share.state}")
        ptr = unpack_array(indptr, "<i8", 1, what="indptr")
        if len(ptr) < 2 or ptr[0] != 0 or np.any(np.diff(ptr) < 0):
            raise ValueError("indptr: expected a non-decreasing row index starting at 0")
        idx = unpack_array(indices, "<i4", 1, (int(ptr[-1]),), "indices")
        vals = unpack_array(data, self.settings.dtype, 1, (int(ptr[-1]),), "data")
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= self.n_terms):
            raise ValueError(f"indices: term ids must be in 0..{self.n_terms - 1}")
        if not np.all(np.isfinite(vals)):
            raise ValueError("data: not finite")
        m = scipy.sparse.csr_matrix((vals, idx, ptr), shape=(len(ptr) - 1, self.n_terms))
        m.sort_indices()
        with self.lock:
            if share.state != "receiving":
                raise ValueError(f"share {index}: already {share.state}")
            share.blocks.append(self.cache.add(m))
            share.n_docs += m.shape[0]

    # ---- computing --------------------------------------------------------------------------
    def decompose(self, index) -> None:
        """Start the share's decomposition in the background (one share at a time)."""
        with self.lock:
            share = self._share(index)
            if share.state != "receiving":
                raise ValueError(f"share {index}: already {share.state}")
            if not share.blocks:
                raise ValueError(f"share {index}: no documents sent")
            if any(x.state == "running" for x in self.shares.values()):
                raise ValueError("decompose: another share is being decomposed")
            previous = self.thread              # done: at most finishing its log line
            share.state = "running"
            self.thread = threading.Thread(target=self._run, args=(index, share, previous),
                                           name="lsi-share", daemon=True)
            self.thread.start()

    def _run(self, index: int, share: _Share, previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join()
        t = time.perf_counter()
        try:
            d = decompose_part(share.blocks, share.first_doc, self.n_terms, self.settings,
                               self.workers, self.rank)
            u = np.ascontiguousarray(d.u)
            pieces = row_pieces(u.shape[0], max(1, u.shape[1]) * u.itemsize)
            with self.lock:
                share.result, share.pieces = Decomposition(u, d.s), list(pieces)
                share.seconds = time.perf_counter() - t
                share.state = "done"
                self.documents += share.n_docs
        except BaseException as exc:             # noqa: BLE001 (reported to the dispatcher)
            with self.lock:
                share.state, share.error = "failed", f"{type(exc).__name__}: {exc}"
            if not self.stop.is_set():
                log.warning("LSI share %d failed: %s", index, share.error)
        finally:
            with self.lock:
                share.seconds = share.seconds or time.perf_counter() - t
                self.changed.notify_all()
        log.info("LSI share %d: %d documents, %d factors in %.1f s", index, share.n_docs,
                 self.rank, share.seconds)

    def result(self, index, wait: float) -> dict:
        """The share's state, waiting up to `wait` seconds for it to finish: when done,
        its singular values and how many pieces U comes in."""
        deadline = time.monotonic() + _num(wait, 0.0, 600.0, "wait_seconds")
        with self.lock:
            share = self._share(index)
            while share.state == "running" and not self.stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(min(left, 1.0))
            reply = {"state": share.state, "seconds": round(share.seconds, 3)}
            if share.state == "failed":
                raise RuntimeError(f"share {index}: {share.error}")
            if share.state == "done":
                reply.update(s=pack_array(share.result.s), pieces=len(share.pieces),
                             rank=int(share.result.u.shape[1]))
            return reply

    def pull(self, index, piece) -> dict:
        """Rows of the share's U, piece by piece."""
        with self.lock:
            share = self._share(index)
            if share.state != "done":
                raise ValueError(f"share {index}: not done ({share.state})")
            a, b = share.pieces[_int(piece, 0, len(share.pieces) - 1, "piece")]
            return {"start": a, "u": pack_array(share.result.u[a:b])}

    def forget(self, index) -> None:
        """The dispatcher has the share: free its blocks and result."""
        with self.lock:
            share = self._share(index)
            if share.state == "running":
                raise ValueError(f"share {index}: still running")
            del self.shares[index]
        for b in share.blocks:
            try:
                os.remove(b.path)
            except OSError:
                pass

    # ---- the job's life ---------------------------------------------------------------------
    def close(self) -> None:
        self.refuse_calls()
        self.stop.set()
        with self.lock:
            self.changed.notify_all()
        self.wait_calls()
        if self.thread is not None:
            # the products cannot be interrupted: a running share finishes first (its
            # blocks are still on disk); a worker that is killed leaves its folder to
            # the next BlockCache's sweep
            self.thread.join(timeout=60)
        self.shares = {}
        self.cache.close()
