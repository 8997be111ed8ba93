import math
from collections import Counter

import numpy as np

from engine.word2vec.vocab import Vocab, prune_counts


def test_sorted_by_count_ties_first_seen_and_min_count():
    c = Counter()
    for w in "b a c a b d e a".split():
        c[w] += 1
    v = Vocab.build(c, 8, min_count=2)
    assert v.words == ["a", "b"] and v.counts.tolist() == [3, 2]


def test_max_final_vocab_raises_threshold():
    c = Counter({"a": 10, "b": 5, "c": 5, "d": 3, "e": 1})
    v = Vocab.build(c, 24, min_count=1, max_final_vocab=2)
    assert v.words == ["a"]          # b and c tie at the cut: both go (as gensim)
    v = Vocab.build(c, 24, min_count=1, max_final_vocab=3)
    assert v.words == ["a", "b", "c"]


def test_prune_counts():
    c = Counter({"a": 5, "b": 1, "c": 2, "d": 1})
    nxt = prune_counts(c, 2, 1)
    assert set(c) == {"a", "c"} and nxt == 2


def test_sample_thresholds_formula():
    v = Vocab(["a", "b"], [1000, 1], 1001)
    thr = v.sample_thresholds(1e-3)
    t = 1e-3 * 1001
    p = (math.sqrt(1000 / t) + 1) * t / 1000
    assert thr[0] == round(p * 2**32)
    assert thr[1] == 2**32                       # rare word always kept
    assert (v.sample_thresholds(0) == 2**32).all()


def test_alias_table_draws_unigram_power():
    counts = np.array([500, 200, 100, 50, 10, 1])
    v = Vocab([str(i) for i in range(6)], counts, counts.sum())
    prob, alias = v.alias_table(0.75)
    rs = np.random.default_rng(0)
    r = rs.integers(0, 2**64, size=400_000, dtype=np.uint64)
    bucket = ((r >> np.uint64(32)) * np.uint64(6)) >> np.uint64(32)
    keep = (r & np.uint64(0xFFFFFFFF)) < prob[bucket]
    drawn = np.where(keep, bucket.astype(np.int64), alias[bucket].astype(np.int64))
    freq = np.bincount(drawn, minlength=6) / len(drawn)
    want = counts ** 0.75 / (counts ** 0.75).sum()
    np.testing.assert_allclose(freq, want, atol=3e-3)


def test_huffman_is_prefix_free_and_frequent_words_short():
    counts = np.array([100, 60, 30, 30, 10, 5, 2, 1])
    v = Vocab([str(i) for i in range(8)], counts, counts.sum())
    codes, points, lens = v.huffman()
    strs = ["".join(map(str, codes[i, :lens[i]])) for i in range(8)]
    for i, a in enumerate(strs):
        for j, b in enumerate(strs):
            if i != j:
                assert not b.startswith(a)
    assert lens[0] <= lens[-1]
    assert (points[:, 0][lens > 0] == 6).all()                  # root = last inner node
    assert points.max() < 7
    # optimal: expected code length equals that of Huffman's merge costs
    assert sum(counts[i] * lens[i] for i in range(8)) == _huffman_cost(counts)


def _huffman_cost(counts):
    import heapq
    h = list(map(int, counts))
    heapq.heapify(h)
    cost = 0
    while len(h) > 1:
        a, b = heapq.heappop(h), heapq.heappop(h)
        cost += a + b
        heapq.heappush(h, a + b)
    return cost


def test_save_load(tmp_path):
    v = Vocab(["x", "y y"], [3, 2], 9, 4)
    v.save(str(tmp_path))
    w = Vocab.load(str(tmp_path))
    assert w.words == v.words and w.counts.tolist() == [3, 2] and w.raw_words == 9


def test_packed_kernel_tables_decode_to_the_plain_ones():
    counts = np.array([5000, 900, 300, 120, 40, 11, 5, 5], dtype=np.int64)
    v = Vocab([f"w{i}" for i in range(len(counts))], counts, counts.sum())
    thr = v.sample_thresholds(1e-2)
    keep = v.keep_table(1e-2)
    assert keep.dtype == np.uint32
    always = thr >= 2**32
    assert always.any() and not always.all()
    assert (keep[always] == 2**32 - 1).all()
    assert (keep[~always] == thr[~always]).all()
    prob, alias = v.alias_table(0.75)
    noise = v.noise_table(0.75)
    assert noise.dtype == np.uint64
    assert ((noise >> np.uint64(32)).astype(np.int32) == alias).all()
    low = noise & np.uint64(0xFFFFFFFF)
    assert (low == np.minimum(prob, 2**32 - 1)).all()
    # a bucket whose threshold was clamped is full, and a full bucket is its own alias
    assert (alias[prob >= 2**32 - 1] == np.flatnonzero(prob >= 2**32 - 1)).all()
