"""Each kernel against its numpy twin (tests/reference.py) on small fixed cases."""
import dataclasses

import numpy as np
import pytest

from engine import _kernels as K
from engine.word2vec.schedule import KernelSettings
from engine.local.kernel import make_trainer
from engine.word2vec.vocab import Vocab
import reference
from reference import TABLE, SplitMix, ref_out_hs, ref_out_ns, ref_train

TOL = dict(rtol=2e-5, atol=2e-6)


def test_sigmoid_table_matches_reference():
    np.testing.assert_allclose(K.exp_table(), TABLE, rtol=1e-6)


def test_rng_matches_reference():
    rng = SplitMix(12345)
    assert K.splitmix_draws(12345, 6).tolist() == [rng.next() for _ in range(6)]


@pytest.mark.parametrize("dim", [1, 7, 16, 100, 131])
def test_out_ns_matches_numpy(dim):
    rs = np.random.default_rng(dim)
    h = rs.normal(0, 0.5, dim).astype(np.float32)
    syn = rs.normal(0, 0.5, (20, dim)).astype(np.float32)
    targets = np.array([3, 7, 7, 0, 19], dtype=np.int32)      # a repeated noise word too
    ref_syn = syn.copy()
    got = K.out_ns(h, syn, targets, 0.05)
    want = ref_out_ns(h, ref_syn, targets, 0.05)
    np.testing.assert_allclose(got, want, **TOL)
    np.testing.assert_allclose(syn, ref_syn, **TOL)
    assert not np.allclose(syn, np.random.default_rng(dim).normal(0, 0.5, (20, dim)))


def test_out_ns_skips_saturated_scores():
    h = np.full(4, 1.0, np.float32)
    syn = np.array([[2.0] * 4, [0.1] * 4], np.float32)    # dots 8 (> MAX_EXP) and 0.4
    got = K.out_ns(h, syn, np.array([0, 1], np.int32), 0.1)
    np.testing.assert_array_equal(syn[0], 2.0)              # saturated: untouched
    g = (0.0 - 1 / (1 + np.exp(-0.4))) * 0.1
    np.testing.assert_allclose(syn[1], 0.1 + g, rtol=1e-2)
    np.testing.assert_allclose(got, g * 0.1, rtol=1e-2)


@pytest.mark.parametrize("dim", [3, 64, 100])
def test_out_hs_matches_numpy(dim):
    rs = np.random.default_rng(dim)
    h = rs.normal(0, 0.3, dim).astype(np.float32)
    syn = rs.normal(0, 0.3, (10, dim)).astype(np.float32)
    points = np.array([9, 4, 1, 4], np.int32)
    codes = np.array([0, 1, 1, 0], np.uint8)
    ref_syn = syn.copy()
    got = K.out_hs(h, syn, points, codes, 0.025)
    want = ref_out_hs(h, ref_syn, points, codes, 0.025)
    np.testing.assert_allclose(got, want, **TOL)
    np.testing.assert_allclose(syn, ref_syn, **TOL)


@pytest.mark.parametrize("mean", [0, 1])
def test_context_sum(mean):
    rs = np.random.default_rng(1)
    syn0 = rs.normal(size=(6, 9)).astype(np.float32)
    ctx = np.array([1, 4, 4, 0], np.int32)
    want = syn0[ctx].sum(axis=0) / (len(ctx) if mean else 1)
    np.testing.assert_allclose(K.context_sum(syn0, ctx, mean), want, rtol=1e-5)


def _tiny_model(sg, hs, negative, sample, dim=12, seed=3):
    rs = np.random.default_rng(seed)
    counts = np.array([60, 40, 30, 25, 20, 12, 9, 6, 5, 3, 2, 2], dtype=np.int64)
    vocab = Vocab([f"w{i}" for i in range(len(counts))], counts, counts.sum())
    v = len(vocab)
    arrays = {
        "syn0": ((rs.random((v, dim), dtype=np.float32) - 0.5) / dim),
        "syn1neg": rs.normal(0, 0.1, (v if negative else 0, dim)).astype(np.float32),
        "syn1": rs.normal(0, 0.1, (v - 1 if hs else 0, dim)).astype(np.float32),
        "keep": vocab.keep_table(sample),
        "noise": vocab.noise_table(0.75),
    }
    arrays["codes"], arrays["points"], arrays["code_lens"] = vocab.huffman()
    ids = []
    for _ in range(9):
        n = rs.integers(1, 14)
        ids += list(rs.choice(v, size=n, p=counts / counts.sum())) + [-1]
    return arrays, np.array(ids, dtype=np.int32)


@pytest.mark.parametrize("sg,hs,negative,cbow_mean,sample,two_pass", [
    (1, 0, 5, 1, 0.0, 0), (0, 0, 5, 1, 0.0, 0), (0, 0, 3, 0, 0.0, 0), (1, 1, 0, 1, 0.0, 0),
    (0, 1, 0, 1, 0.0, 0), (1, 1, 4, 1, 0.05, 0), (0, 1, 2, 0, 0.05, 0),
    (0, 0, 5, 1, 0.0, 1), (0, 0, 8, 0, 0.05, 1),
])
def test_chunk_matches_numpy_reference(sg, hs, negative, cbow_mean, sample, two_pass):
    arrays, ids = _tiny_model(sg, hs, negative, sample)
    ref = {k: v.copy() for k, v in arrays.items()}
    settings = KernelSettings(sg, hs, negative, 3, cbow_mean, two_pass=two_pass)
    trained = make_trainer(arrays, settings).train(ids, 99, 0.05, 0.01)
    want = ref_train(ref, dict(sg=sg, hs=hs, negative=negative, window=3, cbow_mean=cbow_mean,
                               two_pass=two_pass), ids, 99, 0.05, 0.01)
    assert trained == want
    for key in ("syn0", "syn1neg", "syn1"):
        np.testing.assert_allclose(arrays[key], ref[key], rtol=1e-4, atol=1e-6, err_msg=key)
    # the update did something
    assert not np.allclose(arrays["syn0"], _tiny_model(sg, hs, negative, sample)[0]["syn0"])


@pytest.mark.parametrize("sg,hs,negative,cbow_mean,shrink", [
    (1, 0, 5, 1, 1), (0, 0, 5, 1, 1), (1, 1, 0, 1, 1), (0, 1, 3, 0, 1), (1, 0, 4, 1, 0),
    (0, 1, 2, 1, 0),
])
def test_loss_matches_numpy_reference(sg, hs, negative, cbow_mean, shrink):
    """The kernel's summed loss (and examples) equal the reference's, term for term, and
    computing it changes no weight; shrink_windows=0 trains on the full window."""
    arrays, ids = _tiny_model(sg, hs, negative, 0.0)
    plain = {k: v.copy() for k, v in arrays.items()}
    ref = {k: v.copy() for k, v in arrays.items()}
    settings = KernelSettings(sg, hs, negative, 3, cbow_mean, compute_loss=1,
                              shrink_windows=shrink)
    trainer = make_trainer(arrays, settings)
    trainer.train(ids, 5, 0.05, 0.01)
    reference.ref_train(ref, dict(sg=sg, hs=hs, negative=negative, window=3,
                                  cbow_mean=cbow_mean, shrink_windows=shrink), ids, 5, 0.05, 0.01)
    want_loss, want_examples = reference.LOSS
    assert trainer.last_examples == want_examples > 0
    assert trainer.last_loss == pytest.approx(want_loss, rel=1e-5)
    for key in ("syn0", "syn1neg", "syn1"):
        np.testing.assert_allclose(arrays[key], ref[key], rtol=1e-4, atol=1e-6, err_msg=key)
    off = make_trainer(plain, dataclasses.replace(settings, compute_loss=0))
    off.train(ids, 5, 0.05, 0.01)
    assert off.last_loss == 0.0
    for key in ("syn0", "syn1neg", "syn1"):
        assert np.array_equal(plain[key], arrays[key]), key


@pytest.mark.parametrize("dim", [12, 37, 100])
@pytest.mark.parametrize("sg,hs,negative,kernel", [
    (0, 0, 3, "two-pass"), (0, 0, 8, "two-pass"), (1, 0, 3, "batched"), (1, 0, 7, "batched"),
    (1, 0, 5, "classic"), (0, 0, 8, "classic"), (1, 1, 0, "classic"), (0, 1, 4, "classic"),
    (1, 0, 7, "batched-blas"),
])
def test_register_blocked_updates_match_the_reference_at_any_width(dim, sg, hs, negative,
                                                                   kernel):
    """Every update works on four rows a pass (scores, output steps, context sums and
    scatters); on 12 words a noise set often repeats a row, so blocks fall back to one row
    at a time, in order; widths below, at and past a vector register's. Huffman paths here
    are 2 to 7 nodes long."""
    arrays, ids = _tiny_model(sg, hs, negative, 0.0, dim=dim, seed=dim)
    ref = {k: v.copy() for k, v in arrays.items()}
    batched, two_pass = int(kernel.startswith("batched")), int(kernel == "two-pass")
    settings = KernelSettings(sg, hs, negative, 4, 1, compute_loss=1, batched=batched,
                              two_pass=two_pass, blas=int(kernel == "batched-blas"))
    trainer = make_trainer(arrays, settings)
    trainer.train(ids, 7, 0.05, 0.01)
    reference.ref_train(ref, dict(sg=sg, hs=hs, negative=negative, window=4, cbow_mean=1,
                                  batched=batched, two_pass=two_pass), ids, 7, 0.05, 0.01)
    assert trainer.last_loss == pytest.approx(reference.LOSS[0], rel=1e-5)
    out = "syn1" if hs else "syn1neg"
    for key in ("syn0", out):
        np.testing.assert_allclose(arrays[key], ref[key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert not np.allclose(arrays[out], _tiny_model(sg, hs, negative, 0.0, dim=dim,
                                                    seed=dim)[0][out])


@pytest.mark.parametrize("blas", [0, 1])
@pytest.mark.parametrize("negative,shrink,sample", [(5, 1, 0.0), (3, 0, 0.0), (4, 1, 0.05)])
def test_batched_kernel_matches_numpy_reference(negative, shrink, sample, blas):
    """The minibatched SG-NS update (one noise set per center word) equals its twin, with
    its products in register-blocked loops or through BLAS sgemm."""
    arrays, ids = _tiny_model(1, 0, negative, sample)
    ref = {k: v.copy() for k, v in arrays.items()}
    settings = KernelSettings(1, 0, negative, 3, 1, compute_loss=1, shrink_windows=shrink,
                              batched=1, blas=blas)
    trainer = make_trainer(arrays, settings)
    trained = trainer.train(ids, 9, 0.05, 0.01)
    want = reference.ref_train(ref, dict(sg=1, hs=0, negative=negative, window=3, cbow_mean=1,
                                         shrink_windows=shrink, batched=1), ids, 9, 0.05, 0.01)
    assert trained == want
    assert trainer.last_examples == reference.LOSS[1] > 0
    assert trainer.last_loss == pytest.approx(reference.LOSS[0], rel=1e-5)
    for key in ("syn0", "syn1neg"):
        np.testing.assert_allclose(arrays[key], ref[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert not np.allclose(arrays["syn0"], _tiny_model(1, 0, negative, sample)[0]["syn0"])


@pytest.mark.parametrize("negative,cbow_mean,shrink,sample,bsize", [
    (5, 1, 1, 0.0, 8), (5, 0, 1, 0.0, 8), (3, 1, 0, 0.0, 4), (4, 0, 0, 0.05, 3),
    (6, 1, 1, 0.05, 16), (2, 0, 1, 0.0, 1), (5, 1, 0, 0.0, 5),
])
def test_cbow_batched_kernel_matches_numpy_reference(negative, cbow_mean, shrink, sample,
                                                     bsize):
    """The minibatched CBOW-NS update (one noise set per bsize consecutive centers) equals
    its twin: weights, words trained, loss and examples (one per center with context)."""
    arrays, ids = _tiny_model(0, 0, negative, sample, seed=bsize + 10 * negative)
    ids = np.concatenate([ids, np.array([4, -1, 2, 2, 2, 3, -1], np.int32)])   # 1 word; repeats
    ref = {k: v.copy() for k, v in arrays.items()}
    settings = KernelSettings(0, 0, negative, 3, cbow_mean, compute_loss=1,
                              shrink_windows=shrink, batched=1, cbow_batch=bsize)
    trainer = make_trainer(arrays, settings)
    trained = trainer.train(ids, 9, 0.05, 0.01)
    want = reference.ref_train(ref, dict(sg=0, hs=0, negative=negative, window=3,
                                         cbow_mean=cbow_mean, shrink_windows=shrink,
                                         batched=1, cbow_batch=bsize), ids, 9, 0.05, 0.01)
    assert trained == want
    assert trainer.last_examples == reference.LOSS[1] > 0
    assert trainer.last_loss == pytest.approx(reference.LOSS[0], rel=1e-5)
    for key in ("syn0", "syn1neg"):
        np.testing.assert_allclose(arrays[key], ref[key], rtol=1e-4, atol=1e-6, err_msg=key)
    fresh = _tiny_model(0, 0, negative, sample, seed=bsize + 10 * negative)[0]
    assert not np.allclose(arrays["syn0"], fresh["syn0"])
    assert not np.allclose(arrays["syn1neg"], fresh["syn1neg"])
    # the loss changes no weight
    off = {k: v.copy() for k, v in fresh.items()}
    make_trainer(off, dataclasses.replace(settings, compute_loss=0)).train(ids, 9, 0.05, 0.01)
    for key in ("syn0", "syn1neg"):
        assert np.array_equal(off[key], arrays[key]), key


@pytest.mark.parametrize("cbow_mean,shrink,sample", [(1, 1, 0.0), (0, 0, 0.05)])
def test_cbow_batched_one_center_per_batch_is_the_classic_kernel(cbow_mean, shrink, sample):
    """cbow_batch = 1 draws in the classic order (window, then the noise words of the one
    center) and drops noise equal to the center: the classic CBOW update, to rounding. (With
    one noise word per center: with more, a word drawn twice is scored the second time on
    its updated row by the classic kernel, on the row as it was by the batched one.)"""
    a1, ids = _tiny_model(0, 0, 1, sample)
    a2, _ = _tiny_model(0, 0, 1, sample)
    s = KernelSettings(0, 0, 1, 3, cbow_mean, compute_loss=1, shrink_windows=shrink)
    t1 = make_trainer(a1, s)
    t2 = make_trainer(a2, dataclasses.replace(s, batched=1, cbow_batch=1))
    assert t1.train(ids, 21, 0.05, 0.01) == t2.train(ids, 21, 0.05, 0.01)
    assert t1.last_examples == t2.last_examples > 0
    assert t1.last_loss == pytest.approx(t2.last_loss, rel=1e-5)
    for key in ("syn0", "syn1neg"):
        np.testing.assert_allclose(a2[key], a1[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_cbow_batched_noise_equal_to_a_center_is_no_negative_for_it():
    """Every noise draw gives word 1 (each alias bucket gives its other half, word 1): a
    center of word 1 is scored against its own word only, every other center against its
    word and the 3 draws. The loss counts exactly those predictions."""
    arrays, _ = _tiny_model(0, 0, 3, 0.0)
    arrays["noise"][:] = np.uint64(1) << np.uint64(32)
    syn0, syn1neg = arrays["syn0"].copy(), arrays["syn1neg"].copy()
    ids = np.array([1, 2, 1, 3, -1], np.int32)
    ref = {k: v.copy() for k, v in arrays.items()}
    s = KernelSettings(0, 0, 3, 2, 1, compute_loss=1, shrink_windows=0, batched=1)
    trainer = make_trainer(arrays, s)
    trainer.train(ids, 4, 0.05, 0.05)
    reference.ref_train(ref, dict(sg=0, hs=0, negative=3, window=2, cbow_mean=1,
                                  shrink_windows=0, batched=1), ids, 4, 0.05, 0.05)
    want = 0.0
    sent = [1, 2, 1, 3]
    for pos, word in enumerate(sent):
        h = np.mean([syn0[sent[j]] for j in range(max(pos - 2, 0), min(pos + 3, 4))
                     if j != pos], axis=0)
        want += reference.nll(np.float32(h @ syn1neg[word]), 1)
        if word != 1:
            want += 3 * reference.nll(np.float32(h @ syn1neg[1]), 0)
    assert trainer.last_examples == 4
    assert trainer.last_loss == pytest.approx(want, rel=1e-4)
    assert trainer.last_loss == pytest.approx(reference.LOSS[0], rel=1e-5)
    for key in ("syn0", "syn1neg"):
        np.testing.assert_allclose(arrays[key], ref[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_batched_kernel_refuses_what_it_does_not_do():
    arrays, _ = _tiny_model(0, 1, 5, 0.0)
    for sg, hs in ((0, 1), (1, 1)):
        with pytest.raises(ValueError, match="negative sampling only"):
            make_trainer(arrays, KernelSettings(sg, hs, 5, 3, 1, batched=1))
    for bsize in (0, 17):
        with pytest.raises(ValueError, match="cbow_batch"):
            make_trainer(arrays, KernelSettings(0, 0, 5, 3, 1, batched=1, cbow_batch=bsize))
    for sg, batched in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match="batched skip-gram kernel's only"):
            make_trainer(arrays, KernelSettings(sg, 0, 5, 3, 1, batched=batched, blas=1))


@pytest.mark.parametrize("batched,blas", [(0, 0), (1, 0), (1, 1)])
def test_the_loss_of_a_saturated_score_is_exact(batched, blas):
    """A score beyond the table (no update) still costs its exact -log sigma, and its rows
    are left as they were."""
    arrays, _ = _tiny_model(1, 0, 1, 0.0)
    arrays["syn0"][:] = 1.0
    arrays["syn1neg"][:] = -1.0                    # every score -dim: far past -6
    settings = KernelSettings(1, 0, 1, 1, 1, compute_loss=1, shrink_windows=0,
                              batched=batched, blas=blas)
    trainer = make_trainer(arrays, settings)
    trainer.train(np.array([0, 1, -1], np.int32), 3, 0.05, 0.05)
    dim = arrays["syn0"].shape[1]
    per_true = np.log1p(np.exp(-dim)) + dim        # -log sigma(-dim) for the true word
    assert trainer.last_examples == 2
    assert trainer.last_loss >= 2 * per_true - 1e-9
    assert (arrays["syn0"] == 1.0).all() and (arrays["syn1neg"] == -1.0).all()


@pytest.mark.parametrize("batched,blas", [(0, 0), (1, 1)])
def test_same_seed_same_result_different_seed_differs(batched, blas):
    a1, ids = _tiny_model(1, 0, 5, 0.0)
    a2, _ = _tiny_model(1, 0, 5, 0.0)
    a3, _ = _tiny_model(1, 0, 5, 0.0)
    s = KernelSettings(1, 0, 5, 3, 1, batched=batched, blas=blas)
    make_trainer(a1, s).train(ids, 7, 0.05, 0.05)
    make_trainer(a2, s).train(ids, 7, 0.05, 0.05)
    make_trainer(a3, s).train(ids, 8, 0.05, 0.05)
    assert np.array_equal(a1["syn0"], a2["syn0"])
    assert not np.array_equal(a1["syn0"], a3["syn0"])


def test_trainer_rejects_bad_settings():
    arrays, _ = _tiny_model(1, 0, 5, 0.0)
    with pytest.raises(ValueError):
        make_trainer(arrays, KernelSettings(1, 0, 0, 3, 1))
    with pytest.raises(ValueError):
        make_trainer(arrays, KernelSettings(1, 0, 5, 0, 1))


def test_score_just_below_max_exp_stays_in_the_table():
    # f = 5.9999996 makes (f + 6) round to 12.0 in float32: index 1000 must exist
    f = np.float32(5.9999996)
    assert int((f + np.float32(6)) * (np.float32(1000) / np.float32(6) / np.float32(2))) == 1000
    table = K.exp_table()
    assert len(table) == 1001 and 0.997 < table[1000] < 0.998
    h = np.zeros(4, np.float32)
    h[0] = 1.0
    syn = np.zeros((1, 4), np.float32)
    syn[0, 0] = f
    K.out_ns(h, syn, np.array([0], np.int32), 0.1)
    assert np.isfinite(syn).all() and abs(syn[0, 0] - f) < 1e-3


def test_sync_rows_merges_local_updates_and_refreshes():
    rs = np.random.default_rng(5)
    base = rs.normal(size=50).astype(np.float32)
    shared = base + rs.normal(size=50).astype(np.float32)     # others' updates since the copy
    local = base + rs.normal(size=50).astype(np.float32)      # this process's updates
    want = shared + (local - base)
    K.sync_rows(shared, local, base)
    np.testing.assert_allclose(shared, want, rtol=1e-6)
    assert np.array_equal(local, shared) and np.array_equal(base, shared)


@pytest.mark.parametrize("sg,hs,negative,tiers", [(1, 0, 5, 0), (0, 0, 5, 0), (1, 1, 0, 0),
                                                   (0, 1, 3, 0), (1, 0, 5, 1), (0, 1, 3, 2)])
def test_hot_rows_alone_match_direct_updates(sg, hs, negative, tiers):
    # one process: training through local copies of the hot rows (merged every few words,
    # in tiers or not, and when asked) gives the direct result up to float rounding
    a1, ids = _tiny_model(sg, hs, negative, 0.0)
    a2, _ = _tiny_model(sg, hs, negative, 0.0)
    s = KernelSettings(sg, hs, negative, 3, 1)
    make_trainer(a1, s).train(ids, 11, 0.05, 0.01)
    t = make_trainer(a2, s, hot_words=4, sync_every=7, hot_tiers=tiers)
    assert t.hot_words == 4 and t.hot_tiers == tiers
    t.train(ids, 11, 0.05, 0.01)
    merged = t.syncs
    assert t.merges > 0                    # merged every 7 words within the chunk ...
    assert merged == t.merges >> tiers     # (all rows every 2^tiers merges)
    t.sync()
    assert t.syncs == merged + 1           # ... and once more when asked
    for key in ("syn0", "syn1neg", "syn1"):
        np.testing.assert_allclose(a2[key], a1[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("hs,negative", [(0, 5), (1, 0)])
def test_hot_tiers_merge_frequent_rows_often_and_all_rows_every_2_to_the_tiers(hs, negative):
    # every row hot in 2 tiers over 12 words: the first 3 rows (and the top 3 Huffman nodes,
    # the last rows of syn1) at every merge, 6 at every second, all 12 at every fourth; a
    # row is in the shared weights only once a merge of its tier came
    w0, ids = _tiny_model(1, hs, negative, 0.0)
    n = int((ids >= 0).sum())
    s = KernelSettings(1, hs, negative, 3, 1)
    for merges, rows in ((1, 3), (2, 6), (3, 6), (4, 12), (5, 12)):
        shared, _ = _tiny_model(1, hs, negative, 0.0)
        t = make_trainer(shared, s, hot_words=12, sync_every=n // merges, hot_tiers=2)
        assert t.train(ids, 5, 0.05, 0.05) == n
        assert t.merges == merges and t.syncs == merges // 4
        for key in ("syn0", "syn1neg", "syn1"):
            if not w0[key].size:
                continue
            got, start = shared[key], w0[key]
            if key == "syn1":                       # the top nodes are the last rows
                got, start, rows_ = got[::-1], start[::-1], min(rows, len(got))
            else:
                rows_ = rows
            assert np.array_equal(got[rows_:], start[rows_:]), (key, merges)
            assert not np.array_equal(got[:rows_], start[:rows_]), (key, merges)
        t.sync()
        assert t.syncs == merges // 4 + 1 and t.merges == merges + 1
        if rows < 12:                           # ... and sync() merged the rest
            assert not np.array_equal(shared["syn0"][rows:], w0["syn0"][rows:])


@pytest.mark.parametrize("hs,negative", [(0, 5), (1, 0)])
def test_hot_rows_of_two_trainers_add_up(hs, negative):
    # every row hot and no merge until asked: two trainers that copied the same weights each
    # train a chunk on their copy (nothing reaches the shared weights at the chunk's end),
    # then merge, and the shared weights end with both updates added (neither overwrites
    # the other)
    w0, ids = _tiny_model(1, hs, negative, 0.0)
    half = int(np.flatnonzero(ids == -1)[4]) + 1
    c1, c2 = ids[:half].copy(), ids[half:].copy()
    s = KernelSettings(1, hs, negative, 3, 1)
    alone = []
    for chunk, seed in ((c1, 1), (c2, 2)):
        a, _ = _tiny_model(1, hs, negative, 0.0)
        make_trainer(a, s).train(chunk, seed, 0.05, 0.05)
        alone.append(a)
    shared, _ = _tiny_model(1, hs, negative, 0.0)
    big = 1 << 30
    t1 = make_trainer(shared, s, hot_words=len(shared["syn0"]), sync_every=big)
    t2 = make_trainer(shared, s, hot_words=len(shared["syn0"]), sync_every=big)
    t1.train(c1, 1, 0.05, 0.05)
    t2.train(c2, 2, 0.05, 0.05)
    for key in ("syn0", "syn1neg", "syn1"):
        assert np.array_equal(shared[key], w0[key]), key     # not merged yet
    t1.sync()
    t2.sync()
    for key in ("syn0", "syn1neg", "syn1"):
        want = alone[0][key] + alone[1][key] - w0[key]
        np.testing.assert_allclose(shared[key], want, rtol=1e-5, atol=1e-6, err_msg=key)
        if w0[key].size:
            assert not np.allclose(shared[key], alone[0][key])
