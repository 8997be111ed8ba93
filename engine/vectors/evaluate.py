"""The standard evaluations of word vectors, with gensim 4's rules and return values:
analogies (questions-words.txt: accuracy and per-section results) and word-pair similarity
(wordsim353: Pearson and Spearman against human scores, and the share of unknown pairs).

Both compare words through `ok_vocab`: the `restrict_vocab` most frequent keys, folded to
upper case when case_insensitive, each folded form standing for its most frequent variant.
Analogy questions are answered in batches of matrix products, not one query at a time.
"""
from __future__ import annotations

import io
import logging

import numpy as np

from .correlation import Correlation, correlations
from ..errors import FormatError, InvalidArgumentError
from .w2vformat import Reader

log = logging.getLogger(__name__)

_CANDIDATES = 5          # gensim looks at the 5 best answers for one not among the question


def _ok_vocab(kv, restrict_vocab, case_insensitive: bool) -> tuple[dict, np.ndarray]:
    """({folded key: index of its most frequent variant}, that index for each of the
    first keys): the words an evaluation may use."""
    keys = kv.index_to_key[:restrict_vocab]
    fold = str.upper if case_insensitive else (lambda k: k)
    folded = [fold(k) for k in keys]
    vocab = {}
    for i in range(len(folded) - 1, -1, -1):
        vocab[folded[i]] = i
    return vocab, np.fromiter((vocab[f] for f in folded), dtype=np.int64, count=len(folded))


def _read_analogies(path: str, vocab: dict, case_insensitive: bool):
    """Sections and, in file order, (section, question words, indices or None if a word is
    not in vocab) for each line of four words."""
    sections, questions = [], []
    with Reader(path) as reader:
        lineno = 0
        while raw := reader.readline():
            lineno += 1
            try:
                line = raw.decode("utf8")
            except UnicodeDecodeError as exc:
                raise FormatError(f"{path}: line {lineno}: not valid utf8 ({exc.reason})"
                                  ) from None
            if line.startswith(": "):
                sections.append({"section": line.lstrip(": ").strip(), "correct": [],
                                 "incorrect": []})
                continue
            if not sections:
                raise FormatError(f"{path}: line {lineno}: expected a ': SECTION' line "
                                  f"before the first question")
            words = line.upper().split() if case_insensitive else line.split()
            if len(words) != 4:
                log.info("skipping invalid line %d in %s", lineno, path)
                continue
            idx = [vocab.get(w) for w in words]
            questions.append((sections[-1], tuple(words),
                              None if None in idx else idx))
    return sections, questions


def _scores(kv, n: int, q: np.ndarray, method: str) -> np.ndarray:
    """Scores of the first n keys (columns) for each question (rows: indices a, b, c)."""
    vecs, norms = kv.vectors[:n], kv.norms[:n]
    unit = vecs[q.reshape(-1)] / norms[q.reshape(-1), None]
    if method == "most_similar":                 # 3CosAdd: cos(x, b - a + c)
        query = unit[1::3] + unit[2::3] - unit[0::3]
        return (query @ vecs.T) / norms
    sims = (1.0 + (unit @ vecs.T) / norms) / 2.0  # 3CosMul, similarities moved to [0, 1]
    return sims[1::3] * sims[2::3] / (sims[0::3] + 1e-6)


def _answers_right(kv, n: int, fold_id: np.ndarray, q: np.ndarray, method: str) -> np.ndarray:
    """For each question (a, b, c, expected): is the answer right? As gensim: of the 5 best
    keys other than a, b, c (ties: the lower index first), the first whose folded form is
    not a question word's, else the last of them. Found by argmax passes, each over the
    questions still without an answer (most have one after the first)."""
    scores = _scores(kv, n, q[:, :3], method)
    scores[np.isnan(scores)] = -np.inf                     # (zero vectors) never an answer
    scores[np.arange(len(q))[:, None], q[:, :3]] = -np.inf
    answer = np.full(len(q), -1)
    last = np.full(len(q), -1)
    active = np.arange(len(q))
    for _ in range(_CANDIDATES):
        sub = scores[active]
        best = np.argmax(sub, axis=1)
        real = sub[np.arange(len(active)), best] > -np.inf
        active, best = active[real], best[real]
        last[active] = folded = fold_id[best]
        asked = (folded[:, None] == q[active, :3]).any(axis=1)
        answer[active[~asked]] = folded[~asked]
        active, best = active[asked], best[asked]
        if not len(active):
            break
        scores[active, best] = -np.inf
    predicted = np.where(answer >= 0, answer, last)
    return (predicted >= 0) & (predicted == q[:, 3])


def evaluate_word_analogies(kv, analogies: str, restrict_vocab=300000,
                            case_insensitive: bool = True, dummy4unknown: bool = False,
                            similarity_function: str = "most_similar"):
    """(accuracy, sections) as gensim's KeyedVectors.evaluate_word_analogies."""
    if similarity_function not in ("most_similar", "most_similar_cosmul"):
        raise InvalidArgumentError(f"similarity_function {similarity_function!r}: expected "
                                   f"'most_similar' (3CosAdd) or 'most_similar_cosmul'")
    vocab, fold_id = _ok_vocab(kv, restrict_vocab, case_insensitive)
    sections, questions = _read_analogies(analogies, vocab, case_insensitive)
    if not questions:
        raise FormatError(f"{analogies}: no analogy questions (lines of four words under "
                          f"': SECTION' lines)")
    known = np.array([idx for _, _, idx in questions if idx is not None],
                     dtype=np.int64).reshape(-1, 4)
    right = np.zeros(len(known), dtype=bool)
    if len(known):
        kv.fill_norms()
        n = len(fold_id)
        batch = max(1, min(1024, (1 << 24) // (3 * n)))
        for s in range(0, len(known), batch):
            right[s:s + batch] = _answers_right(kv, n, fold_id, known[s:s + batch],
                                                similarity_function)
    answers = iter(right)
    for section, words, idx in questions:
        if idx is not None:
            section["correct" if next(answers) else "incorrect"].append(words)
        elif dummy4unknown:
            section["incorrect"].append(words)
    total = {"section": "Total accuracy",
             "correct": [w for s in sections for w in s["correct"]],
             "incorrect": [w for s in sections for w in s["incorrect"]]}
    done = len(total["correct"]) + len(total["incorrect"])
    score = len(total["correct"]) / done if done else 0.0
    unknown = 100 * (len(questions) - len(known)) / len(questions)
    log.info("analogies %s: %.1f%% of %d questions right; %.1f%% had unknown words",
             analogies, 100 * score, done, unknown)
    return score, sections + [total]


def _read_pairs(path: str, encoding: str) -> list[str]:
    """The lines of a word-pair file, newlines translated as a text-mode open does."""
    with Reader(path) as reader:
        data = reader.read(-1)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise FormatError(f"{path}: line {lineno}: not valid {encoding} ({exc.reason})"
                          ) from None
    return list(io.StringIO(text, newline=None))


def evaluate_word_pairs(kv, pairs: str, delimiter: str = "\t", encoding: str = "utf8",
                        restrict_vocab=300000, case_insensitive: bool = True,
                        dummy4unknown: bool = False
                        ) -> tuple[Correlation, Correlation, float]:
    """(pearson, spearman, oov_ratio) as gensim's KeyedVectors.evaluate_word_pairs: each
    correlation is (statistic, pvalue); oov_ratio is a percentage."""
    vocab, _ = _ok_vocab(kv, restrict_vocab, case_insensitive)
    gold, index_pairs, oov = [], [], 0
    for lineno, line in enumerate(_read_pairs(pairs, encoding), 1):
        if line.startswith("#"):
            continue
        fields = line.upper().split(delimiter) if case_insensitive else line.split(delimiter)
        try:
            a, b, score = fields
            score = float(score)
        except ValueError:
            log.info("skipping invalid line %d in %s", lineno, pairs)
            continue
        if a not in vocab or b not in vocab:
            oov += 1
            if not dummy4unknown:
                continue
        gold.append(score)
        index_pairs.append((vocab.get(a, -1), vocab.get(b, -1)))
    if len(gold) < 2:
        raise FormatError(f"{pairs}: {len(gold)} usable similarity judgements (lines "
                          f"'WORD{delimiter}WORD{delimiter}SCORE' with both words known); "
                          f"a correlation needs at least 2")
    idx = np.array(index_pairs, dtype=np.int64)
    known = (idx >= 0).all(axis=1)                    # the others: dummy4unknown's zeros
    unit = kv.vectors[idx[known].reshape(-1)].astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    model = np.zeros(len(idx), dtype=np.float32)
    model[known] = np.einsum("ij,ij->i", unit[0::2], unit[1::2])
    pearson, spearman = correlations(gold, model)
    oov_ratio = float(oov) / (len(gold) if dummy4unknown else len(gold) + oov) * 100
    log.info("word pairs %s: pearson %.4f, spearman %.4f, %.1f%% with unknown words", pairs,
             pearson.statistic, spearman.statistic, oov_ratio)
    return pearson, spearman, oov_ratio
