"""The SVD's work on every core: P spawned processes x T threads each.

Work is cut into *pieces* (runs of consecutive chunks' documents). In one process, T
threads take pieces in turn: scipy's sparse products release the GIL, so they run in
parallel. With P > 1 processes (engine.runtime.procs' spawned pool), each takes a contiguous share
of the pieces and runs it the same way on its T threads; the range basis Q goes to them and
their partial sums come back through shared memory (engine.runtime.shm), the Gram matrices (small)
through the pipe. The dense steps between passes run in the parent, split by rows over
P x T threads (engine.documents.svd) while the workers wait.

BLAS itself is kept on one thread everywhere (threadpoolctl): the parallelism is ours.
Threaded BLAS on a shared machine spins on a core another process holds and runs several
times slower than on one thread; our threads take work in turn and do not.

Every random number depends only on (seed, document number): any P x T gives the same
sketch, and results agree to rounding (the order of the partial sums).
"""
from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import psutil

from ..errors import ConfigError
from ..runtime.shm import SharedArrays
from .blocks import group_chunks, split_even
from .svd import omega, one_blas_thread

log = logging.getLogger("engine")

try:                                          # y += A @ x in place (see add_product)
    from scipy.sparse._sparsetools import csr_matvecs as _CSR_MATVECS
except ImportError:                           # pragma: no cover (a future scipy)
    _CSR_MATVECS = None

PIECE_NNZ = 250_000          # nonzeros per piece (~2-3 MB). Products add in place, so
                             # small pieces cost no extra terms x width arrays; and they
                             # keep memory flat as the corpus grows (the buffers of large
                             # pieces stay resident once freed), at the same speed
PRODUCT_RATE = 1.0e9         # about one core's multiply-adds per second, sparse x dense


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Split:
    """How the work is spread: processes x threads per process (`blas_threads` in the
    configuration: the threads that do the products, each on single-threaded BLAS)."""
    processes: int
    threads: int
    reason: str

    @property
    def lanes(self) -> int:
        return self.processes * self.threads


def free_cores(cores: int, interval: float = 0.25) -> int:
    """Cores not busy with other processes right now: system-wide CPU use over a short
    sleep, while this job is idle. On a shared machine, lanes beyond the free cores only
    add switching: with every core taken by another job, one thread is faster than two
    threads or two processes."""
    busy = psutil.cpu_percent(interval=interval) / 100 * cores
    return max(1, min(cores, cores - int(busy + 0.3)))


def choose_split(processes: int, threads: int, nnz: int, width: int, passes: int,
                 cores: int | None = None, free: int | None = None) -> Split:
    """Processes x threads for the SVD (0 = choose; `free`: cores idle now, measured when
    not given). The products need ~nnz x width multiply-adds a pass; below half a second
    of them, one thread. Otherwise one thread per free core in this process: threads are
    faster than processes, which pay for starting and for shipping Q and the partial sums
    through shared memory, and they use less memory (see docs/benchmarks.md, "LSI")."""
    cores = cores or cpu_count()
    if processes < 0 or threads < 0:
        raise ConfigError(f"processes = {processes}, blas_threads = {threads}: must be 0 "
                          f"(auto) or more")
    if processes and threads:
        return Split(processes, threads, "set in the configuration")
    if processes:
        return Split(processes, max(1, cores // processes),
                     f"{processes} process(es) set; threads fill the {cores} core(s)")
    if threads:
        return Split(max(1, cores // threads), threads,
                     f"{threads} thread(s) set; processes fill the {cores} core(s)")
    seconds = nnz * width * passes / PRODUCT_RATE
    if cores == 1 or seconds < 0.5:
        return Split(1, 1, f"small problem (~{seconds:.1f} s of products on one core)")
    free = free_cores(cores) if free is None else free
    busy = f"{cores - free} of {cores} cores busy with other work; " if free < cores else ""
    if free == 1:
        return Split(1, 1, f"{busy}one lane (~{seconds:.1f} s of products)")
    return Split(1, free, f"{busy}~{seconds:.1f} s of products on one core, split over "
                          f"{free} threads of this process (GIL released)")


# ---- the products in one process ------------------------------------------------------------

class LocalPasses:
    """The streamed products (engine.documents.svd.Passes) over `pieces` (blocks.Chunk), in
    this process on `threads` threads."""

    def __init__(self, pieces: Sequence, n_terms: int, dtype=np.float64, threads: int = 1):
        self.pieces = list(pieces)
        self.n_terms = int(n_terms)
        self.n_docs = sum(p.n_docs for p in self.pieces)
        self.dtype = np.dtype(dtype)
        self.threads = max(1, int(threads))

    def _lanes(self, work: Callable) -> list:
        """total = work(piece, matrix, total) for every piece, on the threads (BLAS on
        one thread); each thread keeps its own total (None before its first piece).
        Returns the threads' totals."""
        pending = iter(self.pieces)
        lock = threading.Lock()

        def lane():
            total = None
            while True:
                with lock:
                    piece = next(pending, None)
                if piece is None:
                    return total
                total = work(piece, piece.load(self.n_terms, self.dtype), total)

        if self.threads == 1 or len(self.pieces) == 1:
            totals = [lane()]
        else:
            with one_blas_thread(), \
                    ThreadPoolExecutor(self.threads, thread_name_prefix="lsi") as ex:
                totals = [f.result() for f in [ex.submit(lane) for _ in range(self.threads)]]
        return [t for t in totals if t is not None]

    def _summed(self, totals: list, shape: tuple, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            if not totals:
                return np.zeros(shape, dtype=self.dtype)
            out = totals[0]
            totals = totals[1:]
        else:
            out[...] = 0
        for t in totals:
            out += t
        return out

    def sketch(self, width: int, seed: int, out: np.ndarray | None = None) -> np.ndarray:
        """Y = X @ Omega."""
        totals = self._lanes(lambda p, m, total: add_product(total, _transposed(m), omega(
            seed, p.first_doc, p.n_docs, width, self.dtype)))
        return self._summed(totals, (self.n_terms, width), out)

    def power(self, q: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Y = X @ (X.T @ q)."""
        totals = self._lanes(lambda p, m, total: add_product(total, _transposed(m), m @ q))
        return self._summed(totals, (self.n_terms, q.shape[1]), out)

    def gram(self, q: np.ndarray) -> np.ndarray:
        """G = (X.T @ q).T @ (X.T @ q), float64."""
        def work(p, m, total):
            z = m @ q
            part = (z.T @ z).astype(np.float64)
            return part if total is None else _iadd(total, part)
        totals = self._lanes(work)
        return sum(totals[1:], totals[0]) if totals else np.zeros((q.shape[1],) * 2)

    def project(self, u: np.ndarray, out: np.ndarray) -> None:
        """out[doc] = X[:, doc].T @ u for every document (rows by p.first_doc)."""
        def work(p, m, total):
            out[p.first_doc:p.first_doc + p.n_docs] = m @ u
        self._lanes(work)


def _transposed(m):
    """m.T as CSR (terms x documents): X @ Z then writes each output row once, reading
    the small Z; faster than scipy's CSC product of m.T, for a small copy."""
    return m.T.tocsr()


def _iadd(total: np.ndarray, part: np.ndarray) -> np.ndarray:
    total += part
    return total


def add_product(total: np.ndarray | None, a, x: np.ndarray) -> np.ndarray:
    """total + a @ x (a CSR, x dense), added in place by scipy's own kernel where the
    types allow: no terms x width temporary per piece, so a thread holds one such array
    whatever the number of pieces (and the corpus size). The kernel is private to scipy
    (gensim calls its CSC twin the same way); without it, the public product."""
    if total is None:
        return np.asarray(a @ x)
    if _CSR_MATVECS is not None and a.dtype == x.dtype == total.dtype and \
            a.indices.dtype == a.indptr.dtype and x.flags.c_contiguous and \
            total.flags.c_contiguous:
        _CSR_MATVECS(a.shape[0], a.shape[1], x.shape[1], a.indptr, a.indices, a.data,
                     x.ravel(), total.ravel())
        return total
    return _iadd(total, a @ x)


# ---- the products in a pool of processes ----------------------------------------------------

def _shard_task(kind: str, pieces: list, spec: dict, slot: str, n_terms: int, dtype: str,
                threads: int, width: int, seed: int):
    """In a pool process: one pass over its share of the pieces; sums go to the shared
    accumulator `slot`, a Gram matrix comes back as the result."""
    with one_blas_thread():
        shared = SharedArrays.attach(spec)
        try:
            passes = LocalPasses(pieces, n_terms, dtype, threads)
            if kind == "sketch":
                passes.sketch(width, seed, out=shared[slot])
            elif kind == "power":
                passes.power(shared["q"], out=shared[slot])
            else:                                           # "gram"
                return passes.gram(shared["q"])
            return None
        finally:
            shared.close()


class PoolPasses:
    """The streamed products over `pieces`, shared among the processes of `pool` (an
    engine.runtime.procs.ProcessPool), `threads` threads each. Close it (or use `with`) to free
    the shared memory."""

    def __init__(self, pool, pieces: Sequence, n_terms: int, dtype=np.float64,
                 threads: int = 1):
        self.pool = pool
        self.shards = split_even(list(pieces), len(pool.procs))
        self.n_terms = int(n_terms)
        self.n_docs = sum(p.n_docs for p in pieces)
        self.dtype = np.dtype(dtype)
        self.threads = threads
        self._shared: SharedArrays | None = None

    def _arrays(self, width: int) -> SharedArrays:
        """The shared basis q (terms x width) and one accumulator per process."""
        if self._shared is None or self._shared["q"].shape[1] != width:
            self.close()
            shapes = {"q": ((self.n_terms, width), self.dtype)}
            shapes.update({f"acc{i}": ((self.n_terms, width), self.dtype)
                           for i in range(len(self.shards))})
            self._shared = SharedArrays.create_empty(shapes)
        return self._shared

    def _run(self, kind: str, width: int, seed: int = 0, q: np.ndarray | None = None
             ) -> list:
        """One pass on every process; q (if given) goes to the shared basis first."""
        shared = self._arrays(width)
        if q is not None:
            shared["q"][...] = q
        tasks = [(kind, shard, shared.spec, f"acc{i}", self.n_terms, self.dtype.str,
                  self.threads, width, seed) for i, shard in enumerate(self.shards)]
        return list(self.pool.map(_shard_task, tasks))

    def _summed(self) -> np.ndarray:
        y = self._shared["acc0"].copy()
        for i in range(1, len(self.shards)):
            y += self._shared[f"acc{i}"]
        return y

    def sketch(self, width: int, seed: int) -> np.ndarray:
        self._run("sketch", width, seed)
        return self._summed()

    def power(self, q: np.ndarray) -> np.ndarray:
        self._run("power", q.shape[1], q=q)
        return self._summed()

    def gram(self, q: np.ndarray) -> np.ndarray:
        return sum(self._run("gram", q.shape[1], q=q))

    def close(self) -> None:
        if self._shared is not None:
            self._shared.unlink()
            self._shared = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def plan_pieces(blocks: Sequence, chunksize: int, lanes: int, first_doc: int = 0) -> list:
    """The cached blocks as pieces for the products: at most chunksize documents and
    PIECE_NNZ nonzeros each (so memory per thread does not grow with the corpus), and
    small enough that every lane gets about two (a lane that finishes early takes
    another). Documents are numbered from first_doc."""
    n_docs = sum(b.n_docs for b in blocks)
    nnz = sum(b.nnz for b in blocks)
    per_lane = 2 * max(1, lanes)
    docs = max(1, min(chunksize, math.ceil(n_docs / per_lane)))
    return group_chunks(blocks, docs, max(1, min(PIECE_NNZ, math.ceil(nnz / per_lane))),
                        first_doc)
