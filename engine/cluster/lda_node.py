"""An LDA job on one `engine worker`: E-steps of the parts of the chunks it is sent.

The dispatcher (engine.cluster.lda) opens the job with the number of topics and the E-step's
settings. For each chunk (a *round*), part after part as this node frees up, it sends the
rows of exp(E[log beta]) of the part's terms that this node does not hold yet in the round
(with their chunk term numbers), the part's documents if this node does not hold them (CSR
over the chunk's term numbers, sent once: kept in a scratch folder on disk, so that a later
pass finds them here and memory does not grow with the corpus), alpha and the part's
starting gamma. The node runs each part's E-step on all its threads in the background
(engine.documents.lda.run_estep, the function local training runs), hands back the part's
gamma, and adds its statistics to the round's, which the dispatcher pulls once no part is
left for this node, for the terms it was sent. A round holds the rows it was sent and their
statistics (twice the chunk's terms x topics, never the vocabulary's); a newer round frees
it. Everything that arrives is checked (types, ranges, shapes, finite values) before use.
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
    pack_product_compact,
    row_pieces,
    unpack_array,
    unpack_documents,
)

log = logging.getLogger("engine")

MAX_TERMS = (1 << 31) - 1
MAX_CHUNK = 1 << 62
_SCRATCH_PREFIX = "engine-lda-"


class _Part:
    """A part's E-step: its state, and gamma once done."""

    def __init__(self, key: int):
        self.key = key
        self.state = "running"              # -> done | failed
        self.gamma: np.ndarray | None = None
        self.error = ""
        self.seconds = 0.0


class _Round:
    """A chunk's rows of exp(E[log beta]) sent so far (by chunk term number), its parts,
    and their statistics added up since the last pull."""

    def __init__(self, round_id: int, rows: np.ndarray, sstats: np.ndarray):
        self.id, self.rows, self.sstats = round_id, rows, sstats
        self.filled = np.zeros(rows.shape[0], bool)
        self.parts: dict[int, _Part] = {}
        self.done: list[int] = []           # parts in sstats
        self.pulled: tuple[np.ndarray, np.ndarray, list] | None = None


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
        self.chunks: dict[int, tuple[str, int, int]] = {}   # part -> (file, docs, terms)
        self.fresh: tuple[int, scipy.sparse.csr_matrix] | None = None  # the last one put
        self.round: _Round | None = None
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stop = threading.Event()
        self.last_call = time.monotonic()
        self.documents = 0
        self.thread: threading.Thread | None = None
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lda-node")
        self.spare: list[np.ndarray] = []
        self.sums: list[np.ndarray] = []         # run_estep's per-thread statistics

    # ---- receiving --------------------------------------------------------------------------
    def put_chunk(self, chunk, n_terms, docs) -> None:
        """A part's documents: CSR over its chunk's `n_terms` term numbers (those the
        dispatcher sends rows for), as protocol.pack_documents packs them."""
        k = _int(chunk, 0, MAX_CHUNK, "chunk")
        u = _int(n_terms, 1, self.n_terms, "n_terms")
        ptr, idx, vals = unpack_documents(docs, u, self.dtype, f"chunk {k}")
        path = os.path.join(self.scratch, f"chunk-{k}.npz")
        with open(path + ".tmp", "wb") as fh:       # complete files only
            np.savez(fh, indptr=ptr, indices=idx, data=vals)
        os.replace(path + ".tmp", path)
        m = scipy.sparse.csr_matrix((vals, idx, ptr), shape=(len(ptr) - 1, u))
        with self.lock:
            self.chunks[k] = (path, len(ptr) - 1, u)
            self.fresh = (k, m)                  # its E-step comes next: not read back

    def _chunk(self, k: int) -> scipy.sparse.csr_matrix:
        with self.lock:
            fresh, self.fresh = self.fresh, None
            path, docs, terms = self.chunks[k]
        if fresh is not None and fresh[0] == k:
            return fresh[1]
        with np.load(path, allow_pickle=False) as z:
            return scipy.sparse.csr_matrix((z["data"], z["indices"], z["indptr"]),
                                           shape=(docs, terms))

    def _round(self, round_id, n_rows: int | None = None) -> _Round:
        """The round `round_id` (with the lock held): a newer one than this node holds
        replaces it (its buffers kept for reuse); `n_rows` given, it must agree."""
        r = _int(round_id, 0, MAX_CHUNK, "round")
        cur = self.round
        if cur is not None and r < cur.id:
            raise ValueError(f"round {r}: this node is at round {cur.id}")
        if cur is None or r > cur.id:
            if n_rows is None:
                raise ValueError(f"round {r}: no rows sent")
            if cur is not None:
                if any(p.state == "running" for p in cur.parts.values()):
                    raise ValueError(f"round {r}: round {cur.id}'s E-step is running")
                self.spare += [cur.rows.reshape(-1), cur.sstats.reshape(-1)]
                if cur.pulled is not None:
                    self.spare.append(cur.pulled[0].reshape(-1))
            self.round = cur = _Round(r, self._buffer(n_rows), self._buffer(n_rows))
            cur.sstats[...] = 0
        if n_rows is not None and n_rows != cur.rows.shape[0]:
            raise ValueError(f"round {r}: {n_rows} terms, expected {cur.rows.shape[0]}")
        return cur

    def _buffer(self, n: int) -> np.ndarray:
        """A terms x topics buffer, reused from a finished round when one is large enough."""
        want = n * self.num_topics
        for i, buf in enumerate(self.spare):
            if buf.size >= want:
                del self.spare[i]
                return buf[:want].reshape(n, self.num_topics)
        self.spare.clear()                       # too small: let them go
        return np.empty((n, self.num_topics), self.dtype)

    def put_rows(self, round_id, n_rows, numbers, rows) -> None:
        """Rows of exp(E[log beta]) (terms x topics) of the chunk's terms `numbers`."""
        n = _int(n_rows, 1, self.n_terms, "n_rows")
        idx = unpack_array(numbers, "<i4", 1, what="numbers")
        got = unpack_array(rows, self.dtype.str, 2, (len(idx), self.num_topics), "rows")
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise ValueError(f"numbers: expected the chunk's term numbers 0..{n - 1}")
        if not np.all(np.isfinite(got)) or (got.size and got.min() < 0):
            raise ValueError("rows: expected finite values >= 0")
        with self.lock:
            rnd = self._round(round_id, n)
            if any(p.state == "running" for p in rnd.parts.values()):
                raise ValueError(f"round {rnd.id}: an E-step is running")
            rnd.rows[idx] = got
            rnd.filled[idx] = True

    # ---- computing --------------------------------------------------------------------------
    def estep(self, chunk, round_id, gamma, alpha) -> None:
        """Start a part's E-step in the background (one at a time): `gamma` its documents'
        starting topic weights (documents x topics, drawn by the dispatcher as local
        training draws them), alpha the prior (topics,)."""
        k = _int(chunk, 0, MAX_CHUNK, "chunk")
        a = unpack_array(alpha, "<f8", 1, (self.num_topics,), "alpha")
        if not np.all(np.isfinite(a)) or a.min() <= 0:
            raise ValueError("alpha: expected finite values > 0")
        with self.lock:
            if k not in self.chunks:
                raise ValueError(f"chunk {k} is not on this node")
            docs = self.chunks[k][1]
        g = unpack_array(gamma, "<f8", 2, (docs, self.num_topics), "gamma")
        if not np.all(np.isfinite(g)) or (g.size and g.min() <= 0):
            raise ValueError("gamma: expected finite values > 0")
        with self.lock:
            rnd = self._round(round_id)
            if self.chunks[k][2] != rnd.rows.shape[0]:
                raise ValueError(f"chunk {k}: over {self.chunks[k][2]} terms, round "
                                 f"{rnd.id} over {rnd.rows.shape[0]}")
            if any(p.state == "running" for p in rnd.parts.values()):
                raise ValueError("estep: another part's E-step is running")
            part = rnd.parts[k] = _Part(k)
            previous = self.thread
            self.thread = threading.Thread(target=self._run,
                                           args=(rnd, part, g.copy(), a.copy(), previous),
                                           name="lda-estep", daemon=True)
            self.thread.start()

    def _run(self, rnd: _Round, part: _Part, gamma: np.ndarray, alpha: np.ndarray,
             previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join()
        t = time.perf_counter()
        try:
            m = self._chunk(part.key)
            if m.nnz and not rnd.filled[m.indices].all():
                raise ValueError(f"chunk {part.key}: rows of its terms were not all sent")
            run_estep(m, rnd.rows, alpha, gamma, rnd.sstats, self.iterations,
                      self.gamma_threshold, self.workers, lambda: self.pool, self.sums)
            with self.lock:
                part.gamma = gamma
                part.seconds = time.perf_counter() - t
                part.state = "done"
                rnd.done.append(part.key)
                self.documents += m.shape[0]
        except BaseException as exc:             # noqa: BLE001 (reported to the dispatcher)
            with self.lock:
                part.state, part.error = "failed", f"{type(exc).__name__}: {exc}"
            if not self.stop.is_set():
                log.warning("LDA chunk %d failed: %s", part.key, part.error)
        finally:
            with self.lock:
                part.seconds = part.seconds or time.perf_counter() - t
                self.changed.notify_all()

    def result(self, chunk, wait: float) -> dict:
        """A part's state, waiting up to `wait` seconds for its E-step to finish: when
        done, its gamma (documents x topics)."""
        deadline = time.monotonic() + _num(wait, 0.0, 600.0, "wait_seconds")
        k = _int(chunk, 0, MAX_CHUNK, "chunk")
        with self.lock:
            part = self.round.parts.get(k) if self.round is not None else None
            if part is None:
                raise ValueError(f"chunk {k}: no E-step here")
            while part.state == "running" and not self.stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(min(left, 1.0))
            if part.state == "failed":
                raise RuntimeError(f"chunk {k}: {part.error}")
            reply = {"state": part.state, "seconds": round(part.seconds, 3)}
            if part.state == "done":
                reply["gamma"] = pack_array(part.gamma)
            return reply

    def statistics(self, round_id) -> dict:
        """The round's statistics so far, set aside for `pull` (later parts add up anew):
        which parts they hold, for how many terms (those sent, in the order of their
        numbers) and in how many pieces."""
        with self.lock:
            rnd = self._round(round_id)
            if any(p.state == "running" for p in rnd.parts.values()):
                raise ValueError(f"round {rnd.id}: an E-step is running")
            rows = np.flatnonzero(rnd.filled)
            if rnd.pulled is not None:
                self.spare.append(rnd.pulled[0].reshape(-1))
            sstats = rnd.sstats
            rnd.sstats = self._buffer(rnd.rows.shape[0])
            rnd.sstats[...] = 0
            rnd.pulled = (sstats, rows, list(row_pieces(len(rows), self.num_topics
                                                        * sstats.itemsize)))
            keys, rnd.done = rnd.done, []
            return {"parts": keys, "rows": len(rows), "pieces": len(rnd.pulled[2])}

    def pull(self, round_id, piece) -> dict:
        """Rows of the statistics set aside, piece by piece (times exp(E[log beta]), as
        LdaModel.inference's)."""
        with self.lock:
            rnd = self._round(round_id)
            if rnd.pulled is None:
                raise ValueError(f"round {rnd.id}: no statistics set aside")
            sstats, rows, pieces = rnd.pulled
            a, b = pieces[_int(piece, 0, len(pieces) - 1, "piece")]
            ids = rows[a:b]
            # most terms' rows are mostly zeros (topics none of their documents keeps)
            return {"start": a, **pack_product_compact(sstats, rnd.rows, ids)}

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
        self.round, self.chunks, self.fresh, self.spare, self.sums = None, {}, None, [], []
        shutil.rmtree(self.scratch, ignore_errors=True)
