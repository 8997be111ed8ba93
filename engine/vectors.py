"""KeyedVectors: word -> vector lookups, similarity queries, the standard evaluations, and
the original word2vec text and binary formats (read and written, gensim-compatible)."""
from __future__ import annotations

import math
import re
from collections import namedtuple

import numpy as np

from .atomic import atomic_file
from .errors import EngineError

Correlation = namedtuple("Correlation", "statistic pvalue")


def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return ranks


def pearson(x, y) -> float:
    x = np.asarray(x, np.float64) - np.mean(x)
    y = np.asarray(y, np.float64) - np.mean(y)
    denom = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom else float("nan")


def spearman(x, y) -> float:
    return pearson(_rank(np.asarray(x, np.float64)), _rank(np.asarray(y, np.float64)))


class KeyedVectors:
    def __init__(self, words: list[str], vectors: np.ndarray, counts=None):
        self.index_to_key = list(words)
        self.key_to_index = {w: i for i, w in enumerate(self.index_to_key)}
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        self._norms = None

    # ---- lookups ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index_to_key)

    def __contains__(self, word) -> bool:
        return word in self.key_to_index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.get_vector(word)

    @property
    def vector_size(self) -> int:
        return self.vectors.shape[1]

    def get_index(self, word: str) -> int:
        try:
            return self.key_to_index[word]
        except KeyError:
            raise KeyError(f"word {word!r} not in vocabulary") from None

    def get_vector(self, word: str, norm: bool = False) -> np.ndarray:
        i = self.get_index(word)
        return self.get_normed_vectors()[i] if norm else self.vectors[i]

    def get_normed_vectors(self) -> np.ndarray:
        if self._norms is None or self._norms.shape != self.vectors.shape:
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self._norms = self.vectors / np.maximum(norms, 1e-12)
        return self._norms

    def fill_norms(self, force: bool = False) -> None:
        if force:
            self._norms = None
        self.get_normed_vectors()

    # ---- queries ------------------------------------------------------------------------
    def similarity(self, w1: str, w2: str) -> float:
        return float(np.dot(self.get_vector(w1, norm=True), self.get_vector(w2, norm=True)))

    def _mean_query(self, positive, negative) -> tuple[np.ndarray, set]:
        if isinstance(positive, (str, np.ndarray)):
            positive = [positive]
        if isinstance(negative, (str, np.ndarray)):
            negative = [negative]
        terms, used = [], set()
        for items, sign in ((positive or [], 1.0), (negative or [], -1.0)):
            for item in items:
                if isinstance(item, str):
                    used.add(self.get_index(item))
                    terms.append(sign * self.get_vector(item, norm=True))
                else:
                    v = np.asarray(item, dtype=np.float32)
                    terms.append(sign * v / max(float(np.linalg.norm(v)), 1e-12))
        if not terms:
            raise ValueError("most_similar needs at least one positive or negative word")
        mean = np.mean(terms, axis=0).astype(np.float32)
        return mean / max(float(np.linalg.norm(mean)), 1e-12), used

    def most_similar(self, positive=None, negative=None, topn: int = 10,
                     restrict_vocab: int | None = None) -> list[tuple[str, float]]:
        """Words closest (cosine) to the mean of the positive minus negative unit vectors;
        the query words themselves are left out. restrict_vocab: only the N most frequent."""
        query, used = self._mean_query(positive, negative)
        vecs = self.get_normed_vectors()
        if restrict_vocab:
            vecs = vecs[:restrict_vocab]
        scores = vecs @ query
        k = min(topn + len(used), len(scores))
        best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        best = best[np.argsort(-scores[best], kind="stable")]
        out = [(self.index_to_key[i], float(scores[i])) for i in best if i not in used]
        return out[:topn]

    # ---- evaluation -----------------------------------------------------------------------
    def _ok_vocab(self, restrict_vocab: int, case_insensitive: bool) -> dict[str, int]:
        ok = {}
        for i in reversed(range(min(restrict_vocab, len(self)))):
            w = self.index_to_key[i]
            ok[w.upper() if case_insensitive else w] = i
        return ok

    def evaluate_word_analogies(self, path: str, restrict_vocab: int = 30_000,
                                case_insensitive: bool = True):
        """3CosAdd analogy accuracy as gensim computes it: questions whose four words are
        among the `restrict_vocab` most frequent; returns (accuracy, sections), the last
        section being 'Total accuracy'."""
        ok = self._ok_vocab(restrict_vocab, case_insensitive)
        words = [None] * len(self)
        for w, i in ok.items():
            words[i] = w
        vecs = self.get_normed_vectors()[:min(restrict_vocab, len(self))]
        sections, section = [], None
        try:
            fh = open(path, encoding="utf-8")
        except OSError as exc:
            raise EngineError(f"{path}: cannot open analogy file ({exc.strerror})") from None
        with fh:
            for lineno, line in enumerate(fh, 1):
                if line.startswith(":"):
                    section = {"section": line.lstrip(": ").strip(), "correct": [],
                               "incorrect": [], "_q": []}
                    sections.append(section)
                    continue
                if not line.strip():
                    continue
                parts = line.split()
                if section is None or len(parts) != 4:
                    raise EngineError(f"{path}:{lineno}: expected a ': section' line or four "
                                      f"words, got {line.strip()!r}")
                quad = [p.upper() if case_insensitive else p for p in parts]
                if all(p in ok for p in quad):
                    section["_q"].append(quad)
        for sec in sections:
            q = sec.pop("_q")
            if not q:
                continue
            idx = np.array([[ok[w] for w in quad] for quad in q], dtype=np.int64)
            for s in range(0, len(idx), 256):          # 256 x 30k scores: ~30 MB at a time
                part = idx[s:s + 256]
                query = vecs[part[:, 1]] - vecs[part[:, 0]] + vecs[part[:, 2]]
                scores = query @ vecs.T
                rows = np.arange(len(part))
                for col in range(3):
                    scores[rows, part[:, col]] = -np.inf
                pred = scores.argmax(axis=1)
                for quad, p in zip(q[s:s + 256], pred):
                    (sec["correct"] if words[p] == quad[3] else sec["incorrect"]).append(
                        tuple(quad))
        sections = [s for s in sections if s["correct"] or s["incorrect"]]
        total = {"section": "Total accuracy",
                 "correct": [x for s in sections for x in s["correct"]],
                 "incorrect": [x for s in sections for x in s["incorrect"]]}
        n = len(total["correct"]) + len(total["incorrect"])
        accuracy = len(total["correct"]) / n if n else 0.0
        sections.append(total)
        return accuracy, sections

    def evaluate_word_pairs(self, path: str, delimiter: str = "\t",
                            restrict_vocab: int = 300_000, case_insensitive: bool = True):
        """Correlation of cosine similarity with human scores: returns (pearson, spearman,
        oov_percent) like gensim (p-values are not computed: nan)."""
        ok = self._ok_vocab(restrict_vocab, case_insensitive)
        vecs = self.get_normed_vectors()
        sim, gold, oov, total = [], [], 0, 0
        try:
            fh = open(path, encoding="utf-8")
        except OSError as exc:
            raise EngineError(f"{path}: cannot open word-pair file ({exc.strerror})") from None
        with fh:
            for lineno, line in enumerate(fh, 1):
                if line.startswith("#") or not line.strip():
                    continue
                parts = line.rstrip("\n").split(delimiter)
                if len(parts) < 3:
                    raise EngineError(f"{path}:{lineno}: expected word1{delimiter!r}word2"
                                      f"{delimiter!r}score")
                a, b = (p.upper() if case_insensitive else p for p in parts[:2])
                try:
                    score = float(parts[2])
                except ValueError:
                    raise EngineError(f"{path}:{lineno}: score {parts[2]!r} is not a number") \
                        from None
                total += 1
                if a not in ok or b not in ok:
                    oov += 1
                    continue
                sim.append(float(vecs[ok[a]] @ vecs[ok[b]]))
                gold.append(score)
        nan = float("nan")
        if len(sim) < 2:
            return Correlation(nan, nan), Correlation(nan, nan), 100.0
        return (Correlation(pearson(sim, gold), nan), Correlation(spearman(sim, gold), nan),
                100.0 * oov / max(total, 1))

    # ---- word2vec format ------------------------------------------------------------------
    def save_word2vec_format(self, path: str, binary: bool = True) -> None:
        """The original word2vec format (header 'V D'); written atomically. A word with
        whitespace in it could not be read back (the format ends a word at a space), so it
        is refused before anything is written."""
        joined = "\x00".join(self.index_to_key)
        m = re.search(r"\s", joined)
        if m or "\x00\x00" in joined or (self.index_to_key and not all(
                (self.index_to_key[0], self.index_to_key[-1]))):
            word = (joined[:m.start()].rpartition("\x00")[2] + joined[m.start():].partition(
                "\x00")[0]) if m else ""
            raise EngineError(f"{path}: the word {word!r} cannot be written in the word2vec "
                              f"format (words end at whitespace and cannot be empty)")
        with atomic_file(path, "wb") as fh:
            fh.write(f"{len(self)} {self.vector_size}\n".encode())
            if binary:
                for word, vec in zip(self.index_to_key, self.vectors):
                    fh.write(word.encode("utf-8") + b" " + vec.astype("<f4").tobytes() + b"\n")
            else:
                for word, vec in zip(self.index_to_key, self.vectors):
                    vals = " ".join(f"{v:.9g}" for v in vec.tolist())
                    fh.write(f"{word} {vals}\n".encode("utf-8"))

    @classmethod
    def load_word2vec_format(cls, path: str, binary: bool = True,
                             encoding_errors: str = "strict") -> "KeyedVectors":
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise EngineError(f"{path}: cannot open vectors ({exc.strerror})") from None
        with fh:
            header = fh.readline().split()
            try:
                n, dim = int(header[0]), int(header[1])
            except (IndexError, ValueError):
                raise EngineError(f"{path}: expected a header 'WORDS DIMENSIONS'") from None
            words, vecs = [], np.empty((n, dim), dtype=np.float32)
            for i in range(n):
                if binary:
                    word = bytearray()
                    while True:
                        ch = fh.read(1)
                        if not ch:
                            raise EngineError(f"{path}: truncated at vector {i} of {n}")
                        if ch == b" ":
                            break
                        if ch != b"\n":
                            word += ch
                    raw = fh.read(4 * dim)
                    if len(raw) != 4 * dim:
                        raise EngineError(f"{path}: truncated at vector {i} of {n}")
                    vecs[i] = np.frombuffer(raw, dtype="<f4")
                    words.append(word.decode("utf-8", errors=encoding_errors))
                else:
                    line = fh.readline()
                    parts = line.decode("utf-8", errors=encoding_errors).rstrip().split(" ")
                    if len(parts) != dim + 1:
                        raise EngineError(f"{path}: line {i + 2}: expected a word and {dim} "
                                          f"numbers")
                    words.append(parts[0])
                    vecs[i] = np.array(parts[1:], dtype=np.float32)
        return cls(words, vecs)
