"""Dictionary: token <-> integer id, with document and collection frequencies; gensim's
`corpora.Dictionary` names and meaning (same ids for the same documents: a document's new
tokens get the next ids in sorted order; filter_extremes keeps the surviving ids' order).

Saved as one JSON file (no pickle), written atomically.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from ..runtime.atomic import atomic_file
from ..errors import FormatError, InvalidArgumentError, InvalidTypeError, MissingFileError

log = logging.getLogger("engine")

FORMAT = "engine-dictionary"
VERSION = 1
PRUNE_EVERY_DOCS = 10_000


class Dictionary(Mapping):
    """Token ids and corpus statistics, built from documents (lists of tokens).

    `token2id` {token: id}, `id2token` {id: token}, `dfs` {id: documents containing it},
    `cfs` {id: occurrences}, `num_docs`, `num_pos` (tokens seen), `num_nnz` (distinct
    (document, token) pairs). As a Mapping it maps id -> token, as gensim's does."""

    def __init__(self, documents: Iterable[Iterable[str]] | None = None,
                 prune_at: int | None = 2_000_000):
        self.token2id: dict[str, int] = {}
        self.dfs: dict[int, int] = {}
        self.cfs: dict[int, int] = {}
        self.num_docs = self.num_pos = self.num_nnz = 0
        self._id2token: dict[int, str] = {}
        if documents is not None:
            self.add_documents(documents, prune_at=prune_at)

    # ---- the Mapping id -> token --------------------------------------------------------

    @property
    def id2token(self) -> dict[int, str]:
        """{id: token}, rebuilt when the mapping changed since it was last asked for."""
        if len(self._id2token) != len(self.token2id):
            self._id2token = {i: t for t, i in self.token2id.items()}
        return self._id2token

    def __getitem__(self, tokenid: int) -> str:
        return self.id2token[tokenid]

    def __iter__(self):
        return iter(list(self.token2id.values()))

    def __len__(self) -> int:
        return len(self.token2id)

    def __contains__(self, tokenid) -> bool:
        return tokenid in self.id2token

    def keys(self):
        return list(self.token2id.values())

    def __repr__(self) -> str:
        some = list(self.token2id)[:5]
        return f"Dictionary<{len(self)} unique tokens: {some}{'...' if len(self) > 5 else ''}>"

    # ---- building -------------------------------------------------------------------------

    def add_documents(self, documents: Iterable[Iterable[str]],
                      prune_at: int | None = 2_000_000) -> None:
        """Add documents' tokens and statistics. Every PRUNE_EVERY_DOCS documents, a mapping
        grown past `prune_at` tokens keeps only its prune_at most frequent (by documents),
        to bound memory; counts of pruned tokens are lost (gensim's rule)."""
        for docno, document in enumerate(documents):
            if docno % PRUNE_EVERY_DOCS == 0:
                self._prune(prune_at)
            self.doc2bow(document, allow_update=True)

    def _prune(self, prune_at: int | None) -> None:
        if prune_at is not None and len(self) > prune_at:
            self.filter_extremes(no_below=0, no_above=1.0, keep_n=prune_at)

    def doc2bow(self, document: Iterable[str], allow_update: bool = False,
                return_missing: bool = False):
        """The document as a sorted [(id, count)] of its known tokens; with allow_update,
        unknown tokens are added first (in sorted order) and the statistics updated. With
        return_missing also {unknown token: count}."""
        if isinstance(document, str):
            raise InvalidTypeError("doc2bow expects a list of tokens, not a single string")
        counter = Counter(w if isinstance(w, str) else str(w, "utf-8") for w in document)
        token2id = self.token2id
        missing = {}
        if allow_update or return_missing:
            missing = dict(sorted((w, c) for w, c in counter.items() if w not in token2id))
            if allow_update:
                for w in missing:
                    token2id[w] = len(token2id)
        bow = {token2id[w]: c for w, c in counter.items() if w in token2id}
        if allow_update:
            self._count(bow, sum(counter.values()))
        result = sorted(bow.items())
        return (result, missing) if return_missing else result

    def _count(self, bow: dict[int, int], positions: int) -> None:
        self.num_docs += 1
        self.num_pos += positions
        self.num_nnz += len(bow)
        dfs, cfs = self.dfs, self.cfs
        for i, c in bow.items():
            cfs[i] = cfs.get(i, 0) + c
            dfs[i] = dfs.get(i, 0) + 1

    @classmethod
    def from_counts(cls, tokens: list[str], dfs, cfs, num_docs: int, num_pos: int,
                    num_nnz: int) -> "Dictionary":
        """A dictionary whose token `tokens[i]` has id i and the given frequencies
        (what a streamed count built; see engine.documents.stream)."""
        d = cls()
        d.token2id = dict(zip(tokens, range(len(tokens))))
        d.dfs = dict(enumerate(np.asarray(dfs).tolist()))
        d.cfs = dict(enumerate(np.asarray(cfs).tolist()))
        d.num_docs, d.num_pos, d.num_nnz = int(num_docs), int(num_pos), int(num_nnz)
        return d

    # ---- filtering ------------------------------------------------------------------------

    def filter_extremes(self, no_below: int = 5, no_above: float = 0.5,
                        keep_n: int | None = 100_000, keep_tokens: Iterable[str] | None = None
                        ) -> None:
        """Keep tokens in at least `no_below` documents and at most `no_above` (a share)
        of them, then only the `keep_n` in most documents (ties: lower id first); tokens in
        `keep_tokens` always stay. Ids are then compacted, keeping their order."""
        if not 0 <= no_above <= 1:
            raise InvalidArgumentError(f"no_above: {no_above} is not a share in [0, 1]")
        most = int(no_above * self.num_docs)
        keep_ids = {self.token2id[t] for t in keep_tokens or () if t in self.token2id}
        good = [i for i in self.token2id.values()
                if no_below <= self.dfs.get(i, 0) <= most or i in keep_ids]
        good.sort(key=lambda i: self.num_docs if i in keep_ids else self.dfs.get(i, 0),
                  reverse=True)
        if keep_n is not None:
            good = good[:keep_n]
        log.info("dictionary: keeping %d of %d tokens (in %d to %d documents%s)", len(good),
                 len(self), no_below, most, f", at most {keep_n}" if keep_n is not None else "")
        self.filter_tokens(good_ids=good)

    def filter_tokens(self, bad_ids: Iterable[int] | None = None,
                      good_ids: Iterable[int] | None = None) -> None:
        """Drop the tokens with `bad_ids`, or keep only those with `good_ids`; compact."""
        keep = None
        if bad_ids is not None:
            bad = set(bad_ids)
            keep = {i for i in self.token2id.values() if i not in bad}
        if good_ids is not None:
            good = set(good_ids)
            keep = good if keep is None else keep & good
        if keep is not None:
            self.token2id = {t: i for t, i in self.token2id.items() if i in keep}
            self.dfs = {i: c for i, c in self.dfs.items() if i in keep}
            self.cfs = {i: c for i, c in self.cfs.items() if i in keep}
        self.compactify()

    def compactify(self) -> None:
        """Renumber ids 0..n-1, keeping their order."""
        new = {old: new for new, old in enumerate(sorted(self.token2id.values()))}
        self.token2id = {t: new[i] for t, i in self.token2id.items()}
        self.dfs = {new[i]: c for i, c in self.dfs.items() if i in new}
        self.cfs = {new[i]: c for i, c in self.cfs.items() if i in new}
        self._id2token = {}

    # ---- saving ---------------------------------------------------------------------------

    def save(self, path: str) -> None:
        """Write to `path` (JSON, atomically: a crash leaves the old file or the new)."""
        order = sorted(self.token2id.items(), key=lambda item: item[1])
        doc = {"format": FORMAT, "version": VERSION, "num_docs": self.num_docs,
               "num_pos": self.num_pos, "num_nnz": self.num_nnz,
               "ids": [i for _, i in order], "tokens": [t for t, _ in order],
               "dfs": [self.dfs.get(i, 0) for _, i in order],
               "cfs": [self.cfs.get(i, 0) for _, i in order]}
        with atomic_file(str(path), "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def load(cls, path: str) -> "Dictionary":
        """Read a dictionary written by save(); a missing or foreign file is one clear
        error naming it."""
        path = str(path)
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            raise MissingFileError(f"{path}: dictionary file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path}: not an engine dictionary ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise FormatError(f"{path}: not an engine dictionary (no '{FORMAT}' tag)")
        if doc.get("version") != VERSION:
            raise FormatError(f"{path}: dictionary format version {doc.get('version')}, "
                              f"this engine reads version {VERSION}")
        fields = ("ids", "tokens", "dfs", "cfs")
        if len({len(doc.get(f, ())) for f in fields}) != 1:
            raise FormatError(f"{path}: dictionary fields {', '.join(fields)} differ in "
                              f"length (a damaged file?)")
        d = cls()
        d.token2id = dict(zip(doc["tokens"], doc["ids"]))
        d.dfs = dict(zip(doc["ids"], doc["dfs"]))
        d.cfs = dict(zip(doc["ids"], doc["cfs"]))
        d.num_docs, d.num_pos, d.num_nnz = doc["num_docs"], doc["num_pos"], doc["num_nnz"]
        return d
