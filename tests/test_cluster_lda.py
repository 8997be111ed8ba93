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
    # each chunk in 10 parts (5 halving rounds of 2), each E-stepped once a pass
    assert len(set(done)) == chunks * 10 and len(done) == PASSES * chunks * 10
    assert {key >> 20 for key in done} == {key >> 20 for key in done[:chunks * 10]}
    assert {a for what, a, _ in events if what == "done"} == {w.address for w in ws}
    r = model.remote.report()
    assert r["nodes_used"] == 2 and not r["dropped"] and not r["recomputed"]
    assert r["chunks"] == PASSES * chunks
    assert sum(n["parts"] for n in r["per_node"]) == PASSES * chunks * 10
    # what travels: each part's documents once (passes after the first send only the
    # parts' rows, gamma and alpha: the same as the first pass's, less the documents)
    one = _model([w.address for w in ws], passes=1, alpha="auto", dtype=np.float64)
    one.update(corpus)
    # a byte for each term's gap from the one before and one for its count
    documents = sum(len(d) for d in corpus) * 2
    sent_once, sent = one.remote.report()["bytes_to_nodes"], r["bytes_to_nodes"]
    assert PASSES * sent_once - sent >= (PASSES - 1) * documents
    # a node is sent a term's row once a round, however many of the chunk's ten parts
    # hold it (each part's rows would be about five times as many bytes)
    indptr, gamma = 8 * (N_DOCS + chunks * 10), N_DOCS * K * 8
    rows = sent_once - documents - indptr - gamma
    assert V * K * 8 * chunks <= rows <= 2 * V * (K * 8 + 4) * chunks


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
        add_rows_compact,
        check_rows_compact,
        pack_product_compact,
    )

    rng = np.random.default_rng(0)
    a = rng.random((9, 13)).astype(np.float32)
    a[a < 0.7] = 0
    b = rng.random((9, 13)).astype(np.float32) + 0.5
    ids = np.array([7, 0, 3, 4, 8, 2, 5])
    want = a[ids] * b[ids]                       # the numpy reference
    msg = pack_product_compact(a, b, ids)
    assert set(msg) == {"sparse"}
    assert msg["sparse"]["mask"] == np.packbits(want != 0, axis=1).tobytes()
    assert msg["sparse"]["values"]["data"] == want[want != 0].tobytes()
    targets = np.array([10, 1, 4, 0, 6, 3, 12])
    out = rng.random((13, 13)).astype(np.float32)
    expect = out.copy()
    expect[targets] += want
    checked, sent = check_rows_compact(msg, "<f4", 7, 13)
    assert sent == 7 * 2 + 4 * np.count_nonzero(want)
    add_rows_compact(checked, targets, out)
    np.testing.assert_array_equal(out, expect)
    out_t = np.ascontiguousarray(out.T)          # topics x rows: each row down a column
    add_rows_compact(checked, targets, out_t, transposed=True)
    expect[targets] += want
    np.testing.assert_array_equal(out_t, expect.T)
    # mostly nonzero: the rows go whole
    dense = pack_product_compact(b, b, ids)
    assert set(dense) == {"rows"}
    checked, sent = check_rows_compact(dense, "<f4", 7, 13)
    assert sent == 7 * 13 * 4
    for transposed in (False, True):
        got = np.zeros((13, 13), np.float32)
        add_rows_compact(checked, targets, got, transposed)
        ref = np.zeros((13, 13), np.float32)
        ref[targets] += b[ids] * b[ids]
        np.testing.assert_array_equal(got, ref.T if transposed else ref)
    # anything malformed is refused before anything is added
    sp = msg["sparse"]
    mask = bytearray(sp["mask"])
    mask[1] |= 1                                 # a bit past the 13th topic
    values = dict(sp["values"], data=sp["values"]["data"][:-4],
                  shape=[sp["values"]["shape"][0] - 1])
    nan = np.frombuffer(sp["values"]["data"], np.float32).copy()
    nan[3] = np.nan
    for bad in ({"sparse": dict(sp, mask=bytes(mask))}, {"sparse": dict(sp, values=values)},
                {"sparse": dict(sp, mask=sp["mask"][:-2])},
                {"sparse": dict(sp, values=dict(sp["values"], data=nan.tobytes()))},
                {"sparse": dict(sp, shape=[7, 12])}, {"rows": msg}, {}):
        with pytest.raises(ValueError):
            check_rows_compact(bad, "<f4", 7, 13)
    from engine._lda import add_sparse_rows
    before = out.copy()
    with pytest.raises(ValueError):
        add_sparse_rows(np.frombuffer(bytes(mask), np.uint8).reshape(7, 2),
                        np.frombuffer(sp["values"]["data"], np.float32), targets.astype(
                            np.int32), out)
    with pytest.raises(ValueError):              # a row outside the statistics
        add_sparse_rows(np.frombuffer(sp["mask"], np.uint8).reshape(7, 2),
                        np.frombuffer(sp["values"]["data"], np.float32),
                        (targets + 1).astype(np.int32), out)
    np.testing.assert_array_equal(out, before)

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
    # float32 sums added in another order (the nodes' parts, then the nodes) round
    # differently, and later chunks' E-steps carry that on: a few entries move by up to a
    # few parts in a thousand, the bulk by float32's rounding
    got, want = model.get_topics(), local.get_topics()
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-7)
    rel = np.abs(got - want) / want
    assert np.median(rel) < 1e-6 and np.mean(rel > 1e-4) < 1e-3
    r = model.remote.report()
    gamma = len(corpus) * topics * 8
    dense = (len(corpus) // 100) * 2 * len(vocab) * topics * 4   # at most, as rows
    assert r["bytes_from_nodes"] - gamma < 0.5 * dense


def test_parts_halve_so_that_nodes_finish_together():
    """guided_rows: runs of rows covering the chunk in order, none empty, the first
    `nodes` about half the nonzeros, each later round half the one before (the last as
    large as the one before it); one node takes the chunk whole."""
    import scipy.sparse

    from engine.cluster.lda import guided_rows

    rng = np.random.default_rng(1)
    m = scipy.sparse.random(2000, 300, density=0.05, format="csr", random_state=rng)
    assert guided_rows(m, 1) == [(0, 2000)]
    runs = guided_rows(m, 2)
    assert len(runs) == 10 and runs[0][0] == 0 and runs[-1][1] == 2000
    assert all(a < b for a, b in runs) and all(b == c for (_, b), (c, _) in zip(runs, runs[1:]))
    share = np.array([m.indptr[b] - m.indptr[a] for a, b in runs]) / m.nnz
    want = np.array([1 / 4] * 2 + [1 / 8] * 2 + [1 / 16] * 2 + [1 / 32] * 4)
    np.testing.assert_allclose(share, want, atol=0.01)
    assert guided_rows(m[:3], 4) == [(0, 1), (1, 2), (2, 3)]


def test_a_node_killed_holding_statistics_has_its_parts_computed_again(workers):
    """A node SIGKILLed after it finished two parts of a chunk, their statistics still on
    it: both go back to the other nodes, and the model is still one machine's."""
    corpus = planted(N_DOCS, seed=17)
    ws = workers(3)
    done_on: dict = {}
    killed = []

    def on_event(what, node, key):
        if what != "done" or killed or node.address != ws[0].address:
            return
        done_on[key >> 20] = done_on.get(key >> 20, 0) + 1
        if done_on[key >> 20] == 2:
            killed.append(key)
            ws[0].ps.send_signal(signal.SIGKILL)

    model = _model([w.address for w in ws], on_event=on_event, passes=2, dtype=np.float64)
    model.update(corpus)
    assert killed
    r = model.remote.report()
    assert [x["address"] for x in r["dropped"]] == [ws[0].address]
    lost = [x for x in r["recomputed"] if x["lost_on"] == ws[0].address]
    assert len(lost) >= 2                            # the parts whose statistics it held
    np.testing.assert_allclose(
        model.get_topics(), _local(corpus, passes=2, dtype=np.float64).get_topics(),
        rtol=1e-9)
    assert ws[0].proc.wait(timeout=10) == -signal.SIGKILL


def test_a_node_adds_up_its_parts_and_checks_what_it_is_sent():
    """An LDA job on a node, called directly: the rows of a round arrive in any order of
    term numbers, a part runs only once every row it reads is there, two parts' statistics
    add up (to what run_estep gives for both), rounds only move forward, and nothing of the
    job is left after close."""
    import os

    import scipy.sparse

    from engine.cluster.lda_node import LdaNodeJob
    from engine.cluster.protocol import (
        add_rows_compact,
        check_rows_compact,
        pack_array,
        pack_documents,
    )
    from engine.documents.lda import run_estep

    k, u = 4, 6
    job = LdaNodeJob({"job": "j", "n_terms": 50, "num_topics": k, "dtype": "float32",
                      "iterations": 50, "gamma_threshold": 0.001, "timeout_seconds": 10}, 1)
    rng = np.random.default_rng(2)
    parts = {}
    for key, cols in ((5, [0, 2, 3]), (6, [1, 2, 4, 5])):
        m = scipy.sparse.random(3, u, density=1.0, format="csr", random_state=rng,
                                dtype=np.float32)
        m = scipy.sparse.csr_matrix(m.multiply(np.isin(np.arange(u), cols)))
        m.data = np.ceil(m.data * 3)
        m.eliminate_zeros()
        parts[key] = m
        job.put_chunk(key, u, pack_documents(m.indptr, m.indices, m.data))
    rows = rng.random((u, k)).astype(np.float32)
    gamma = {key: rng.gamma(100.0, 0.01, (3, k)) for key in parts}
    alpha = pack_array(np.full(k, 0.25))

    def put(round_id, numbers):
        numbers = np.asarray(numbers, "<i4")
        job.put_rows(round_id, u, pack_array(numbers), pack_array(rows[numbers]))

    def run(key, round_id):
        job.estep(key, round_id, pack_array(gamma[key]), alpha)
        return job.result(key, 30)

    put(1, [3, 0])
    with pytest.raises(ValueError):              # not a term of the chunk
        job.put_rows(1, u, pack_array(np.array([6], "<i4")), pack_array(rows[:1]))
    with pytest.raises(ValueError):
        job.put_rows(1, u + 1, pack_array(np.array([1], "<i4")), pack_array(rows[:1]))
    with pytest.raises(RuntimeError, match="not all sent"):
        run(5, 1)                                # term 2's row is missing
    put(1, [2])
    assert run(5, 1)["state"] == "done"
    put(1, [5, 1, 4])
    assert run(6, 1)["state"] == "done"
    got = job.statistics(1)
    assert sorted(got["parts"]) == [5, 6] and got["rows"] == u and got["pieces"] == 1
    checked, _ = check_rows_compact(job.pull(1, 0), "<f4", u, k)
    pulled = np.zeros((u, k), np.float32)
    add_rows_compact(checked, np.arange(u), pulled)
    want = np.zeros((u, k), np.float32)
    for key, m in parts.items():
        run_estep(m, rows, np.full(k, 0.25), gamma[key].copy(), want, 50, 0.001, 1,
                  None, [])
    np.testing.assert_allclose(pulled, want * rows, rtol=1e-6)
    assert job.statistics(1)["parts"] == []      # set aside once: later parts add anew
    put(2, [0])                                  # a newer round frees this one
    with pytest.raises(ValueError, match="at round 2"):
        put(1, [0])
    scratch = job.scratch
    job.close()
    assert not os.path.exists(scratch)


def test_documents_travel_in_about_two_bytes_a_term():
    """pack_documents: increasing term numbers as varint gaps and whole counts as
    varints (one byte each here); unsorted terms or fractional counts go as arrays; every
    form reads back exactly, and a malformed one is refused in one line."""
    import scipy.sparse

    from engine.cluster.protocol import pack_array, pack_documents, unpack_documents

    m = scipy.sparse.random(40, 500, density=0.05, format="csr", random_state=3,
                            dtype=np.float32)
    m.data = np.ceil(m.data * 9)
    m = scipy.sparse.vstack([scipy.sparse.csr_matrix((2, 500), dtype=np.float32), m[:20],
                             scipy.sparse.csr_matrix((1, 500), dtype=np.float32),
                             m[20:]]).tocsr()     # empty documents first and between
    m.sort_indices()
    msg = pack_documents(m.indptr, m.indices, m.data)
    assert set(msg) == {"indptr", "gaps", "counts"}
    assert len(msg["counts"]["data"]) == m.nnz            # counts below 128: a byte
    assert m.nnz <= len(msg["gaps"]["data"]) < 1.1 * m.nnz  # two for a first term >= 128
    shuffled = m.indices.copy()
    shuffled[[0, 1]] = shuffled[[1, 0]]           # the first document's terms out of order
    for ind, dat, keys in ((m.indices, m.data, {"gaps", "counts"}),
                           (shuffled, m.data, {"indices", "counts"}),
                           (m.indices, m.data / 2, {"gaps", "data"})):
        msg = pack_documents(m.indptr, ind, dat)
        assert set(msg) == {"indptr"} | keys
        ptr, got_i, got_d = unpack_documents(msg, 500, np.float32)
        assert np.array_equal(ptr, m.indptr) and np.array_equal(got_i, ind)
        assert np.array_equal(got_d, dat)
    good = pack_documents(m.indptr, m.indices, m.data)
    for bad in (dict(good, gaps=pack_array(np.frombuffer(good["gaps"]["data"], np.uint8)[:-1])),
                dict(good, counts=pack_array(np.zeros(m.nnz + 1, np.uint8))),
                {"indptr": good["indptr"], "gaps": good["gaps"]},
                dict({k: v for k, v in good.items() if k != "counts"},
                     data=pack_array(np.full(m.nnz, -1, np.float32)))):
        with pytest.raises(ValueError):
            unpack_documents(bad, 500, np.float32)
    with pytest.raises(ValueError, match="term numbers"):
        unpack_documents(good, int(m.indices.max()), np.float32)


def test_a_part_key_names_the_same_documents_in_every_pass():
    """A chunk split for another number of nodes (one was lost) may have as many parts
    with other documents in them: the key carries the node count, so a node never takes
    documents it cached for one part as another's."""
    import scipy.sparse

    from engine.cluster.lda import guided_rows, part_key

    words = [3, 1, 1, 1, 2, 3]                     # documents' lengths
    m = scipy.sparse.csr_matrix((np.ones(sum(words), np.float32), np.zeros(sum(words), int),
                                 np.r_[0, np.cumsum(words)]), shape=(len(words), 3))
    four, three = guided_rows(m, 4), guided_rows(m, 3)
    assert len(four) == len(three) and four != three
    keys = {part_key(9, 4, i): run for i, run in enumerate(four)}
    for i, run in enumerate(three):
        assert keys.get(part_key(9, 3, i), run) == run
    assert part_key(9, 4, 0) >> 20 == 9 and part_key(9, 4, 5) & 1023 == 5


def test_documents_without_words_and_a_chunk_of_them_train_as_on_one_machine(workers):
    """Empty documents (a whole chunk of them too) are E-stepped by the dispatcher, which
    sends them nowhere: no node is dropped, and the model is one machine's."""
    base = planted(N_DOCS, seed=21)
    corpus = base[:CHUNK - 3] + [[]] * 3 + [[]] * CHUNK + base[CHUNK - 3:]
    ws = workers(2)
    model = _model([w.address for w in ws], passes=2, dtype=np.float64)
    model.update(corpus)
    r = model.remote.report()
    assert not r["dropped"] and not r["recomputed"]
    np.testing.assert_allclose(
        model.get_topics(), _local(corpus, passes=2, dtype=np.float64).get_topics(),
        rtol=1e-9)


def test_a_node_that_says_running_forever_is_dropped_though_no_part_ever_finished(
        monkeypatch):
    """Before any part has finished there is no rate to hold a part to; a node that
    answers "running" to its first part forever is still dropped, once the part has run
    longer than any node could need, and the job fails with one clear line."""
    import time

    from conftest import in_process_worker
    from test_cluster import KEY

    from engine.cluster import transport
    from engine.cluster.service import WorkerService

    class Stuck(WorkerService):
        @transport.expose
        def lda_result(self, job_id, chunk, wait_seconds) -> dict:
            time.sleep(min(float(wait_seconds), 0.2))
            return {"state": "running", "seconds": 0.0}

    monkeypatch.setenv("ENGINE_CLUSTER_KEY", KEY)
    import threading

    got = []

    def train(model):
        try:
            model.update(planted(N_DOCS, seed=3))
        except Exception as exc:                 # noqa: BLE001 (checked below)
            got.append(exc)

    with in_process_worker(Stuck, "stuck", KEY.encode()) as address:
        run = threading.Thread(target=train, args=(_model([address], passes=1),),
                               daemon=True)
        run.start()
        run.join(30)                             # the part's bound: a few seconds here
        assert not run.is_alive(), "the job still waits on a node that never finishes"
    assert len(got) == 1 and isinstance(got[0], ClusterError)
    assert "still running after" in str(got[0])
