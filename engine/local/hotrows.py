"""Hot rows: which rows each training process trains on a copy of its own, merged into the
shared weights every few thousand words, and how often."""
from __future__ import annotations

import numpy as np

# Hot rows are merged this often (trained words per process): copies trained apart for
# much longer cost analogy accuracy, and merging more often costs time for nothing (see
# docs/benchmarks.md, "Hot rows: why they exist and how they are sized")
SYNC_WORDS = 16384
# ... the most frequent 1/2^HOT_TIERS of them, that is; all of them every 2^HOT_TIERS merges
HOT_TIERS = 3


HOT_MAX = 16384            # at most this many hot rows
# ... and at most this much memory a process for their copies (each hot row: a copy and its
# merge base, of syn0 and syn1neg): HOT_MAX rows up to vector_size 100, 5,461 at 300. Wider
# vectors do more arithmetic per row drawn, so fewer rows need copies; at vector_size 300
# 4,096 hot rows trained as fast as 11,634 (docs/benchmarks.md, "Memory")
HOT_BYTES = HOT_MAX * 100 * 16
# a row one process draws this often between two merges is hot whatever its share: left
# shared, it would move between cores at nearly every draw, which is what makes a small
# vocabulary scale badly. The bound is above what the share rule's last rows are drawn
# on a large vocabulary, so it changes nothing there, and takes every row of a vocabulary
# of a few thousand words (see docs/benchmarks.md, "Hot rows: why they exist and how they
# are sized"). The draws are estimated: a row's share is hot_draw_shares' (kept words
# twice an update, noise words `negative` times), times the rows an update draws
# (row_draws); CBOW draws more kept words an update than that mix says, so its tail rows
# read busier than they are
HOT_TOUCHES = 32


def hot_draw_shares(counts, keep, negative: int, ns_exponent: float) -> np.ndarray:
    """Cumulative share of the row draws taken by the most frequent words (entry i: words
    0..i), kept words as centers and context, the noise words drawn as counts**ns_exponent;
    at most HOT_MAX entries (all that auto sizes ever look at)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size == 0 or counts.sum() <= 0:
        return np.zeros(0, np.float64)
    kept = counts * np.asarray(keep, dtype=np.float64)
    draws = kept / kept.sum()
    if negative:
        noise = counts ** ns_exponent
        draws = (2 * draws + negative * noise / noise.sum()) / (2 + negative)
    return np.cumsum(draws[:HOT_MAX])


def updates_per_word(sg: int, window: int, shrink_windows: int) -> float:
    """Updates the classic kernel makes per trained word: skip-gram one per context word (on
    average window + 1 with shrinking windows, else 2 * window), CBOW one."""
    if not sg:
        return 1.0
    return float(window + 1 if shrink_windows else 2 * window)


def size_hot_rows(shares, vocab: int, processes: int, vector_size: int, epoch_words: int = 0,
                  updates_per_word: float = 6.0, tiers: int | None = None,
                  row_draws: float = 2.0, sync_words: int = 0) -> tuple[int, int, int]:
    """(hot_words, sync_words, tiers) for `processes` processes sharing one model of `vocab`
    words whose cumulative row-draw shares are `shares` (hot_draw_shares): the most
    frequent words whose rows draw a share 1 - 1/(2P) (at most 0.9) of the row updates, and
    with them every word whose rows a process draws at least HOT_TOUCHES times between two
    merges (`row_draws` rows an update, `updates_per_word` updates a word: on a small
    vocabulary every row is that busy, and one left shared moves between the cores at
    nearly every draw; `sync_words`: the job's merge interval, 0 = the automatic one),
    between 256 and HOT_MAX rows (fewer for a smaller vocabulary; capped so the copies take
    at most HOT_BYTES a process); merged every SYNC_WORDS trained words, and at least 32 times an
    epoch of `epoch_words` per process (copies trained apart for long and then summed lose
    accuracy early in training: docs/design.md, "Hot rows"), in HOT_TIERS tiers (`tiers`: that many
    instead; fewer where a full merge would come less than 8 times an epoch): the first
    1/2^L of the rows at every merge, all of them every 2^L-th, so a merge moves
    first * (1 + L/2) rows on average. That may be at most 1/8 of a row per update the
    kernel makes (`updates_per_word`), so merging costs a fast kernel no more than a slow
    one. (0, 0, 0) for one process."""
    shares = np.asarray(shares, dtype=np.float64)
    if processes < 2 or vocab < 1 or shares.size == 0 or shares[-1] <= 0:
        return 0, 0, 0
    share = min(0.9, 1.0 - 1.0 / (2 * processes))
    words = int(np.searchsorted(shares, share) + 1)
    cap = max(256, HOT_BYTES // (4 * 4 * max(1, vector_size)))
    sync = auto_sync_words(processes, epoch_words)
    # draws of each row by one process between two merges (shares are sorted by frequency)
    between = (sync_words or sync) * updates_per_word * row_draws
    quiet = np.diff(shares, prepend=0.0) * between < HOT_TOUCHES
    words = max(words, int(np.argmax(quiet)) if quiet.any() else shares.size)
    tiers = HOT_TIERS if tiers is None else max(0, int(tiers))
    if epoch_words:
        while tiers and sync << tiers > max(sync, epoch_words // (8 * processes)):
            tiers -= 1
    per_merge = sync * updates_per_word / 8        # rows a merge may move on average
    words = min(words, HOT_MAX, cap, int(per_merge / (1 + tiers / 2)) << tiers)
    return min(vocab, max(256, words)), sync, tiers


def auto_hot_rows(counts, keep, negative: int, ns_exponent: float, processes: int,
                  vector_size: int, epoch_words: int = 0, updates_per_word: float = 6.0,
                  tiers: int | None = None) -> tuple[int, int, int]:
    """size_hot_rows for a vocabulary's counts and keep probabilities."""
    if processes < 2:
        return 0, 0, 0
    return size_hot_rows(hot_draw_shares(counts, keep, negative, ns_exponent), len(counts),
                         processes, vector_size, epoch_words, updates_per_word, tiers,
                         2.0 + negative)


def row_draws(sg: int, window: int, shrink_windows: int, negative: int) -> float:
    """Rows one update draws: skip-gram the context word's and the center's output row (2),
    CBOW every context word's (window + 1 on average with shrinking windows, else
    2 * window) and the center's; and each noise word's. (Hierarchical softmax's output
    rows are tree nodes, not words' rows: counted as a center's, which errs towards more
    hot rows.)"""
    words = 2.0 if sg else 1.0 + (window + 1 if shrink_windows else 2 * window)
    return words + max(0, int(negative))


def choose_hot_rows(spec: dict, processes: int, vocab: int, vector_size: int,
                    epoch_words: int, kernel) -> tuple[int, int, int]:
    """(hot_words, sync_words, tiers) for `processes` processes from a job's hot-row
    settings (engine.jobs.train.hot_rows_spec: `words` fixed, or the vocabulary's cumulative draw
    `shares` for "auto"; `sync_words` 0 = sized; `tiers` -1 = "auto"), over an epoch of
    `epoch_words` per these processes, for `kernel` (its sg, window, shrink_windows and
    negative: a ModelConfig or KernelSettings). The local engine and each cluster node (for
    its own process count) both choose with it. No hot rows: (0, 1024, 0)."""
    sync, tiers = int(spec.get("sync_words", 0)), int(spec.get("tiers", -1))
    if processes < 2:
        return 0, 1024, 0
    if "shares" not in spec:
        words = min(vocab, int(spec.get("words", 0)))
        if not words:
            return 0, 1024, 0
        return words, sync or auto_sync_words(processes, epoch_words), max(tiers, 0)
    k = kernel
    words, auto_sync, tiers = size_hot_rows(
        spec["shares"], vocab, processes, vector_size, epoch_words,
        updates_per_word(k.sg, k.window, k.shrink_windows), None if tiers < 0 else tiers,
        row_draws(k.sg, k.window, k.shrink_windows, k.negative), sync)
    if not words:
        return 0, 1024, 0
    return words, sync or auto_sync, tiers


def auto_sync_words(processes: int, epoch_words: int = 0) -> int:
    """Trained words between merges of hot rows (see auto_hot_rows)."""
    sync = SYNC_WORDS
    if epoch_words:
        sync = min(sync, max(1024, epoch_words // (32 * max(1, processes))))
    return sync

