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
from .tfidf import is_corpus

log = logging.getLogger("engine")

FORMAT = "engine-dictionary"
VERSION = 1
PRUNE_EVERY_DOCS = 10_000


class VocabTransform:
    """Ids of one dictionary to another's (Dictionary.merge_with): `transform[bow]` keeps
    the mapped ids of a document (or, for a corpus, of each), renumbered and sorted."""

    def __init__(self, old2new: dict[int, int]):
        self.old2new = dict(old2new)

    def __getitem__(self, bow):
        many, bow = is_corpus(bow)
        if many:
            return [self[doc] for doc in bow]
        return sorted((self.old2new[i], c) for i, c in bow if i in self.old2new)


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

    def iteritems(self):
        return iter(self.items())

    def iterkeys(self):
        return iter(self.keys())

    def itervalues(self):
        return iter(self.values())

    def most_common(self, n: int | None = None) -> list[tuple[str, int]]:
        """The n tokens that occur most often (all with None), as [(token, occurrences)],
        the most frequent first (ties: in the order the tokens were first counted)."""
        order = sorted(self.cfs.items(), key=lambda item: -item[1])
        if n is not None:
            order = order[:n]
        return [(self[i], c) for i, c in order]

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
    def from_corpus(cls, corpus: Iterable, id2word: Mapping | None = None) -> "Dictionary":
        """A dictionary from a bag-of-words corpus (documents of (id, count)): document
        frequencies, occurrences and sizes counted from it; tokens from `id2word` ({id:
        token}), or each id's own string ("0", "1", ... up to the largest id seen)."""
        d = cls()
        top = -1
        dfs, cfs = d.dfs, d.cfs
        for document in corpus:
            d.num_docs += 1
            d.num_nnz += len(document)
            for i, c in document:
                i = int(i)
                top = max(top, i)
                d.num_pos += c
                dfs[i] = dfs.get(i, 0) + 1
                cfs[i] = cfs.get(i, 0) + c
        if id2word is None:
            d.token2id = {str(i): i for i in range(top + 1)}
        else:
            d.token2id = {t if isinstance(t, str) else str(t): int(i)
                          for i, t in id2word.items()}
        for i in d.token2id.values():
            dfs.setdefault(i, 0)
            cfs.setdefault(i, 0)
        return d

    def merge_with(self, other: "Dictionary") -> "VocabTransform":
        """Add `other`'s tokens (new ones get the next ids) and statistics to this one.
        Returns a transform from other's ids to these: `transform[bow]` renumbers a
        document of other's corpus."""
        old2new = {}
        for other_id, token in other.items():
            new_id = self.token2id.get(token)
            if new_id is None:
                new_id = self.token2id[token] = len(self.token2id)
            old2new[other_id] = new_id
            self.dfs[new_id] = self.dfs.get(new_id, 0) + other.dfs.get(other_id, 0)
            self.cfs[new_id] = self.cfs.get(new_id, 0) + other.cfs.get(other_id, 0)
        self.num_docs += other.num_docs
        self.num_nnz += other.num_nnz
        self.num_pos += other.num_pos
        self._id2token = {}
        return VocabTransform(old2new)

    def patch_with_special_tokens(self, special_token_dict: Mapping[str, int]) -> None:
        """Give each special token the id asked for ({token: id}); the token that held that
        id moves to the id the special token had, or else to a new last id (with its
        statistics). A special token new to the dictionary has none."""
        free: list[int] = []
        for token, idx in special_token_dict.items():
            idx = int(idx)
            if self.token2id.get(token) == idx:
                continue
            stats = (0, 0)
            if token in self.token2id:
                old = self.token2id.pop(token)
                free.append(old)
                stats = (self.dfs.pop(old, 0), self.cfs.pop(old, 0))
            self._id2token = {}
            displaced = self.id2token.get(idx)
            if displaced is None and idx != len(self.token2id):
                raise InvalidArgumentError(f"special token {token!r}: id {idx} is neither "
                                           f"held nor the next id ({len(self.token2id)})")
            self.token2id[token] = idx
            if displaced is not None:
                new = free.pop() if free else len(self.token2id) - 1
                self.token2id[displaced] = new
                self.dfs[new], self.cfs[new] = self.dfs.pop(idx, 0), self.cfs.pop(idx, 0)
            self.dfs[idx], self.cfs[idx] = stats
            self._id2token = {}

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

    def filter_n_most_frequent(self, remove_n: int) -> None:
        """Drop the `remove_n` tokens in most documents (ties: lower id first); compact."""
        ids = sorted(self.token2id.values(), key=lambda i: -self.dfs.get(i, 0))
        self.filter_tokens(bad_ids=ids[:max(int(remove_n), 0)])

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

    def save_as_text(self, fname: str, sort_by_word: bool = True) -> None:
        """gensim's text format: the number of documents, then one `id<TAB>token<TAB>
        document frequency` line per token, by token (or by falling document frequency);
        written atomically. Occurrence counts are not in this format (save() keeps them)."""
        bad = next((t for t in self.token2id if "\t" in t or "\n" in t or "\r" in t), None)
        if bad is not None:
            raise InvalidArgumentError(f"save_as_text: token {bad!r} holds a tab or a line "
                                       f"break, which this format cannot; use save()")
        if sort_by_word:
            rows = [(i, t, self.dfs.get(i, 0)) for t, i in sorted(self.token2id.items())]
        else:
            rows = sorted(((i, self[i], self.dfs.get(i, 0)) for i in self.token2id.values()),
                          key=lambda r: (-r[2], r[0]))
        with atomic_file(str(fname), "w", encoding="utf-8") as fh:
            fh.write(f"{self.num_docs}\n")
            fh.writelines(f"{i}\t{t}\t{df}\n" for i, t, df in rows)

    @classmethod
    def load_from_text(cls, fname: str) -> "Dictionary":
        """Read save_as_text's format (a first line without the number of documents, as
        older files have, is read as a token line); a malformed line is one error naming
        the file and line."""
        path = str(fname)
        d = cls()
        try:
            fh = open(path, encoding="utf-8")
        except FileNotFoundError:
            raise MissingFileError(f"{path}: dictionary file not found") from None
        with fh:
            try:
                for lineno, line in enumerate(fh, 1):
                    line = line.rstrip("\n")
                    if lineno == 1 and line.strip().isdigit():
                        d.num_docs = int(line)
                        continue
                    parts = line.split("\t")
                    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
                        raise FormatError(f"{path}:{lineno}: expected 'id<TAB>token<TAB>"
                                          f"document frequency', got {line[:80]!r}")
                    i, token, df = int(parts[0]), parts[1], int(parts[2])
                    if token in d.token2id or i in d.dfs:
                        raise FormatError(f"{path}:{lineno}: token {token!r} or id {i} "
                                          f"given twice")
                    d.token2id[token] = i
                    d.dfs[i] = df
            except UnicodeDecodeError as exc:
                raise FormatError(f"{path}: not UTF-8 text ({exc})") from None
        return d

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
