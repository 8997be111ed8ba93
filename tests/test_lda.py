"""LdaModel: the compiled E-step against its numpy twin, topics learned from a corpus made
from known topics, gensim's names, saving, and bad input."""
import importlib.util

import numpy as np
import pytest
import scipy.sparse
from scipy.special import psi

from engine import LdaModel, LdaMulticore
from engine.documents.lda import dirichlet_expectation, estep_numpy, update_dir_prior
from engine.errors import FormatError, InvalidArgumentError, MissingFileError

K, V, BLOCK = 4, 120, 30          # topic k: the words k*30 .. k*30+29


def planted(n_docs, seed, length=50, concentration=0.1):
    """Documents drawn from K topics that each use their own block of BLOCK words."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        theta = rng.dirichlet([concentration] * K)
        z = rng.choice(K, size=length, p=theta)
        words = z * BLOCK + rng.integers(0, BLOCK, size=length)
        ids, counts = np.unique(words, return_counts=True)
        docs.append(list(zip(ids.tolist(), counts.tolist())))
    return docs


@pytest.fixture(scope="module")
def corpus():
    return planted(1500, seed=3)


@pytest.fixture(scope="module")
def model(corpus):
    return LdaModel(corpus, num_topics=K, id2word={i: f"w{i}" for i in range(V)},
                    passes=4, chunksize=250, random_state=7, eval_every=0)


def test_digamma_matches_scipy():
    from engine import _lda

    x = np.concatenate([np.linspace(1e-3, 1, 50), np.linspace(1, 60, 50), [1e4, 3e6]])
    out = np.empty_like(x)
    _lda.digamma_array(x, out)
    assert np.allclose(out, psi(x), rtol=1e-10, atol=1e-10)


def test_the_kernels_log_and_exp_match_numpy():
    from engine import _lda

    x = np.concatenate([np.geomspace(1e-300, 1e-3, 300), np.linspace(1e-3, 60, 3001),
                        np.geomspace(60, 1e300, 300)])
    out = np.empty_like(x)
    _lda.math_array(1, x, out)
    assert np.allclose(out, np.log(x), rtol=1e-15, atol=1e-16)
    x = np.concatenate([np.linspace(-800, 709, 30001), -np.geomspace(1e-300, 700, 300)])
    out = np.empty_like(x)
    _lda.math_array(2, x, out)
    want = np.exp(x)
    assert np.allclose(out, want, rtol=1e-15, atol=1e-322)    # subnormals to the last one
    assert (out[x < -746] == 0).all() and (out[want > 0] > 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eta_rows", [False, True])
def test_the_topics_expectation_matches_numpy(dtype, eta_rows):
    """exp(E[log beta]) of the M-step, compiled, a slice of terms at a time (as the threads
    take them), against numpy and scipy."""
    from engine import _lda

    rng = np.random.default_rng(4)
    k, v = 7, 301
    lam = rng.gamma(0.5, 2.0, (k, v)).astype(dtype)
    eta = rng.uniform(0.01, 0.5, (k, v) if eta_rows else v)
    full = lam.astype(np.float64) + eta
    base = np.empty(k)
    _lda.digamma_array(full.sum(axis=1), base)
    out = np.full((v, k), np.nan, dtype)
    for a, b in ((0, 100), (100, 101), (101, 101), (101, v)):
        _lda.exp_elog_rows(lam, eta.ravel(), eta_rows, base, out, a, b)
    tol = 1e-10 if dtype == np.float64 else 1e-6
    assert np.allclose(out, np.exp(dirichlet_expectation(full)).T, rtol=tol, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ratios_kept_then_collected_give_the_same_statistics(dtype):
    """The threads' split: the variational updates keep each word's ratio, and `collect`
    adds the statistics afterwards; the same, to the bit, as one call collecting them."""
    from engine import _lda

    rng = np.random.default_rng(6)
    n_docs, k, v = 25, 8, 200
    m = scipy.sparse.random(n_docs, v, density=0.2, random_state=3, format="csr") * 4
    m.data = np.ceil(m.data).astype(dtype)
    eb_t = np.exp(dirichlet_expectation(rng.gamma(1.0, 1.0, (k, v)))).T.astype(dtype).copy()
    alpha, g0 = np.full(k, 0.1), rng.gamma(100.0, 0.01, (n_docs, k))
    args = (m.indptr.astype(np.int32), m.indices.astype(np.int32), m.data, eb_t, alpha)
    eps = float(np.finfo(dtype).eps)
    g1, s1 = g0.copy(), np.zeros((v, k), dtype)
    _lda.estep(*args, g1, s1, 50, 1e-3, eps)
    g2, s2, ratios = g0.copy(), np.zeros((v, k), dtype), np.full(m.nnz, np.nan, dtype)
    _lda.estep(*args, g2, np.zeros((0, 0), dtype), 50, 1e-3, eps, ratios=ratios)
    _lda.collect(args[0], args[1], ratios, g2, s2)
    assert np.array_equal(g1, g2) and np.array_equal(s1, s2) and s1.any()
    with pytest.raises(ValueError, match="ratios"):
        _lda.estep(*args, g2, s2, 50, 1e-3, eps, ratios=ratios[1:])
    bad = args[1].copy()
    bad[-1] = v                                          # a term id past sstats_t's rows
    with pytest.raises(ValueError, match="term id"):
        _lda.collect(args[0], bad, ratios, g2, s2)
    with pytest.raises(ValueError, match="decrease"):
        _lda.collect(args[0][::-1].copy(), args[1], ratios, g2, s2)


def test_topics_a_document_leaves_are_skipped_exactly():
    """With a small alpha and long documents most topics' exp(E[log theta]) falls to exactly
    zero in float32; the kernel skips them, and still gives the numpy twin's result."""
    from engine import _lda

    rng = np.random.default_rng(5)
    n_docs, k, v = 30, 20, 400
    topics = rng.dirichlet(np.full(v, 0.05), k)
    eb_t = np.exp(dirichlet_expectation(topics * 2000 + 0.01)).T.astype(np.float32).copy()
    rows = []
    for _ in range(n_docs):
        mix = rng.dirichlet(np.full(k, 0.05))
        words = rng.choice(v, size=600, p=mix @ topics)
        rows.append(np.bincount(words, minlength=v))
    m = scipy.sparse.csr_matrix(np.array(rows, np.float32))
    alpha = np.full(k, 0.001)
    g0 = rng.gamma(100.0, 0.01, (n_docs, k))
    out = []
    for fn in (_lda.estep, estep_numpy):
        g, ss = g0.copy(), np.zeros((v, k), np.float32)
        fn(m.indptr.astype(np.int32), m.indices.astype(np.int32), m.data, eb_t, alpha, g,
           ss, 50, 1e-3, float(np.finfo(np.float32).eps))
        out.append((g, ss))
    theta = np.exp(dirichlet_expectation(out[0][0])).astype(np.float32)
    assert (theta == 0).sum(axis=1).mean() > k / 2          # the case is exercised
    assert np.allclose(out[0][0], out[1][0], rtol=2e-4, atol=2e-4)
    assert np.allclose(out[0][1], out[1][1], rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("collect", [True, False])
def test_compiled_estep_matches_numpy(dtype, collect):
    from engine import _lda

    rng = np.random.default_rng(1)
    n_docs, k, v = 40, 6, 300
    m = scipy.sparse.random(n_docs, v, density=0.05, random_state=2, format="csr") * 5
    m.data = np.ceil(m.data).astype(dtype)
    m = m.tolil()
    m[3] = 0                                             # an empty document
    m = m.tocsr()
    m.eliminate_zeros()
    eb_t = np.exp(dirichlet_expectation(rng.gamma(1.0, 1.0, (k, v)))).T.astype(dtype).copy()
    alpha = np.full(k, 0.3)
    g0 = rng.gamma(100.0, 0.01, (n_docs, k))
    out = []
    for fn in (_lda.estep, estep_numpy):
        g = g0.copy()
        ss = np.zeros((v, k) if collect else (0, 0), dtype)
        conv = fn(m.indptr.astype(np.int32), m.indices.astype(np.int32), m.data, eb_t, alpha,
                  g, ss, 50, 1e-3, float(np.finfo(dtype).eps))
        out.append((conv, g, ss))
    (c1, g1, s1), (c2, g2, s2) = out
    assert c1 == c2 and c1 > n_docs // 2
    tol = 1e-9 if dtype == np.float64 else 2e-4
    assert np.allclose(g1, g2, rtol=tol, atol=tol)
    assert np.allclose(g1[3], alpha)                     # no words: the prior
    if collect:
        assert np.allclose(s1, s2, rtol=tol, atol=tol)
        # each document's statistics add up to its word count
        assert abs(float((s1.T * eb_t.T).sum()) - float(m.sum())) < 1e-2 * float(m.sum())


def test_learns_the_planted_topics(model):
    mass = model.get_topics().reshape(K, K, BLOCK).sum(axis=2)   # learned topic x block
    best = mass.argmax(axis=1)
    assert sorted(best.tolist()) == list(range(K))       # every planted topic found once
    assert mass.max(axis=1).min() > 0.8                  # and each learned one is mostly it


def test_training_raises_the_held_out_bound(corpus, model):
    held_out = planted(200, seed=11)
    fresh = LdaModel(None, num_topics=K, id2word=model.id2word, random_state=7)
    before, after = fresh.log_perplexity(held_out), model.log_perplexity(held_out)
    assert after > before + 0.3                          # nats per word (a bound: higher)
    assert np.isfinite(model.bound(held_out[:20]))


def test_documents_get_their_topic(model):
    doc = [(i, 2) for i in range(2 * BLOCK, 2 * BLOCK + 10)]       # words of block 2 only
    topics = model[doc]
    k = int(model.get_topics().reshape(K, K, BLOCK).sum(axis=2)[:, 2].argmax())
    assert max(topics, key=lambda t: t[1])[0] == k and dict(topics)[k] > 0.8
    assert abs(sum(p for _, p in model.get_document_topics(doc, minimum_probability=0)) - 1) \
        < 1e-6
    many = model[[doc, doc]]
    assert len(many) == 2 and many[0][0][0] == topics[0][0]
    _, word_topics, phis = model.get_document_topics(doc, per_word_topics=True)
    assert [w for w, _ in word_topics] == list(range(2 * BLOCK, 2 * BLOCK + 10))
    assert all(ts[0] == k for _, ts in word_topics)
    assert all(abs(sum(v for _, v in p) - 2) < 0.05 for _, p in phis)  # phi x count


def test_gensim_names(model):
    terms = model.get_topic_terms(0, topn=5)
    assert len(terms) == 5 and all(isinstance(i, int) for i, _ in terms)
    assert [p for _, p in terms] == sorted((p for _, p in terms), reverse=True)
    assert model.show_topic(0, 3)[0][0] == f"w{terms[0][0]}"
    shown = model.show_topics(num_topics=-1, num_words=3)
    assert len(shown) == K and '*"w' in shown[0][1]
    assert len(model.show_topics(2, 3, formatted=False)[0][1]) == 3
    assert len(model.print_topics(2)) == 2
    w = terms[0][0]
    assert 0 in [t for t, _ in model.get_term_topics(w, minimum_probability=0.0)]
    assert model.get_topics().shape == (K, V)
    assert np.allclose(model.get_topics().sum(axis=1), 1, atol=1e-5)
    tops = model.top_topics(corpus=planted(300, seed=5), topn=10)
    assert len(tops) == K and [c for _, c in tops] == sorted((c for _, c in tops), reverse=True)
    assert all(c <= 0 for _, c in tops)
    assert "num_topics=4" in repr(model)


def test_update_batch_mode_and_learned_priors(corpus):
    m = LdaModel(corpus[:600], num_topics=K, id2word={i: str(i) for i in range(V)},
                 alpha="auto", eta="auto", update_every=0, passes=2, chunksize=200,
                 random_state=1, eval_every=1)
    assert m.num_updates == 600                          # batch: one M-step per pass
    assert not np.allclose(m.alpha, 1.0 / K) and (m.alpha > 0).all()
    assert not np.allclose(m.eta, 1.0 / K) and (m.eta > 0).all()
    m.update(corpus[600:900])
    assert m.num_updates == 900
    a = LdaModel(None, num_topics=K, id2word={0: "a", 1: "b"}, alpha="asymmetric")
    assert a.alpha[0] > a.alpha[-1] and abs(a.alpha.sum() - 1) < 1e-9
    # the Newton step moves a prior towards data that favour its first component
    prior = np.full(3, 0.5)
    logphat = dirichlet_expectation(np.array([[5.0, 1.0, 1.0]] * 10)).mean(axis=0)
    new = update_dir_prior(prior, 10, logphat, 1.0)
    assert new[0] > prior[0] and new[0] > new[1]


def test_a_sparse_matrix_trains_as_the_same_documents(corpus):
    docs = corpus[:300]
    m = scipy.sparse.lil_matrix((len(docs), V))
    for d, doc in enumerate(docs):
        for i, c in doc:
            m[d, i] = c
    kw = {"num_topics": K, "id2word": {i: str(i) for i in range(V)}, "chunksize": 100,
          "random_state": 4, "eval_every": 0}
    a, b = LdaModel(docs, **kw), LdaModel(m.tocsr(), **kw)
    assert np.allclose(a.get_topics(), b.get_topics(), rtol=1e-5, atol=1e-7)
    # blocks of any size (a job's cache) are trained in chunks of chunksize, as one matrix
    from engine.documents.lda import CsrCorpus

    m = m.tocsr()
    cuts = [0, 37, 187, 190, 300]
    parts = CsrCorpus(lambda: (m[a:b] for a, b in zip(cuts, cuts[1:])), 300)
    c = LdaModel(parts, **kw)
    assert np.allclose(a.get_topics(), c.get_topics(), rtol=1e-5, atol=1e-7)


def test_threads_give_the_model_one_thread_gives(corpus):
    """The E-step split over threads (chunks above the size where it splits) learns the
    same topics as one thread; LdaMulticore is that model under gensim's other name."""
    kw = {"num_topics": K, "id2word": {i: str(i) for i in range(V)}, "chunksize": 750,
          "random_state": 2, "eval_every": 0, "alpha": "auto"}
    one = LdaModel(corpus, workers=1, **kw)
    three = LdaModel(corpus, workers=3, **kw)
    assert np.allclose(one.get_topics(), three.get_topics(), rtol=1e-4, atol=1e-6)
    assert np.allclose(one.alpha, three.alpha, rtol=1e-4)
    multi = LdaMulticore(corpus, workers=2, **kw)
    assert np.allclose(one.get_topics(), multi.get_topics(), rtol=1e-4, atol=1e-6)
    _, sstats = three.inference(corpus[:750], collect_sstats=True)
    _, sstats1 = one.inference(corpus[:750], collect_sstats=True)
    assert abs(float(sstats.sum()) - float(sstats1.sum())) < 1e-3 * float(sstats1.sum())
    with pytest.raises(InvalidArgumentError, match="workers"):
        LdaModel(None, id2word={0: "a"}, workers=-1)


def test_save_and_load(tmp_path, model, corpus):
    path = tmp_path / "lda.npz"
    model.save(str(path))
    back = LdaModel.load(str(path))
    assert np.array_equal(back.get_topics(), model.get_topics())
    assert back.id2word == model.id2word and back.num_updates == model.num_updates
    assert np.array_equal(back.alpha, model.alpha)
    doc = corpus[0]
    got = dict(back.get_document_topics(doc, minimum_probability=0))
    want = dict(model.get_document_topics(doc, minimum_probability=0))
    assert max(abs(got[k] - want[k]) for k in want) < 0.02    # from another random start
    back.update(corpus[:100])                            # a loaded model trains on
    with pytest.raises(MissingFileError, match="not found"):
        LdaModel.load(str(tmp_path / "none.npz"))
    np.savez(str(tmp_path / "other.npz"), x=np.zeros(3))
    with pytest.raises(FormatError, match="not an engine LDA model"):
        LdaModel.load(str(tmp_path / "other.npz"))


def test_bad_input_is_refused_in_one_line(monkeypatch):
    monkeypatch.delenv("ENGINE_CLUSTER_KEY", raising=False)
    id2word = {i: str(i) for i in range(10)}
    with pytest.raises(InvalidArgumentError, match=r"document 1: term id 12 .*0\.\.9"):
        LdaModel([[(0, 1)], [(12, 1)]], num_topics=2, id2word=id2word)
    with pytest.raises(InvalidArgumentError, match="negative count"):
        LdaModel([[(0, 1)], [(3, -2)]], num_topics=2, id2word=id2word)
    with pytest.raises(InvalidArgumentError, match="num_topics"):
        LdaModel(None, num_topics=0, id2word=id2word)
    with pytest.raises(InvalidArgumentError, match="without a key"):
        LdaModel(None, num_topics=2, id2word=id2word, distributed=True)   # broadcast, no key
    with pytest.raises(InvalidArgumentError, match="alpha"):
        LdaModel(None, num_topics=2, id2word=id2word, alpha="wide")
    with pytest.raises(InvalidArgumentError, match="eta: shape"):
        LdaModel(None, num_topics=2, id2word=id2word, eta=np.ones(3))
    with pytest.raises(InvalidArgumentError, match="corpus or id2word"):
        LdaModel(None, num_topics=2)
    m = LdaModel(None, num_topics=2, id2word=id2word)
    with pytest.raises(InvalidArgumentError, match="one document"):
        m.update([(0, 1), (1, 2)])


def _write_docs(path, docs):
    with open(path, "w", encoding="utf-8") as fh:
        for i, doc in enumerate(docs):
            words = [f"w{t}" for t, c in doc for _ in range(c)]
            fh.write(f"doc{i}\t{' '.join(words)}\n")


def test_an_lda_job_writes_topics_mixes_and_a_curve(tmp_path):
    from engine.config import load_job
    from engine.jobs.run import run_job

    docs = planted(1200, seed=21)
    path = tmp_path / "docs.tsv"
    _write_docs(path, docs)
    (tmp_path / "job.toml").write_text(
        f'[corpus]\npath = "{path}"\n[lda]\nnum_topics = {K}\npasses = 3\nchunksize = 300\n'
        f'held_out = 100\nno_below = 1\nno_above = 1.0\n[output]\ndir = "{tmp_path / "out"}"\n')
    report = run_job(load_job(str(tmp_path / "job.toml")))
    out = tmp_path / "out"
    assert report["model"] == "lda" and report["documents"] == 1200
    assert report["held_out"] == 100 and report["terms"] == V
    curve = report["passes"]
    assert [r["pass"] for r in curve] == [1, 2, 3]
    assert curve[-1]["held_out_perplexity"] < curve[0]["held_out_perplexity"]
    assert curve[-1]["held_out_perplexity"] < 0.8 * V      # far better than no topics
    assert report["coherence_u_mass"] < 0
    mixes = np.load(out / "doc_topics.npy")
    assert mixes.shape == (1200, K) and np.allclose(mixes.sum(axis=1), 1, atol=1e-4)
    ids = (out / "doc_ids.txt").read_text().split()
    assert ids[:2] == ["doc0", "doc1"] and len(ids) == 1200
    model = LdaModel.load(str(out / "model.npz"))
    # each learned topic's top words come from one planted block
    for k in range(K):
        blocks = {int(w[1:]) // BLOCK for w, _ in model.show_topic(k, 5)}
        assert len(blocks) == 1
    if importlib.util.find_spec("matplotlib") is not None:     # engine report draws the curve
        from engine.bench.report import load_runs, write_report

        files, _ = write_report(load_runs([str(out)]), str(tmp_path / "rep"))
        assert "lda_passes.png" in files and (tmp_path / "rep" / "lda_passes.png").exists()
        assert "held-out perplexity" in (tmp_path / "rep" / "report.html").read_text()
    lines = (out / "topics.txt").read_text().splitlines()
    assert len(lines) == K and '*"w' in lines[0]
    # a document's mix in the file is its planted topic's
    top = {int(model.show_topic(k, 1)[0][0][1:]) // BLOCK: k for k in range(K)}
    doc = docs[5]
    main = np.bincount([t // BLOCK for t, c in doc for _ in range(c)], minlength=K).argmax()
    assert mixes[5].argmax() == top[main]


def test_an_lda_job_refuses_what_it_cannot_do(tmp_path):
    from engine.config import load_job
    from engine.errors import ClusterError, ConfigError
    from engine.jobs.run import run_job

    job = tmp_path / "job.toml"
    job.write_text('[corpus]\npath = "x"\n[lda]\nnum_topics = 2\n[model]\nsg = 1\n')
    with pytest.raises(ConfigError, match=r"\[lda\] \(topics\) and \[model\]"):
        load_job(str(job))
    job.write_text('[corpus]\npath = "x"\n[lda]\nalpha = "wide"\n')
    with pytest.raises(ConfigError, match="alpha"):
        load_job(str(job))
    job.write_text('[corpus]\npath = "x"\n[lda]\n[cluster]\nnodes = ["127.0.0.1:1"]\n')
    with pytest.raises(ClusterError, match="no node could be reached"):   # before the corpus
        run_job(load_job(str(job)))
    job.write_text('[corpus]\npath = "x"\n[lda]\n[lsi]\n')
    with pytest.raises(ConfigError, match="one model"):
        load_job(str(job))
    job.write_text(f'[corpus]\npath = "{tmp_path / "none.txt"}"\n[lda]\n')
    with pytest.raises(ConfigError, match="resume"):
        run_job(load_job(str(job)), resume=True)
    docs = tmp_path / "docs.tsv"                 # more topics than terms: one line, no output
    _write_docs(docs, planted(50, seed=2))
    job.write_text(f'[corpus]\npath = "{docs}"\n[lda]\nnum_topics = 500\nno_below = 1\n'
                   f'no_above = 1.0\n[output]\ndir = "{tmp_path / "o"}"\n')
    with pytest.raises(ConfigError, match=r"num_topics: 500 topics for the 120 terms"):
        run_job(load_job(str(job)))
    assert not (tmp_path / "o").exists()


def test_the_peer_runner_deals_halves_as_engine_does():
    """The bench's gensim runner (which runs without engine) splits held-out documents
    with the same rule as engine's split_halves, so both tools are scored on the same
    halves."""
    from engine.bench.peers_runner import _halves
    from engine.documents.lda import split_halves

    docs = planted(50, seed=9, length=23)
    m = scipy.sparse.lil_matrix((len(docs), V))
    for d, doc in enumerate(docs):
        for i, c in doc:
            m[d, i] = c
    a, b = split_halves(m.tocsr())
    first, (data, indices, indptr) = _halves(docs)
    for d in range(len(docs)):
        assert dict(first[d]) == {int(i): int(c) for i, c in zip(a[d].indices, a[d].data)}
    second = scipy.sparse.csr_matrix((data, indices, indptr), shape=(len(docs), V))
    assert (second != b).nnz == 0
    assert a.sum() + b.sum() == m.sum()


def test_bench_on_an_lda_job(tmp_path):
    import json
    import subprocess

    from engine.runtime.procs import engine_command

    _write_docs(tmp_path / "docs.tsv", planted(400, seed=4))
    job = tmp_path / "lda.toml"
    job.write_text(f'[corpus]\npath = "{tmp_path / "docs.tsv"}"\n[lda]\nnum_topics = {K}\n'
                   f'held_out = 50\nno_below = 1\nno_above = 1.0\nchunksize = 100\n')
    cmd, env = engine_command()                  # the installed engine, as a user runs it
    r = subprocess.run(cmd + ["bench", str(job), "--threads", "1..2", "--peers", "nosuch",
                              "--nodes", "2", "--json", str(tmp_path / "b.json")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    assert [row["split"] for row in data["rows"]] == ["1 thread(s)", "2 thread(s)",
                                                      "2 nodes x 1 thread(s)"]
    assert all(row["train_seconds"] > 0 and row["perplexity"] < V for row in data["rows"])
    assert data["rows"][2]["bytes"] > 0
    assert "unknown LDA peer 'nosuch'" in r.stdout and "| engine | 2 thread(s) |" in r.stdout


def test_inference_matches_gensims_on_fixed_topics():
    """The same topics (lambda) and the same starting gamma (one seed, drawn the same
    way): engine's inference ends where gensim's LdaModel.inference ends, and so does the
    numpy twin."""
    gensim_models = pytest.importorskip("gensim.models")
    rng = np.random.default_rng(8)
    k, v = 5, 60
    id2word = {i: f"t{i}" for i in range(v)}
    sstats = rng.gamma(0.5, 20.0, (k, v))
    docs = [[(int(i), int(c)) for i, c in zip(rng.choice(v, 12, replace=False),
                                              rng.integers(1, 5, 12))] for _ in range(30)]
    theirs = gensim_models.LdaModel(id2word=id2word, num_topics=k, dtype=np.float64,
                                    random_state=3)
    ours = LdaModel(None, num_topics=k, id2word=id2word, dtype=np.float64, random_state=3,
                    workers=1)
    for m in (theirs, ours):
        m.state.sstats[...] = sstats
        m.sync_state()
    g_theirs, s_theirs = theirs.inference(docs, collect_sstats=True)
    g_ours, s_ours = ours.inference(docs, collect_sstats=True)
    assert np.allclose(g_ours, g_theirs, rtol=1e-6, atol=1e-9)
    assert np.allclose(s_ours, s_theirs, rtol=1e-6, atol=1e-9)
    # the twin, from the same start
    m = scipy.sparse.csr_matrix(ours._chunk_csr(docs))
    start = np.random.RandomState(3)
    start.gamma(100.0, 0.01, (k, v))                 # the draw that made the topics
    gamma = start.gamma(100.0, 0.01, (len(docs), k))
    estep_numpy(m.indptr, m.indices, m.data, ours._eb_t, ours.alpha, gamma,
                np.zeros((0, 0)), ours.iterations, ours.gamma_threshold,
                float(np.finfo(np.float64).eps))
    assert np.allclose(gamma, g_theirs, rtol=1e-6, atol=1e-9)


def test_one_thread_and_a_seed_give_the_same_model_every_run(corpus):
    kw = {"num_topics": K, "id2word": {i: str(i) for i in range(V)}, "chunksize": 300,
          "random_state": 11, "eval_every": 0, "workers": 1, "alpha": "auto"}
    a, b = LdaModel(corpus, **kw), LdaModel(corpus, **kw)
    assert np.array_equal(a.state.sstats, b.state.sstats)
    assert np.array_equal(a.alpha, b.alpha)


def test_chunks_read_ahead_keep_their_order_and_their_errors():
    from engine.documents.lda import _ahead

    assert list(_ahead(iter(range(50)))) == list(range(50))

    def broken():
        yield 1
        raise InvalidArgumentError("corpus: a negative count")

    got = []
    with pytest.raises(InvalidArgumentError, match="negative count"):
        for x in _ahead(broken()):
            got.append(x)
    assert got == [1]
    first = next(_ahead(iter(range(10 ** 6))))      # left early: the reader stops
    assert first == 0
    import threading

    def fail_on_the_first():                         # the reader waits to hand the second
        try:
            for _ in _ahead(iter(range(3))):
                raise RuntimeError("training failed")
        except RuntimeError:
            done.append(True)

    done: list = []
    t = threading.Thread(target=fail_on_the_first, daemon=True)
    t.start()
    t.join(10)
    assert done == [True]                            # the failure came out; nothing hung
