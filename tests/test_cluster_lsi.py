"""LSI on the cluster, on loopback: real `engine worker` processes decompose shares of the
documents matrix; the dispatcher merges them. The merged decomposition matches an exact SVD
and the local computation of the same shares; a SIGKILLed worker and a SIGSTOPped one are
dropped and their shares recomputed by the survivor, with the same result; `engine run`
with [lsi] and [cluster] writes the model. The `workers` fixture (test_cluster) checks
that no process, port or shared memory is left behind."""
import json
import signal

import numpy as np
import pytest
import scipy.sparse

from engine.cluster import ClusterLsi, read_key
from engine.config import ClusterConfig, job_from_dict
from engine.documents.blocks import BlockCache
from engine.documents.lsi import SvdSettings, decompose_share, plan_shares, share_rank
from engine.documents.svd import merge_all
from engine.errors import ClusterError
from engine.jobs.run import run_job

from conftest import in_process_worker
from test_cluster import KEY, workers  # noqa: F401 (the fixture)

RANK = 12


def _planted(seed=3, terms=300, docs=1500):
    """Documents x terms: a rank-RANK matrix with well separated singular values plus a
    little noise, as CSR."""
    rng = np.random.default_rng(seed)
    a = np.linalg.qr(rng.standard_normal((docs, RANK)))[0]
    b = np.linalg.qr(rng.standard_normal((terms, RANK)))[0]
    s = np.geomspace(40, 4, RANK)
    m = (a * s) @ b.T + 1e-4 * rng.standard_normal((docs, terms))
    return scipy.sparse.csr_matrix(m)


SETTINGS = SvdSettings(num_topics=8, chunksize=200, power_iters=2, extra_samples=10,
                       dtype="float64", seed=5, method="stochastic")


def _local_merge(blocks, n_terms, shares, settings=SETTINGS):
    """The same shares decomposed here and merged in order: what the cluster must give."""
    rank = share_rank(settings, n_terms)
    parts = (decompose_share(share, n_terms, settings, 1, rank)
             for share in plan_shares(blocks, shares))
    return merge_all(parts, settings.num_topics)


def _same(d, ref, tol):
    assert d.u.shape == ref.u.shape
    np.testing.assert_allclose(d.s, ref.s, rtol=tol)
    np.testing.assert_allclose(np.abs(d.u.T @ ref.u).diagonal(), 1.0, atol=tol)


def test_cluster_decomposition_matches_exact_svd_and_local_shares(tmp_path, workers):
    ws = workers(2)
    m = _planted()
    with BlockCache(str(tmp_path)) as cache:
        cache.add_matrix(m, 100)
        cfg = ClusterConfig(nodes=[w.address for w in ws])
        d, report = ClusterLsi(cfg, read_key(), shares=5).decompose(
            cache.blocks, m.shape[1], SETTINGS)
        local = _local_merge(cache.blocks, m.shape[1], 5)
    exact = np.linalg.svd(m.toarray().T, full_matrices=False)
    np.testing.assert_allclose(d.s, exact[1][:8], rtol=1e-3)
    _same(d, local, 1e-6)
    c = report.cluster
    assert c["shares"] == 5 and c["nodes_used"] == 2 and not c["dropped"]
    assert sorted(i for n in c["per_node"] for i in n["shares"]) == list(range(5))
    assert {n["node"] for n in c["per_node"] if n["shares"]} == {w.address for w in ws}


def test_killed_and_hung_nodes_lose_no_share(tmp_path, workers):
    ws = workers(3)
    m = _planted(seed=4)
    victims = {ws[0].address: signal.SIGKILL, ws[1].address: signal.SIGSTOP}
    hit = []

    def on_event(what, node, share):
        # a victim is hit while it computes a share: that share must be done again
        if what == "sent" and node.address in victims and node.address not in hit:
            hit.append(node.address)
            next(w for w in ws if w.address == node.address).ps.send_signal(
                victims[node.address])

    with BlockCache(str(tmp_path)) as cache:
        cache.add_matrix(m, 100)
        cfg = ClusterConfig(nodes=[w.address for w in ws], timeout_seconds=2,
                            round_seconds=0.5)
        d, report = ClusterLsi(cfg, read_key(), shares=6, on_event=on_event).decompose(
            cache.blocks, m.shape[1], SETTINGS)
        local = _local_merge(cache.blocks, m.shape[1], 6)
    assert sorted(hit) == sorted(victims)
    c = report.cluster
    assert {x["address"] for x in c["dropped"]} == set(victims)
    assert {x["lost_on"] for x in c["recomputed"]} == set(victims)
    assert sorted(int(k) for k in c["done_by"]) == list(range(6))
    assert set(c["done_by"].values()) >= {ws[2].address}
    _same(d, local, 1e-6)                  # the same topics up to sign and rounding
    assert ws[0].proc.wait(timeout=10) == -signal.SIGKILL


def test_every_node_lost_is_one_clear_error(tmp_path, workers):
    ws = workers(1)
    m = _planted(seed=5, docs=400)

    def on_event(what, node, share):
        if what == "sent":
            ws[0].ps.send_signal(signal.SIGKILL)

    with BlockCache(str(tmp_path)) as cache:
        cache.add_matrix(m, 100)
        cfg = ClusterConfig(nodes=[ws[0].address], timeout_seconds=2, round_seconds=0.5)
        with pytest.raises(ClusterError, match="every node was lost"):
            ClusterLsi(cfg, read_key(), on_event=on_event).decompose(
                cache.blocks, m.shape[1], SETTINGS)


def test_engine_run_lsi_job_on_the_cluster(tmp_path, workers):
    ws = workers(2)
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(400)]
    topics = [vocab[i::4] for i in range(4)]     # four planted topics of 100 words
    with open(tmp_path / "docs.tsv", "w") as fh:
        for d in range(800):
            words = rng.choice(topics[d % 4], 60).tolist() + rng.choice(vocab, 10).tolist()
            fh.write(f"d{d}\t{' '.join(words)}\n")
    job = job_from_dict({
        "corpus": {"path": str(tmp_path / "docs.tsv")},
        "lsi": {"num_topics": 4, "extra_samples": 10, "chunksize": 100, "shares": 4,
                "no_above": 1.0},
        "output": {"dir": str(tmp_path / "out")},
        "cluster": {"nodes": [w.address for w in ws]}})
    report = run_job(job, show_progress=False)
    assert report["method"] == "cluster merge"
    assert report["cluster"]["nodes_used"] == 2 and report["cluster"]["shares"] >= 2
    vecs = np.load(tmp_path / "out" / "doc_vectors.npy")
    assert vecs.shape == (800, 4)
    # documents of one planted topic are nearer each other than to the others' documents
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    sims = unit @ unit.T
    label = np.arange(800) % 4
    same = sims[label[:, None] == label[None, :]].mean()
    other = sims[label[:, None] != label[None, :]].mean()
    assert same > 0.9 and other < 0.3, (same, other)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["cluster"]["done_by"]


def test_gensim_style_distributed_lsimodel(tmp_path, workers):
    import engine
    from engine.documents.blocks import csr_to_bows

    ws = workers(2)
    m = _planted(seed=6, docs=600)
    bows = csr_to_bows(m)
    id2word = {i: f"t{i}" for i in range(m.shape[1])}
    model = engine.LsiModel(bows, num_topics=8, id2word=id2word, chunksize=200,
                            extra_samples=10, random_seed=2, distributed=True,
                            nodes=[w.address for w in ws], shares=3)
    assert model.distributed and model.last_report.cluster["shares"] == 3
    assert not model.last_report.cluster["dropped"]
    local = engine.LsiModel(bows, num_topics=8, id2word=id2word, chunksize=200,
                            extra_samples=10, random_seed=2)
    exact = np.linalg.svd(m.toarray().T, full_matrices=False)[1][:8]
    np.testing.assert_allclose(model.projection.s, exact, rtol=1e-3)
    np.testing.assert_allclose(local.projection.s, exact, rtol=1e-3)
    doc = bows[0]
    got, want = dict(model[doc]), dict(local[doc])
    assert got.keys() == want.keys()
    for t in got:                      # each topic up to its sign
        assert abs(abs(got[t]) - abs(want[t])) < 1e-2 * max(abs(want[t]), 1)
    model.save(str(tmp_path / "lsi.npz"))
    again = engine.LsiModel.load(str(tmp_path / "lsi.npz"))
    np.testing.assert_array_equal(again.projection.s, model.projection.s)
    with pytest.raises(Exception, match="distributed"):
        from engine.documents import LsiModel
        LsiModel(bows, num_topics=2, id2word=id2word, distributed=True)


def test_a_node_checks_everything_it_is_sent():
    from engine.cluster.lsi_node import LsiNodeJob
    from engine.cluster.protocol import pack_array

    spec = {"job": "lsi-x", "kind": "lsi", "n_terms": 5, "rank": 2, "timeout_seconds": 10,
            "settings": {"num_topics": 2, "chunksize": 10, "power_iters": 1,
                         "extra_samples": 2, "dtype": "float64", "seed": 1}}
    job = LsiNodeJob(spec, workers=1)
    try:
        ok = (np.array([0, 2, 3]), np.array([0, 4, 1], np.int32), np.array([1.0, 2.0, 3.0]))

        def put(ptr, idx, val, share=0):
            job.put_block(share, 0, pack_array(np.asarray(ptr, "<i8")),
                          pack_array(np.asarray(idx, "<i4")), pack_array(np.asarray(val)))

        with pytest.raises(ValueError, match="term ids"):
            put(ok[0], [0, 5, 1], ok[2])
        with pytest.raises(ValueError, match="indptr"):
            put([0, 3, 2], ok[1], ok[2])
        with pytest.raises(ValueError, match="not finite"):
            put(ok[0], ok[1], [1.0, np.nan, 3.0])
        with pytest.raises(ValueError, match="dtype"):
            put(ok[0], ok[1], np.array(ok[2], np.float32))
        with pytest.raises(ValueError, match="shape"):
            put(ok[0], ok[1], ok[2][:2])
        with pytest.raises(ValueError, match="share"):
            job.decompose(7)
        with pytest.raises(ValueError, match="packed array"):
            job.put_block(0, 0, None, None, None)
        assert job.shares[0].n_docs == 0            # nothing bad was written
        put(*ok)
        assert job.shares[0].n_docs == 2
        job.decompose(0)
        with pytest.raises(ValueError, match="already running|already done"):
            put(*ok)
        reply = job.result(0, 30)
        assert reply["state"] == "done" and reply["rank"] == 2
    finally:
        job.close()
    for bad, match in ((dict(spec, n_terms=0), "n_terms"),
                       (dict(spec, settings=dict(spec["settings"], dtype="int8")), "dtype")):
        with pytest.raises(ValueError, match=match):
            LsiNodeJob(bad, workers=1)


def _lying_service():
    from engine.cluster import transport
    from engine.cluster.service import WorkerService

    class Lying(WorkerService):
        @transport.expose
        def lsi_result(self, job_id, index, wait):
            reply = super().lsi_result(job_id, index, wait)
            if reply.get("state") != "done":
                return reply
            s = np.frombuffer(reply["s"]["data"], reply["s"]["dtype"]).copy()
            s[0] = np.nan                         # one NaN singular value
            return dict(reply, s=dict(reply["s"], data=s.tobytes()))
    return Lying


def test_a_share_with_a_nan_drops_its_node(tmp_path, workers):
    """A node whose share comes back with a NaN in S is dropped and its share recomputed by
    another node (one NaN would spread to every topic); the merged topics are those of the
    same shares decomposed here."""
    (good,) = workers(1)
    with in_process_worker(_lying_service(), "liar", KEY.encode()) as liar:
        m = _planted(seed=6, docs=600)
        with BlockCache(str(tmp_path)) as cache:
            cache.add_matrix(m, 100)
            cfg = ClusterConfig(nodes=[liar, good.address], timeout_seconds=5,
                                round_seconds=0.5, rejoin_seconds=600)
            d, report = ClusterLsi(cfg, read_key(), shares=4).decompose(
                cache.blocks, m.shape[1], SETTINGS)
            local = _local_merge(cache.blocks, m.shape[1], 4)
        assert liar in {x["address"] for x in report.cluster["dropped"]}
        assert np.isfinite(d.s).all() and np.isfinite(d.u).all()
        _same(d, local, 1e-6)


def test_a_node_that_answers_running_forever_is_dropped(tmp_path, workers):
    """A node that keeps saying its share is running is given ten times what the finished
    shares took (at least the call timeout and two rounds), then dropped; its share is
    recomputed and the job ends with the same topics."""
    import threading
    import time

    from engine.cluster import transport
    from engine.cluster.service import WorkerService

    class Stuck(WorkerService):
        @transport.expose
        def lsi_result(self, job_id, index, wait):
            time.sleep(min(float(wait), 0.5))
            return {"state": "running"}

    (good,) = workers(1)
    out = {}
    with in_process_worker(Stuck, "stuck", KEY.encode()) as stuck:
        m = _planted(seed=7, docs=600)
        with BlockCache(str(tmp_path)) as cache:
            cache.add_matrix(m, 100)
            cfg = ClusterConfig(nodes=[stuck, good.address], timeout_seconds=2,
                                round_seconds=0.5, rejoin_seconds=600)

            def run():
                out["result"] = ClusterLsi(cfg, read_key(), shares=4).decompose(
                    cache.blocks, m.shape[1], SETTINGS)

            t = threading.Thread(target=run, daemon=True)
            t.start()
            t.join(60)
            assert not t.is_alive(), "the job still waits on the stuck node"
            local = _local_merge(cache.blocks, m.shape[1], 4)
        d, report = out["result"]
        dropped = report.cluster["dropped"]
        assert [x["address"] for x in dropped] == [stuck]
        assert "still running" in dropped[0]["why"]
        _same(d, local, 1e-6)


def test_a_node_that_says_running_forever_is_dropped_though_no_share_ever_finished(
        tmp_path, monkeypatch):
    """Before any share has finished there is no rate to hold a share to; a node that
    answers "running" forever is still dropped once its share has run longer than any
    node could need (a few seconds for this small one), and the job fails in one line."""
    import threading
    import time

    from engine.cluster import transport
    from engine.cluster.service import WorkerService
    from engine.errors import ClusterError

    class Stuck(WorkerService):
        @transport.expose
        def lsi_result(self, job_id, index, wait):
            time.sleep(min(float(wait), 0.2))
            return {"state": "running"}

    monkeypatch.setenv("ENGINE_CLUSTER_KEY", KEY)
    got = []
    with in_process_worker(Stuck, "stuck", KEY.encode()) as stuck:
        m = _planted(seed=8, docs=300)
        with BlockCache(str(tmp_path)) as cache:
            cache.add_matrix(m, 100)
            cfg = ClusterConfig(nodes=[stuck], timeout_seconds=2, round_seconds=0.5,
                                rejoin_seconds=600)

            def run():
                try:
                    ClusterLsi(cfg, read_key(), shares=2).decompose(cache.blocks, m.shape[1],
                                                                    SETTINGS)
                except Exception as exc:         # noqa: BLE001 (checked below)
                    got.append(exc)

            t = threading.Thread(target=run, daemon=True)
            t.start()
            t.join(30)
            assert not t.is_alive(), "the job still waits on a node that never finishes"
    assert len(got) == 1 and isinstance(got[0], ClusterError), got
    assert "still running after" in str(got[0])
