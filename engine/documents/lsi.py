"""Latent semantic indexing: a truncated SVD of the TF-IDF terms x documents matrix, with
gensim's LsiModel names (`model[bow]`, `projection.u`, `projection.s`, show_topics ...).

The corpus is read once: it is written as CSR blocks into a temporary BlockCache, and the
SVD runs over that cache (engine.documents.svd, engine.documents.parallel). Two algorithms:

* "stochastic": the randomized range finder in 2 + power_iters passes over the cache, the
  products split across processes x threads. "auto" picks it: it is faster than "merge"
  and than gensim, at gensim's triplet accuracy (see docs/benchmarks.md, "LSI" and "What
  was tried and rejected").
* "merge": one pass; chunks of `chunksize` documents are decomposed independently (one
  chunk per process or thread at a time) and merged pairwise in a fixed tree (Rehurek's
  one-pass algorithm, the scheme a cluster distributes). Every part is cut to num_topics
  before merging, which loses some accuracy on the small singular values.

Adding documents to a trained model merges their decomposition into it (with `decay`), as
gensim does. `onepass` is accepted for gensim's signature: engine reads the corpus once
whatever it says; `method` picks the algorithm.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from ..runtime.atomic import atomic_file
from ..errors import (FileAccessError, FormatError, InvalidArgumentError, MissingFileError,
                      NotSupportedError)
from ..runtime.procs import ProcessPool
from .blocks import BlockCache, bows_to_csr, group_chunks, map_npz_member, read_block
from .parallel import PIECE_NNZ, LocalPasses, PoolPasses, Split, choose_split, plan_pieces
from .svd import Decomposition, merge, merge_all, one_blas_thread, stochastic_svd
from .tfidf import TransformedCorpus, is_corpus

log = logging.getLogger("engine")

METHODS = ("auto", "stochastic", "merge")
FORMAT = "engine-lsi"
VERSION = 1
FULL2SPARSE_EPS = 1e-9           # gensim drops topic weights this small from model[bow]
CACHE_BLOCK_DOCS = 2048          # documents per cache block written from an API corpus


# ---- the training settings and the core routine -----------------------------------------------

@dataclass(frozen=True)
class SvdSettings:
    """What the decomposition needs, whoever calls it (LsiModel, the job)."""
    num_topics: int = 200
    chunksize: int = 20_000
    decay: float = 1.0
    power_iters: int = 2
    extra_samples: int = 100
    dtype: str = "float64"
    seed: int = 0
    method: str = "auto"
    processes: int = 0
    blas_threads: int = 0

    def resolved_method(self) -> str:
        if self.method not in METHODS:
            raise InvalidArgumentError(f"method: {self.method!r} is not one of "
                                       f"{', '.join(METHODS)}")
        return "stochastic" if self.method == "auto" else self.method

    def check(self) -> None:
        """One InvalidArgumentError (a ConfigError, and a ValueError as gensim raises)
        naming the first bad setting."""
        self.resolved_method()
        for name in ("num_topics", "chunksize"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name}: {getattr(self, name)}; must be at least 1")
        for name in ("power_iters", "extra_samples"):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(f"{name}: {getattr(self, name)}; must be 0 or more")
        if not 0 < self.decay <= 1:
            raise InvalidArgumentError(f"decay: {self.decay}; must be in (0, 1]")
        try:
            ok = np.dtype(self.dtype) in (np.float32, np.float64)
        except TypeError:
            ok = False
        if not ok:
            raise InvalidArgumentError(f"dtype: {self.dtype}; must be float32 or float64")


@dataclass
class TrainReport:
    """What train_decomposition did: the split and why, the method, the time it took."""
    method: str
    split: Split
    seconds: float
    n_docs: int
    nnz: int
    cluster: dict | None = None     # a cluster's decomposition: nodes, shares, losses


def decompose_part(blocks: list, first_doc: int, n_terms: int, settings: SvdSettings,
                   threads: int, rank: int | None = None) -> Decomposition:
    """One part's own decomposition (a chunk of the merge method, a cluster node's
    share), in whichever process runs it, its products split over `threads`: `rank`
    factors (default num_topics) of the documents first_doc.. in `blocks`. The sketch
    depends only on the documents' numbers, so the result does not depend on who
    computes it."""
    with one_blas_thread():
        pieces = plan_pieces(blocks, settings.chunksize, threads, first_doc)
        passes = LocalPasses(pieces, n_terms, settings.dtype, threads)
        return stochastic_svd(passes, rank or settings.num_topics, settings.extra_samples,
                              settings.power_iters, settings.seed, settings.dtype, threads)


@dataclass(frozen=True)
class Share:
    """Documents first_doc .. first_doc + n_docs of the corpus, decomposed apart (a
    cluster node's unit of work): rows lo..hi of each cached block in `segments`
    ((path, lo, hi), in order)."""
    first_doc: int
    n_docs: int
    nnz: int
    segments: tuple


def _row_offsets(path: str) -> np.ndarray:
    """A block file's row pointer (its first two records), without its data."""
    with open(path, "rb") as fh:
        np.load(fh)
        return np.load(fh)


def plan_shares(blocks: Sequence, count: int) -> list[Share]:
    """The cached blocks cut into `count` contiguous shares of about equal nonzeros (the
    work), at document granularity (a share may begin or end inside a block); fewer when
    there are fewer documents."""
    blocks = list(blocks)
    n_docs = sum(b.n_docs for b in blocks)
    total = sum(b.nnz for b in blocks)
    count = max(1, min(count, n_docs))
    # the document at which each share ends: where the running nonzeros pass i/count
    ptrs, base = [], 0
    for b in blocks:
        ptrs.append(_row_offsets(b.path)[:b.n_docs + 1] + base)
        base += b.nnz
    cum = np.concatenate([p[1:] for p in ptrs]) if ptrs else np.zeros(0, np.int64)
    targets = [total * i / count for i in range(1, count)]
    ends = sorted(set(int(np.searchsorted(cum, t, "left")) + 1 for t in targets))
    ends = [e for e in ends if 0 < e < n_docs] + [n_docs]
    shares, start = [], 0
    for end in ends:
        segments, doc0 = [], 0
        for b in blocks:
            lo, hi = max(start, doc0) - doc0, min(end, doc0 + b.n_docs) - doc0
            if lo < hi:
                segments.append((b.path, lo, hi))
            doc0 += b.n_docs
        nnz = int(cum[end - 1] - (cum[start - 1] if start else 0))
        shares.append(Share(start, end - start, nnz, tuple(segments)))
        start = end
    return shares


def share_pieces(share: Share, n_terms: int, dtype=None):
    """The share's documents as CSR matrices (one per block it touches), in order."""
    for path, lo, hi in share.segments:
        m = read_block(path)[lo:hi]
        if m.shape[1] != n_terms:
            m = scipy.sparse.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], n_terms))
        yield m if dtype is None or m.dtype == dtype else m.astype(dtype)


def decompose_share(share: Share, n_terms: int, settings: SvdSettings, threads: int = 1,
                    rank: int | None = None, folder: str | None = None) -> Decomposition:
    """A share's decomposition computed here: its documents copied into a cache of their
    own, then decompose_part (what a node does with the blocks it is sent)."""
    with BlockCache(folder) as cache:
        for m in share_pieces(share, n_terms, np.dtype(settings.dtype)):
            cache.add(m)
        return decompose_part(cache.blocks, share.first_doc, n_terms, settings, threads, rank)


def share_rank(settings: SvdSettings, n_terms: int) -> int:
    """Factors each share's decomposition keeps for the merge: num_topics plus
    extra_samples. A share cut to num_topics before the merge loses its small singular
    values; the extra factors keep the merged values closer to those of a stochastic SVD
    of the whole corpus."""
    return max(1, min(settings.num_topics + settings.extra_samples, n_terms))


def train_decomposition(blocks: Sequence, n_terms: int, settings: SvdSettings
                        ) -> tuple[Decomposition, TrainReport]:
    """The rank-num_topics decomposition of the documents in `blocks` (a BlockCache's
    BlockInfos), with the processes x threads chosen for them (logged); a pool of
    processes is started only when that asks for more than one."""
    settings.check()
    method = settings.resolved_method()
    start = time.perf_counter()
    n_docs = sum(b.n_docs for b in blocks)
    nnz = sum(b.nnz for b in blocks)
    width = min(settings.num_topics + settings.extra_samples, n_terms, max(n_docs, 1))
    passes = 2 * settings.power_iters + 2
    split = choose_split(settings.processes, settings.blas_threads, nnz, width, passes)
    log.info("LSI: %s SVD of %d documents x %d terms (%d nonzeros), %d topics: %d "
             "process(es) x %d thread(s): %s", method, n_docs, n_terms, nnz,
             settings.num_topics, split.processes, split.threads, split.reason)
    pool = ProcessPool(split.processes, name="engine-lsi") if split.processes > 1 else None
    try:
        with one_blas_thread():           # all the parallelism is ours: see engine.documents.parallel
            if method == "stochastic":
                result = _stochastic(blocks, n_terms, settings, split, pool)
            else:
                result = _merged(blocks, n_terms, settings, split, pool)
    finally:
        if pool is not None:
            pool.close()
    seconds = time.perf_counter() - start
    log.info("LSI: %d factors in %.1f s", len(result.s), seconds)
    return result, TrainReport(method, split, seconds, n_docs, nnz)


def _stochastic(blocks, n_terms, settings, split, pool) -> Decomposition:
    pieces = plan_pieces(blocks, settings.chunksize, split.lanes)
    if split.processes > 1:
        with PoolPasses(pool, pieces, n_terms, settings.dtype, split.threads) as passes:
            return stochastic_svd(passes, settings.num_topics, settings.extra_samples,
                                  settings.power_iters, settings.seed, settings.dtype,
                                  split.lanes)
    passes = LocalPasses(pieces, n_terms, settings.dtype, split.threads)
    return stochastic_svd(passes, settings.num_topics, settings.extra_samples,
                          settings.power_iters, settings.seed, settings.dtype, split.threads)


def _merged(blocks, n_terms, settings, split, pool) -> Decomposition:
    """Each chunk decomposed on its own, P x T at a time; the parent merges them as they
    come (on one thread: the others are still decomposing)."""
    by_path = {b.path: b for b in blocks}
    chunks = [([by_path[p] for p in c.paths], c.first_doc)
              for c in group_chunks(blocks, settings.chunksize)]
    if split.processes > 1:
        parts = pool.map(decompose_part, [(*c, n_terms, settings, split.threads)
                                           for c in chunks])
    elif split.threads > 1 and len(chunks) > 1:
        parts = _threaded_parts(chunks, n_terms, settings, split.threads)
    else:
        parts = (decompose_part(*c, n_terms, settings, split.threads) for c in chunks)
    result = merge_all(parts, settings.num_topics, settings.decay)
    if result is None:
        return Decomposition(np.zeros((n_terms, 0), dtype=settings.dtype),
                             np.zeros(0, dtype=settings.dtype))
    return result


def _threaded_parts(chunks, n_terms, settings, threads):
    """Chunks decomposed `threads` at a time in this process, yielded in order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads, thread_name_prefix="lsi") as ex:
        futures = []
        for c in chunks:
            futures.append(ex.submit(decompose_part, *c, n_terms, settings, 1))
            if len(futures) > threads:
                yield futures.pop(0).result()
        for f in futures:
            yield f.result()


# ---- the model ----------------------------------------------------------------------------------

class Projection:
    """The model's decomposition, gensim's names: `u` (num_terms x topics), `s`."""

    def __init__(self, m: int, k: int, u: np.ndarray | None = None,
                 s: np.ndarray | None = None):
        self.m, self.k, self.u, self.s = m, k, u, s


class LsiModel:
    """LSI with gensim's names and defaults but one: `dtype` is float32 unless given
    (gensim's is float64). The decomposition computes in it; float32 is about 1.5x faster
    and scores the same (docs/benchmarks.md, LSI). Engine's own keywords: method ("auto",
    "stochastic", "merge"), processes and blas_threads (0 = chosen from the problem and
    the cores; the choice is logged), cache_dir (where the TF-IDF blocks are cached)."""

    decomposer = None       # (blocks, n_terms, settings) -> (Decomposition, TrainReport):
                            # another SVD than train_decomposition's (engine.LsiModel's
                            # cluster, with distributed=True)

    def __init__(self, corpus=None, num_topics: int = 200, id2word: Mapping | None = None,
                 chunksize: int = 20_000, decay: float = 1.0, distributed: bool = False,
                 onepass: bool = True, power_iters: int = 2, extra_samples: int = 100,
                 dtype=np.float32, random_seed: int | None = None, method: str = "auto",
                 processes: int = 0, blas_threads: int = 0, cache_dir: str | None = None):
        if distributed and self.decomposer is None:
            raise NotSupportedError("engine.documents.LsiModel(distributed=True): use "
                                    "engine.LsiModel (nodes=[...] or a name server), or "
                                    "`engine run` with [lsi] and [cluster]")
        self.distributed = bool(distributed)
        if corpus is None and id2word is None:
            raise InvalidArgumentError("LsiModel: give a corpus or id2word (the number of "
                                       "terms comes from one of them)")
        self.id2word = id2word if id2word is not None and not isinstance(id2word, TermIds) \
            else TermIds(self)
        self.num_topics = int(num_topics)
        self.chunksize = int(chunksize)
        self.decay = float(decay)
        self.onepass = bool(onepass)
        self.power_iters, self.extra_samples = int(power_iters), int(extra_samples)
        self.dtype = np.dtype(dtype).type
        self.random_seed = (int(np.random.SeedSequence().entropy % 2**63)
                            if random_seed is None else int(random_seed))
        self.method, self.processes, self.blas_threads = method, processes, blas_threads
        self.cache_dir = cache_dir
        self.num_terms = 1 + max(id2word.keys(), default=-1) if id2word is not None else 0
        self.docs_processed = 0
        self.projection = Projection(self.num_terms, self.num_topics)
        self.last_report: TrainReport | None = None
        self.settings().check()
        if corpus is not None:
            self.add_documents(corpus)

    def settings(self, chunksize: int | None = None, decay: float | None = None,
                 seed_offset: int = 0) -> SvdSettings:
        return SvdSettings(self.num_topics, chunksize or self.chunksize,
                           self.decay if decay is None else decay, self.power_iters,
                           self.extra_samples, np.dtype(self.dtype).name,
                           (self.random_seed + seed_offset) % 2**63, self.method,
                           self.processes, self.blas_threads)

    # ---- training -------------------------------------------------------------------------

    def add_documents(self, corpus, chunksize: int | None = None, decay: float | None = None
                      ) -> None:
        """Decompose `corpus` (bag-of-words documents, or a scipy sparse terms x documents
        matrix, as gensim takes) and merge it into the model."""
        settings = self.settings(chunksize, decay, seed_offset=self.docs_processed)
        with BlockCache(self.cache_dir) as cache:
            if scipy.sparse.issparse(corpus):
                m = scipy.sparse.csr_matrix(corpus.T, dtype=self.dtype)
                self._grow_terms(m.shape[1])
                cache.add_matrix(m, CACHE_BLOCK_DOCS, PIECE_NNZ)
            else:
                self._cache_corpus(corpus, cache)
            update, report = (self.decomposer or train_decomposition)(
                cache.blocks, self.num_terms, settings)
        self.absorb(update, report.n_docs, settings.decay)
        self.last_report = report

    def absorb(self, update: Decomposition, n_docs: int, decay: float | None = None) -> None:
        """Merge a decomposition of new documents into the model (gensim's add step)."""
        decay = self.decay if decay is None else decay
        if n_docs == 0:
            log.warning("LsiModel.add_documents: no documents given")
        if self.projection.u is None:
            u, s = update
        else:
            u, s = merge(Decomposition(self.projection.u, self.projection.s), update,
                         self.num_topics, decay)
        self.projection = Projection(self.num_terms, self.num_topics, u, s)
        self.docs_processed += n_docs

    def _grow_terms(self, width: int) -> None:
        if not isinstance(self.id2word, TermIds) and width > self.num_terms:
            raise InvalidArgumentError(f"corpus has {width} terms but id2word only "
                                       f"{self.num_terms}")
        self.num_terms = max(self.num_terms, width)
        self.projection.m = self.num_terms

    def _cache_corpus(self, corpus: Iterable, cache: BlockCache) -> None:
        """Write a bag-of-words corpus into the cache, in blocks of CACHE_BLOCK_DOCS
        documents or PIECE_NNZ nonzeros, whichever comes first."""
        fixed = not isinstance(self.id2word, TermIds)
        width = self.num_terms if fixed else 0
        batch: list = []
        done = nnz = 0
        weigh = None
        if isinstance(corpus, TransformedCorpus) and hasattr(corpus.model, "weigh") and \
                not callable(getattr(corpus.model, "normalize", None)):
            # tfidf[bows]: the raw documents weighed a block at a time, as CSR, instead of
            # each document weighed into Python tuples and read back (the same numbers)
            weigh, corpus = corpus.model.weigh, corpus.corpus
        for doc in itertools.chain(corpus, [None]):
            if doc is not None:
                batch.append(doc)
                nnz += len(doc)
                if len(batch) < CACHE_BLOCK_DOCS and nnz < PIECE_NNZ:
                    continue
            if not batch:
                break
            raw = width if fixed else \
                max(width, 1 + max((i for d in batch for i, _ in d), default=-1))
            if weigh is None:
                width = raw
                cache.add(bows_to_csr(batch, width, self.dtype, first_doc=done))
            else:
                m = weigh(bows_to_csr(batch, raw, np.float64, first_doc=done), dtype=self.dtype)
                if not fixed:                    # the terms that weigh something, as before
                    width = max(width, int(m.indices.max()) + 1 if m.nnz else 0)
                cache.add(scipy.sparse.csr_matrix((m.data, m.indices, m.indptr),
                                                  shape=(m.shape[0], width)))
            done += len(batch)
            batch, nnz = [], 0
        self._grow_terms(width)

    # ---- using the model -------------------------------------------------------------------

    def __getitem__(self, bow, scaled: bool = False, chunksize: int = 512):
        """Topic weights of one document, [(topic, U^T x)] (divided by s when scaled), as
        gensim's lsi[bow]; for a corpus, a re-iterable stream of them."""
        if self.projection.u is None:
            raise InvalidArgumentError("LsiModel: not trained yet (no documents added)")
        corpus, bow = is_corpus(bow)
        if corpus:
            return TransformedCorpus(_Scaled(self, scaled), bow, chunksize)
        return self.transform_batch([bow], scaled)[0]

    def transform(self, docs: Sequence, scaled: bool = False) -> np.ndarray:
        """Dense topic weights (documents x topics) of a list of bag-of-words documents."""
        m = bows_to_csr(docs, self.num_terms, self.projection.u.dtype)
        out = np.asarray(m @ self.projection.u)
        return out / self.projection.s if scaled else out

    def transform_batch(self, docs: Sequence, scaled: bool = False
                        ) -> list[list[tuple[int, float]]]:
        dense = self.transform(docs, scaled)
        return [[(int(i), float(row[i])) for i in np.flatnonzero(np.abs(row) > FULL2SPARSE_EPS)]
                for row in dense]

    def get_topics(self) -> np.ndarray:
        """Topics x terms, each row of unit length."""
        u = self.projection.u.T
        return u / np.linalg.norm(u, axis=1, keepdims=True)

    def show_topic(self, topicno: int, topn: int = 10) -> list[tuple[str, float]]:
        """The topn terms of largest |weight| in a topic, with their (unit-norm) weights."""
        u = self.projection.u
        if topicno >= u.shape[1]:
            return []
        c = u[:, topicno]
        c = c / np.linalg.norm(c)
        top = np.argsort(-np.abs(c), kind="stable")[:topn]
        names = self.id2word or {}
        return [(names[i], float(c[i])) for i in top.tolist() if i in names]

    def print_topic(self, topicno: int, topn: int = 10) -> str:
        return " + ".join(f'{v:.3f}*"{w}"' for w, v in self.show_topic(topicno, topn))

    def show_topics(self, num_topics: int = -1, num_words: int = 10, log: bool = False,
                    formatted: bool = True) -> list:
        """[(topic, its words)] for the first num_topics topics (-1: all)."""
        n = self.num_topics if num_topics < 0 else num_topics
        shown = []
        for i in range(min(n, self.num_topics, len(self.projection.s))):
            topic = self.print_topic(i, num_words) if formatted else self.show_topic(i, num_words)
            shown.append((i, topic))
            if log:
                logging.getLogger("engine").info("topic #%d(%.3f): %s", i,
                                                 self.projection.s[i], topic)
        return shown

    def print_topics(self, num_topics: int = 20, num_words: int = 10) -> list:
        return self.show_topics(num_topics, num_words, log=True)

    def __repr__(self) -> str:
        return (f"LsiModel<num_terms={self.num_terms}, num_topics={self.num_topics}, "
                f"decay={self.decay}, chunksize={self.chunksize}>")

    # ---- saving -----------------------------------------------------------------------------

    def save(self, fname: str, separately=None, sep_limit: int = 10 * 1024 ** 2,
             ignore=frozenset(), pickle_protocol: int = 4) -> None:
        """One .npz file (no pickle), written atomically: u, s and the settings (and the
        id -> token mapping, if the model has one). gensim's other arguments are accepted
        and change nothing: the arrays are stored uncompressed, so that load(mmap="r") can
        map them whatever their size, unless the name ends in .gz (then compressed, and
        not mappable)."""
        if self.projection.u is None:
            raise InvalidArgumentError("LsiModel.save: not trained yet")
        meta = {"format": FORMAT, "version": VERSION, "num_topics": self.num_topics,
                "num_terms": self.num_terms, "chunksize": self.chunksize, "decay": self.decay,
                "onepass": self.onepass, "power_iters": self.power_iters,
                "extra_samples": self.extra_samples, "dtype": np.dtype(self.dtype).name,
                "random_seed": self.random_seed, "method": self.method,
                "docs_processed": self.docs_processed,
                "id2word": None if isinstance(self.id2word, TermIds)
                else sorted(self.id2word.items())}
        blob = np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), np.uint8)
        save = np.savez_compressed if str(fname).endswith(".gz") else np.savez
        with atomic_file(str(fname), "wb") as fh:
            save(fh, u=self.projection.u, s=self.projection.s, meta=blob)

    @classmethod
    def load(cls, fname: str, mmap: str | None = None) -> "LsiModel":
        """Read a model written by save(); with mmap ("r", "r+", "c", as numpy's
        mmap_mode) u and s are mapped from the file instead of read."""
        fname = str(fname)
        if not os.path.exists(fname):
            raise MissingFileError(f"{fname}: LSI model file not found")
        if mmap not in (None, "r", "r+", "c"):
            raise InvalidArgumentError(f"LsiModel.load: mmap {mmap!r} is not None, 'r', "
                                       f"'r+' or 'c'")
        try:
            with np.load(fname, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes().decode("utf-8"))
                if mmap is None:
                    u, s = z["u"], z["s"]
            if mmap is not None:
                u, s = (map_npz_member(fname, name, mmap) for name in ("u", "s"))
        except FileAccessError:
            raise                                # a compressed file asked to be mapped
        except (OSError, ValueError, KeyError) as exc:
            raise FormatError(f"{fname}: not an engine LSI model ({exc})") from None
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise FormatError(f"{fname}: not an engine LSI model of version {VERSION}")
        id2word = {int(i): t for i, t in meta["id2word"]} if meta["id2word"] is not None \
            else None
        model = cls(None, meta["num_topics"], {meta["num_terms"] - 1: ""}, meta["chunksize"],
                    meta["decay"], False, meta["onepass"], meta["power_iters"],
                    meta["extra_samples"], np.dtype(meta["dtype"]), meta["random_seed"],
                    meta["method"])
        model.id2word = id2word if id2word is not None else TermIds(model)
        model.docs_processed = meta["docs_processed"]
        model.projection = Projection(model.num_terms, model.num_topics, u, s)
        return model


class TermIds(Mapping):
    """id2word of a model given none: each term id's own string ("0", "1", ...), as many
    as the model has terms (it grows with them)."""

    def __init__(self, model: "LsiModel"):
        self.model = model

    def __getitem__(self, i) -> str:
        if isinstance(i, (int, np.integer)) and 0 <= i < self.model.num_terms:
            return str(int(i))
        raise KeyError(i)

    def __iter__(self):
        return iter(range(self.model.num_terms))

    def __len__(self) -> int:
        return self.model.num_terms


class _Scaled:
    """model[corpus, scaled]: the batch transform with `scaled` bound."""

    def __init__(self, model: LsiModel, scaled: bool):
        self.model, self.scaled = model, scaled

    def transform_batch(self, docs):
        return self.model.transform_batch(docs, self.scaled)
