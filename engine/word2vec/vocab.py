"""Vocabulary: word counts -> the kept words (sorted by count) and the sampling tables the
kernels use: subsampling thresholds, the noise-word alias table, the Huffman tree."""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter

import numpy as np

from ..errors import CorpusError, EngineError
from ..runtime.atomic import atomic_file
from ..runtime.integrity import check_file, file_record, read_manifest, seal

KEEP_ALWAYS = (1 << 32) - 1
ONE32 = 1 << 32


def prune_counts(counts: Counter, max_size: int, min_reduce: int) -> int:
    """Drop words with count <= min_reduce until at most max_size remain (gensim's
    max_vocab_size rule, applied while counting). Returns the next min_reduce."""
    while len(counts) > max_size:
        for word in [w for w, c in counts.items() if c <= min_reduce]:
            del counts[word]
        min_reduce += 1
    return min_reduce


class Vocab:
    """Kept words in descending count order (ties: first seen first), and their counts."""

    def __init__(self, words: list[str], counts, raw_words: int, sentences: int = 0):
        self.words = list(words)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.raw_words = int(raw_words)        # every corpus token, OOV included
        self.sentences = int(sentences)
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, counts: Counter, raw_words: int, min_count: int = 5,
              max_final_vocab: int = 0, sentences: int = 0, source: str = "corpus") -> "Vocab":
        """From a Counter (insertion order = first seen)."""
        words = list(counts)
        return cls._select(np.fromiter(counts.values(), np.int64, len(words)),
                           lambda idx: [words[i] for i in idx], raw_words, min_count,
                           max_final_vocab, sentences, source)

    @classmethod
    def from_table(cls, table, raw_words: int, min_count: int = 5, max_final_vocab: int = 0,
                   sentences: int = 0, source: str = "corpus") -> "Vocab":
        """From an engine._text.TokenTable of counts (insertion order = first seen)."""
        return cls._select(table.values_array(), table.keys, raw_words, min_count,
                           max_final_vocab, sentences, source)

    @classmethod
    def _select(cls, counts: np.ndarray, words_of, raw_words, min_count, max_final_vocab,
                sentences, source) -> "Vocab":
        """Keep words with count >= min_count (raised so at most max_final_vocab remain, as
        gensim does: words tied at the cut all go), sorted by count, ties first seen first."""
        if raw_words == 0 or len(counts) == 0:
            raise CorpusError(f"{source}: no words found (empty corpus?)")
        order = np.argsort(-counts, kind="stable")
        threshold = min_count
        if max_final_vocab and len(order) > max_final_vocab:
            threshold = max(threshold, int(counts[order[max_final_vocab]]) + 1)
        keep = order[counts[order] >= threshold]
        if len(keep) == 0:
            top = int(counts[order[0]])
            raise CorpusError(f"{source}: no word occurs min_count={min_count} times "
                              f"(the most frequent occurs {top} times); lower [model] min_count")
        return cls(words_of(keep.tolist()), counts[keep], raw_words, sentences)

    # ---- tables for the kernels --------------------------------------------------------
    def sample_thresholds(self, sample: float) -> np.ndarray:
        """Keep-probability of each word as a 32-bit threshold (>= 2**32: always kept),
        with word2vec's formula: p = (sqrt(c / t) + 1) * t / c, t = sample * total."""
        counts = self.counts.astype(np.float64)
        if sample <= 0:
            return np.full(len(self), ONE32, dtype=np.uint64)
        total = counts.sum()
        t = sample * total if sample < 1.0 else float(int(sample * (3 + math.sqrt(5)) / 2))
        prob = np.minimum((np.sqrt(counts / t) + 1.0) * (t / counts), 1.0)
        return np.round(prob * ONE32).astype(np.uint64)

    def retained_words(self, sample: float) -> float:
        """Expected words per epoch after subsampling (for reports)."""
        thr = self.sample_thresholds(sample).astype(np.float64) / ONE32
        return float((np.minimum(thr, 1.0) * self.counts).sum())

    def alias_table(self, ns_exponent: float) -> tuple[np.ndarray, np.ndarray]:
        """Walker/Vose alias table for drawing noise words with p ~ count**ns_exponent in
        O(1): bucket b keeps itself with probability prob[b] / 2**32, else gives alias[b]."""
        weights = self.counts.astype(np.float64) ** ns_exponent
        n = len(weights)
        scaled = weights * (n / weights.sum())
        prob = np.ones(n, dtype=np.float64)
        alias = np.arange(n, dtype=np.int32)
        small = [i for i in range(n) if scaled[i] < 1.0]
        large = [i for i in range(n) if scaled[i] >= 1.0]
        s = scaled.tolist()
        while small and large:
            lo, hi = small.pop(), large.pop()
            prob[lo] = s[lo]
            alias[lo] = hi
            s[hi] = s[hi] + s[lo] - 1.0
            (small if s[hi] < 1.0 else large).append(hi)
        thr = np.round(prob * ONE32).astype(np.uint64)
        return thr, alias

    def keep_table(self, sample: float) -> np.ndarray:
        """sample_thresholds packed for the kernels: uint32, KEEP_ALWAYS (2**32 - 1) for a
        word never dropped (no random draw is spent on it), else the threshold (at most
        2**32 - 2). Half the bytes of the uint64 form, so more of it stays in cache."""
        thr = self.sample_thresholds(sample)
        return np.where(thr >= ONE32, KEEP_ALWAYS, np.minimum(thr, KEEP_ALWAYS - 1)).astype(
            np.uint32)

    def noise_table(self, ns_exponent: float) -> np.ndarray:
        """alias_table packed for the kernels, one uint64 per bucket: the low 32 bits keep
        the bucket (threshold, 2**32 clamped to 2**32 - 1: a full bucket is its own alias),
        the high 32 bits are its alias, so one draw reads one cache line."""
        thr, alias = self.alias_table(ns_exponent)
        return np.minimum(thr, ONE32 - 1) | (alias.astype(np.uint64) << np.uint64(32))

    def huffman(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Huffman codes of the words by count: (codes uint8 [V, L], points int32 [V, L],
        lengths int32 [V]); points index the V-1 inner nodes (rows of syn1), root first.

        Nodes: words 0..V-1, inner nodes V.. in the order they are made; each merge takes
        the two smallest by (count, node id), the first gets bit 0. Linear: the words in
        ascending count order form one queue, the inner nodes (made in ascending count
        order) another, so the smallest is always at the front of one of them."""
        n = len(self)
        if n < 2:
            return (np.zeros((n, 1), np.uint8), np.zeros((n, 1), np.int32),
                    np.zeros(n, dtype=np.int32))
        parent, bit = huffman_tree(self.counts)
        return huffman_paths(parent, bit, n)

    # ---- persistence ------------------------------------------------------------------
    def save(self, folder: str) -> None:
        """vocab.tsv: one `word<TAB>count` per line, the word with backslash, tab, newline
        and carriage return escaped (so any token survives the round trip); vocab.json:
        totals and vocab.tsv's size and checksum, sealed (see engine.runtime.integrity)."""
        tsv = os.path.join(folder, "vocab.tsv")
        with atomic_file(tsv, "w", encoding="utf-8", errors="surrogateescape",
                         newline="\n") as fh:
            for w, c in zip(self.words, self.counts.tolist()):
                fh.write(f"{_escape(w)}\t{c}\n")
        meta = seal({"raw_words": self.raw_words, "sentences": self.sentences,
                     "escaped": True, "words": len(self), "tsv": file_record(tsv)})
        with atomic_file(os.path.join(folder, "vocab.json"), "w") as fh:
            json.dump(meta, fh)

    @classmethod
    def load(cls, folder: str) -> "Vocab":
        """The vocabulary saved in `folder`; a missing, truncated or corrupted file is an
        EngineError naming it (vocabularies saved before checksums load unchecked)."""
        path = os.path.join(folder, "vocab.json")
        tsv = os.path.join(folder, "vocab.tsv")
        try:
            meta, sealed = read_manifest(path)
        except FileNotFoundError:
            raise EngineError(f"{folder}: no vocabulary there (vocab.json missing)") from None
        except OSError as exc:
            raise EngineError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if sealed:
            check_file(tsv, meta.get("tsv"), path)
        elif set(meta) - _UNSEALED_KEYS:
            raise EngineError(f"{path}: its checksum is missing: the file is damaged")
        raw_words, sentences = meta.get("raw_words"), meta.get("sentences", 0)
        for key, value in (("raw_words", raw_words), ("sentences", sentences)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise EngineError(f"{path}: {key} is {value!r}, expected a count")
        words, counts = _read_tsv(tsv, _unescape if meta.get("escaped") else (lambda w: w))
        if sealed and meta.get("words") != len(words):
            raise EngineError(f"{tsv}: {len(words)} words, {path} says {meta.get('words')!r}")
        return cls(words, counts, raw_words, sentences)


_UNSEALED_KEYS = {"raw_words", "sentences", "escaped"}    # vocab.json before checksums
_COUNT = re.compile(r"[0-9]{1,19}")


def _read_tsv(path: str, unescape) -> tuple[list[str], list[int]]:
    """Words and counts of vocab.tsv; a line that is not `word<TAB>count` (the count a
    non-negative integer, the word not listed before) is an EngineError naming the line."""
    words, counts, seen = [], [], set()
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as fh:
            for n, line in enumerate(fh, 1):
                w, tab, c = line.rstrip("\n").rpartition("\t")
                if not tab or not _COUNT.fullmatch(c):
                    raise EngineError(f"{path}, line {n}: expected word<TAB>count")
                word = unescape(w)
                if word in seen:
                    raise EngineError(f"{path}, line {n}: the word {word!r} again")
                seen.add(word)
                words.append(word)
                counts.append(int(c))
    except FileNotFoundError:
        raise EngineError(f"{path}: missing (the vocabulary's words)") from None
    except OSError as exc:
        raise EngineError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return words, counts


def huffman_tree(counts) -> tuple[np.ndarray, np.ndarray]:
    """The Huffman tree of `counts` (at least 2) as parent[node] and bit[node] over the
    2V-1 nodes (words, then inner nodes in the order made; the root is the last): the
    classic two-queue merge, ties to the lower node id (as a heap of (count, id) would)."""
    n = len(counts)
    order = np.argsort(counts, kind="stable").tolist()     # words by (count, id)
    leaf = np.asarray(counts, dtype=np.int64)[order].tolist()
    inner: list[int] = []                    # counts of the inner nodes made so far
    parent = [0] * (2 * n - 1)
    bit = bytearray(2 * n - 1)
    i = j = 0                                # fronts of the two queues
    for node in range(n, 2 * n - 1):
        total = 0
        for side in (0, 1):                  # the two smallest fronts, bit 0 then bit 1
            # the word front on ties (a word's id is below every inner node's)
            if i < n and (j >= len(inner) or leaf[i] <= inner[j]):
                child, count = order[i], leaf[i]
                i += 1
            else:
                child, count = n + j, inner[j]
                j += 1
            parent[child] = node
            bit[child] = side
            total += count
        inner.append(total)
    return np.array(parent, dtype=np.int64), np.frombuffer(bit, dtype=np.uint8)


def huffman_paths(parent: np.ndarray, bit: np.ndarray, n: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes, points (inner node - n) and lengths of the n words, root first. Vectorised:
    depths top-down one tree level at a time, then every path walked up one level per
    step, the words sorted by depth so that those still walking are a prefix."""
    lens = _leaf_depths(parent, bit, n)
    depth = int(lens.max())
    order = np.argsort((depth - lens).astype(np.uint8), kind="stable")   # deepest first
    walking = np.bincount(lens, minlength=depth + 1)[::-1].cumsum()[::-1]  # len >= i
    codes = np.zeros(n * depth, dtype=np.uint8)
    points = np.zeros(n * depth, dtype=np.int32)
    node = order.astype(parent.dtype)
    last = order.astype(np.int64) * depth + lens[order] - 1   # flat index of a code's end
    for step in range(depth):
        k = int(walking[step + 1])                      # words with a code longer than step
        at = node[:k]
        up = parent[at]
        where = last[:k] - step
        codes[where] = bit[at]
        points[where] = up - n
        node[:k] = up
    return codes.reshape(n, depth), points.reshape(n, depth), lens


def _leaf_depths(parent: np.ndarray, bit: np.ndarray, n: int) -> np.ndarray:
    """Code length of each word: the tree read top-down, one level per step (O(V))."""
    child = np.empty((n - 1, 2), dtype=np.int64)        # inner node - n -> its two children
    child[parent[:-1] - n, bit[:-1]] = np.arange(2 * n - 2)
    lens = np.zeros(n, dtype=np.int32)
    frontier = np.array([n - 2])                        # the root (inner node 2n-2)
    level = 0
    while frontier.size:
        level += 1
        kids = child[frontier].ravel()
        lens[kids[kids < n]] = level
        frontier = kids[kids >= n] - n
    return lens


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def _escape(word: str) -> str:
    if not any(ch in word for ch in _ESCAPES):
        return word
    return "".join(_ESCAPES.get(ch, ch) for ch in word)


def _unescape(word: str) -> str:
    if "\\" not in word:
        return word
    out, i = [], 0
    while i < len(word):
        ch = word[i]
        if ch == "\\" and i + 1 < len(word):
            out.append(_UNESCAPES.get(word[i + 1], "\\" + word[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)
