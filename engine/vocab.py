"""Vocabulary: word counts -> the kept words (sorted by count) and the sampling tables the
kernels use: subsampling thresholds, the noise-word alias table, the Huffman tree."""
from __future__ import annotations

import heapq
import json
import math
import os
from collections import Counter

import numpy as np

from .atomic import atomic_file
from .errors import CorpusError, EngineError

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
        lengths int32 [V]); points index the V-1 inner nodes (rows of syn1), root first."""
        n = len(self)
        lens = np.zeros(n, dtype=np.int32)
        if n < 2:
            return (np.zeros((n, 1), np.uint8), np.zeros((n, 1), np.int32), lens)
        heap = [(int(c), i) for i, c in enumerate(self.counts)]
        heapq.heapify(heap)
        parent = np.zeros(2 * n - 1, dtype=np.int64)
        bit = np.zeros(2 * n - 1, dtype=np.uint8)
        for inner in range(n, 2 * n - 1):
            c1, a = heapq.heappop(heap)
            c2, b = heapq.heappop(heap)
            parent[a], parent[b] = inner, inner
            bit[b] = 1
            heapq.heappush(heap, (c1 + c2, inner))
        root = 2 * n - 2
        paths = []
        for w in range(n):
            codes, points, node = [], [], w
            while node != root:
                codes.append(bit[node])
                node = parent[node]
                points.append(node - n)
            paths.append((codes[::-1], points[::-1]))
            lens[w] = len(codes)
        depth = int(lens.max())
        codes_arr = np.zeros((n, depth), dtype=np.uint8)
        points_arr = np.zeros((n, depth), dtype=np.int32)
        for w, (codes, points) in enumerate(paths):
            codes_arr[w, :len(codes)] = codes
            points_arr[w, :len(points)] = points
        return codes_arr, points_arr, lens

    # ---- persistence ------------------------------------------------------------------
    def save(self, folder: str) -> None:
        """vocab.tsv: one `word<TAB>count` per line, the word with backslash, tab, newline
        and carriage return escaped (so any token survives the round trip)."""
        with atomic_file(os.path.join(folder, "vocab.tsv"), "w", encoding="utf-8",
                         errors="surrogateescape", newline="\n") as fh:
            for w, c in zip(self.words, self.counts.tolist()):
                fh.write(f"{_escape(w)}\t{c}\n")
        with atomic_file(os.path.join(folder, "vocab.json"), "w") as fh:
            json.dump({"raw_words": self.raw_words, "sentences": self.sentences,
                       "escaped": True}, fh)

    @classmethod
    def load(cls, folder: str) -> "Vocab":
        with open(os.path.join(folder, "vocab.json")) as fh:
            meta = json.load(fh)
        unescape = _unescape if meta.get("escaped") else (lambda w: w)
        words, counts = [], []
        path = os.path.join(folder, "vocab.tsv")
        with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as fh:
            for n, line in enumerate(fh, 1):
                w, tab, c = line.rstrip("\n").rpartition("\t")
                if not tab or not c.isdigit():
                    raise EngineError(f"{path}, line {n}: expected word<TAB>count")
                words.append(unescape(w))
                counts.append(int(c))
        return cls(words, counts, meta["raw_words"], meta.get("sentences", 0))


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
