"""TF-IDF weighting with gensim's TfidfModel names and default formula:

    weight(term, doc) = tf(term, doc) * log2(num_docs / df(term)),  then each document
    scaled to unit L2 length; weights with |w| <= 1e-12 dropped (so a term in every
    document, idf 0, and a term the model never saw, vanish).

SMART codes (`smartirs`, e.g. "ntc", "lfn", "bpc") cover the other local (b n a l d L),
global (n f t p) and normalization (n c u b: none, cosine, pivoted by unique terms or by
bytes) schemes gensim knows, with its formulas; `wlocal`
and `wglobal` take a user's functions, as gensim's do. Whole blocks of documents (CSR) are
weighted at once with numpy (`weigh`); `model[bow]` is the same code on a one-row block.
Saved as one JSON file (gzipped when the name ends in .gz), never a pickle.
"""
from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Iterable, Mapping

import numpy as np
import scipy.sparse

from ..errors import (EngineError, FormatError, InvalidArgumentError, MissingFileError,
                      NotSupportedError)
from ..runtime.atomic import atomic_file
from .blocks import bows_to_csr, csr_to_bows

FORMAT = "engine-tfidf"
VERSION = 1

EPS = 1e-12
LOCAL = "bnaldL"
GLOBAL = "nftp"
NORMS = "ncub"              # none, cosine, pivoted unique terms, pivoted byte length


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
    if norm not in NORMS:
        raise InvalidArgumentError(f"smartirs: normalization {norm!r} is not one of n, c, u, "
                                   f"b, x")
    return tf, df, norm


def identity(x):
    """The default local weight: the term's count."""
    return x


def df2idf(docfreq, totaldocs, log_base: float = 2.0, add: float = 0.0):
    """The default global weight: add + log(totaldocs / docfreq) in base `log_base`
    (numbers or arrays)."""
    return add + np.log2(np.asarray(totaldocs, np.float64) / docfreq) / np.log2(log_base)


def precompute_idfs(wglobal, dfs: Mapping[int, int], total_docs: int) -> dict[int, float]:
    """{term id: wglobal(document frequency, total_docs)}: called once with every
    frequency as an array, or term by term if the function does not take an array."""
    ids = list(dfs)
    return dict(zip(ids, _global_of(wglobal, np.array([dfs[i] for i in ids], np.float64),
                                    total_docs).tolist()))


def _global_of(wglobal, df: np.ndarray, total_docs: int) -> np.ndarray:
    try:
        out = np.broadcast_to(np.asarray(wglobal(df, total_docs), np.float64), df.shape)
    except (TypeError, ValueError):
        out = np.array([wglobal(x, total_docs) for x in df.tolist()], np.float64)
    return np.array(out, np.float64)


def global_weights(dfs: np.ndarray, num_docs: int, scheme: str = "f") -> np.ndarray:
    """idf per term (0 where df is 0: a term never seen gets no weight)."""
    df = dfs.astype(np.float64)
    seen = df > 0
    out = np.zeros_like(df)
    if scheme == "n":
        out[seen] = 1.0
    elif scheme == "f":
        out[seen] = df2idf(df[seen], num_docs)
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
    `model[corpus]` a stream of them; `weigh(block)` a CSR block of counts. `wlocal`
    (a document's counts -> their weights) and `wglobal` ((document frequency, documents)
    -> the term's weight) are gensim's hooks; `smartirs` overrides them."""

    def __init__(self, corpus: Iterable | None = None, id2word: Mapping | None = None,
                 dictionary=None, wlocal=identity, wglobal=df2idf, normalize=True,
                 smartirs: str | None = None, pivot: float | None = None,
                 slope: float = 0.25):
        self.id2word = id2word
        self.smartirs = smartirs
        if not (isinstance(normalize, bool) or callable(normalize)):
            raise InvalidArgumentError(f"normalize: expected True, False or a function, "
                                       f"got {normalize!r}")
        self._norm = "n"
        if smartirs:
            self._local, self._global, norm = resolve_smartirs(smartirs)
            self._norm = norm
            self.wlocal, self.wglobal = identity, df2idf
        else:
            for name, f in (("wlocal", wlocal), ("wglobal", wglobal)):
                if not callable(f):
                    raise InvalidArgumentError(f"{name}: expected a function, got {f!r}")
            self.wlocal, self.wglobal = wlocal, wglobal
            self._local = "n" if wlocal is identity else None       # None: the user's
            self._global = "f" if wglobal is df2idf else None
            norm = "c" if normalize is True else "n"
        self.normalize = norm == "c" if not callable(normalize) or smartirs else normalize
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
        self._bytes = None                      # token length + 1 by id, for norm "b"
        if self._norm in "ub" and self.pivot is None:
            if self._norm == "u":               # the mean number of distinct terms
                self.pivot = self.num_nnz / max(self.num_docs, 1)
            else:                               # the mean length in bytes
                size = self._token_bytes()
                self.pivot = sum(size[i] * c for i, c in self.id2word.cfs.items()
                                 if i < size.shape[0]) / max(self.num_docs, 1)

    def _token_bytes(self) -> np.ndarray:
        """len(token) + 1 for every id of id2word (pivoted byte-length normalization)."""
        if self._bytes is None:
            if self.id2word is None or not hasattr(self.id2word, "cfs"):
                raise InvalidArgumentError("smartirs: byte-length normalization ('b') needs "
                                           "dictionary= (its tokens and their counts)")
            out = np.zeros(max(self.id2word.keys(), default=-1) + 1)
            for i, token in self.id2word.items():
                out[i] = len(token) + 1.0
            self._bytes = out
        return self._bytes

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
        if self._global is not None:
            self.idf = global_weights(dfs, self.num_docs, self._global)
        else:                                   # the user's function, on the terms seen
            self.idf = np.zeros(size)
            seen = np.flatnonzero(dfs > 0)
            self.idf[seen] = _global_of(self.wglobal, dfs[seen].astype(np.float64),
                                        self.num_docs)

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
        weights = self._local_weights(m) * idf[m.indices]
        out = scipy.sparse.csr_matrix((weights, m.indices.copy(), m.indptr.copy()),
                                      shape=m.shape)
        _drop_small(out)
        if self.pivot is not None or self.normalize is True:
            rows = _row_of(out)
            if self._norm == "u":               # distinct terms that weigh something
                norms = np.diff(out.indptr).astype(np.float64)
            elif self._norm == "b":             # bytes: each occurrence's token + a space
                b = self._token_bytes()
                size = np.zeros(m.indices.shape[0])
                inside = m.indices < b.shape[0]
                size[inside] = b[m.indices[inside]]
                norms = np.bincount(_row_of(m), weights=m.data * size, minlength=m.shape[0])
            else:
                norms = np.sqrt(np.bincount(rows, weights=out.data ** 2,
                                            minlength=out.shape[0]))
            if self.pivot is not None:
                norms = (1 - self.slope) * self.pivot + self.slope * norms
            norms[norms == 0] = 1.0
            out.data /= norms[rows]
            _drop_small(out)
        return out.astype(dtype, copy=False)

    def _local_weights(self, m: scipy.sparse.csr_matrix) -> np.ndarray:
        if self._local is not None:
            return local_weights(m, self._local)
        out = np.empty(m.data.shape[0])             # the user's function, document by document
        for r in range(m.shape[0]):
            a, b = m.indptr[r], m.indptr[r + 1]
            if a < b:
                got = self.wlocal(m.data[a:b].astype(np.float64))
                out[a:b] = np.fromiter(got, np.float64, b - a) if not hasattr(got, "__len__") \
                    else np.asarray(got, np.float64)
        return out

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
        out = csr_to_bows(self.weigh(bows_to_csr(bows, width)))
        if callable(self.normalize):                # the user's normalization, per document
            out = [self.normalize(doc) for doc in out]
        return out

    # ---- saving -----------------------------------------------------------------------

    def save(self, fname: str, *args, **kwargs) -> None:
        """Write to `fname` (JSON; gzipped if it ends in .gz; atomically). gensim's other
        arguments (separately, sep_limit, ...) are accepted and change nothing. A model
        with the user's own wlocal, wglobal or normalize functions cannot be saved."""
        if self._local is None or self._global is None or callable(self.normalize):
            raise NotSupportedError("TfidfModel.save: a model with its own wlocal, wglobal "
                                    "or normalize function cannot be saved (functions are "
                                    "not stored); use smartirs")
        ids = sorted(self.dfs)
        doc = {"format": FORMAT, "version": VERSION, "num_docs": self.num_docs,
               "num_nnz": self.num_nnz, "ids": ids, "dfs": [self.dfs[i] for i in ids],
               "smartirs": self.smartirs, "local": self._local, "global": self._global,
               "normalize": self.normalize, "pivot": self.pivot, "slope": self.slope,
               # pivoted byte-length norm: each term's bytes (the tokens are not stored)
               "token_bytes": self._token_bytes().tolist() if self._norm == "b" else None}
        data = json.dumps(doc, separators=(",", ":")).encode()
        path = str(fname)
        with atomic_file(path, "wb") as fh:
            fh.write(gzip.compress(data, mtime=0) if path.endswith(".gz") else data)

    @classmethod
    def load(cls, fname: str, mmap=None) -> "TfidfModel":
        """Read a model written by save(); a missing or foreign file is one clear error."""
        path = str(fname)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
            if raw[:1] == b"\x80":
                raise FormatError(f"{path}: a pickle (gensim's format?); engine never "
                                  f"unpickles: build the model again and save() it")
            doc = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        except FileNotFoundError:
            raise MissingFileError(f"{path}: TF-IDF model file not found") from None
        except (ValueError, OSError, EOFError) as exc:
            raise FormatError(f"{path}: not an engine TF-IDF model ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise FormatError(f"{path}: not an engine TF-IDF model (no '{FORMAT}' tag)")
        if doc.get("version") != VERSION:
            raise FormatError(f"{path}: TF-IDF format version {doc.get('version')}, this "
                              f"engine reads version {VERSION}")
        try:
            model = cls(smartirs=doc["smartirs"], normalize=bool(doc["normalize"]),
                        pivot=doc["pivot"], slope=doc["slope"])
            if not doc["smartirs"]:
                model._local, model._global = resolve_smartirs(
                    doc["local"] + doc["global"] + ("c" if doc["normalize"] else "n"))[:2]
            if len(doc["ids"]) != len(doc["dfs"]):
                raise ValueError("ids and dfs differ in length")
            model.dfs = {int(i): int(c) for i, c in zip(doc["ids"], doc["dfs"])}
            if doc.get("token_bytes") is not None:
                model._bytes = np.asarray(doc["token_bytes"], np.float64)
            model.num_docs, model.num_nnz = int(doc["num_docs"]), int(doc["num_nnz"])
        except (KeyError, TypeError, ValueError, EngineError) as exc:
            raise FormatError(f"{path}: a damaged TF-IDF model ({exc})") from None
        model._set_idfs()
        return model

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
