"""The cluster's row exchange: the compiled loops that choose, round (int8) and apply rows,
each against a numpy twin, and the checks every row message passes before it is used."""
import numpy as np
import pytest

from engine.cluster import rows as R
from engine.cluster.protocol import decode_piece, decode_values, encode_piece, encode_values


def _pair(n=300, dim=37, seed=0):
    rng = np.random.default_rng(seed)
    snap = rng.standard_normal((n, dim)).astype(np.float32)
    live = snap.copy()
    moved = rng.random(n) < 0.5                  # half the rows change, by varied amounts
    live[moved] += (rng.standard_normal((moved.sum(), dim)) *
                    rng.uniform(1e-4, 0.5, (moved.sum(), 1))).astype(np.float32)
    snap[7] = 0.0                                # a row that starts at zero (syn1neg)
    live[7] = 0.0
    live[7, 3] = 1e-6
    return live, snap


def _ref_changed(live, snap, theta):
    d = (live.astype(np.float64) - snap) ** 2
    change, norm = d.sum(1), (snap.astype(np.float64) ** 2).sum(1)
    return np.flatnonzero((change > 0) & (change >= theta * theta * norm))


@pytest.mark.parametrize("theta", [0.0, 0.01, 0.05, 0.2])
def test_changed_rows_matches_numpy(theta):
    live, snap = _pair()
    got = R.changed_rows(live, snap, theta)
    ref = _ref_changed(live, snap, theta)
    # float32 sums against float64 ones: only rows right at the threshold may differ
    assert len(np.setxor1d(got, ref)) <= 1
    assert 7 in got                               # a zero row that moved always goes
    if theta == 0.0:
        assert np.array_equal(got, ref)
        assert np.array_equal(got, np.flatnonzero((live != snap).any(1)))


def _ref_int8(x):
    m = np.abs(x).max(1)
    scale = (m / 127).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(m[:, None] > 0, np.rint(x * (127 / m)[:, None]), 0)
    return q, scale


def test_quantize_delta_matches_numpy_and_keeps_the_rounding():
    live, snap = _pair()
    rows = np.flatnonzero((live != snap).any(1)).astype(np.int32)
    before = snap.copy()
    got = R.quantize_delta(live, snap, rows)
    q, scale = _ref_int8(live[rows] - before[rows])
    assert got.q.dtype == np.int8 and got.scale.dtype == np.float32
    assert np.abs(got.q.astype(int) - q).max() <= 1        # ties may round either way
    assert np.allclose(got.scale, scale, rtol=1e-6)
    # the snapshot took exactly what is sent; what is left is at most half a step
    sent = got.q.astype(np.float32) * got.scale[:, None]
    assert np.allclose(snap[rows], before[rows] + sent, rtol=0, atol=1e-6)
    left = live[rows] - snap[rows]
    assert (np.abs(left) <= 0.51 * got.scale[:, None] + 1e-7).all()
    untouched = np.setdiff1d(np.arange(len(snap)), rows)
    assert np.array_equal(snap[untouched], before[untouched])


def test_int8_deltas_lose_nothing_over_exchanges():
    """Error feedback: the rounding left on the node goes with the next deltas, so the
    master built from int8 deltas converges to the node's weights."""
    live, snap = _pair(seed=3)
    master = snap.copy()
    rows = np.arange(len(live), dtype=np.int32)
    errs = []
    for _ in range(4):
        d = R.quantize_delta(live, snap, rows)
        R.add_into(master, rows, d)
        errs.append(np.abs(master - live).max())
    assert errs[-1] < 1e-6 < errs[0]
    assert all(b < a / 50 for a, b in zip(errs, errs[1:]) if a > 1e-6)


def test_int8_values_add_and_rebase_match_numpy():
    live, snap = _pair(seed=5)
    rows = np.array([0, 7, 9, 120, 299], np.int32)
    v = R.quantize_values(live, rows)
    q, scale = _ref_int8(live[rows])
    assert np.abs(v.q.astype(int) - q).max() <= 1 and np.allclose(v.scale, scale)
    values = v.q.astype(np.float32) * v.scale[:, None]
    assert np.allclose(R.to_float(v), values)
    assert (np.abs(values - live[rows]) <= 0.51 * v.scale[:, None] + 1e-7).all()
    # add: dst[rows] += factor * values
    dst = snap.copy()
    R.add_into(dst, rows, v, 0.5)
    ref = snap.copy()
    ref[rows] += 0.5 * values
    assert np.allclose(dst, ref, atol=1e-6)
    # rebase: live += value - snap, snap = value; the node's own unsent change is kept
    node_live, node_snap = live + 0.25, live.copy()
    R.rebase(node_live, node_snap, rows, v)
    assert np.allclose(node_snap[rows], values)
    assert np.allclose(node_live[rows] - node_snap[rows], 0.25, atol=1e-6)
    other = np.setdiff1d(np.arange(len(live)), rows)
    assert np.array_equal(node_live[other], live[other] + 0.25)


def test_row_messages_are_checked():
    live, _ = _pair()
    rows = np.array([1, 5], np.int32)
    v = R.quantize_values(live, rows)
    name, got_rows, got = decode_piece(encode_piece("syn0", rows, v), {"syn0": live.shape})
    assert name == "syn0" and got_rows.tolist() == [1, 5]
    assert np.array_equal(got.q, v.q) and np.array_equal(got.scale, v.scale)
    packed = encode_values(v)
    bad_scales = [np.array([np.nan, 1], np.float32), np.array([-1, 1], np.float32),
                  np.array([np.inf, 1], np.float32)]
    for s in bad_scales:
        with pytest.raises(ValueError, match="scales"):
            decode_values(dict(packed, scale=encode_values(s)), 2, live.shape[1], "delta")
    with pytest.raises(ValueError, match="shape"):
        decode_values(packed, 3, live.shape[1], "delta")
    floats = live[rows].copy()
    floats[1, 2] = np.nan                     # one node's NaN would reach every node
    with pytest.raises(ValueError, match="finite"):
        decode_values(encode_values(floats), 2, live.shape[1], "delta")
    with pytest.raises(ValueError, match="outside"):
        decode_piece(encode_piece("syn0", np.array([1, len(live)], np.int32), v),
                     {"syn0": live.shape})
