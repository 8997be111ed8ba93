"""TF-IDF weighting with gensim's TfidfModel names and default formula:

    weight(term, doc) = tf(term, doc) * log2(num_docs / df(term)),  then each document
    scaled to unit L2 length; weights with |w| <= 1e-12 dropped (so a term in every
    document, idf 0, and a term the model never saw, vanish).

SMART codes (`smartirs`, e.g. "ntc", "lfn", "bpc") cover the other local (b n a l d L),
global (n f t p) and normalization (n c) schemes gensim knows, with its formulas. Whole
blocks of documents (CSR) are weighted at once with numpy (`weigh`); `model[bow]` is the
same code on a one-row block.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

import numpy as np
import scipy.sparse

from ..errors import InvalidArgumentError, NotSupportedError
from .blocks import bows_to_csr, csr_to_bows

EPS = 1e-12
LOCAL = "bnaldL"
GLOBAL = "nftp"
NORMS = "nc"


def resolve_smartirs(code: str) -> tuple[str, str, str]:
    """A SMART code -> (local, global, normalization) letters, gensim's aliases resolved
    (t -> n for tf, x -> n)."""
    if not isinstance(code, str) or len(code) != 3:
        raise InvalidArgumentError(f"smartirs: expected 3 letters such as 'ntc', got {code!r}")
    tf, df, norm = code
    tf = {"t": "n"}.get(tf, tf)
    df = {"x": "n"}.get(df, df)
    norm = {"x": "n"}.get(norm, norm)
    if tf not in LOCAL:
        raise InvalidArgumentError(f"smartirs: term frequency weight {tf!r} is not one of "
                                   f"{', '.join(LOCAL + 't')}")
    if df not in GLOBAL:
        raise InvalidArgumentError(f"smartirs: document frequency weight {df!r} is not one "
                                   f"of {', '.join(GLOBAL + 'x')}")
    if norm in "ub":
        raise NotSupportedError(f"smartirs: pivoted normalization {norm!r} is not supported "
                                f"(use 'n' or 'c', or pass pivot=)")
    if norm not in NORMS:
        raise InvalidArgumentError(f"smartirs: normalization {norm!r} is not one of n, c, x")
    return tf, df, norm


def global_weights(dfs: np.ndarray, num_docs: int, scheme: str = "f") -> np.ndarray:
    """idf per term (0 where df is 0: a term never seen gets no weight)."""
    df = dfs.astype(np.float64)
    seen = df > 0
    out = np.zeros_like(df)
    if scheme == "n":
        out[seen] = 1.0
    elif scheme == "f":
        out[seen] = np.log2(num_docs / df[seen])
    elif scheme == "t":
        out[seen] = np.log2((num_docs + 1.0) / df[seen])
    else:                                             # "p", probabilistic idf
        out[seen] = np.maximum(0.0, np.log2((num_docs - df[seen]) / df[seen]))
    return out


def _row_of(m: scipy.sparse.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))


def local_weights(m: scipy.sparse.csr_matrix, scheme: str) -> np.ndarray:
    """Term-frequency weights of the stored counts of m (documents x terms)."""
    tf = m.data.astype(np.float64)
    if scheme == "n":
        return tf
    if scheme == "l":
        return 1 + np.log2(tf)
    if scheme == "d":
        return 1 + np.log2(1 + np.log2(tf))
    if scheme == "b":
        return (tf != 0).astype(np.float64)
    rows = _row_of(m)
    if scheme == "a":
        top = np.zeros(m.shape[0])
        np.maximum.at(top, rows, tf)
        return 0.5 + 0.5 * tf / top[rows]
    logs = 1 + np.log2(tf)                            # "L", log average
    means = np.bincount(rows, weights=tf, minlength=m.shape[0])[rows] / np.diff(m.indptr)[rows]
    return logs / (1 + np.log2(means))


class TfidfModel:
    """TF-IDF from document frequencies: from a Dictionary (`dictionary=`, no pass over a
    corpus) or counted from a bag-of-words `corpus`. `model[bow]` weighs one document,
    `model[corpus]` a stream of them; `weigh(block)` a CSR block of counts."""

    def __init__(self, corpus: Iterable | None = None, id2word: Mapping | None = None,
                 dictionary=None, smartirs: str | None = None, normalize: bool = True,
                 pivot: float | None = None, slope: float = 0.25):
        self.id2word = id2word
        self.smartirs = smartirs
        self.wlocal, self.wglobal, norm = resolve_smartirs(smartirs) if smartirs else \
            ("n", "f", "c" if normalize else "n")
        self.normalize = norm == "c"
        self.pivot = pivot
        self.slope = float(slope)
        self.num_docs = self.num_nnz = 0
        self.dfs: dict[int, int] = {}
        if dictionary is not None:
            self.num_docs, self.num_nnz = dictionary.num_docs, dictionary.num_nnz
            self.dfs = dict(dictionary.dfs)
            if id2word is None:
                self.id2word = dictionary
        elif corpus is not None:
            self.initialize(corpus)
        self._set_idfs()

    def initialize(self, corpus: Iterable) -> None:
        """Count document frequencies over a bag-of-words corpus."""
        dfs: dict[int, int] = {}
        docs = nnz = 0
        for bow in corpus:
            docs += 1
            nnz += len(bow)
            for i, _ in bow:
                dfs[i] = dfs.get(i, 0) + 1
        self.num_docs, self.num_nnz, self.dfs = docs, nnz, dfs
        self._set_idfs()

    def _set_idfs(self) -> None:
        size = max(self.dfs, default=-1) + 1
        dfs = np.zeros(size, dtype=np.int64)
        if self.dfs:
            dfs[list(self.dfs)] = list(self.dfs.values())
        self.idf = global_weights(dfs, self.num_docs, self.wglobal)

    @property
    def idfs(self) -> dict[int, float]:
        """{term id: global weight}, as gensim's attribute."""
        return {i: float(self.idf[i]) for i in self.dfs}

    def weigh(self, counts: scipy.sparse.csr_matrix, dtype=np.float64
              ) -> scipy.sparse.csr_matrix:
        """Weighted (and normalized) copy of a block of raw counts (documents x terms);
        entries that weigh nothing dropped. Term ids beyond the model's weigh nothing."""
        m = scipy.sparse.csr_matrix(counts)
        idf = np.zeros(m.shape[1])
        n = min(len(self.idf), m.shape[1])
        idf[:n] = self.idf[:n]
        weights = local_weights(m, self.wlocal) * idf[m.indices]
        out = scipy.sparse.csr_matrix((weights, m.indices.copy(), m.indptr.copy()),
                                      shape=m.shape)
        _drop_small(out)
        if self.pivot is not None or self.normalize:
            rows = _row_of(out)
            norms = np.sqrt(np.bincount(rows, weights=out.data ** 2, minlength=out.shape[0]))
            if self.pivot is not None:
                norms = (1 - self.slope) * self.pivot + self.slope * norms
            norms[norms == 0] = 1.0
            out.data /= norms[rows]
            _drop_small(out)
        return out.astype(dtype, copy=False)

    def __getitem__(self, bow):
        """Weights of one document ([(id, count)] -> [(id, weight)]) or, for a corpus, a
        re-iterable stream of them."""
        corpus, bow = is_corpus(bow)
        if corpus:
            return TransformedCorpus(self, bow)
        return self.transform_batch([bow])[0]

    def transform_batch(self, bows: list) -> list[list[tuple[int, float]]]:
        """Weights of a list of documents at once."""
        width = max(len(self.idf), 1 + max((i for bow in bows for i, _ in bow), default=-1))
        return csr_to_bows(self.weigh(bows_to_csr(bows, width)))

    def __repr__(self) -> str:
        return f"TfidfModel<num_docs={self.num_docs}, num_nnz={self.num_nnz}>"


def _drop_small(m: scipy.sparse.csr_matrix) -> None:
    """Remove stored entries with |value| <= EPS, in place."""
    small = np.abs(m.data) <= EPS
    if small.any():
        m.data[small] = 0
        m.eliminate_zeros()


class TransformedCorpus:
    """`model[corpus]`: the corpus transformed document by document as it is iterated
    (re-iterable when the corpus is; len() when it has one)."""

    def __init__(self, model, corpus, chunksize: int = 256):
        self.model, self.corpus, self.chunksize = model, corpus, chunksize

    def __iter__(self):
        for batch in _batches(self.corpus, self.chunksize):
            yield from self.model.transform_batch(batch)

    def __len__(self) -> int:
        return len(self.corpus)


def _batches(items: Iterable, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---- telling one document from a corpus (gensim's utils.is_corpus) --------------------------

def _is_pair(x) -> bool:
    return isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(
        x[0], (int, np.integer)) and isinstance(x[1], (int, float, np.number))


def is_corpus(obj) -> tuple[bool, object]:
    """(whether obj is a corpus rather than one document, obj usable afresh): a document
    is a sequence of (id, weight) pairs; a one-shot iterator is peeked at and rebuilt."""
    if scipy.sparse.issparse(obj) or isinstance(obj, TransformedCorpus):
        return True, obj
    if isinstance(obj, (list, tuple)):
        return (bool(obj) and not _is_pair(obj[0])), obj
    it = iter(obj)
    try:
        first = next(it)
    except StopIteration:
        return True, []
    if it is obj:                                   # a one-shot iterator: put it back
        obj = itertools.chain([first], it)
    return not _is_pair(first), obj
