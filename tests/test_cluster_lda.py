"""LDA on the cluster, on loopback: real `engine worker` processes run the E-steps of the
parts of each chunk they are sent; the model adds up their statistics. The model is the one
one machine trains (same chunks, starting gammas and updates), each part is E-stepped once a
pass, and a SIGKILLed worker and a SIGSTOPped one are dropped and their parts recomputed by
the survivor with the same model. The `workers` fixture (test_cluster) checks that no process, port
or shared memory is left behind."""
import signal

import numpy as np
import pytest

from engine import LdaModel
from engine.errors import ClusterError, InvalidArgumentError

from test_cluster import workers  # noqa: F401 (the fixture)
from test_lda import BLOCK, K, V, planted

N_DOCS, CHUNK, PASSES = 900, 150, 3                 # 6 chunks a pass


def _model(nodes, seed=5, on_event=None, passes=PASSES, **kw):
    model = LdaModel(None, num_topics=K, id2word={i: f"w{i}" for i in range(V)},
                     distributed=True, nodes=nodes, chunksize=CHUNK, passes=passes,
                     random_state=seed, eval_every=0,
                     cluster={"timeout_seconds": 2, "round_seconds": 0.5}, **kw)
    model.remote.on_event = on_event
    return model


def _local(corpus, seed=5, passes=PASSES, **kw):
    return LdaModel(corpus, num_topics=K, id2word={i: f"w{i}" for i in range(V)},
                    chunksize=CHUNK, passes=passes, random_state=seed, eval_every=0, **kw)


def test_the_cluster_trains_what_one_machine_trains(workers):
    ws = workers(2)
    corpus = planted(N_DOCS, seed=11)
    events = []
    model = _model([w.address for w in ws], on_event=lambda what, node, key: events.append(
        (what, node.address, key)), alpha="auto", dtype=np.float64)
    model.update(corpus)
    mass = model.get_topics().reshape(K, K, BLOCK).sum(axis=2)
    assert sorted(mass.argmax(axis=1).tolist()) == list(range(K))
    assert mass.max(axis=1).min() > 0.8
    # the same chunks, starting gammas and updates as one machine: the same model, up to
    # the order in which the statistics add up (and alpha learned the same way)
    local = _local(corpus, alpha="auto", dtype=np.float64)
    np.testing.assert_allclose(model.get_topics(), local.get_topics(), rtol=1e-9)
    np.testing.assert_allclose(model.alpha, local.alpha, rtol=1e-9)
    chunks = N_DOCS // CHUNK
    done = [key for what, _, key in events if what == "done"]
    assert len(done) == PASSES * chunks * 2 and len(set(done)) == chunks * 2  # once a pass
    assert {a for what, a, _ in events if what == "done"} == {w.address for w in ws}
    r = model.remote.report()
    assert r["nodes_used"] == 2 and not r["dropped"] and not r["recomputed"]
    assert r["chunks"] == PASSES * chunks
    assert sum(n["parts"] for n in r["per_node"]) == PASSES * chunks * 2
    # what travels: each part's documents once (passes after the first send only the
    # parts' rows, gamma and alpha: the same as the first pass's, less the documents)
    one = _model([w.address for w in ws], passes=1, alpha="auto", dtype=np.float64)
    one.update(corpus)
    documents = sum(len(d) for d in corpus) * (4 + 8)      # int32 ids, float64 counts
    sent_once, sent = one.remote.report()["bytes_to_nodes"], r["bytes_to_nodes"]
    assert PASSES * sent_once - sent >= (PASSES - 1) * documents


def test_killed_and_hung_nodes_lose_no_part(workers):
    corpus = planted(N_DOCS, seed=12)
    ws = workers(3)
    victims = {ws[0].address: signal.SIGKILL, ws[1].address: signal.SIGSTOP}
    hit = []

    def on_event(what, node, key):
        # a victim is hit while it runs an E-step: that part must be done again
        if what == "sent" and node.address in victims and node.address not in hit:
            hit.append(node.address)
            next(w for w in ws if w.address == node.address).ps.send_signal(
                victims[node.address])

    model = _model([w.address for w in ws], on_event=on_event, passes=2, dtype=np.float64)
    model.update(corpus)
    assert sorted(hit) == sorted(victims)
    r = model.remote.report()
    assert {x["address"] for x in r["dropped"]} == set(victims)
    assert {x["lost_on"] for x in r["recomputed"]} == set(victims)
    survivor = next(n for n in r["per_node"] if n["address"] == ws[2].address)
    assert survivor["parts"] >= 2 * (N_DOCS // CHUNK) and not survivor["dropped"]
    # whoever computed what: one machine's model
    np.testing.assert_allclose(
        model.get_topics(), _local(corpus, passes=2, dtype=np.float64).get_topics(),
        rtol=1e-9)
    assert ws[0].proc.wait(timeout=10) == -signal.SIGKILL
    ws[1].ps.send_signal(signal.SIGCONT)


def test_every_node_lost_is_one_clear_error(workers):
    (w,) = workers(1)

    def on_event(what, node, key):
        if what == "sent":
            w.ps.send_signal(signal.SIGKILL)

    model = _model([w.address], on_event=on_event)
    with pytest.raises(ClusterError, match="every node was lost"):
        model.update(planted(300, seed=13))


def test_distributed_needs_the_cluster_aware_model():
    from engine.documents import LdaModel as Plain

    with pytest.raises(InvalidArgumentError, match="engine.LdaModel"):
        Plain(None, num_topics=2, id2word={0: "a", 1: "b"}, distributed=True)


def test_engine_run_lda_job_on_the_cluster(tmp_path, workers):
    import json

    from engine.config import job_from_dict
    from engine.jobs.run import run_job

    ws = workers(2)
    vocab = [f"w{i}" for i in range(V)]
    with open(tmp_path / "docs.tsv", "w") as fh:
        for i, doc in enumerate(planted(600, seed=14)):
            fh.write(f"d{i}\t" + " ".join(" ".join([vocab[t]] * c) for t, c in doc) + "\n")
    job = job_from_dict({
        "corpus": {"path": str(tmp_path / "docs.tsv")},
        "lda": {"num_topics": K, "chunksize": 100, "passes": 3, "no_above": 1.0,
                "no_below": 1, "held_out": 60, "seed": 3},
        "output": {"dir": str(tmp_path / "out")},
        "cluster": {"nodes": [w.address for w in ws]}})
    report = run_job(job, show_progress=False)
    assert report["model"] == "lda"
    c = report["cluster"]
    assert c["nodes_used"] == 2 and not c["dropped"]
    assert c["chunks"] == 3 * 6 and c["nodes_used"] == 2     # 540 documents in 100s
    assert report["passes"][-1]["held_out_perplexity"] < report["passes"][0][
        "held_out_perplexity"] * 1.01
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["cluster"]["nodes_used"] == 2
    mixes = np.load(tmp_path / "out" / "doc_topics.npy")
    assert mixes.shape == (600, K) and np.allclose(mixes.sum(axis=1), 1, atol=1e-4)


def test_the_statistics_travel_as_sparse_rows(workers):
    """In float32 a term's topics that none of its documents keeps are exactly 0 in the
    statistics: a node sends a bit per entry and the nonzero values, far fewer bytes than
    the rows, and the model is one machine's (to float32's rounding of the sums)."""
    from engine.cluster.protocol import (
        pack_rows_compact,
        pack_sparse_rows,
        unpack_rows_compact,
        unpack_sparse_rows,
    )

    rng = np.random.default_rng(0)
    a = rng.random((7, 13)).astype(np.float32)
    a[a < 0.7] = 0
    msg = pack_sparse_rows(a)
    assert np.array_equal(unpack_sparse_rows(msg, "<f4", 13), a)
    assert len(msg["mask"]) == 7 * 2 and len(msg["values"]["data"]) == 4 * np.count_nonzero(a)
    for bad in (dict(msg, mask=msg["mask"][:-1]), dict(msg, shape=[7, 12]),
                dict(msg, values=dict(msg["values"], data=msg["values"]["data"][:-4],
                                      shape=[np.count_nonzero(a) - 1]))):
        with pytest.raises(ValueError):
            unpack_sparse_rows(bad, "<f4", 13)
    # the smaller form is sent, and read back with the bytes it took
    dense = rng.random((7, 13)).astype(np.float32) + 1
    assert set(pack_rows_compact(a)) == {"sparse"} and set(pack_rows_compact(dense)) == {"rows"}
    for arr in (a, dense):
        back, sent = unpack_rows_compact(pack_rows_compact(arr), "<f4", 13)
        assert np.array_equal(back, arr)
        assert sent == (7 * 2 + 4 * np.count_nonzero(a) if arr is a else arr.nbytes)

    # many topics, long documents each in a few: most of a term's topics end exactly 0
    topics, block = 100, 3
    rng = np.random.default_rng(16)
    corpus = []
    for _ in range(400):
        z = rng.choice(topics, size=300, p=rng.dirichlet([0.02] * topics))
        ids, counts = np.unique(z * block + rng.integers(0, block, size=300),
                                return_counts=True)
        corpus.append(list(zip(ids.tolist(), counts.tolist())))
    vocab = {i: f"w{i}" for i in range(topics * block)}
    ws = workers(2)
    kw = dict(num_topics=topics, id2word=vocab, chunksize=100, passes=1, random_state=3,
              eval_every=0, dtype=np.float32)
    model = LdaModel(None, distributed=True, nodes=[w.address for w in ws],
                     cluster={"timeout_seconds": 5, "round_seconds": 0.5}, **kw)
    model.update(corpus)
    local = LdaModel(corpus, **kw)
    np.testing.assert_allclose(model.get_topics(), local.get_topics(), rtol=1e-4, atol=1e-7)
    r = model.remote.report()
    gamma = len(corpus) * topics * 8
    dense = (len(corpus) // 100) * 2 * len(vocab) * topics * 4   # at most, as rows
    assert r["bytes_from_nodes"] - gamma < 0.5 * dense
