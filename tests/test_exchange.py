"""The cluster's row exchange: the compiled loops that choose, round (int8) and apply rows,
each against a numpy twin, and the checks every row message passes before it is used."""
from dataclasses import replace

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


def _bf16_up(s):
    """float32 scales rounded up to the next bfloat16: written out on the bits."""
    bits = np.asarray(s, np.float32).view(np.uint32).astype(np.uint64)
    up = np.where(bits & 0xFFFF, (bits | 0xFFFF) + 1, bits)
    return up.astype(np.uint32).view(np.float32)


def _ref_int8(x, levels=127):
    m = np.abs(x).max(1)
    scale = _bf16_up((m / levels).astype(np.float32))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(m[:, None] > 0, np.rint(x / scale[:, None]), 0)
    return q, scale


def test_scales_are_bfloat16_and_travel_in_two_bytes():
    """Every quantizer rounds its scale up to a bfloat16 (never below the largest magnitude
    over the levels, so no value leaves the range), q is rounded against that scale, and
    the scales go on the wire in two bytes each (float32 when one is not a bfloat16)."""
    from engine.cluster.protocol import decode_scales, encode_scales

    live, snap = _pair(seed=2)
    rows = np.arange(len(live), dtype=np.int32)
    m = np.abs(live - snap).max(1)
    for dtype, levels in (("|i1", 127), ("|u1", 7)):
        d = R.quantize_delta(live, snap.copy(), rows, dtype)
        assert not (d.scale.view(np.uint32) & 0xFFFF).any()
        assert (d.scale >= (m / levels).astype(np.float32)).all()
        assert (d.scale <= (m / levels) * (1 + 2 ** -7) + 1e-30).all()
        v = R.quantize_values(live, rows, dtype)
        assert not (v.scale.view(np.uint32) & 0xFFFF).any()
        msg = encode_scales(d.scale)
        assert msg["dtype"] == "<u2" and len(msg["data"]) == 2 * len(rows)
        assert np.array_equal(decode_scales(msg, len(rows), "s"), d.scale)
    odd = np.array([0.1, 3.0], np.float32)                   # 0.1 is not a bfloat16
    assert encode_scales(odd)["dtype"] == "<f4"
    assert np.array_equal(decode_scales(encode_scales(odd), 2, "s"), odd)
    with pytest.raises(ValueError, match="shape"):
        decode_scales(encode_scales(d.scale), 3, "s")


def _ref_pack4(q):
    """Four bits a value, two's complement, two a byte, the even value in the low nibble:
    written out bit by bit."""
    rows, dim = q.shape
    out = np.zeros((rows, (dim + 1) // 2), np.uint8)
    for r in range(rows):
        for j in range(dim):
            nibble = int(q[r, j]) & 0xF
            out[r, j // 2] |= nibble << (4 * (j % 2))
    return out


def _ints(payload, dim):
    return R.unpack4(payload.q, dim) if payload.q.dtype == np.uint8 else payload.q


@pytest.mark.parametrize("dtype,levels", [("|i1", 127), ("|u1", 7)], ids=["int8", "int4"])
def test_quantize_delta_matches_numpy_and_keeps_the_rounding(dtype, levels):
    live, snap = _pair()
    rows = np.flatnonzero((live != snap).any(1)).astype(np.int32)
    before = snap.copy()
    got = R.quantize_delta(live, snap, rows, dtype)
    q, scale = _ref_int8(live[rows] - before[rows], levels)
    assert got.q.dtype == np.dtype(dtype) and got.scale.dtype == np.float32
    assert got.q.shape == (len(rows), R.q_width(live.shape[1], dtype))
    ints = _ints(got, live.shape[1])
    assert np.abs(ints.astype(int) - q).max() <= 1        # ties may round either way
    assert np.abs(ints).max() <= levels
    if dtype == "|u1":                                     # the packing, bit for bit
        assert np.array_equal(got.q, _ref_pack4(ints))
    assert np.allclose(got.scale, scale, rtol=1e-6)
    # the snapshot took exactly what is sent; what is left is at most half a step
    sent = ints.astype(np.float32) * got.scale[:, None]
    assert np.allclose(snap[rows], before[rows] + sent, rtol=0, atol=1e-6)
    left = live[rows] - snap[rows]
    assert (np.abs(left) <= 0.51 * got.scale[:, None] + 1e-7).all()
    untouched = np.setdiff1d(np.arange(len(snap)), rows)
    assert np.array_equal(snap[untouched], before[untouched])


@pytest.mark.parametrize("dtype", ["|i1", "|u1", "<f4"], ids=["int8", "int4", "float32"])
@pytest.mark.parametrize("dim", [37, 100])
def test_choosing_and_rounding_in_one_pass_equals_the_two_passes(dtype, dim):
    """changed_delta (the node's delta: the changed rows, rounded, in one pass) gives the
    rows changed_rows gives and, bit for bit, what quantize_delta sends and leaves (for
    float32: the differences themselves, which the snapshot takes)."""
    live, snap = _pair(dim=dim, seed=5)
    live[11] = np.nan                             # not a number: not chosen by either
    snap_one, snap_two = snap.copy(), snap.copy()
    rows, got = R.changed_delta(live, snap_one, dtype)
    ref_rows = R.changed_rows(live, snap_two, 0.0)
    assert rows.dtype == np.int32 and np.array_equal(rows, ref_rows)
    assert 7 in rows and 11 not in rows and 0 < len(rows) < len(live)
    if dtype == "<f4":
        ref = live[ref_rows] - snap_two[ref_rows]
        snap_two[ref_rows] += ref
        assert got.dtype == np.float32 and np.array_equal(got, ref)
        assert np.abs(live[rows] - snap_one[rows]).max() <= 1e-6   # a rounding at most
    else:
        ref = R.quantize_delta(live, snap_two, ref_rows, dtype)
        assert got.q.dtype == np.dtype(dtype) and np.array_equal(got.q, ref.q)
        assert np.array_equal(got.scale, ref.scale)
    assert np.array_equal(snap_one, snap_two)
    # a block with nothing changed
    rows, got = R.changed_delta(snap_one[:5], snap_one[:5].copy(), dtype)
    assert rows.size == 0 and R.payload_bytes(got) == 0
    # one shard's rows (first, first + step, ...): the same rows and values as the whole
    # block's, split; the snapshot the same once every shard's are taken
    live2, snap2 = _pair(dim=dim, seed=6)
    whole_snap = snap2.copy()
    whole_rows, whole = R.changed_delta(live2, whole_snap, dtype)
    for first in range(3):
        rows, got = R.changed_delta(live2, snap2, dtype, first, 3)
        mine = whole_rows % 3 == first
        assert np.array_equal(rows, whole_rows[mine])
        assert R.payload_bytes(got) == R.payload_bytes(R.take(whole, mine))
        if dtype == "<f4":
            assert np.array_equal(got, whole[mine])
        else:
            assert np.array_equal(got.q, whole.q[mine]) and np.array_equal(got.scale,
                                                                          whole.scale[mine])
    assert np.array_equal(snap2, whole_snap)
    assert R.changed_delta(live2[:2], snap2[:2].copy(), dtype, 5, 3)[0].size == 0


def test_a_delta_added_to_weights_and_snapshot_at_once_equals_two_adds():
    live, snap = _pair(seed=9)
    rows = np.array([0, 7, 8, 150, 299], np.int32)
    d = R.quantize_delta(live.copy(), snap.copy(), rows, "|u1")
    a, b = live.copy(), snap.copy()
    R.add_into_both(a, b, rows, d)
    ref_a, ref_b = live.copy(), snap.copy()
    R.add_into(ref_a, rows, d)
    R.add_into(ref_b, rows, d)
    assert np.array_equal(a, ref_a) and np.array_equal(b, ref_b)
    assert not np.array_equal(a, live)


@pytest.mark.parametrize("dtype,rounds,shrink", [("|i1", 4, 50), ("|u1", 9, 5)],
                         ids=["int8", "int4"])
def test_quantized_deltas_lose_nothing_over_exchanges(dtype, rounds, shrink):
    """Error feedback: the rounding left on the node goes with the next deltas, so the
    master built from int8 (or four-bit) deltas converges to the node's weights."""
    live, snap = _pair(seed=3)
    master = snap.copy()
    rows = np.arange(len(live), dtype=np.int32)
    errs = []
    for _ in range(rounds):
        d = R.quantize_delta(live, snap, rows, dtype)
        R.add_into(master, rows, d)
        errs.append(np.abs(master - live).max())
    assert errs[-1] < 1e-6 < errs[0]
    assert all(b < a / shrink for a, b in zip(errs, errs[1:]) if a > 1e-6)


def test_four_bit_rows_add_as_numpy_does_and_go_down_as_deltas_from_a_shadow():
    """The dispatcher's side of four-bit rows: merged rows go to a node as a delta from
    its shadow of the node's snapshot (RowMaster.delta), the node adds it to its weights
    and its snapshot: the shadow and the snapshot stay equal, and the node's rows reach
    the master's within a few exchanges, its own unsent changes kept."""
    from engine.cluster.merge import RowMaster

    live, snap = _pair(seed=7)
    dim = live.shape[1]
    rows = np.array([0, 7, 9, 120, 299], np.int32)
    d = R.quantize_delta(live.copy(), snap.copy(), rows, "|u1")
    dst = snap.copy()
    R.add_into(dst, rows, d, 0.5)
    ref = snap.copy()
    ref[rows] += 0.5 * _ints(d, dim).astype(np.float32) * d.scale[:, None]
    assert np.allclose(dst, ref, atol=1e-6)
    assert np.allclose(R.to_float(d, dim), _ints(d, dim) * d.scale[:, None])

    node_snap = snap.copy()
    node_live = snap + 0.01                      # the node's own unsent change
    master = RowMaster({"syn0": live.copy()}, {"syn0": np.ones(len(live), bool)})
    lo, hot = 100, 150                           # the shadowed (hot) rows: 100..249
    shadow = node_snap[lo:lo + hot].copy()
    due = np.arange(lo, lo + hot, dtype=np.int32)
    for _ in range(6):
        down = master.delta("syn0", due, lo, shadow, "|u1")
        R.add_into(node_live, due, down)
        R.add_into(node_snap, due, down)
        assert np.array_equal(node_snap[lo:lo + hot], shadow)
    assert np.allclose(node_snap[due], live[due], atol=1e-6)
    assert np.allclose(node_live[due] - node_snap[due], 0.01, atol=1e-5)


@pytest.mark.parametrize("dtype,levels", [("|i1", 127), ("|u1", 7)], ids=["int8", "int4"])
def test_values_add_and_rebase_match_numpy(dtype, levels):
    """Merged values as they go to a node, in int8 or four bits (two a byte): rounded to
    nearest against the row's largest magnitude, added and rebased as numpy does."""
    live, snap = _pair(seed=5)
    dim = live.shape[1]
    rows = np.array([0, 7, 9, 120, 299], np.int32)
    v = R.quantize_values(live, rows, dtype)
    assert v.q.dtype == np.dtype(dtype) and v.q.shape == (5, R.q_width(dim, dtype))
    ints = _ints(v, dim) if dtype == "|u1" else v.q
    q, scale = _ref_int8(live[rows], levels)
    assert np.abs(ints.astype(int) - q).max() <= 1 and np.allclose(v.scale, scale)
    assert np.abs(ints).max() <= levels
    values = ints.astype(np.float32) * v.scale[:, None]
    assert np.allclose(R.to_float(v, dim), values)
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


def test_row_indices_travel_as_gaps_and_are_checked():
    """Increasing rows go as varint gaps (adjacent rows: one byte each), any others as
    int32; both decode to the same rows, and rows outside the matrix are refused."""
    from engine.cluster.protocol import decode_row_ids, encode_row_ids

    rng = np.random.default_rng(4)
    cases = [np.arange(8000, dtype=np.int32),
             np.sort(rng.choice(1 << 20, 5000, replace=False)).astype(np.int32),
             np.array([0], np.int32), np.array([(1 << 21) - 1], np.int32),
             np.array([5, 3, 9], np.int32), np.array([2, 2], np.int32),
             np.array([], np.int32)]
    for rows in cases:
        msg = encode_row_ids(rows)
        increasing = rows.size and rows[0] >= 0 and (np.diff(rows) > 0).all()
        assert ("gaps" in msg) == bool(increasing)
        assert np.array_equal(decode_row_ids(msg, 1 << 21, "syn0"), rows)
    assert len(encode_row_ids(cases[0])["gaps"]["data"]) == 8000      # a byte a row
    with pytest.raises(ValueError, match="outside"):
        decode_row_ids(encode_row_ids(np.array([3, 10], np.int32)), 10, "syn0")
    with pytest.raises(ValueError, match="outside"):
        decode_row_ids(encode_row_ids(np.array([3, 2], np.int32)), 3, "syn0")
    with pytest.raises(ValueError, match="varints"):
        decode_row_ids({"gaps": {"dtype": "|u1", "shape": [1], "data": b"\x80"}}, 10, "x")


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
    four = R.quantize_delta(live, live - 1, rows, "|u1")   # four bits: (2, ceil(dim / 2))
    got = decode_values(encode_values(four), 2, live.shape[1], "delta")
    assert got.q.dtype == np.uint8 and np.array_equal(got.q, four.q)
    with pytest.raises(ValueError, match="shape"):
        decode_values(encode_values(R.Quantized(four.q[:, :-1], four.scale)), 2,
                      live.shape[1], "delta")
    floats = live[rows].copy()
    floats[1, 2] = np.nan                     # one node's NaN would reach every node
    with pytest.raises(ValueError, match="finite"):
        decode_values(encode_values(floats), 2, live.shape[1], "delta")
    with pytest.raises(ValueError, match="outside"):
        decode_piece(encode_piece("syn0", np.array([1, len(live)], np.int32), v),
                     {"syn0": live.shape})


def test_damped_merge_factors():
    from engine.cluster.merge import MergeRule, damped_factors

    k = np.array([0.0, 1e-3, 0.1, 1.0, 10.0, 100.0, 1e4])
    for n in (3, 4, 8, 64):
        f = damped_factors(k, n, 0.1)
        assert f[0] == 1.0 and f[1] > 0.999            # rows updated rarely: the sum
        assert abs(f[-1] - 2.0 / n) < 1e-6             # rows every node settles: 2/N
        assert (np.diff(f) <= 1e-7).all()              # more updates, more damping
        # the formula: twice (1 - e^(-r n k)) / (n (1 - e^(-r k))), at most 1
        x = 0.1 * k[1:]
        ref = np.minimum(1, 2 * (1 - np.exp(-n * x)) / (n * (1 - np.exp(-x))))
        assert np.allclose(f[1:], ref, rtol=1e-5)
    assert (damped_factors(k, 2, 0.1) == 1.0).all()    # at 2 nodes: the sum
    rule = MergeRule("damped", 0.1, k.astype(np.float32))
    assert rule.factors(2) == 1.0
    full = rule.factors(4)
    assert set(full) == {"syn0", "syn1neg"} and full["syn0"][0] == 1.0
    assert np.array_equal(rule.factors(4, slice(1, None, 3))["syn0"], full["syn0"][1::3])
    assert MergeRule("sum", 0.1, k).factors(8) == 1.0
    assert MergeRule("average", 0.1, k).factors(4) == 0.25
    assert MergeRule("scaled", 0.1, k).factors(4) == 0.25
    assert [MergeRule(m).alpha_scale(4) for m in ("scaled", "average", "sum", "damped")] == \
        [4.0, 1.0, 1.0, 1.0]
    assert MergeRule("scaled").alpha_scale(0) == 1.0
    with pytest.raises(ValueError, match="merge"):
        MergeRule("median")


def _sgd(x, steps, rate, target, noise, rng):
    """`steps` noisy SGD updates of many independent rows x, each pulling a row `rate` of
    the way towards target + noise."""
    for _ in range(steps):
        x = x + rate * (target + noise * rng.standard_normal(x.shape) - x)
    return x


@pytest.mark.parametrize("steps, one_node", [(2, True), (3, False), (400, False)])
def test_scaled_merge_matches_one_run_in_every_regime(steps, one_node):
    """N nodes' rounds, merged, against one run over all their updates (many rows, each
    an independent trial): a row only one node touches, a row every node moves a little
    (the deltas add), and a row every node settles (its place and its spread must be one
    run's, not N times its step). The "scaled" rule matches all three; the sum fails the
    last and the plain average the first two."""
    from engine.cluster.merge import MergeRule

    rng = np.random.default_rng(5)
    n, rate, rows, target, noise = 4, 0.01, 20000, 1.0, 2.0
    x0 = np.zeros(rows)
    one = _sgd(x0, steps * (1 if one_node else n), rate, target, noise, rng)

    def merged(rule):
        rule = MergeRule(rule)
        s, f = rule.alpha_scale(n), rule.factors(n)
        deltas = [_sgd(x0, steps, rate * s, target, noise, rng) - x0
                  for _ in range(1 if one_node else n)]
        return x0 + f * np.sum(deltas, axis=0)

    scaled, summed, averaged = merged("scaled"), merged("sum"), merged("average")
    # the mean of 20,000 rows: within a few standard errors of one run's
    tol = 5 * one.std() / np.sqrt(rows)
    assert abs(scaled.mean() - one.mean()) < tol + 0.02 * abs(one.mean())
    assert 0.85 < scaled.std() / one.std() < 1.15
    if steps > 100:                                    # settled rows: the sum swings N-fold
        assert abs(summed.mean() - one.mean()) > 2.0
    else:                                              # moving rows: the average lags N-fold
        assert averaged.mean() < 0.5 * one.mean()


def test_a_merge_with_a_factor_per_row_matches_numpy():
    from engine.cluster.merge import ALL_ROWS, RowMaster

    rng = np.random.default_rng(2)
    master = rng.standard_normal((6, 4)).astype(np.float32)
    ref = master.copy()
    rm = RowMaster({"syn0": master}, {"syn0": np.zeros(6, bool)})
    a, b = rm.add_client(), rm.add_client()
    rows = np.array([0, 2, 5], np.int32)
    delta = rng.standard_normal((3, 4)).astype(np.float32)
    f = np.array([1.0, 0.5, 1.0, 1.0, 1.0, 0.25], np.float32)
    rm.merge(a, [("syn0", rows, R.quantize_values(delta, np.arange(3, dtype=np.int32)))],
             {"syn0": f})
    q = R.quantize_values(delta, np.arange(3, dtype=np.int32))
    ref[rows] += f[rows][:, None] * R.to_float(q, 4)
    assert np.allclose(master, ref, atol=1e-6)
    # a row merged with its factor 1 equals the client's own snapshot: not sent back to
    # it; rows scaled are; the other client gets every row merged
    _, due = rm.due(a, ALL_ROWS)
    assert due["syn0"].tolist() == [5]
    _, due = rm.due(b, ALL_ROWS)
    assert due["syn0"].tolist() == [0, 2, 5]


def test_a_released_client_slot_is_reused_and_holds_nothing_of_the_old_client():
    """A dropped node's slot at the merge point is freed and the next client (the node
    taken back, or another) gets it: the versions are its own (every row due or none, as
    asked), and rows that equalled the old client's snapshot are not skipped for it."""
    from engine.cluster.merge import ALL_ROWS, RowMaster

    rm = RowMaster({"syn0": np.zeros((6, 2), np.float32)}, {"syn0": np.zeros(6, bool)})
    a, b = rm.add_client(), rm.add_client()
    rows = np.array([1, 3], np.int32)
    rm.merge(a, [("syn0", rows, np.ones((2, 2), np.float32))])
    assert rm.due(a, ALL_ROWS)[1]["syn0"].tolist() == []     # its own snapshot
    rm.release_client(a)
    rm.release_client(a)                                     # twice: nothing more
    c = rm.add_client(current=False)
    assert c == a and len(rm.synced) == 2                    # no new slot
    assert rm.due(c, ALL_ROWS)[1]["syn0"].tolist() == [1, 3]
    d = rm.add_client()                                      # no slot free: a new one
    assert d == 2 and rm.due(d, ALL_ROWS)[1]["syn0"].tolist() == []
    assert rm.due(b, ALL_ROWS)[1]["syn0"].tolist() == [1, 3]


def test_a_cold_exchange_with_a_band_takes_the_hot_rows_and_the_bands_then_the_rest():
    from engine.cluster.merge import ALL_ROWS
    """RowMaster's reach: hot rows on every exchange, the `band` most frequent on a cold
    exchange with a band, the rest on one without; what a client was sent is not due again,
    what it was not stays due. syn1 ranks from its last row (the Huffman tree's top)."""
    from engine.cluster.merge import RowMaster, due_reach

    rows = 10
    arrays = {"syn0": np.zeros((rows, 2), np.float32), "syn1": np.zeros((rows, 2), np.float32)}
    hot = {"syn0": np.arange(rows) < 2, "syn1": np.arange(rows) >= rows - 2}
    rm = RowMaster(arrays, hot)
    a, b = rm.add_client(), rm.add_client()
    touched = np.array([1, 4, 8], np.int32)
    rm.merge(b, [(k, touched, np.ones((3, 2), np.float32)) for k in arrays])
    assert due_reach(0, 6, 0.0) == 0 and due_reach(1, 6, 0.0) == 6
    assert due_reach(1, 0, 0.0) == ALL_ROWS and due_reach(0, 0, 0.5) == ALL_ROWS
    assert due_reach(2, 6, 0.0) == 0                       # the last flush: no rare rows
    v, due = rm.due(a, 0)
    assert due["syn0"].tolist() == [1] and due["syn1"].tolist() == [8]
    v, due = rm.due(a, 6)
    assert due["syn0"].tolist() == [1, 4] and due["syn1"].tolist() == [4, 8]
    rm.seen(a, v, 6)
    _, due = rm.due(a, ALL_ROWS)
    assert due["syn0"].tolist() == [8] and due["syn1"].tolist() == [1]
    rm.merge(b, [("syn0", np.array([4], np.int32), np.ones((1, 2), np.float32))])
    v, due = rm.due(a, ALL_ROWS)                           # merged again since: due again
    assert due["syn0"].tolist() == [4, 8]
    rm.seen(a, v, ALL_ROWS)
    assert all(d.size == 0 for d in rm.due(a, ALL_ROWS)[1].values())
    _, due = rm.due(b, ALL_ROWS)      # b's own rows are its snapshot, but for the one it
    assert due["syn0"].tolist() == [4] and due["syn1"].size == 0   # merged twice unsynced


def test_the_merge_rule_travels_checked():
    from engine.cluster.protocol import JobSpec, decode_job_spec, encode_job_spec
    from engine.word2vec.schedule import KernelSettings

    shapes = {"syn0": ((4, 3), "<f4"), "syn1neg": ((4, 3), "<f4"), "syn1": ((0, 3), "<f4"),
              "keep": ((4,), "<u4"), "noise": ((8,), "<u8"), "codes": ((1, 1), "|u1"),
              "points": ((1, 1), "<i4"), "code_lens": ((1,), "<i4")}
    per_round = np.array([40, 3, 0.5, 0.1], np.float32)
    spec = JobSpec(job="j1", member="n1", dim=3, vocab=4,
                   settings=KernelSettings(1, 0, 5, 5, 1), products="loops", max_chunk_ids=10,
                   timeout_seconds=5.0, peer_timeout=5.0, workers=1, hot_rows=2,
                   local_hot=None, shapes=shapes, merge="damped", merge_rate=0.2,
                   per_round=per_round)
    got = decode_job_spec(encode_job_spec(spec))
    assert (got.merge, got.merge_rate) == ("damped", 0.2)
    assert np.array_equal(got.per_round, per_round)
    sent = encode_job_spec(spec)
    short = encode_job_spec(replace(spec, per_round=per_round[:3]))["per_round"]
    nan = encode_job_spec(replace(spec, per_round=np.array([1, np.nan, 0, 0], np.float32)))
    for bad, match in (({"merge": "median"}, "merge"), ({"merge_rate": -1.0}, "merge_rate"),
                       ({"per_round": short}, "per_round"),
                       ({"per_round": nan["per_round"]}, "per_round")):
        with pytest.raises(ValueError, match=match):
            decode_job_spec(dict(sent, **bad))


def test_hot_rows_in_tiers():
    """With tiers T the most frequent 1/2^T of the hot rows go with every delta, twice as
    many with every second, all with every 2^T-th (and the first); without, all each time."""
    from types import SimpleNamespace

    from engine.cluster.node import NodeJob

    job = SimpleNamespace(deltas=0, tiers=2, hot_rows=400)
    assert [NodeJob.hot_now(job) for _ in range(9)] == [400, 100, 200, 100, 400, 100, 200,
                                                        100, 400]
    job = SimpleNamespace(deltas=0, tiers=0, hot_rows=400)
    assert [NodeJob.hot_now(job) for _ in range(3)] == [400, 400, 400]


@pytest.mark.parametrize("merge_at, cold_tiers", [("dispatcher", 0), ("nodes", 0),
                                                   ("dispatcher", 2), ("nodes", 2)])
def test_four_bit_rows_on_two_nodes_keep_each_shadow_equal_to_its_nodes_snapshot(
        tmp_path, monkeypatch, merge_at, cold_tiers):
    """Two nodes (served from this process, so every side can be looked at) with four-bit
    rows: whenever a node's exchange begins (its merged rows have arrived and nothing of it
    is in flight), its snapshot of the hot rows is exactly the shadow that its merge point
    keeps of it: the dispatcher's, or, merging at the nodes, each shard owner's (its own
    shard included); the job trains every chunk once and learns. With cold_tiers, most cold
    exchanges take a band of the rows (asked for and counted)."""
    from conftest import in_process_worker, topic_precision
    from test_cluster import KEY, _exact, _job, _train

    from engine.cluster import transport
    from engine.cluster.dispatcher import ClusterEngine
    from engine.cluster.service import WorkerService
    from engine.config import ClusterConfig

    services: dict[str, WorkerService] = {}
    nodes_seen: dict[str, list] = {}
    shard_checks = []
    shadows: dict[str, list] = {}

    bands, full = [], []

    class Recording(WorkerService):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            services[self.name] = self

        @transport.expose
        def exchange(self, job_id, tasks, chunks, round_words, wait_seconds, cold, band):
            job = self.job
            if job is not None and job.job_id == job_id:
                nodes_seen.setdefault(self.name, []).append(
                    {k: job.snapshot[k].copy() for k in ("syn0", "syn1neg")})
                for owner in list(services.values()):       # merging at the nodes
                    for shard in list(getattr(owner.job, "shards", {}).values()):
                        slot = shard.clients.get(job.member)
                        for k, (lo, rows) in shard.shadows.get(slot, {}).items():
                            mine = job.snapshot[k][shard.to_global(
                                np.arange(lo, lo + rows.shape[0]))]
                            shard_checks.append(np.array_equal(mine, rows))
            (bands if band else full).append(band) if cold == 1 else None
            return super().exchange(job_id, tasks, chunks, round_words, wait_seconds, cold,
                                    band)

    push = ClusterEngine._push

    def recording_push(self, node, cold, band=0):
        push(self, node, cold, band)
        shadows.setdefault(node.address, []).append(
            {k: (lo, s.copy()) for k, (lo, s) in node.shadow.items()})

    monkeypatch.setattr(ClusterEngine, "_push", recording_push)
    monkeypatch.setenv("ENGINE_CLUSTER_KEY", KEY)
    key = KEY.encode()
    with in_process_worker(Recording, "a", key) as a, in_process_worker(Recording, "b", key) as b:
        topics, state, stream = _job(tmp_path, epochs=4)
        # with tiers: short rounds and every exchange cold, so that bands come up
        cluster = ClusterConfig(nodes=[a, b], round_words=300 if cold_tiers else 3000,
                                round_seconds=2, merge_at=merge_at, delta_dtype="int4",
                                hot_rows=30, cold_every=1 if cold_tiers else 32,
                                cold_tiers=cold_tiers)
        stats = _train(state, stream, cluster)
    _exact(stats, stream, 4)
    assert stats.cluster["cold_tiers"] == cold_tiers
    if cold_tiers:
        assert bands and min(bands) > 30 and max(bands) < len(state.vocab) and 0 in full
    else:
        assert not bands
    assert stats.cluster["dropped"] == [] and stats.cluster["merge_at"] == merge_at
    compared = 0
    if merge_at == "dispatcher":
        for name, address in (("a", a), ("b", b)):
            for snap, shadow in zip(nodes_seen[name], shadows[address]):
                assert {"syn0", "syn1neg"} <= set(shadow)
                for k in ("syn0", "syn1neg"):
                    lo, rows = shadow[k]
                    assert rows.shape[0] == 30
                    assert np.array_equal(snap[k][lo:lo + rows.shape[0]], rows), (name, k)
                compared += 1
    else:
        assert all(shard_checks)
        compared = len(shard_checks) // 4            # 2 shards x 2 matrices an exchange
    assert compared >= 6
    assert topic_precision(state.keyed_vectors(), topics) >= 0.9


def test_a_shard_takes_back_the_deltas_of_a_reply_that_was_lost():
    """Merging at the nodes: a shard's owner counts on its client having applied the last
    reply only once the client acknowledges it; a client that acknowledges an older one
    never got it, and the deltas sent with it are taken back from its shadow."""
    from engine.cluster.merge import Shard

    rng = np.random.default_rng(0)
    source = {"syn0": rng.standard_normal((8, 4)).astype(np.float32)}
    shard = Shard(0, 2, source, {"syn0": (0, 6)}, generation=0)   # local rows 0..2 hot
    slot = shard.slot("client")
    shadow = shard.shadow(slot)
    lo, rows = shadow["syn0"]
    assert (lo, rows.shape[0]) == (0, 3) and np.array_equal(rows, source["syn0"][0:6:2])
    before = rows.copy()
    shard.master.arrays["syn0"][:3] += 0.5
    sent = shard.master.delta("syn0", np.arange(3, dtype=np.int32), lo, rows, "|u1")
    assert not np.array_equal(rows, before)
    shard.pending[slot] = (7, [("syn0", np.arange(3, dtype=np.int32), sent)])
    shard.settle(slot, 0, 7)                       # acknowledged: kept
    assert slot not in shard.pending and not np.array_equal(rows, before)
    after = rows.copy()
    shard.master.arrays["syn0"][:3] += 0.25
    sent = shard.master.delta("syn0", np.arange(3, dtype=np.int32), lo, rows, "|u1")
    shard.pending[slot] = (8, [("syn0", np.arange(3, dtype=np.int32), sent)])
    shard.settle(slot, 0, 7)                       # an older reply: the last one was lost
    assert np.allclose(rows, after, atol=1e-6)


def test_auto_cold_every_and_tiers_follow_the_node_count():
    """"auto": with one or two nodes rare rows wait 32 exchanges and the hot rows go in two
    tiers; from three nodes on, 8 and no tiers; numbers given are kept."""
    from engine.cluster.dispatcher import ClusterEngine
    from engine.config import ClusterConfig

    for nodes, want in ((1, (32, 2)), (2, (32, 2)), (3, (8, 0)), (4, (8, 0))):
        engine = ClusterEngine(ClusterConfig(), None)
        engine.hot_rows = 10
        engine._settle(nodes)
        assert (engine.cold_every, engine.tiers) == want, nodes
    engine = ClusterEngine(ClusterConfig(cold_every=5, tiers=1), None)
    engine.hot_rows = 10
    engine._settle(2)
    assert (engine.cold_every, engine.tiers) == (5, 1)
    assert ClusterConfig().delta_dtype == "int4"


def test_a_three_part_flush_leaves_at_most_a_903224th_of_a_change():
    """The last flush with quantized rows: a four-bit delta of every changed row, then an
    int8 delta of what its rounding left, then another; what stays behind is at most
    1/(14 * 254^2) of the row's largest change (the one-node test checks the whole job
    against local training)."""
    from engine.cluster.node import FLUSH_PARTS

    live, snap = _pair(seed=11)
    snap0 = snap.copy()
    master = snap0.copy()
    moved = np.flatnonzero((live != snap0).any(1))
    sent = []
    for dtype in FLUSH_PARTS:
        rows, vals = R.changed_delta(live, snap, dtype)
        R.add_into(master, rows, vals)
        sent.append(rows)
    assert np.array_equal(sent[0], moved)
    assert all(r.size > moved.size // 2 for r in sent[1:])   # each rounding left something
    assert np.array_equal(master, snap)                 # the snapshot took every part
    change = np.abs(live - snap0).max(1)
    left = np.abs(live - master).max(1)
    # float32 arithmetic: live - snap itself is exact only to an ulp of the weights
    assert (left <= change / (14 * 254 ** 2) * 1.01 +
            2 * np.spacing(np.abs(live).max(1))).all()
