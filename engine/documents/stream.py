"""A documents corpus -> Dictionary -> TF-IDF blocks in a BlockCache, in two passes.

Pass 1 (parallel over units): each unit is tokenized once (engine's C tokenizer, or
Python's str.split for text with Unicode whitespace); its documents' raw counts (over the
unit's own token numbering) go to a cache file, and its tokens' document and collection
frequencies back to the parent, which merges them in corpus order into a C token table (so
the ids are the ones gensim's Dictionary would give, and a token costs ~30 bytes, not a
Python object). Pass 2 (parallel over units, no text read again): after filter_extremes,
each unit's counts are renumbered into dictionary ids and weighed into a TF-IDF block.
Memory: the distinct tokens seen (bounded by prune_at), plus about one unit per process;
document ids stream to a file.
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse

from .._text import TokenTable
from .blocks import BlockCache, BlockInfo, read_block, write_block
from .corpus import DocumentSource, Unit, parse_unit, unit_text
from .dictionary import Dictionary
from .tfidf import TfidfModel

log = logging.getLogger("engine")


@dataclass
class UnitCounts:
    """What pass 1 learned from one unit (its raw counts are in the file at `path`):
    its tokens as one UTF-8 blob, one a line (no Python object per token to pickle,
    merge or keep), with their document and collection frequencies in the unit."""
    path: str
    n_docs: int
    num_pos: int
    num_nnz: int
    tokens: bytes
    dfs: np.ndarray
    cfs: np.ndarray
    doc_ids: list[str]


def count_unit(unit: Unit, folder: str, encoding_errors: str = "strict") -> UnitCounts:
    """Pass 1 on one unit (in a worker): tokens numbered by first appearance, each
    document's new ones sorted (gensim's order); raw counts written to `folder`."""
    prepared = unit_text(unit, encoding_errors)
    if prepared is None:
        tokens, m, doc_ids, num_pos = _python_counts(unit, encoding_errors)
    else:
        tokens, m, doc_ids, num_pos = _c_counts(*prepared)
    path = os.path.join(folder, f"u{unit.index:07d}.npy")
    write_block(path, m)
    blob = "\n".join(tokens).encode("utf-8")
    with open(path + ".tokens", "wb") as fh:
        fh.write(blob)
    cols = m.indices
    return UnitCounts(path, m.shape[0], num_pos, m.nnz, blob,
                      np.bincount(cols, minlength=len(tokens)),
                      np.bincount(cols, weights=m.data, minlength=len(tokens)).astype(np.int64),
                      doc_ids)


def _c_counts(ids: list[str], body: bytes, drop_blank: bool):
    """Counts by engine's C tokenizer (the fast path; the Python path gives the same
    counts): tokens numbered by first position, then renumbered into gensim's order (by the
    first document holding them, then alphabetically)."""
    table = TokenTable()
    num_pos = table.count_bytes(body) if body else 0
    words = table.keys()
    stream = TokenTable.from_words(words).encode_bytes(body, True, -1, -2) if body else \
        np.zeros(0, dtype=np.int32)
    ends = stream == -2
    doc_of = np.cumsum(ends) - ends
    tok = stream[~ends].astype(np.int64)
    doc = doc_of[~ends]
    first = np.ones(len(tok), dtype=bool)
    if len(tok):
        first[1:] = tok[1:] > np.maximum.accumulate(tok)[:-1]
    alphabetical = np.array(sorted(range(len(words)), key=words.__getitem__), dtype=np.int64)
    order = alphabetical[np.argsort(doc[first][alphabetical], kind="stable")]
    rank = np.empty(len(words), dtype=np.int64)
    rank[order] = np.arange(len(words))
    m = scipy.sparse.csr_matrix((np.ones(len(tok)), (doc, rank[tok])),
                                shape=(int(ends.sum()), len(words)))
    m.sum_duplicates()
    if drop_blank:
        keep = np.flatnonzero(np.diff(m.indptr) > 0)
        m, ids = m[keep], [ids[i] for i in keep.tolist()]
    return [words[i] for i in order.tolist()], m, ids, num_pos


def _python_counts(unit: Unit, encoding_errors: str):
    """Counts by Python's str.split, for text with Unicode whitespace."""
    local: dict[str, int] = {}
    tokens: list[str] = []
    cols: list[int] = []
    vals: list[int] = []
    indptr = [0]
    doc_ids: list[str] = []
    num_pos = 0
    for doc_id, words in parse_unit(unit, encoding_errors):
        counts = Counter(words)
        new = sorted([w for w in counts if w not in local])
        local.update(zip(new, range(len(tokens), len(tokens) + len(new))))
        tokens.extend(new)
        cols.extend(map(local.__getitem__, counts))
        vals.extend(counts.values())
        indptr.append(len(cols))
        doc_ids.append(doc_id)
        num_pos += len(words)
    m = scipy.sparse.csr_matrix((np.array(vals, dtype=np.float64),
                                 np.array(cols, dtype=np.int32),
                                 np.array(indptr, dtype=np.int64)),
                                shape=(len(doc_ids), len(tokens)))
    return tokens, m, doc_ids, num_pos


_DICTIONARIES: dict[str, tuple[TokenTable, int, TfidfModel]] = {}


def _weights_for(dict_path: str, smartirs: str | None) -> tuple[TokenTable, int, TfidfModel]:
    """A worker's token -> id table for the final dictionary, its size and its TF-IDF
    model, read once per process (the parent saved the dictionary in the cache)."""
    key = f"{dict_path}|{smartirs}"
    if key not in _DICTIONARIES:
        d = Dictionary.load(dict_path)
        words = sorted(d.token2id, key=d.token2id.get)
        _DICTIONARIES.clear()
        _DICTIONARIES[key] = (TokenTable.from_words(words), len(words),
                              TfidfModel(dictionary=d, smartirs=smartirs))
    return _DICTIONARIES[key]


def _ids_of(table: TokenTable, blob: bytes) -> np.ndarray:
    """Values (ids; -1 unknown) of a blob's tokens, one a line, in order."""
    return table.encode_bytes(blob, False, -1, -2).astype(np.int64) if blob else \
        np.zeros(0, dtype=np.int64)


def weigh_unit(unit_path: str, dict_path: str, smartirs: str | None, out_path: str,
               dtype: str) -> BlockInfo:
    """Pass 2 on one unit (in a worker): its counts in dictionary ids, weighed."""
    table, n_terms, tfidf = _weights_for(dict_path, smartirs)
    raw = read_block(unit_path)
    with open(unit_path + ".tokens", "rb") as fh:
        ids = _ids_of(table, fh.read())
    cols = ids[raw.indices]
    keep = cols >= 0
    rows = np.repeat(np.arange(raw.shape[0]), np.diff(raw.indptr))
    indptr = np.zeros(raw.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=raw.shape[0]), out=indptr[1:])
    counts = scipy.sparse.csr_matrix((raw.data[keep], cols[keep].astype(np.int32), indptr),
                                     shape=(raw.shape[0], n_terms))
    counts.sort_indices()
    block = tfidf.weigh(counts, np.dtype(dtype))
    write_block(out_path, block)
    os.unlink(unit_path)
    os.unlink(unit_path + ".tokens")
    return BlockInfo(out_path, block.shape[0], block.nnz)


class TokenCounts:
    """The parent's side of pass 1: units' counts merged in corpus order, in a C token
    table (engine._text: ~30 bytes a token, no Python object per token) and numpy
    arrays. Token ids are positions in the table, so they come out in gensim's order."""

    def __init__(self):
        self.table = TokenTable()
        self.dfs = np.zeros(1024, dtype=np.int64)
        self.cfs = np.zeros(1024, dtype=np.int64)
        self.num_docs = self.num_pos = self.num_nnz = 0

    def __len__(self) -> int:
        return len(self.table)

    def add(self, r: UnitCounts) -> None:
        before = len(self.table)
        if r.tokens:
            self._insert(r.tokens)
        for i, word in enumerate(self.table.keys(range(before, len(self.table))), before):
            self.table.add(word.encode("utf-8"), i)       # new entries: value = their id
        n = len(self.table)
        if n > len(self.dfs):
            grow = max(n, 2 * len(self.dfs)) - len(self.dfs)
            self.dfs = np.concatenate([self.dfs, np.zeros(grow, np.int64)])
            self.cfs = np.concatenate([self.cfs, np.zeros(grow, np.int64)])
        ids = _ids_of(self.table, r.tokens)
        self.dfs[ids] += r.dfs                      # ids are distinct within a unit
        self.cfs[ids] += r.cfs
        self.num_docs += r.n_docs
        self.num_pos += r.num_pos
        self.num_nnz += r.num_nnz

    def _insert(self, blob: bytes) -> None:
        """Append the blob's unknown tokens to the table, in order (value 0 for now)."""
        starts = np.concatenate([[0], np.flatnonzero(np.frombuffer(blob, np.uint8) == 10) + 1])
        ends = np.append(starts[1:] - 1, len(blob))
        self.table.merge((blob, starts.astype(np.int64), (ends - starts).astype(np.int32),
                          np.zeros(len(starts), dtype=np.int64)))

    def _keep(self, ids: np.ndarray) -> Dictionary:
        """A Dictionary of the tokens with these ids (ascending), renumbered 0.. in order."""
        return Dictionary.from_counts(self.table.keys(ids.tolist()), self.dfs[ids],
                                      self.cfs[ids], self.num_docs, self.num_pos,
                                      self.num_nnz)

    def filtered(self, no_below: int, no_above: float, keep_n: int | None) -> Dictionary:
        """Dictionary.filter_extremes' result, computed on the arrays (only the kept
        tokens ever become Python strings)."""
        n = len(self.table)
        df = self.dfs[:n]
        good = np.flatnonzero((df >= no_below) & (df <= int(no_above * self.num_docs)))
        good = good[np.argsort(-df[good], kind="stable")]
        if keep_n is not None:
            good = good[:keep_n]
        log.info("dictionary: keeping %d of %d tokens (in %d to %d documents%s)", len(good),
                 n, no_below, int(no_above * self.num_docs),
                 f", at most {keep_n}" if keep_n is not None else "")
        return self._keep(np.sort(good))

    def prune(self, keep_n: int) -> None:
        """Keep the keep_n tokens in most documents (gensim's prune_at rule: the others'
        counts are lost)."""
        kept = self.filtered(0, 1.0, keep_n)
        words = sorted(kept.token2id, key=kept.token2id.get)
        self.table = TokenTable.from_words(words)
        self.dfs = np.array([kept.dfs[i] for i in range(len(words))], dtype=np.int64)
        self.cfs = np.array([kept.cfs[i] for i in range(len(words))], dtype=np.int64)


@dataclass
class StreamStats:
    """Sizes and timings of the two passes."""
    documents: int = 0
    positions: int = 0
    raw_tokens: int = 0
    units: int = 0
    seconds: dict = field(default_factory=dict)


def build_cache(source: DocumentSource, cache: BlockCache, mapper: Callable,
                no_below: int = 5, no_above: float = 0.5, keep_n: int | None = 100_000,
                smartirs: str | None = None, dtype: str = "float64",
                prune_at: int | None = 2_000_000) -> tuple[Dictionary, str, StreamStats]:
    """Both passes. `mapper(fn, arg tuples)` yields fn(*args) in order (a pool's map, or
    the in-process one). Returns the filtered dictionary, the file of document ids (one
    per line, in corpus order) and the statistics; the cache holds the TF-IDF blocks."""
    stats = StreamStats()
    t0 = time.perf_counter()
    builder = TokenCounts()
    ids_path = cache.path("doc_ids.txt")
    units: list[str] = []
    with open(ids_path, "w", encoding="utf-8") as ids_file:
        work = ((u, cache.folder, source.encoding_errors) for u in source.units())
        for r in mapper(count_unit, work):
            builder.add(r)
            if r.doc_ids:
                ids_file.write("\n".join(r.doc_ids) + "\n")
            units.append(r.path)
            if prune_at is not None and len(builder) > prune_at:
                builder.prune(prune_at)
    stats.documents, stats.positions = builder.num_docs, builder.num_pos
    stats.raw_tokens, stats.units = len(builder), len(units)
    stats.seconds["count"] = time.perf_counter() - t0
    log.info("LSI pass 1: %d documents, %d tokens (%d distinct) in %d units, %.1f s",
             stats.documents, stats.positions, stats.raw_tokens, stats.units,
             stats.seconds["count"])
    t1 = time.perf_counter()
    dictionary = builder.filtered(no_below, no_above, keep_n)
    del builder
    dict_path = cache.path("dictionary.json")
    dictionary.save(dict_path)
    outs = [cache.path(f"b{i:07d}.npy") for i in range(len(units))]
    work2 = ((u, dict_path, smartirs, o, dtype) for u, o in zip(units, outs))
    cache.blocks.extend(mapper(weigh_unit, work2))
    stats.seconds["tfidf"] = time.perf_counter() - t1
    log.info("LSI pass 2: %d terms kept, %d nonzeros, %.1f s", len(dictionary),
             sum(b.nnz for b in cache.blocks), stats.seconds["tfidf"])
    return dictionary, ids_path, stats


def local_map(fn: Callable, items: Iterable) -> Iterable:
    """The in-process mapper for build_cache."""
    return (fn(*args) for args in items)
