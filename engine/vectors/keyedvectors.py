"""KeyedVectors: keys (words) and their vectors, with gensim 4's KeyedVectors API.

Code written for gensim's class runs unchanged: the same names, defaults, return types and
exception types (engine's errors derive from the built-in gensim raises: an unknown key is
an UnknownKeyError, which is a KeyError). Where engine differs, it is where gensim 4.4
returns something wrong quietly (see the method docstrings): a repeated word in a file, a
damaged file, most_similar_cosmul's restrict_vocab.

Queries are vectorised: one matrix-vector product over the vectors, divided by the cached
norms (fill_norms; dropped whenever the vectors change), never a loop over the keys.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import warnings
from collections import Counter
from numbers import Integral

import numpy as np

from . import evaluate, w2vformat
from ..runtime.atomic import atomic_file
from ..errors import (EmptyInputError, FileAccessError, FormatError, InvalidArgumentError,
                      InvalidTypeError, MissingDependencyError, MissingFileError, UnknownKeyError)

log = logging.getLogger(__name__)

_KEY_TYPES = (str, int, np.integer)
_KEY_OR_VECTOR = (str, int, np.integer, np.ndarray)
_NATIVE_FORMAT = "engine-keyedvectors"


def _as_list(value) -> list:
    """positive= / negative= as a list: one key or 1-D vector, the rows of a 2-D array, or
    the items of a sequence."""
    if value is None:
        return []
    if isinstance(value, _KEY_TYPES) or (isinstance(value, np.ndarray) and value.ndim == 1):
        return [value]
    return list(value)


def _unit(vector: np.ndarray) -> np.ndarray:
    """vector / its length, in its own dtype (a zero vector unchanged)."""
    norm = np.linalg.norm(vector)
    return (vector / norm).astype(vector.dtype) if norm > 0 else vector


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first (ties: lower index first; nan last)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    cand = np.sort(np.argpartition(-scores, k - 1)[:k]) if k < len(scores) \
        else np.arange(len(scores))
    return cand[np.argsort(-scores[cand], kind="stable")]


def _native_meta(fname: str, data: bytes) -> dict:
    """The JSON of a save() file, checked to have what load() reads."""
    fields = {"vector_size": int, "shape": list, "vectors": str, "next_index": int,
              "keys": list, "vecattrs": dict}
    try:
        meta = json.loads(data.decode("utf-8"))
        ok = (meta.get("format") == _NATIVE_FORMAT and meta.get("version") == 1
              and all(isinstance(meta.get(f), t) for f, t in fields.items()))
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        ok = False
    if not ok:
        raise FormatError(f"{fname}: not a KeyedVectors file written by engine's save()")
    return meta


class KeyedVectors:
    """Keys and vectors (gensim.models.KeyedVectors' attributes: vector_size, index_to_key,
    key_to_index, vectors, norms, expandos (per-key attributes such as 'count'))."""

    def __init__(self, vector_size, count=0, dtype=np.float32):
        """Empty vectors of `vector_size` dimensions, room for `count` of them (filled by
        add_vector). Vectors for known keys: from_arrays."""
        if not isinstance(vector_size, Integral) or isinstance(vector_size, bool):
            raise InvalidTypeError(f"KeyedVectors: vector_size must be an integer, got "
                                   f"{type(vector_size).__name__} (for keys and vectors use "
                                   f"KeyedVectors.from_arrays)")
        self.vector_size = int(vector_size)
        self.index_to_key = [None] * count
        self.next_index = 0
        self.key_to_index = {}
        self.vectors = np.zeros((count, self.vector_size), dtype=dtype)
        self.norms = None
        self.expandos = {}

    @classmethod
    def from_arrays(cls, keys, vectors, counts=None) -> "KeyedVectors":
        """Vectors for `keys` (row i for keys[i]; a float32 C-ordered array is used as is,
        not copied), with their word counts as the 'count' attribute if given."""
        vectors = np.asarray(vectors)
        if vectors.dtype.kind != "f":
            vectors = vectors.astype(np.float32)
        keys = list(keys)
        index = {k: i for i, k in enumerate(keys)}
        if vectors.ndim != 2 or len(keys) != len(vectors):
            raise InvalidArgumentError(f"{len(keys)} keys for vectors of shape "
                                       f"{vectors.shape}")
        if len(index) != len(keys):
            raise InvalidArgumentError(f"{len(keys) - len(index)} repeated keys")
        if counts is not None and len(counts) != len(keys):
            raise InvalidArgumentError(f"{len(counts)} counts for {len(keys)} keys")
        kv = cls(vectors.shape[1], 0, vectors.dtype)
        kv.index_to_key, kv.key_to_index, kv.next_index = keys, index, len(keys)
        kv.vectors = np.ascontiguousarray(vectors)
        if counts is not None:
            kv.expandos["count"] = np.asarray(counts, dtype=np.int64)
        return kv

    def __str__(self) -> str:
        return f"{type(self).__name__}<vector_size={self.vector_size}, {len(self)} keys>"

    # ---- keys and vectors ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index_to_key)

    def get_index(self, key, default=None) -> int:
        """Row of `key`; an int that is not a key is taken as a row number if in range;
        else `default`, or UnknownKeyError (a KeyError) "Key 'x' not present"."""
        index = self.key_to_index.get(key, -1)
        if index >= 0:
            return index
        if isinstance(key, (int, np.integer)) and 0 <= key < len(self.index_to_key):
            return int(key)
        if default is not None:
            return default
        raise UnknownKeyError(f"Key '{key}' not present")

    def has_index_for(self, key) -> bool:
        return self.get_index(key, -1) >= 0

    def __contains__(self, key) -> bool:
        return self.has_index_for(key)

    def get_vector(self, key, norm: bool = False) -> np.ndarray:
        """The key's vector (read-only), scaled to unit length with norm."""
        index = self.get_index(key)
        if norm:
            self.fill_norms()
            result = self.vectors[index] / self.norms[index]
        else:
            result = self.vectors[index]
        result.setflags(write=False)
        return result

    def word_vec(self, *args, **kwargs) -> np.ndarray:
        """Deprecated alias of get_vector (as in gensim 4)."""
        warnings.warn("Use get_vector instead", DeprecationWarning, stacklevel=2)
        return self.get_vector(*args, **kwargs)

    def __getitem__(self, key_or_keys) -> np.ndarray:
        """One key's vector, or a 2-D array of the vectors of a list of keys."""
        if isinstance(key_or_keys, _KEY_TYPES):
            return self.get_vector(key_or_keys)
        rows = [self.get_index(key) for key in key_or_keys]
        if not rows:
            raise InvalidArgumentError("need at least one key")
        return self.vectors[rows]

    def add_vector(self, key, vector) -> int:
        """Add one key into the next free preallocated slot (or at the end, warning that
        growing one at a time is slow, as gensim); returns its row. A key already present
        keeps its vector (as add_vectors; gensim would index it twice)."""
        if key in self.key_to_index:
            return self.key_to_index[key]
        target = self.next_index
        if target >= len(self) or self.index_to_key[target] is not None:
            warnings.warn("Adding single vectors to a KeyedVectors which grows by one each "
                          "time can be costly. Consider adding in batches or preallocating "
                          "to the required size.", UserWarning, stacklevel=2)
            self.add_vectors([key], np.asarray(vector).reshape(1, -1))
            target = len(self) - 1
        else:
            self.index_to_key[target] = key
            self.key_to_index[key] = target
            self.vectors[target] = vector
            self.norms = None
        self.next_index = target + 1
        return target

    def add_vectors(self, keys, weights, extras=None, replace: bool = False) -> None:
        """Append keys and their vectors (one key and vector, or a list and a 2-D array);
        a key already present keeps its vector unless replace. extras: {attribute: values
        for the keys}, stored as with set_vecattr."""
        if isinstance(keys, _KEY_TYPES):
            keys, weights = [keys], np.asarray(weights).reshape(1, -1)
        weights = np.asarray(weights)
        if weights.ndim != 2 or weights.shape != (len(keys), self.vector_size):
            raise InvalidArgumentError(f"add_vectors: {len(keys)} keys and weights of shape "
                                       f"{weights.shape}; expected ({len(keys)}, "
                                       f"{self.vector_size})")
        weights = weights.astype(self.vectors.dtype, copy=False)
        extras = {attr: np.asarray(v) for attr, v in (extras or {}).items()}
        self.allocate_vecattrs(list(extras), [v.dtype for v in extras.values()])
        start = len(self.index_to_key)
        added, new_rows, old_index, old_rows = {}, [], [], []     # added: new key -> row
        for row, key in enumerate(keys):
            index = self.key_to_index.get(key, added.get(key))
            if index is None:
                added[key] = start + len(added)
                new_rows.append(row)
            else:
                old_index.append(index)
                old_rows.append(row)
        self.vectors = np.vstack((self.vectors, weights[new_rows]))
        self.key_to_index.update(added)
        self.index_to_key.extend(added)
        self.allocate_vecattrs()
        for attr, values in extras.items():
            self.expandos[attr][start:] = values[new_rows]
        if replace and old_index:
            self.vectors[old_index] = weights[old_rows]
            for attr, values in extras.items():
                self.expandos[attr][old_index] = values[old_rows]
        self.norms = None

    def __setitem__(self, keys, weights) -> None:
        """kv[key] = vector, kv[[keys]] = 2-D array: add or replace."""
        if not isinstance(keys, list):
            keys, weights = [keys], np.asarray(weights).reshape(1, -1)
        self.add_vectors(keys, weights, replace=True)

    def vectors_for_all(self, keys, allow_inference: bool = True,
                        copy_vecattrs: bool = False) -> "KeyedVectors":
        """A new KeyedVectors of the given keys that are here (each once, in the order
        given); with copy_vecattrs, their attributes too."""
        wanted = [k for k in dict.fromkeys(keys)
                  if (k in self if allow_inference else k in self.key_to_index)]
        rows = [self.get_index(k) for k in wanted]
        kv = type(self).from_arrays(wanted, self.vectors[rows].copy(),
                                    np.arange(len(wanted), 0, -1))
        if copy_vecattrs:
            for attr, values in self.expandos.items():
                kv.expandos[attr] = values[rows].copy()
        return kv

    # ---- per-key attributes (gensim's "expandos": 'count' and the like) --------------------
    def allocate_vecattrs(self, attrs=None, types=None) -> None:
        """Make an array per attribute, one value per key (all of them, with no arguments),
        sized to the keys; a type that conflicts with an existing array: InvalidTypeError."""
        if attrs is None:
            attrs = list(self.expandos)
            types = [self.expandos[a].dtype for a in attrs]
        size = len(self.index_to_key)
        for attr, kind in zip(attrs, types):
            kind = np.int64 if kind is int else object if kind is str else kind
            old = self.expandos.get(attr)
            if old is None:
                self.expandos[attr] = np.zeros(size, dtype=kind)
                continue
            try:
                fits = np.issubdtype(kind, old.dtype)
            except TypeError:
                fits = False
            if not fits:
                raise InvalidTypeError(f"Can't allocate type {kind} for attribute {attr}, "
                                       f"conflicts with its existing type {old.dtype}")
            if len(old) != size:
                grown = np.zeros(size, dtype=old.dtype)
                grown[:min(size, len(old))] = old[:size]
                self.expandos[attr] = grown

    def set_vecattr(self, key, attr: str, val) -> None:
        self.allocate_vecattrs([attr], [type(val)])
        self.expandos[attr][self.get_index(key)] = val

    def get_vecattr(self, key, attr: str):
        index = self.get_index(key)
        if attr not in self.expandos:
            raise UnknownKeyError(attr)
        return self.expandos[attr][index]

    def sort_by_descending_frequency(self) -> None:
        """Reorder the keys by descending 'count' (ties: the later key first, as gensim)."""
        if not len(self):
            return
        if "count" not in self.expandos:
            raise UnknownKeyError("count")
        counts = np.asarray(self.expandos["count"], dtype=np.int64)
        order = np.lexsort((-np.arange(len(counts)), -counts))
        self.index_to_key = [self.index_to_key[i] for i in order]
        self.allocate_vecattrs()
        for attr in self.expandos:
            self.expandos[attr] = self.expandos[attr][order]
        if len(self.vectors):
            self.vectors = self.vectors[order]
        self.key_to_index = {k: i for i, k in enumerate(self.index_to_key)}
        self.norms = None

    # ---- norms -----------------------------------------------------------------------------
    def fill_norms(self, force: bool = False) -> None:
        """Compute the vectors' lengths once (kept in .norms until the vectors change)."""
        if self.norms is None or force or len(self.norms) != len(self.vectors):
            self.norms = np.linalg.norm(self.vectors, axis=1)

    def get_normed_vectors(self) -> np.ndarray:
        """All vectors scaled to unit length (a new array)."""
        self.fill_norms()
        return self.vectors / self.norms[:, None]

    def unit_normalize_all(self) -> None:
        """Scale every vector to unit length in place (training cannot go on sensibly)."""
        self.fill_norms()
        self.vectors /= self.norms[:, None]
        self.norms = np.ones(len(self.vectors), dtype=self.vectors.dtype)

    def init_sims(self, replace: bool = False) -> None:
        """Deprecated (gensim 4): fill_norms, and unit_normalize_all with replace."""
        warnings.warn("Use fill_norms() instead", DeprecationWarning, stacklevel=2)
        self.fill_norms()
        if replace:
            self.unit_normalize_all()

    # ---- similarity queries ----------------------------------------------------------------
    def get_mean_vector(self, keys, weights=None, pre_normalize: bool = True,
                        post_normalize: bool = False, ignore_missing: bool = True
                        ) -> np.ndarray:
        """Weighted mean of keys' vectors (unit vectors with pre_normalize) and of given
        vectors (taken as they are), over the sum of |weights|; a key not present is
        skipped, or with ignore_missing=False an UnknownKeyError."""
        if len(keys) == 0:
            raise InvalidArgumentError("cannot compute mean with no input")
        if isinstance(weights, list):
            weights = np.array(weights, dtype=self.vectors.dtype)
        if weights is None:
            weights = np.ones(len(keys), dtype=self.vectors.dtype)
        if len(keys) != weights.shape[0]:
            raise InvalidArgumentError("keys and weights array must have same number of "
                                       "elements")
        rows, row_w, given, given_w = [], [], [], []
        for key, weight in zip(keys, weights):
            if isinstance(key, np.ndarray):
                given.append(key)
                given_w.append(weight)
            elif key in self:
                rows.append(self.get_index(key))
                row_w.append(weight)
            elif not ignore_missing:
                raise UnknownKeyError(f"Key '{key}' not present in vocabulary")
        mean = np.zeros(self.vector_size, dtype=np.float64)
        if rows:
            vecs = self.vectors[rows]
            if pre_normalize:
                self.fill_norms()
                vecs = vecs / self.norms[rows, None]
            mean += np.asarray(row_w, dtype=np.float64) @ vecs
        if given:
            mean += np.asarray(given_w, dtype=np.float64) @ np.vstack(given)
        total = float(np.abs(np.asarray(row_w + given_w, dtype=np.float64)).sum())
        mean = (mean / total if total > 0 else mean).astype(self.vectors.dtype)
        return _unit(mean).astype(np.float32) if post_normalize else mean

    def _ranked(self, scores: np.ndarray, topn: int, skip: set, offset: int = 0) -> list:
        """[(key, score)] of the topn best rows, rows in `skip` (offset by `offset`) left out."""
        best = _top(scores, topn + len(skip))
        result = [(self.index_to_key[i + offset], float(scores[i])) for i in best
                  if i + offset not in skip]
        return result[:topn]

    def _query_rows(self, keys) -> set:
        return {self.get_index(k) for k in keys if isinstance(k, _KEY_TYPES) and k in self}

    def most_similar(self, positive=None, negative=None, topn=10, clip_start=0, clip_end=None,
                     restrict_vocab=None, indexer=None):
        """Keys nearest (cosine) to the weighted mean of the positive unit vectors minus the
        negative ones. Items: keys, vectors, (key or vector, weight) pairs; one key or a
        2-D array also. topn=None: the scores of every key (of the clip range) as an array;
        restrict_vocab=N: only the first N keys (overrides clip_start / clip_end); indexer:
        an object whose most_similar(mean_vector, topn) answers instead. The query keys are
        left out of the answer."""
        if isinstance(topn, Integral) and topn < 1:
            return []
        items = [(x, 1.0) for x in _as_list(positive)] + [(x, -1.0) for x in
                                                           _as_list(negative)]
        keys = [x if isinstance(x, _KEY_OR_VECTOR) else x[0] for x, _ in items]
        weights = np.array([w if isinstance(x, _KEY_OR_VECTOR) else x[1] for x, w in items],
                           dtype=np.float64)
        self.fill_norms()
        clip_end = clip_end or len(self.vectors)
        if restrict_vocab:
            clip_start, clip_end = 0, restrict_vocab
        mean = self.get_mean_vector(keys, weights, pre_normalize=True, post_normalize=True,
                                    ignore_missing=False)
        if indexer is not None and isinstance(topn, int):
            return indexer.most_similar(mean, topn)
        scores = (self.vectors[clip_start:clip_end] @ mean) / self.norms[clip_start:clip_end]
        if not topn:
            return scores
        return self._ranked(scores, topn, self._query_rows(keys), clip_start)

    def most_similar_cosmul(self, positive=None, negative=None, topn=10, restrict_vocab=None):
        """Levy & Goldberg's 3CosMul: the product of the (shifted to [0, 1]) similarities
        to the positive items over that to the negative ones. Keys are taken as unit
        vectors, vectors as given. restrict_vocab=N: only the first N keys (gensim 4.4
        ignores it and searches them all)."""
        if isinstance(topn, Integral) and topn < 1:
            return []
        positive, negative = _as_list(positive), _as_list(negative)
        if not positive:
            raise InvalidArgumentError("cannot compute similarity with no input")
        self.fill_norms()
        end = restrict_vocab or len(self.vectors)
        terms = np.array([x if isinstance(x, np.ndarray) else self.get_vector(x, norm=True)
                          for x in positive + negative], dtype=self.vectors.dtype)
        sims = (1 + (self.vectors[:end] @ terms.T) / self.norms[:end, None]) / 2
        # without negatives the denominator is float64 1, making the scores float64 (gensim)
        below = np.prod(sims[:, len(positive):], axis=1) if negative else np.float64(1.0)
        scores = np.prod(sims[:, :len(positive)], axis=1) / (below + 0.000001)
        if not topn:
            return scores
        return self._ranked(scores, topn, self._query_rows(positive + negative))

    def similar_by_key(self, key, topn=10, restrict_vocab=None):
        """most_similar(positive=[key])."""
        return self.most_similar(positive=[key], topn=topn, restrict_vocab=restrict_vocab)

    def similar_by_word(self, word, topn=10, restrict_vocab=None):
        """Alias of similar_by_key."""
        return self.similar_by_key(word, topn, restrict_vocab)

    def similar_by_vector(self, vector, topn=10, restrict_vocab=None):
        """most_similar(positive=[vector])."""
        return self.most_similar(positive=[vector], topn=topn, restrict_vocab=restrict_vocab)

    def similarity(self, w1, w2) -> np.floating:
        """Cosine similarity of two keys (a numpy scalar of the vectors' dtype)."""
        return np.dot(_unit(self[w1]), _unit(self[w2]))

    def distance(self, w1, w2):
        """1 - similarity."""
        return 1 - self.similarity(w1, w2)

    def n_similarity(self, ws1, ws2):
        """Cosine similarity of the means of two lists of keys (unknown keys skipped)."""
        if not (len(ws1) and len(ws2)):
            raise EmptyInputError("At least one of the passed list is empty.")
        mean1 = self.get_mean_vector(ws1, pre_normalize=False)
        mean2 = self.get_mean_vector(ws2, pre_normalize=False)
        return np.dot(_unit(mean1), _unit(mean2))

    @staticmethod
    def cosine_similarities(vector_1, vectors_all) -> np.ndarray:
        """Cosine similarity of one vector to each row of a 2-D array."""
        norm = np.linalg.norm(vector_1)
        return (vectors_all @ vector_1) / (norm * np.linalg.norm(vectors_all, axis=1))

    def distances(self, word_or_vector, other_words=()) -> np.ndarray:
        """Cosine distances from a key or vector to other_words (default: every key)."""
        vector = (self.get_vector(word_or_vector) if isinstance(word_or_vector, _KEY_TYPES)
                  else np.asarray(word_or_vector))
        if not other_words:
            self.fill_norms()
            return 1 - (self.vectors @ vector) / (np.linalg.norm(vector) * self.norms)
        others = self.vectors[[self.get_index(w) for w in other_words]]
        return 1 - self.cosine_similarities(vector, others)

    def closer_than(self, key1, key2) -> list:
        """Keys closer to key1 than key2 is (key1 itself left out), in index order."""
        dist = self.distances(key1)
        i1, i2 = self.get_index(key1), self.get_index(key2)
        return [self.index_to_key[i] for i in np.flatnonzero(dist < dist[i2]) if i != i1]

    def words_closer_than(self, word1, word2) -> list:
        """Deprecated alias of closer_than."""
        warnings.warn("Use closer_than instead", DeprecationWarning, stacklevel=2)
        return self.closer_than(word1, word2)

    def rank(self, key1, key2) -> int:
        """1 + the number of keys closer to key1 than key2 is."""
        return len(self.closer_than(key1, key2)) + 1

    def most_similar_to_given(self, key1, keys_list):
        """The key of keys_list most similar to key1."""
        return keys_list[int(np.argmax([self.similarity(key1, k) for k in keys_list]))]

    def rank_by_centrality(self, words, use_norm: bool = True) -> list:
        """[(similarity to the words' mean, word)], most central first (unknown words are
        skipped with a warning)."""
        self.fill_norms()
        used = [w for w in words if w in self]
        if len(used) != len(words):
            log.warning("vectors for words %s are not present in the model, ignoring these "
                        "words", set(words) - set(used))
        if not used:
            raise InvalidArgumentError("cannot select a word from an empty list")
        vectors = np.vstack([self.get_vector(w, norm=use_norm) for w in used]
                            ).astype(np.float32)
        mean = self.get_mean_vector(vectors, post_normalize=True)
        return sorted(zip(vectors @ mean, used), reverse=True)

    def doesnt_match(self, words):
        """The word furthest from the mean of the words."""
        return self.rank_by_centrality(words)[-1][1]

    def relative_cosine_similarity(self, wa, wb, topn=10) -> float:
        """similarity(wa, wb) over the sum of wa's topn similarities (Leeuwenberg et al.)."""
        sims = self.similar_by_word(wa, topn)
        if not sims:
            raise InvalidArgumentError("Cannot calculate relative cosine similarity without "
                                       "any similar words.")
        return float(self.similarity(wa, wb)) / sum(s for _, s in sims)

    def wmdistance(self, document1, document2, norm: bool = True) -> float:
        """Word Mover's Distance between two lists of words (unknown words dropped; inf if
        a list has none left). Needs POT (pip install POT)."""
        try:
            from ot import emd2
        except ImportError as exc:
            raise MissingDependencyError("KeyedVectors.wmdistance needs POT (Python Optimal "
                                         "Transport): pip install POT (or engine[wmd])"
                                         ) from exc
        doc1 = [t for t in document1 if t in self]
        doc2 = [t for t in document2 if t in self]
        if not doc1 or not doc2:
            log.warning("at least one of the documents had no words that were in the "
                        "vocabulary")
            return float("inf")
        if len(set(doc1) | set(doc2)) == 1:
            return 0.0
        words1, words2 = list(dict.fromkeys(doc1)), list(dict.fromkeys(doc2))
        v1 = np.array([self.get_vector(t, norm=norm) for t in words1], dtype=np.float64)
        v2 = np.array([self.get_vector(t, norm=norm) for t in words2], dtype=np.float64)
        cost = np.sqrt(((v1[:, None, :] - v2[None, :, :]) ** 2).sum(axis=2))
        if abs(cost.sum()) < 1e-8:
            return float("inf")          # as gensim: emd gets stuck on an all-zero matrix
        count1, count2 = Counter(doc1), Counter(doc2)
        mass1 = np.array([count1[t] for t in words1], dtype=np.float64) / len(doc1)
        mass2 = np.array([count2[t] for t in words2], dtype=np.float64) / len(doc2)
        return float(emd2(mass1, mass2, cost))

    # ---- evaluations -----------------------------------------------------------------------
    def evaluate_word_analogies(self, analogies, restrict_vocab=300000,
                                case_insensitive=True, dummy4unknown=False,
                                similarity_function="most_similar"):
        """Accuracy on an analogy file (': SECTION' lines, then lines 'a b c d': a is to b as
        c is to d), as gensim: returns (score, sections), sections being dicts {'section',
        'correct', 'incorrect'} (lists of the questions' upper-cased words with
        case_insensitive), the last 'Total accuracy'. Questions with a word outside the
        first restrict_vocab keys are skipped (dummy4unknown: counted wrong). The answer is
        the best key that is not a question word (nor, case-insensitively, a case variant
        of one). similarity_function: 'most_similar' (3CosAdd) or 'most_similar_cosmul'
        (gensim 4.4 ignores this argument)."""
        return evaluate.evaluate_word_analogies(self, analogies, restrict_vocab,
                                              case_insensitive, dummy4unknown,
                                              similarity_function)

    def evaluate_word_pairs(self, pairs, delimiter="\t", encoding="utf8",
                            restrict_vocab=300000, case_insensitive=True, dummy4unknown=False):
        """Correlation of cosine similarities with human scores in a 'w1<TAB>w2<TAB>score'
        file ('#' lines are comments), as gensim: ((pearson r, p), (spearman rho, p),
        oov_ratio in percent). Pairs with an unknown word are skipped (dummy4unknown:
        given similarity 0)."""
        return evaluate.evaluate_word_pairs(self, pairs, delimiter, encoding, restrict_vocab,
                                          case_insensitive, dummy4unknown)

    # ---- word2vec format -------------------------------------------------------------------
    def save_word2vec_format(self, fname, fvocab=None, binary=False, total_vec=None,
                             write_header=True, prefix="", append=False, sort_attr="count"):
        """Write the original word2vec format (text by default, as gensim; binary=True for
        the C tool's binary), compressed by suffix (.gz, .bz2, .xz), atomically. Keys are
        written by descending `sort_attr` if the vectors have that attribute (ties: index
        order), else in index order; fvocab: also write 'WORD COUNT' lines there (needs the
        attribute). A key the format cannot hold (empty, with whitespace) is refused before
        anything is written."""
        unfilled = len(self.index_to_key) - len(self.key_to_index)
        if unfilled:
            raise InvalidArgumentError(f"{fname}: {unfilled} preallocated slots have no key "
                                       f"yet; nothing written")
        if sort_attr in self.expandos:
            order = np.argsort(-np.asarray(self.expandos[sort_attr]), kind="stable")
        elif fvocab is not None:
            raise InvalidArgumentError(f"Cannot store vocabulary with '{sort_attr}' because "
                                       f"that attribute does not exist")
        else:
            log.warning("attribute %s not present in %s; will store in internal index_to_key "
                        "order", sort_attr, self)
            order = np.arange(len(self))
        keys = self.index_to_key                  # the keys themselves, not new strings
        words = [keys[i] if not prefix and type(keys[i]) is str else f"{prefix}{keys[i]}"
                 for i in order]
        w2vformat.check_words(fname, words)               # before fvocab: nothing written
        if fvocab is not None:
            w2vformat.write_counts(fvocab, words, self.expandos[sort_attr][order], append)
        header = (f"{len(self) if total_vec is None else total_vec} {self.vector_size}"
                  if write_header else None)
        w2vformat.write_word2vec(fname, words, self.vectors, binary, header, append, order)

    @classmethod
    def load_word2vec_format(cls, fname, fvocab=None, binary=False, encoding="utf8",
                             unicode_errors="strict", limit=None, datatype=np.float32,
                             no_header=False, max_dim=w2vformat.MAX_DIM) -> "KeyedVectors":
        """Read the original word2vec format (text by default, as gensim; binary=True for
        the C tool's binary), compressed by suffix; limit: the first N vectors; no_header:
        a text file without the 'COUNT DIMENSIONS' line (GloVe); max_dim: the largest
        dimension a header may declare (a file you trust may need more). Counts come from fvocab
        ('WORD COUNT' lines) if given, else are made up, descending. A truncated or damaged
        file is refused (FormatError / TruncatedFileError naming the line or byte offset);
        a repeated word keeps its first vector."""
        counts = w2vformat.read_counts(fvocab, unicode_errors) if fvocab is not None else None
        keys, vectors, declared = w2vformat.read_word2vec(
            fname, binary, encoding, unicode_errors, limit, datatype, no_header, max_dim)
        if counts is None:
            made_up = np.arange(declared, declared - len(keys), -1)
        else:
            missing = [k for k in keys if k not in counts]
            if missing:
                log.warning("%s: vocabulary file is incomplete: %d words missing (%r...); "
                            "their count is 0", fvocab, len(missing), missing[0])
            made_up = [counts.get(k, 0) for k in keys]
        return cls.from_arrays(keys, vectors, made_up)

    # ---- engine's own format: save / load --------------------------------------------------
    def save(self, fname) -> None:
        """Write to `fname` (keys and attributes, JSON) and a vectors .npy beside it (its
        name is in the JSON), each atomically; the JSON, written last, is what switches to
        the new vectors, so a crash leaves the previous save whole."""
        keys = [int(k) if isinstance(k, np.integer) else k for k in self.index_to_key]
        if not all(k is None or isinstance(k, (str, int)) for k in keys):
            raise InvalidTypeError(f"{fname}: keys must be str or int to be saved")
        folder, base = os.path.split(os.path.abspath(fname))
        npy = f"{base}.vectors-{secrets.token_hex(4)}.npy"
        meta = {"format": _NATIVE_FORMAT, "version": 1, "vector_size": self.vector_size,
                "dtype": self.vectors.dtype.str, "shape": list(self.vectors.shape),
                "vectors": npy, "next_index": self.next_index, "keys": keys,
                "vecattrs": {a: {"dtype": v.dtype.str, "values": v.tolist()}
                             for a, v in self.expandos.items()}}
        try:
            text = json.dumps(meta, ensure_ascii=False)
        except TypeError as exc:
            raise InvalidTypeError(f"{fname}: an attribute's values cannot be saved ({exc})"
                                   ) from None
        try:
            with atomic_file(os.path.join(folder, npy), "wb") as fh:
                np.save(fh, self.vectors, allow_pickle=False)
            with atomic_file(fname, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise FileAccessError(f"{fname}: cannot write it ({exc.strerror or exc})"
                                  ) from None
        for old in os.listdir(folder):
            if old.startswith(f"{base}.vectors-") and old.endswith(".npy") and old != npy:
                os.unlink(os.path.join(folder, old))

    @classmethod
    def load(cls, fname, mmap=None) -> "KeyedVectors":
        """Read what save() wrote; mmap='r' maps the vectors read-only instead of reading
        them (many processes then share one copy)."""
        if mmap not in (None, "r", "r+", "c"):
            raise InvalidArgumentError(f"mmap={mmap!r}: expected None, 'r', 'r+' or 'c'")
        with w2vformat.Reader(fname, decompress=False) as reader:
            data = reader.read(-1)
        if data[:1] == b"\x80":
            raise FormatError(f"{fname}: a Python pickle (a gensim save?); engine loads the "
                              f"files its own save() writes. With gensim: "
                              f"KeyedVectors.load(...).save_word2vec_format(path, binary=True),"
                              f" then engine's load_word2vec_format(path, binary=True)")
        meta = _native_meta(fname, data)
        path = os.path.join(os.path.dirname(os.path.abspath(fname)),
                            os.path.basename(meta["vectors"]))
        try:
            vectors = np.load(path, mmap_mode=mmap, allow_pickle=False)
        except FileNotFoundError:
            raise MissingFileError(f"{path}: missing (the vectors of {fname})") from None
        except (ValueError, EOFError, OSError) as exc:
            raise FormatError(f"{path}: not a readable .npy file ({exc})") from None
        keys = meta["keys"]
        if vectors.ndim != 2 or vectors.dtype.kind != "f":
            raise FormatError(f"{path}: expected a matrix of floats, got {vectors.dtype} "
                              f"of shape {vectors.shape}")
        if list(vectors.shape) != meta["shape"] or len(keys) != len(vectors):
            raise FormatError(f"{path}: vectors of shape {vectors.shape}, {fname} expects "
                              f"{tuple(meta['shape'])} for {len(keys)} keys")
        kv = cls(meta["vector_size"], 0, vectors.dtype)
        kv.index_to_key = keys
        kv.key_to_index = {k: i for i, k in enumerate(keys) if k is not None}
        kv.vectors = vectors
        kv.next_index = meta["next_index"]
        kv.expandos = {a: _attribute(fname, a, v, len(keys))
                       for a, v in meta["vecattrs"].items()}
        return kv


def _attribute(fname: str, name: str, saved, n_keys: int) -> np.ndarray:
    """A saved per-key attribute (get_vecattr's): one scalar value per key, of a plain
    numeric, boolean or string dtype; anything else is refused before it is built (a
    subarray dtype such as '(536870911,)f4' would ask for gigabytes a value)."""
    try:
        dtype = np.dtype(saved["dtype"])
        values = saved["values"]
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{fname}: attribute {name!r} is damaged ({exc})") from None
    if dtype.subdtype is not None or dtype.fields is not None or dtype.kind not in "biufUb":
        raise FormatError(f"{fname}: attribute {name!r}: dtype {dtype.str!r}, expected a "
                          f"plain number, boolean or string")
    if not isinstance(values, list) or len(values) != n_keys:
        raise FormatError(f"{fname}: attribute {name!r}: "
                          f"{len(values) if isinstance(values, list) else 'no list of'} "
                          f"values for {n_keys} keys")
    try:
        out = np.array(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise FormatError(f"{fname}: attribute {name!r} is damaged ({exc})") from None
    if out.shape != (n_keys,):
        raise FormatError(f"{fname}: attribute {name!r}: one value per key expected, got "
                          f"shape {out.shape}")
    return out
