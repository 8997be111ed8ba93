"""An LDA job on one `engine worker`: E-steps of the chunks of documents it is sent.

The dispatcher (engine.cluster.lda) opens the job with the number of topics and the E-step's
settings, sends a part's documents once (CSR over the part's own terms, numbered 0..u-1, in the
order the dispatcher sends their rows; kept in a scratch folder on disk, so that a later pass
finds them here and memory does not grow with the corpus), and for each E-step the rows of
exp(E[log beta]) of that chunk's terms only, alpha and the documents' starting gamma. The node runs the E-step on
all its threads in the background (engine.documents.lda.run_estep, the function local
training runs) and hands back gamma and the chunk's statistics, again only for its terms.
Everything that arrives is checked (types, ranges, shapes, finite values) before use.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse

from ..documents.lda import run_estep
from ..runtime.shm import sweep_temp_dirs
from .jobs import CallGuard
from .protocol import (
    MAX_JOB_TIMEOUT,
    check_int as _int,
    check_num as _num,
    pack_array,
    pack_rows_compact,
    row_pieces,
    unpack_array,
)

log = logging.getLogger("engine")

MAX_TERMS = (1 << 31) - 1
MAX_CHUNK = 1 << 62
_SCRATCH_PREFIX = "engine-lda-"


class _Task:
    def __init__(self, chunk: int, rows: np.ndarray):
        self.chunk = chunk
        self.rows = rows                    # exp(E[log beta]) of the chunk's terms
        self.filled = 0
        self.state = "receiving"            # -> running -> done | failed
        self.gamma: np.ndarray | None = None
        self.sstats: np.ndarray | None = None
        self.pieces: list[tuple[int, int]] = []
        self.error = ""
        self.seconds = 0.0


class LdaNodeJob(CallGuard):
    """One LDA job on this node (the counterpart of node.NodeJob for word vectors)."""

    def __init__(self, spec: dict, workers: int):
        super().__init__(spec["job"])
        self.num_topics = _int(spec["num_topics"], 1, 100_000, "num_topics")
        self.n_terms = _int(spec["n_terms"], 1, MAX_TERMS, "n_terms")
        if spec["dtype"] not in ("float32", "float64"):
            raise ValueError(f"dtype: expected float32 or float64, got {spec['dtype']!r}")
        self.dtype = np.dtype(spec["dtype"])
        self.iterations = _int(spec["iterations"], 1, 1_000_000, "iterations")
        self.gamma_threshold = _num(spec["gamma_threshold"], 0.0, 1e9, "gamma_threshold")
        self.timeout = _num(spec["timeout_seconds"], 0.5, MAX_JOB_TIMEOUT, "timeout_seconds")
        self.workers = min(workers, _int(spec.get("workers") or workers, 1, 4096, "workers"))
        sweep_temp_dirs(_SCRATCH_PREFIX)         # left by workers that were killed
        self.scratch = tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-")
        self.chunks: dict[int, tuple[str, int, int]] = {}   # chunk -> (file, docs, terms)
        self.tasks: dict[int, _Task] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stop = threading.Event()
        self.last_call = time.monotonic()
        self.documents = 0
        self.thread: threading.Thread | None = None
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lda-node")
        self.spare: list[np.ndarray] = []

    # ---- receiving --------------------------------------------------------------------------
    def put_chunk(self, chunk, n_terms, indptr, indices, data) -> None:
        """A part's documents: CSR over its own `n_terms` terms (the dispatcher numbers
        them and sends their rows of exp(E[log beta]) in that order)."""
        k = _int(chunk, 0, MAX_CHUNK, "chunk")
        u = _int(n_terms, 1, self.n_terms, "n_terms")
        ptr = unpack_array(indptr, "<i8", 1, what="indptr")
        if len(ptr) < 2 or ptr[0] != 0 or np.any(np.diff(ptr) < 0):
            raise ValueError("indptr: expected a non-decreasing row index starting at 0")
        idx = unpack_array(indices, "<i4", 1, (int(ptr[-1]),), "indices")
        vals = unpack_array(data, self.dtype.str, 1, (int(ptr[-1]),), "data")
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= u):
            raise ValueError(f"indices: expected the part's own term numbers 0..{u - 1}")
        if not np.all(np.isfinite(vals)) or (len(vals) and vals.min() < 0):
            raise ValueError("data: expected finite counts >= 0")
        path = os.path.join(self.scratch, f"chunk-{k}.npz")
        with open(path + ".tmp", "wb") as fh:       # complete files only
            np.savez(fh, indptr=ptr, indices=idx, data=vals)
        os.replace(path + ".tmp", path)
        with self.lock:
            self.chunks[k] = (path, len(ptr) - 1, u)

    def _chunk(self, k: int) -> scipy.sparse.csr_matrix:
        path, docs, terms = self.chunks[k]
        with np.load(path, allow_pickle=False) as z:
            return scipy.sparse.csr_matrix((z["data"], z["indices"], z["indptr"]),
                                           shape=(docs, terms))

    def put_rows(self, chunk, start, rows) -> None:
        """Rows start.. of exp(E[log beta]) for the chunk's terms (terms x topics)."""
        k = _int(chunk, 0, MAX_CHUNK, "chunk")
        with self.lock:
            if k not in self.chunks:
                raise ValueError(f"chunk {k} is not on this node")
            n_terms = self.chunks[k][2]
            task = self.tasks.get(k)
            if task is None or task.state != "receiving":
                if task is not None and task.state == "running":
                    raise ValueError(f"chunk {k}: its E-step is running")
                task = self.tasks[k] = _Task(k, self._rows(n_terms))
        a = _int(start, 0, n_terms, "start")
        got = unpack_array(rows, self.dtype.str, 2, (None, self.num_topics), "rows")
        if a != task.filled or a + got.shape[0] > n_terms:
            raise ValueError(f"chunk {k}: rows at {a}, expected {task.filled}")
        if not np.all(np.isfinite(got)) or (got.size and got.min() < 0):
            raise ValueError("rows: expected finite values >= 0")
        task.rows[a:a + got.shape[0]] = got
        task.filled += got.shape[0]

    def _rows(self, n: int) -> np.ndarray:
        """A terms x topics buffer, reused from a finished task when one is free."""
        want = n * self.num_topics
        while self.spare:
            buf = self.spare.pop()
            if buf.size >= want:
                return buf[:want].reshape(n, self.num_topics)
        return np.empty((n, self.num_topics), self.dtype)

    # ---- computing --------------------------------------------------------------------------
    def estep(self, chunk, gamma, alpha) -> None:
        """Start the chunk's E-step in the background (one at a time): `gamma` its
        documents' starting topic weights (documents x topics, drawn by the dispatcher as
        local training draws them), alpha the prior (topics,)."""
        k = _int(chunk, 0, MAX_CHUNK, "chunk")
        a = unpack_array(alpha, "<f8", 1, (self.num_topics,), "alpha")
        if not np.all(np.isfinite(a)) or a.min() <= 0:
            raise ValueError("alpha: expected finite values > 0")
        with self.lock:
            docs = self.chunks[k][1] if k in self.chunks else 0
        g = unpack_array(gamma, "<f8", 2, (docs, self.num_topics), "gamma")
        if not np.all(np.isfinite(g)) or (g.size and g.min() <= 0):
            raise ValueError("gamma: expected finite values > 0")
        with self.lock:
            task = self.tasks.get(k)
            if task is None or task.state != "receiving":
                raise ValueError(f"chunk {k}: no rows sent for an E-step")
            if task.filled != task.rows.shape[0]:
                raise ValueError(f"chunk {k}: {task.filled} of {task.rows.shape[0]} rows sent")
            if any(t.state == "running" for t in self.tasks.values()):
                raise ValueError("estep: another chunk's E-step is running")
            previous = self.thread
            task.state = "running"
            self.thread = threading.Thread(target=self._run, args=(task, g.copy(), a.copy(),
                                                                   previous),
                                           name="lda-estep", daemon=True)
            self.thread.start()

    def _run(self, task: _Task, gamma: np.ndarray, alpha: np.ndarray,
             previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join()
        t = time.perf_counter()
        try:
            m = self._chunk(task.chunk)
            sstats_t = np.zeros_like(task.rows)
            run_estep(m, task.rows, alpha, gamma, sstats_t, self.iterations,
                                       self.gamma_threshold, self.workers,
                                       lambda: self.pool, [])
            sstats_t *= task.rows                # as LdaModel.inference: times exp(E[log beta])
            pieces = row_pieces(sstats_t.shape[0], self.num_topics * sstats_t.itemsize)
            with self.lock:
                task.gamma, task.sstats, task.pieces = gamma, sstats_t, list(pieces)
                self.spare.append(task.rows.reshape(-1))
                task.rows = None
                task.seconds = time.perf_counter() - t
                task.state = "done"
                self.documents += m.shape[0]
        except BaseException as exc:             # noqa: BLE001 (reported to the dispatcher)
            with self.lock:
                task.state, task.error = "failed", f"{type(exc).__name__}: {exc}"
            if not self.stop.is_set():
                log.warning("LDA chunk %d failed: %s", task.chunk, task.error)
        finally:
            with self.lock:
                task.seconds = task.seconds or time.perf_counter() - t
                self.changed.notify_all()

    def result(self, chunk, wait: float) -> dict:
        """The E-step's state, waiting up to `wait` seconds for it to finish: when done,
        gamma (documents x topics) and how many pieces the statistics come in."""
        deadline = time.monotonic() + _num(wait, 0.0, 600.0, "wait_seconds")
        k = _int(chunk, 0, MAX_CHUNK, "chunk")
        with self.lock:
            task = self.tasks.get(k)
            if task is None:
                raise ValueError(f"chunk {k}: no E-step here")
            while task.state == "running" and not self.stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(min(left, 1.0))
            if task.state == "failed":
                raise RuntimeError(f"chunk {k}: {task.error}")
            reply = {"state": task.state, "seconds": round(task.seconds, 3)}
            if task.state == "done":
                reply.update(gamma=pack_array(task.gamma), pieces=len(task.pieces))
            return reply

    def pull(self, chunk, piece) -> dict:
        """Rows of the chunk's statistics (its terms x topics), piece by piece."""
        k = _int(chunk, 0, MAX_CHUNK, "chunk")
        with self.lock:
            task = self.tasks.get(k)
            if task is None or task.state != "done":
                raise ValueError(f"chunk {k}: no finished E-step")
            a, b = task.pieces[_int(piece, 0, len(task.pieces) - 1, "piece")]
            # most terms' rows are mostly zeros (topics none of their documents keeps)
            return {"start": a, **pack_rows_compact(task.sstats[a:b])}

    def forget(self, chunk) -> None:
        """The dispatcher has the chunk's result: free it (the documents stay cached)."""
        k = _int(chunk, 0, MAX_CHUNK, "chunk")
        with self.lock:
            task = self.tasks.get(k)
            if task is not None and task.state == "running":
                raise ValueError(f"chunk {k}: still running")
            self.tasks.pop(k, None)

    def cached(self) -> list[int]:
        with self.lock:
            return sorted(self.chunks)

    # ---- the job's life ---------------------------------------------------------------------
    def close(self) -> None:
        self.refuse_calls()
        self.stop.set()
        with self.lock:
            self.changed.notify_all()
        self.wait_calls()
        if self.thread is not None:
            self.thread.join(timeout=60)         # an E-step cannot be interrupted
        self.pool.shutdown(wait=False)
        self.tasks, self.chunks = {}, {}
        shutil.rmtree(self.scratch, ignore_errors=True)
