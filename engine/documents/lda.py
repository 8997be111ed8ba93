"""Latent Dirichlet allocation by online variational Bayes (Hoffman, Blei and Bach, 2010),
with gensim's LdaModel names (`model[bow]`, get_topics, show_topics, log_perplexity ...).

The corpus is read in chunks of `chunksize` documents. For each chunk the E-step (compiled:
ext/_lda.pyx; `estep_numpy` is the same computation, which the tests hold it to) finds each
document's topic mix gamma and the chunk's sufficient statistics; every `update_every`
chunks the M-step blends them into the topics lambda with weight
rho = (offset + updates so far / chunksize) ** -decay (`update_every = 0`: once per pass,
batch mode). `alpha` and `eta` may be learned (`"auto"`: a Newton step on the Dirichlet
prior after each chunk, as Minka's fixed point).

A model is saved as one .npz file (no pickle): lambda, alpha, eta and the settings.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import threading
from collections.abc import Iterable, Mapping

import numpy as np
import scipy.sparse
from scipy.special import gammaln, polygamma, psi

from ..errors import FileAccessError, FormatError, InvalidArgumentError, MissingFileError
from ..runtime.atomic import atomic_file
from .blocks import bows_to_csr, map_npz_member
from .parallel import cpu_count
from .tfidf import is_corpus

log = logging.getLogger("engine")

FORMAT = "engine-lda"
VERSION = 1


def dirichlet_expectation(x: np.ndarray) -> np.ndarray:
    """E[log theta] for theta ~ Dirichlet(x), for a vector or each row of a matrix."""
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        return psi(x) - psi(x.sum())
    return psi(x) - psi(x.sum(axis=1))[:, None]


def estep_numpy(indptr, indices, counts, exp_elog_beta_t, alpha, gamma, sstats_t,
                iterations: int, gamma_threshold: float, eps: float) -> int:
    """The E-step in numpy, document by document (engine._lda.estep is the compiled one;
    same arguments, same result)."""
    converged = 0
    k = gamma.shape[1]
    collect = sstats_t.shape[0] > 0
    for d in range(gamma.shape[0]):
        ids = indices[indptr[d]:indptr[d + 1]]
        cts = np.asarray(counts[indptr[d]:indptr[d + 1]], np.float64)
        eb = np.asarray(exp_elog_beta_t[ids], np.float64)          # words x topics
        theta = np.exp(dirichlet_expectation(gamma[d]))
        norm = eb @ theta + eps
        for _ in range(iterations):
            last = gamma[d].copy()
            gamma[d] = alpha + theta * ((cts / norm) @ eb)
            theta = np.exp(dirichlet_expectation(gamma[d]))
            norm = eb @ theta + eps
            if np.abs(gamma[d] - last).sum() / k < gamma_threshold:
                converged += 1
                break
        if collect:
            np.add.at(sstats_t, ids, np.outer(cts / norm, theta).astype(sstats_t.dtype))
    return converged


def _estep(*args, **kw) -> int:
    from .._lda import estep  # compiled: ext/_lda.pyx
    return estep(*args, **kw)


def _collect(*args) -> None:
    from .._lda import collect
    collect(*args)


def _runs(indptr: np.ndarray, n: int) -> list[int]:
    """Bounds of n runs of consecutive documents with about equal nonzeros."""
    cuts = np.searchsorted(indptr, np.linspace(0, indptr[-1], n + 1)[1:-1])
    return [0, *sorted(set(cuts.tolist()) - {0, len(indptr) - 1}), len(indptr) - 1]


def run_estep(m: scipy.sparse.csr_matrix, eb_t: np.ndarray, alpha: np.ndarray,
              gamma: np.ndarray, sstats_t: np.ndarray, iterations: int,
              gamma_threshold: float, workers: int, threads, scratch: list) -> int:
    """The compiled E-step over a chunk's documents (m: documents x terms, its counts of
    eb_t's dtype; eb_t: terms x topics) on `workers` threads (`threads()` gives a pool; the
    E-step runs without the GIL). A document's cost is its words times its iterations,
    which nobody knows before, and the threads' cores run at different speeds on a shared
    machine, so the documents' variational updates are cut into runs of a few times as many
    as threads, taken by whichever thread is free; each keeps its words' last ratios. The
    statistics are then added from those in `workers` fixed runs, each thread but the first
    into its own (from `scratch`, kept between calls), summed after: the same order every
    run. Each document's result depends on its own words and starting gamma only. sstats_t
    with 0 rows: no statistics. Returns how many documents converged."""
    dtype = eb_t.dtype
    indptr = m.indptr.astype(np.int64)
    indices = m.indices.astype(np.int32)
    data = np.ascontiguousarray(m.data, dtype=dtype)
    alpha = np.ascontiguousarray(alpha, np.float64)
    eps = float(np.finfo(dtype).eps)
    parts = min(workers, m.shape[0])
    if parts <= 1 or m.nnz < 20_000:
        return _estep(indptr.astype(np.int32), indices, data, eb_t, alpha, gamma,
                      sstats_t, iterations, gamma_threshold, eps)
    collect = sstats_t.shape[0] > 0
    if collect and sstats_t.shape != eb_t.shape:
        raise ValueError("run_estep: sstats_t must be terms x topics, as eb_t")
    ratios = np.empty_like(data) if collect else None
    empty = np.zeros((0, 0), dtype)              # the updates collect nothing themselves

    def span(a: int, b: int) -> tuple[np.ndarray, slice]:
        return (indptr[a:b + 1] - indptr[a]).astype(np.int32), slice(indptr[a], indptr[b])

    def update(ab: tuple[int, int]) -> int:
        a, b = ab
        ptr, nz = span(a, b)
        return _estep(ptr, indices[nz], data[nz], eb_t, alpha, gamma[a:b], empty,
                      iterations, gamma_threshold, eps,
                      ratios=None if ratios is None else ratios[nz])

    bounds = _runs(indptr, min(4 * parts, m.shape[0]))
    converged = sum(threads().map(update, zip(bounds[:-1], bounds[1:])))
    if not collect:
        return converged
    if scratch and scratch[0].shape != sstats_t.shape:
        scratch.clear()                          # another size of statistics
    while len(scratch) < parts - 1:
        scratch.append(np.empty_like(sstats_t))
    fixed = _runs(indptr, parts)

    def add(i: int) -> None:
        a, b = fixed[i], fixed[i + 1]
        out = sstats_t if i == 0 else scratch[i - 1]
        if i:
            out[...] = 0
        ptr, nz = span(a, b)
        _collect(ptr, indices[nz], ratios[nz], gamma[a:b], out)

    list(threads().map(add, range(len(fixed) - 1)))
    for i in range(1, len(fixed) - 1):
        sstats_t += scratch[i - 1]
    return converged


def _random_state(seed):
    if seed is None or isinstance(seed, (int, np.integer)):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise InvalidArgumentError(f"random_state: {seed!r}; expected None, an int or a "
                               "numpy RandomState")


def _prior(value, name: str, k: int, length: int, allow_matrix: bool = False
           ) -> tuple[np.ndarray, bool]:
    """(the prior as an array, whether it is learned) from gensim's forms: "symmetric"
    (1/num_topics), "asymmetric" (alpha only: 1/(i + sqrt(K)), normalised), "auto"
    (symmetric, then learned), a number, or a vector (or, for eta, topics x terms)."""
    if value is None or (isinstance(value, str) and value == "symmetric"):
        return np.full(length, 1.0 / k), False
    if isinstance(value, str):
        if value == "auto":
            return np.full(length, 1.0 / k), True
        if value == "asymmetric" and name == "alpha":
            p = 1.0 / (np.arange(k) + np.sqrt(k))
            return p / p.sum(), False
        raise InvalidArgumentError(f"{name}: {value!r}; expected 'symmetric', "
                                   f"{'asymmetric, ' if name == 'alpha' else ''}'auto', "
                                   "a number or an array")
    arr = np.asarray(value, np.float64)
    if arr.ndim == 0:
        arr = np.full(length, float(arr))
    ok_shape = arr.shape == (length,) or (allow_matrix and arr.shape == (k, length))
    if not ok_shape:
        raise PriorShapeError(f"{name}: shape {arr.shape}; expected ({length},)"
                                   + (f" or ({k}, {length})" if allow_matrix else ""))
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InvalidArgumentError(f"{name}: every value must be a positive number")
    return arr.copy(), False


class PriorShapeError(InvalidArgumentError, AssertionError):
    """A prior of the wrong shape: a ValueError as engine's argument errors are, and an
    AssertionError, which is what gensim raises there."""


def update_dir_prior(prior: np.ndarray, n: int, logphat: np.ndarray, rho: float
                     ) -> np.ndarray:
    """One Newton step (scaled by rho) of a Dirichlet prior towards the maximum
    likelihood of observations whose mean E[log p] is logphat (n of them); the prior is
    kept when the step would make a value non-positive."""
    gradf = n * (psi(prior.sum()) - psi(prior) + logphat)
    c = n * polygamma(1, prior.sum())
    q = -n * polygamma(1, prior)
    b = (gradf / q).sum() / (1.0 / c + (1.0 / q).sum())
    updated = prior + rho * (-(gradf - b) / q)
    return updated if np.all(updated > 0) else prior


class CsrCorpus:
    """Documents as CSR matrices (documents x terms) read one at a time, such as the
    blocks of a cache on disk: `parts()` yields them, in order, each time it is called;
    len() is the number of documents."""

    def __init__(self, parts, n_docs: int):
        self.parts, self.n_docs = parts, int(n_docs)

    def __len__(self) -> int:
        return self.n_docs


def _as_chunks(corpus, chunksize: int, num_terms: int, dtype) -> Iterable[
        scipy.sparse.csr_matrix]:
    """The corpus as CSR chunks of at most `chunksize` documents: a scipy sparse matrix
    (documents x terms) or the parts of a CsrCorpus are sliced, anything else read as
    gensim bag-of-words documents."""
    if isinstance(corpus, CsrCorpus):           # parts of any size, into chunks of chunksize
        held, rows = [], 0
        for part in corpus.parts():
            held.append(part)
            rows += part.shape[0]
            if rows >= chunksize:
                m = scipy.sparse.vstack(held, format="csr")
                whole = (rows // chunksize) * chunksize
                yield from _as_chunks(m[:whole], chunksize, num_terms, dtype)
                held, rows = ([m[whole:]] if whole < rows else []), rows - whole
        if rows:
            yield from _as_chunks(scipy.sparse.vstack(held, format="csr"), chunksize,
                                  num_terms, dtype)
        return
    if scipy.sparse.issparse(corpus):
        m = scipy.sparse.csr_matrix(corpus)
        if m.shape[1] > num_terms:
            raise InvalidArgumentError(f"corpus: {m.shape[1]} terms; the model has "
                                       f"{num_terms}")
        m = scipy.sparse.csr_matrix((m.data.astype(dtype), m.indices, m.indptr),
                                    shape=(m.shape[0], num_terms))
        for a in range(0, m.shape[0], chunksize):
            yield m[a:a + chunksize]
        return
    it, first = iter(corpus), 0
    while True:
        docs = list(itertools.islice(it, chunksize))
        if not docs:
            return
        m = bows_to_csr(docs, num_terms, dtype, first)
        if m.nnz and m.data.min() < 0:
            raise InvalidArgumentError(f"corpus: a negative count in documents {first}.."
                                       f"{first + len(docs) - 1}")
        first += len(docs)
        yield m


def _ahead(chunks):
    """The chunks, the next one read (from disk, or out of Python documents) in a thread
    while the caller trains on this one: the E-step runs without the GIL, so reading
    overlaps it. An error in reading is raised where the chunk would have been; a caller
    that stops early (or fails) stops the reader."""
    box: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    end = object()

    def hand(item) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read():
        try:
            for m in chunks:
                if not hand((m, None)):
                    return
            hand((end, None))
        except BaseException as exc:             # noqa: BLE001 (raised in the caller)
            hand((end, exc))

    reader = threading.Thread(target=read, name="lda-read", daemon=True)
    reader.start()
    try:
        while True:
            m, exc = box.get()
            if exc is not None:
                raise exc
            if m is end:
                return
            yield m
    finally:
        stop.set()
        reader.join()


def split_halves(m: scipy.sparse.csr_matrix) -> tuple[scipy.sparse.csr_matrix,
                                                    scipy.sparse.csr_matrix]:
    """Each document's tokens (counts, in term order) dealt alternately into two halves:
    the first half gets the tokens at even positions. For held-out document completion."""
    m = scipy.sparse.csr_matrix(m)
    counts = np.rint(m.data).astype(np.int64)
    tokens = np.concatenate([[0], np.cumsum(counts)])         # tokens before each entry
    starts = np.repeat(tokens[m.indptr[:-1]], np.diff(m.indptr))
    pos = tokens[:-1] - starts                                # ... within its document
    first = (counts + (pos % 2 == 0)) // 2
    a = scipy.sparse.csr_matrix((first.astype(np.float64), m.indices.copy(),
                                 m.indptr.copy()), shape=m.shape)
    b = scipy.sparse.csr_matrix(((counts - first).astype(np.float64), m.indices.copy(),
                                 m.indptr.copy()), shape=m.shape)
    a.eliminate_zeros(), b.eliminate_zeros()
    return a, b


def completion_perplexity(topics: np.ndarray, theta: np.ndarray,
                          second: scipy.sparse.csr_matrix) -> float:
    """exp(-log-likelihood per token) of the documents' second halves under their topic
    mixes theta (documents x topics, inferred from the first halves) and `topics` (topics
    x terms, each a distribution): one estimator for any tool's model."""
    second = scipy.sparse.csr_matrix(second)
    total, words = 0.0, float(second.sum())
    for r in range(second.shape[0]):
        a, b = second.indptr[r], second.indptr[r + 1]
        if a < b:
            p = theta[r] @ topics[:, second.indices[a:b]]
            total += float(second.data[a:b] @ np.log(np.maximum(p, 1e-300)))
    return float(np.exp(-total / max(words, 1.0)))


class LdaState:
    """The topics' sufficient statistics (topics x terms) and the documents they stand for
    (gensim's LdaState: lambda = eta + sstats)."""

    def __init__(self, eta: np.ndarray, shape: tuple[int, int], dtype=np.float32):
        self.eta = eta
        self.sstats = np.zeros(shape, dtype=dtype)
        self.numdocs = 0

    def get_lambda(self) -> np.ndarray:
        return self.eta + self.sstats

    def get_Elogbeta(self) -> np.ndarray:
        return dirichlet_expectation(self.get_lambda())

    def blend(self, rhot: float, other: LdaState, targetsize: int | None = None) -> None:
        """self = (1 - rhot) self + rhot other, each stretched to `targetsize` documents
        (default: this state's)."""
        targetsize = self.numdocs if targetsize is None else targetsize
        mine = (1.0 - rhot) * (1.0 if self.numdocs in (0, targetsize)
                               else targetsize / self.numdocs)
        theirs = rhot * (1.0 if other.numdocs in (0, targetsize)
                         else targetsize / other.numdocs)
        # a few topics at a time: no temporary as large as the statistics (a fresh one is
        # page-faulted in at every M-step, ten times the arithmetic's cost)
        out, add = self.sstats, other.sstats
        step = max(1, (1 << 16) // max(out.shape[1], 1))
        for a in range(0, out.shape[0], step):
            block = out[a:a + step]
            block *= mine
            block += (theirs * add[a:a + step]).astype(out.dtype, copy=False)
        self.numdocs = targetsize


class LdaModel:
    """gensim's LdaModel signature. distributed=True needs engine.LdaModel (which knows the
    cluster); here `remote` is the hook it sets: an object with open(n_terms, num_topics,
    dtype, iterations, gamma_threshold) -> nodes, estep_chunk(key, chunk, gamma, eb_t,
    alpha, out) -> gamma (the statistics added into out, topics x terms) and close(),
    engine.cluster.ClusterLda's methods."""

    remote = None

    def __init__(self, corpus=None, num_topics: int = 100, id2word=None,
                 distributed: bool = False, chunksize: int = 2000, passes: int = 1,
                 update_every: int = 1, alpha="symmetric", eta=None, decay: float = 0.5,
                 offset: float = 1.0, eval_every: int | None = 10, iterations: int = 50,
                 gamma_threshold: float = 0.001, minimum_probability: float = 0.01,
                 random_state=None, ns_conf=None, minimum_phi_value: float = 0.01,
                 per_word_topics: bool = False, callbacks=None, dtype=np.float32,
                 workers: int = 0, remote=None):
        if remote is not None:
            self.remote = remote
        if distributed and self.remote is None:
            raise InvalidArgumentError("engine.documents.LdaModel(distributed=True): use "
                                       "engine.LdaModel (nodes=[...] or a name server), or "
                                       "`engine run` with [lda] and [cluster]")
        if id2word is None and corpus is None:
            raise InvalidArgumentError("LdaModel: at least one of corpus or id2word must be "
                                       "given, to know the number of terms")
        self.id2word = id2word
        if id2word is None:
            corpus = self._peek_terms(corpus)
        elif isinstance(id2word, Mapping) or hasattr(id2word, "keys"):
            self.num_terms = 1 + max(id2word.keys()) if len(id2word) else 0
        else:
            raise InvalidArgumentError("id2word: expected a Dictionary or a mapping of ids "
                                       "to tokens")
        if self.num_terms == 0:
            raise InvalidArgumentError("LdaModel: cannot compute LDA over an empty collection "
                                       "(no terms)")
        for name, v, lo in (("num_topics", num_topics, 1), ("chunksize", chunksize, 1),
                            ("passes", passes, 1), ("update_every", update_every, 0),
                            ("iterations", iterations, 1)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
                raise InvalidArgumentError(f"{name}: {v!r}; must be an integer >= {lo}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise InvalidArgumentError(f"dtype: {dtype}; must be float32 or float64")
        self.num_topics, self.chunksize, self.passes = int(num_topics), int(chunksize), int(passes)
        self.update_every, self.iterations = int(update_every), int(iterations)
        self.decay, self.offset = float(decay), float(offset)
        self.eval_every, self.gamma_threshold = eval_every, float(gamma_threshold)
        self.minimum_probability = float(minimum_probability)
        self.minimum_phi_value, self.per_word_topics = float(minimum_phi_value), per_word_topics
        self.distributed, self.callbacks = bool(distributed), callbacks
        self.dtype = np.dtype(dtype)
        self.numworkers = 1
        if not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or \
                workers < 0:
            raise InvalidArgumentError(f"workers: {workers!r}; must be an integer >= 0 "
                                       "(0: every core)")
        self.workers = int(workers) or cpu_count()
        self._pool = None
        self._scratch: list[np.ndarray] = []
        self.pass_hook = None                    # called with each pass's number, after it
        self.num_updates = 0
        self.random_state = _random_state(random_state)
        self.alpha, self.optimize_alpha = _prior(alpha, "alpha", self.num_topics,
                                                 self.num_topics)
        self.eta, self.optimize_eta = _prior(eta, "eta", self.num_topics, self.num_terms,
                                             allow_matrix=True)
        self.state = LdaState(self.eta, (self.num_topics, self.num_terms), self.dtype)
        self.state.sstats[...] = self.random_state.gamma(100.0, 1.0 / 100.0,
                                                         (self.num_topics, self.num_terms))
        self.sync_state()
        if corpus is not None:
            self.update(corpus)

    def _peek_terms(self, corpus):
        """num_terms from the corpus itself (no id2word): one pass, gensim's way."""
        if scipy.sparse.issparse(corpus):
            self.num_terms = corpus.shape[1]
            return corpus
        corpus = list(corpus) if iter(corpus) is corpus else corpus
        top = -1
        for doc in corpus:
            for i, _ in doc:
                top = max(top, int(i))
        self.num_terms = top + 1
        self.id2word = {i: str(i) for i in range(self.num_terms)}
        return corpus

    # ---- the state ------------------------------------------------------------------------

    @property
    def expElogbeta(self) -> np.ndarray:
        """exp(E[log beta]), topics x terms (gensim's attribute): a view of the one copy,
        kept terms x topics for the E-step's row reads."""
        return self._eb_t.T

    def sync_state(self, current_Elogbeta: np.ndarray | None = None) -> None:
        """exp(E[log beta]) from lambda (compiled: a term's row of every topic at a time),
        computed in slices of terms on the E-step's threads."""
        k, v = self.num_topics, self.num_terms
        self._topics_cache = None
        self._eb_t = np.empty((v, k), self.dtype)
        if current_Elogbeta is not None:
            def rows(a: int, b: int) -> None:
                np.exp(current_Elogbeta[:, a:b].T, out=self._eb_t[a:b], casting="unsafe")
        else:
            from .._lda import digamma_array, exp_elog_rows
            lam = np.ascontiguousarray(self.state.sstats, self.dtype)
            eta = np.ascontiguousarray(self.state.eta, np.float64)
            sums = lam.sum(axis=1, dtype=np.float64) + (
                eta.sum(axis=1) if eta.ndim == 2 else eta.sum())
            base = np.empty(k)
            digamma_array(sums, base)

            def rows(a: int, b: int) -> None:
                exp_elog_rows(lam, eta.ravel(), eta.ndim == 2, base, self._eb_t, a, b)

        self._in_parallel(rows, v)

    def _in_parallel(self, fn, n: int) -> None:
        """fn(a, b) over about equal slices of range(n), one per thread (numpy and scipy's
        element-wise loops run without the GIL)."""
        parts = max(1, min(self.workers, n))
        cuts = np.linspace(0, n, parts + 1).astype(int)
        if parts == 1:
            fn(0, n)
            return
        list(self._threads().map(lambda i: fn(cuts[i], cuts[i + 1]), range(parts)))

    def _threads(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lda")
        return self._pool

    def get_topics(self) -> np.ndarray:
        """topics x terms: each topic's word probabilities."""
        return self._topics().copy()

    def _topics(self) -> np.ndarray:
        """get_topics, computed once per state (sync_state forgets it)."""
        if self._topics_cache is None:
            lam = self.state.get_lambda()
            self._topics_cache = (lam / lam.sum(axis=1, keepdims=True)).astype(self.dtype)
        return self._topics_cache

    # ---- the E-step -----------------------------------------------------------------------

    def _chunk_csr(self, chunk) -> scipy.sparse.csr_matrix:
        """A chunk (bag-of-words documents, or a sparse documents x terms matrix) as CSR."""
        if scipy.sparse.issparse(chunk):
            parts = list(_as_chunks(chunk, max(chunk.shape[0], 1), self.num_terms, self.dtype))
            return parts[0] if parts else scipy.sparse.csr_matrix((0, self.num_terms),
                                                                  dtype=self.dtype)
        return bows_to_csr(list(chunk), self.num_terms, self.dtype)

    def inference(self, chunk, collect_sstats: bool = False):
        """(gamma: documents x topics, sstats: topics x terms or None) for a chunk (a list
        of bag-of-words documents, or CSR documents x terms)."""
        m = self._chunk_csr(chunk)
        gamma = self.random_state.gamma(100.0, 1.0 / 100.0, (m.shape[0], self.num_topics))
        sstats_t = np.zeros((self.num_terms, self.num_topics) if collect_sstats else (0, 0),
                            dtype=self.dtype)
        self._run_estep(m, gamma, sstats_t)
        if not collect_sstats:
            return gamma, None
        return gamma, sstats_t.T * self.expElogbeta

    def _run_estep(self, m, gamma, sstats_t) -> int:
        return run_estep(m, self._eb_t, self.alpha, gamma, sstats_t, self.iterations,
                         self.gamma_threshold, self.workers, self._threads, self._scratch)

    def do_estep(self, chunk, state: LdaState | None = None) -> np.ndarray:
        """The E-step of a chunk, its statistics added into `state` (default: the model's)."""
        gamma, sstats = self.inference(chunk, collect_sstats=True)
        state = self.state if state is None else state
        state.sstats += sstats.astype(state.sstats.dtype, copy=False)
        state.numdocs += gamma.shape[0]
        return gamma

    # ---- the M-step -----------------------------------------------------------------------

    def update_alpha(self, gammat: np.ndarray, rho: float) -> np.ndarray:
        logphat = dirichlet_expectation(gammat).mean(axis=0)
        self.alpha = update_dir_prior(self.alpha, len(gammat), logphat, rho)
        return self.alpha

    def update_eta(self, lambdat: np.ndarray, rho: float) -> np.ndarray:
        if self.eta.ndim != 1:
            raise InvalidArgumentError("eta='auto' learns one value per term, not a matrix")
        logphat = dirichlet_expectation(lambdat).mean(axis=0)
        self.eta = update_dir_prior(self.eta, lambdat.shape[0], logphat, rho)
        self.state.eta = self.eta
        return self.eta

    def do_mstep(self, rho: float, other: LdaState, extra_pass: bool = False) -> None:
        """Blend a chunk's statistics into the topics."""
        self.state.blend(rho, other)
        self.sync_state()
        if not extra_pass:
            self.num_updates += other.numdocs

    # ---- training -------------------------------------------------------------------------

    def update(self, corpus, chunksize: int | None = None, decay: float | None = None,
               offset: float | None = None, passes: int | None = None,
               update_every: int | None = None, eval_every: int | None = None,
               iterations: int | None = None, gamma_threshold: float | None = None,
               chunks_as_numpy: bool = False) -> None:
        """Train on `corpus` (online: every update_every chunks an M-step; 0: once per pass)."""
        chunksize = self.chunksize if chunksize is None else int(chunksize)
        decay = self.decay if decay is None else float(decay)
        offset = self.offset if offset is None else float(offset)
        passes = self.passes if passes is None else int(passes)
        update_every = self.update_every if update_every is None else int(update_every)
        eval_every = self.eval_every if eval_every is None else eval_every
        if iterations is not None:
            self.iterations = int(iterations)
        if gamma_threshold is not None:
            self.gamma_threshold = float(gamma_threshold)
        if chunksize < 1 or passes < 1 or update_every < 0:
            raise InvalidArgumentError("update: chunksize and passes must be >= 1, "
                                       "update_every >= 0")
        if scipy.sparse.issparse(corpus):
            lencorpus = corpus.shape[0]
        elif isinstance(corpus, CsrCorpus):
            lencorpus = len(corpus)
        else:
            is_many, corpus = is_corpus(corpus)
            if not is_many:
                raise InvalidArgumentError("update: expected a corpus (documents of "
                                           "(term id, count) pairs), got one document")
            if iter(corpus) is corpus:                   # a one-shot iterator: passes need it
                corpus = list(corpus)
            lencorpus = len(corpus)
        if lencorpus == 0:
            log.warning("LdaModel.update: an empty corpus; the model is unchanged")
            return
        self.state.numdocs += lencorpus
        every = update_every * chunksize if update_every else lencorpus
        every_chunks = max(1, every // chunksize)

        def rho(pass_: int) -> float:
            return (offset + pass_ + self.num_updates / chunksize) ** -decay

        remote = self.remote if self.distributed else None
        if remote is not None:
            self.numworkers = remote.open(self.num_terms, self.num_topics, self.dtype,
                                          self.iterations, self.gamma_threshold)
            self._update_id = (getattr(self, "_update_id", -1) + 1) % (1 << 18)
        try:
            for pass_ in range(passes):
                other = LdaState(self.eta, self.state.sstats.shape, self.dtype)
                dirty, seen = False, 0
                chunks = _as_chunks(corpus, chunksize, self.num_terms, self.dtype)
                for chunk_no, m in enumerate(_ahead(chunks) if self.workers > 1 else chunks):
                    seen += m.shape[0]
                    if eval_every and (seen == lencorpus or (chunk_no + 1) % eval_every == 0):
                        self.log_perplexity(m, total_docs=lencorpus)
                    gamma = self.do_estep(m, other) if remote is None else \
                        self._remote_estep(remote, chunk_no, m, other, chunksize)
                    if self.optimize_alpha:
                        self.update_alpha(gamma, rho(pass_))
                    dirty = True
                    if (chunk_no + 1) % every_chunks == 0:
                        self._mstep_of(other, rho(pass_), pass_)
                        other = LdaState(self.eta, self.state.sstats.shape, self.dtype)
                        dirty = False
                if dirty:
                    self._mstep_of(other, rho(pass_), pass_)
                log.info("LDA pass %d/%d over %d documents%s", pass_ + 1, passes, lencorpus,
                         f" on {self.numworkers} node(s)" if remote is not None else "")
                if self.pass_hook is not None:
                    self.pass_hook(pass_)
        finally:
            if remote is not None:
                remote.close()

    def _remote_estep(self, remote, chunk_no: int, m, other: LdaState,
                      chunksize: int) -> np.ndarray:
        """A chunk's E-step split over the cluster's nodes (`remote`), its documents starting
        from the gamma local training would draw: local training's result, the statistics
        added into other's."""
        if chunk_no >= 1 << 24:
            raise InvalidArgumentError(f"chunksize: {chunksize}; more than 2**24 chunks in "
                                       f"one update on the cluster")
        gamma0 = self.random_state.gamma(100.0, 1.0 / 100.0, (m.shape[0], self.num_topics))
        gamma = remote.estep_chunk((self._update_id << 24) | chunk_no, m, gamma0,
                                   self._eb_t, self.alpha, other.sstats)
        other.numdocs += m.shape[0]
        return gamma

    def _mstep_of(self, other: LdaState, rho: float, pass_: int) -> None:
        """The M-step of `other`."""
        if self.optimize_eta:
            self.update_eta(self.state.get_lambda(), rho)
        self.do_mstep(rho, other, pass_ > 0)

    # ---- quality --------------------------------------------------------------------------

    def bound(self, corpus, gamma: np.ndarray | None = None, subsample_ratio: float = 1.0
              ) -> float:
        """The variational lower bound of log p(corpus) (a chunk scaled by subsample_ratio
        to stand for a corpus)."""
        lam = self.state.get_lambda().astype(np.float64)
        elogbeta = dirichlet_expectation(lam)
        score = 0.0
        first = 0
        for m in _as_chunks(corpus, max(self.chunksize, 1), self.num_terms, np.float64):
            if gamma is None:
                g, _ = self.inference(m)
            else:
                g = np.asarray(gamma[first:first + m.shape[0]], np.float64)
            first += m.shape[0]
            elogtheta = dirichlet_expectation(g)
            for d in range(m.shape[0]):
                ids = m.indices[m.indptr[d]:m.indptr[d + 1]]
                cts = m.data[m.indptr[d]:m.indptr[d + 1]]
                if len(ids):
                    x = elogtheta[d][:, None] + elogbeta[:, ids]
                    top = x.max(axis=0)
                    score += float(cts @ (top + np.log(np.exp(x - top).sum(axis=0))))
            score += float(((self.alpha - g) * elogtheta).sum())
            score += float((gammaln(g) - gammaln(self.alpha)).sum())
            score += float((gammaln(self.alpha.sum()) - gammaln(g.sum(axis=1))).sum())
        score *= subsample_ratio
        eta = self.eta if self.eta.ndim == 2 else self.eta[None, :]
        score += float(((eta - lam) * elogbeta).sum())
        score += float((gammaln(lam) - gammaln(eta)).sum())
        score += float((gammaln(np.broadcast_to(eta, lam.shape).sum(axis=1))
                        - gammaln(lam.sum(axis=1))).sum())
        return score

    def log_perplexity(self, chunk, total_docs: int | None = None) -> float:
        """The per-word bound of a chunk standing for `total_docs` documents (perplexity:
        2 ** -bound)."""
        m = self._chunk_csr(chunk)
        if m.shape[0] == 0:
            raise InvalidArgumentError("log_perplexity: an empty chunk")
        total_docs = m.shape[0] if total_docs is None else total_docs
        ratio = total_docs / m.shape[0]
        words = float(m.sum())
        per_word = self.bound(m, subsample_ratio=ratio) / (ratio * max(words, 1e-12))
        log.info("%.3f per-word bound, %.1f perplexity estimate based on a held-out corpus "
                 "of %d documents with %.0f words", per_word, np.exp2(-per_word),
                 m.shape[0], words)
        return per_word

    # ---- topics and documents -------------------------------------------------------------

    def get_topic_terms(self, topicid: int, topn: int = 10) -> list[tuple[int, float]]:
        topic = self._topics()[topicid]
        best = np.argsort(-topic, kind="stable")[:topn]
        return [(int(i), topic[i]) for i in best]        # numpy scalars, as gensim's

    def show_topic(self, topicid: int, topn: int = 10) -> list[tuple[str, float]]:
        return [(self._word(i), p) for i, p in self.get_topic_terms(topicid, topn)]

    def print_topic(self, topicno: int, topn: int = 10) -> str:
        return " + ".join(f'{p:.3f}*"{w}"' for w, p in self.show_topic(topicno, topn))

    def show_topics(self, num_topics: int = 10, num_words: int = 10, log: bool = False,
                    formatted: bool = True) -> list:
        """Topics (all when num_topics < 0 or >= the model's): gensim picks a spread of
        them by alpha when asked for fewer, here the ones with the largest alpha."""
        if num_topics < 0 or num_topics >= self.num_topics:
            chosen = range(self.num_topics)
        else:
            chosen = sorted(np.argsort(-self.alpha, kind="stable")[:num_topics].tolist())
        shown = []
        for i in chosen:
            topic = self.print_topic(i, num_words) if formatted else \
                self.show_topic(i, num_words)
            shown.append((i, topic))
            if log:
                logging.getLogger("engine").info("topic #%d (%.3f): %s", i, self.alpha[i],
                                                 topic)
        return shown

    def print_topics(self, num_topics: int = 20, num_words: int = 10) -> list:
        return self.show_topics(num_topics, num_words, log=True)

    def _word(self, i: int) -> str:
        return str(self.id2word[i]) if self.id2word is not None else str(i)

    def get_term_topics(self, word_id, minimum_probability: float | None = None
                        ) -> list[tuple[int, float]]:
        """[(topic, p(term | topic))] for the topics where it is at least
        minimum_probability (a term id, or a token with a Dictionary as id2word)."""
        minimum_probability = max(self.minimum_probability if minimum_probability is None
                                  else minimum_probability, 1e-8)
        if isinstance(word_id, str):
            word_id = self.id2word.token2id[word_id]
        col = self._topics()[:, int(word_id)]
        return [(k, p) for k, p in enumerate(col) if p >= minimum_probability]

    def get_document_topics(self, bow, minimum_probability: float | None = None,
                            minimum_phi_value: float | None = None,
                            per_word_topics: bool = False):
        """A document's topic mix [(topic, probability)] (those at least
        minimum_probability); with per_word_topics also each word's likeliest topics and
        its phi values, as gensim returns them. A corpus gives one per document."""
        is_many, bow = is_corpus(bow)
        if is_many:
            return [self.get_document_topics(d, minimum_probability, minimum_phi_value,
                                             per_word_topics) for d in bow]
        minimum_probability = max(self.minimum_probability if minimum_probability is None
                                  else minimum_probability, 1e-8)
        minimum_phi_value = max(self.minimum_phi_value if minimum_phi_value is None
                                else minimum_phi_value, 1e-8)
        m = self._chunk_csr([bow])
        gamma, _ = self.inference(m)
        theta = gamma[0] / gamma[0].sum()
        theta = theta.astype(self.dtype)
        topics = [(k, p) for k, p in enumerate(theta) if p >= minimum_probability]
        if not per_word_topics:
            return topics
        elog = np.exp(dirichlet_expectation(gamma[0]))
        word_topics, phi_values = [], []
        for i, c in zip(m.indices.tolist(), m.data.tolist()):
            phi = elog * self.expElogbeta[:, i]
            phi = phi / (phi.sum() + float(np.finfo(self.dtype).eps))
            kept = [(k, self.dtype.type(v * c)) for k, v in enumerate(phi)
                    if v >= minimum_phi_value]
            phi_values.append((i, kept))
            word_topics.append((i, [k for k, _ in sorted(kept, key=lambda x: -x[1])]))
        return topics, word_topics, phi_values

    def __getitem__(self, bow):
        return self.get_document_topics(bow, per_word_topics=self.per_word_topics)

    def top_topics(self, corpus=None, texts=None, dictionary=None, window_size=None,
                   coherence: str = "u_mass", topn: int = 20, processes: int = -1) -> list:
        """Topics with their u_mass coherence (Mimno et al. 2011, over `corpus`'s
        documents: the mean over ordered pairs of a topic's top words of
        log((D(w_i, w_j) + 1) / D(w_j)), w_j the more probable), best first."""
        if coherence != "u_mass":
            raise InvalidArgumentError(f"top_topics: coherence {coherence!r}; engine "
                                       "computes 'u_mass' (from a corpus)")
        if corpus is None:
            raise InvalidArgumentError("top_topics: u_mass needs the corpus")
        topics = self._topics()
        best = np.argsort(-topics, axis=1, kind="stable")[:, :topn]
        tops = [row.tolist() for row in best]
        words = sorted({i for t in tops for i in t})
        col = {w: j for j, w in enumerate(words)}
        co = np.zeros((len(words),) * 2)       # documents holding both: chunk by chunk
        for m in _as_chunks(corpus, 4096, self.num_terms, np.float64):
            x = (m[:, words] > 0).astype(np.float64)
            co += (x.T @ x).toarray()
        out = []
        for k, t in enumerate(tops):
            s, n = 0.0, 0
            for a in range(1, len(t)):
                for b in range(a):
                    d_b = co[col[t[b]], col[t[b]]]
                    if d_b > 0:
                        s += np.log((co[col[t[a]], col[t[b]]] + 1.0) / d_b)
                    n += 1
            topic = [(topics[k, i], self._word(i)) for i in t]
            out.append((topic, s / max(n, 1)))
        return sorted(out, key=lambda x: -x[1])

    def __repr__(self) -> str:
        return (f"LdaModel<num_terms={self.num_terms}, num_topics={self.num_topics}, "
                f"decay={self.decay}, chunksize={self.chunksize}>")

    # ---- saving ---------------------------------------------------------------------------

    def save(self, fname: str, separately=None, sep_limit: int = 10 * 1024 ** 2,
             ignore=frozenset(), pickle_protocol: int = 4) -> None:
        """One .npz file (no pickle), written atomically: the statistics, the priors, the
        settings and the id -> token mapping (left out when `ignore` names "id2word").
        gensim's storage options (separately, sep_limit, pickle_protocol) are accepted
        and change nothing: the file is always the one .npz, with exp(E[log beta]) beside
        the statistics so that load(mmap="r") maps both; a name ending in .gz compresses
        it (then it cannot be mapped)."""
        ignore = {ignore} if isinstance(ignore, str) else set(ignore or ())
        meta = {"format": FORMAT, "version": VERSION, "num_topics": self.num_topics,
                "num_terms": self.num_terms, "chunksize": self.chunksize,
                "passes": self.passes, "update_every": self.update_every,
                "decay": self.decay, "offset": self.offset, "eval_every": self.eval_every,
                "iterations": self.iterations, "gamma_threshold": self.gamma_threshold,
                "minimum_probability": self.minimum_probability,
                "minimum_phi_value": self.minimum_phi_value,
                "per_word_topics": bool(self.per_word_topics),
                "optimize_alpha": self.optimize_alpha, "optimize_eta": self.optimize_eta,
                "num_updates": self.num_updates, "numdocs": self.state.numdocs,
                "dtype": self.dtype.name,
                "id2word": [[int(i), str(t)] for i, t in sorted(self.id2word.items())]
                if self.id2word is not None and "id2word" not in ignore else None}
        blob = np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), np.uint8)
        save = np.savez_compressed if str(fname).endswith(".gz") else np.savez
        with atomic_file(str(fname), "wb") as fh:
            save(fh, sstats=self.state.sstats, eb_t=self._eb_t, alpha=self.alpha, eta=self.eta,
                 meta=blob)

    @classmethod
    def load(cls, fname: str, mmap=None) -> LdaModel:
        """Read a model written by save(); with mmap ("r", "r+", "c", as numpy's
        mmap_mode) the statistics and exp(E[log beta]) are mapped from the file, not read
        (a compressed file cannot be mapped: an OSError)."""
        fname = str(fname)
        if not os.path.exists(fname):
            raise MissingFileError(f"{fname}: LDA model file not found")
        if mmap not in (None, "r", "r+", "c"):
            raise InvalidArgumentError(f"LdaModel.load: mmap {mmap!r} is not None, 'r', "
                                       f"'r+' or 'c'")
        eb_t = None
        try:
            with np.load(fname, allow_pickle=False) as z:
                alpha, eta = z["alpha"], z["eta"]
                meta = json.loads(z["meta"].tobytes().decode("utf-8"))
                mapped = mmap is not None and "eb_t" in z.files
                if not mapped:
                    sstats = z["sstats"]
            if mapped:
                sstats, eb_t = (map_npz_member(fname, n, mmap) for n in ("sstats", "eb_t"))
        except FileAccessError:
            raise                                # a compressed file asked to be mapped
        except (OSError, ValueError, KeyError) as exc:
            raise FormatError(f"{fname}: not an engine LDA model ({exc})") from None
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise FormatError(f"{fname}: not an engine LDA model of version {VERSION}")
        k, v = meta["num_topics"], meta["num_terms"]
        if sstats.shape != (k, v) or alpha.shape != (k,) or eta.shape not in ((v,), (k, v)):
            raise FormatError(f"{fname}: arrays do not match {k} topics x {v} terms")
        id2word = {int(i): t for i, t in meta["id2word"]} if meta["id2word"] is not None \
            else None
        model = LdaModel(None, k, id2word if id2word is not None else {v - 1: ""}, False, meta["chunksize"], meta["passes"],
                    meta["update_every"], alpha, eta, meta["decay"], meta["offset"],
                    meta["eval_every"], meta["iterations"], meta["gamma_threshold"],
                    meta["minimum_probability"], None, None, meta["minimum_phi_value"],
                    meta["per_word_topics"], None, np.dtype(meta["dtype"]))
        model.__class__ = cls                    # LdaMulticore.load gives an LdaMulticore
        model.id2word = id2word
        model.optimize_alpha, model.optimize_eta = meta["optimize_alpha"], meta["optimize_eta"]
        model.num_updates = meta["num_updates"]
        model.state.sstats = sstats if eb_t is not None else sstats.astype(model.dtype)
        model.state.numdocs = meta["numdocs"]
        if eb_t is not None and eb_t.shape == (v, k) and eb_t.dtype == model.dtype:
            model._eb_t, model._topics_cache = eb_t, None
        else:
            model.sync_state()
        return model


class LdaMulticore(LdaModel):
    """gensim's LdaMulticore signature. engine's LdaModel already runs each chunk's E-step
    on every core (threads; the compiled E-step needs no GIL), so this is LdaModel with
    `workers` threads: the same model whatever the number of workers (gensim's updates
    once per `workers` chunks instead), and `alpha="auto"` works. `batch=True`: one
    M-step per pass."""

    def __init__(self, corpus=None, num_topics: int = 100, id2word=None,
                 workers: int | None = None, chunksize: int = 2000, passes: int = 1,
                 batch: bool = False, alpha="symmetric", eta=None, decay: float = 0.5,
                 offset: float = 1.0, eval_every: int | None = 10, iterations: int = 50,
                 gamma_threshold: float = 0.001, random_state=None,
                 minimum_probability: float = 0.01, minimum_phi_value: float = 0.01,
                 per_word_topics: bool = False, dtype=np.float32):
        super().__init__(corpus, num_topics, id2word, False, chunksize, passes,
                         0 if batch else 1, alpha, eta, decay, offset, eval_every, iterations,
                         gamma_threshold, minimum_probability, random_state, None,
                         minimum_phi_value, per_word_topics, None, dtype,
                         workers=0 if workers is None else workers)
