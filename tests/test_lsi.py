"""LSI (engine.documents): the SVD against exact ones, merges, splits of the work, the gensim
equivalences (Dictionary, TfidfModel, fold-in), the streamed corpus, memory, the job."""
import json
import lzma
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse

from engine.documents import Dictionary, LsiModel, TfidfModel
from engine.documents.blocks import BlockCache, bows_to_csr, group_chunks, read_block
from engine.documents.corpus import DocumentSource
from engine.documents.job import LsiConfig, run_lsi_job
from engine.documents.lsi import SvdSettings, is_corpus, train_decomposition
from engine.documents.parallel import LocalPasses, choose_split
from engine.documents.stream import build_cache, local_map
from engine.documents.svd import Decomposition, merge, merge_all, orthonormalize, stochastic_svd
from engine.errors import ConfigError, CorpusError, FormatError, InvalidArgumentError

gensim = pytest.importorskip("gensim")


# ---- inputs ---------------------------------------------------------------------------------

def decaying_matrix(n_docs=300, n_terms=400, density=0.05, seed=0):
    """A sparse documents x terms matrix whose spectrum decays (a few strong directions
    plus sparse noise), like TF-IDF data: leading singular values well separated."""
    rng = np.random.default_rng(seed)
    noise = scipy.sparse.random(n_docs, n_terms, density=density, random_state=seed,
                                data_rvs=lambda k: rng.random(k))
    rank = 8
    a = rng.random((n_docs, rank)) * (2.0 ** (-np.arange(rank) / 2))
    b = rng.random((rank, n_terms)) * (rng.random((rank, n_terms)) < 0.1)
    return scipy.sparse.csr_matrix(noise + scipy.sparse.csr_matrix(a @ b) * 4)


def exact(m):
    u, s, _ = np.linalg.svd(m.T.toarray(), full_matrices=False)     # terms x documents
    return u, s


def cached(m, block_docs=37):
    cache = BlockCache()
    cache.add_matrix(m, block_docs)
    return cache


def planted_docs(n_docs=400, topics=5, words=30, filler=60, length=60, seed=0):
    """Documents each drawn from one topic's words (80%) and shared filler words."""
    rnd = random.Random(seed)
    vocab = [[f"t{t}w{i}" for i in range(words)] for t in range(topics)]
    common = [f"f{i}" for i in range(filler)]
    docs, labels = [], []
    for d in range(n_docs):
        t = rnd.randrange(topics)
        docs.append([rnd.choice(vocab[t]) if rnd.random() < 0.8 else rnd.choice(common)
                     for _ in range(rnd.randint(length // 2, length))])
        labels.append(t)
    return docs, labels


def zipf_docs(n_docs=250, vocab=400, seed=1):
    rnd = random.Random(seed)
    weights = [1 / (r + 1) for r in range(vocab)]
    words = [f"w{r}" for r in range(vocab)]
    return [rnd.choices(words, weights, k=rnd.randint(5, 80)) for _ in range(n_docs)]


def write_docs(path, docs, ids=True):
    with open(path, "w") as fh:
        for i, d in enumerate(docs):
            fh.write((f"doc{i}\t" if ids else "") + " ".join(d) + "\n")
    return str(path)


# ---- the SVD ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_stochastic_svd_top_values_match_exact(dtype):
    m = decaying_matrix()
    _, s_exact = exact(m)
    with cached(m) as cache:
        passes = LocalPasses(group_chunks(cache.blocks, 100), m.shape[1], dtype)
        u, s = stochastic_svd(passes, k=10, extra_samples=40, power_iters=2, seed=3,
                              dtype=dtype)
    assert u.dtype == np.dtype(dtype) and u.shape == (m.shape[1], 10)
    np.testing.assert_allclose(s[:6], s_exact[:6], rtol=1e-3)      # the planted ones
    np.testing.assert_allclose(u.T @ u, np.eye(10), atol=1e-5)


def test_subspaces_match_exact_up_to_sign():
    m = decaying_matrix(seed=4)
    u_exact, s_exact = exact(m)
    with cached(m) as cache:
        u, s = stochastic_svd(LocalPasses(group_chunks(cache.blocks, 64), m.shape[1]),
                              k=6, extra_samples=40, power_iters=2, seed=1)
    well_separated = np.flatnonzero(np.diff(-s_exact[:7]) > 1e-2 * s_exact[0])[:5]
    overlap = np.abs(u_exact[:, well_separated].T @ u[:, well_separated])
    np.testing.assert_allclose(overlap, np.eye(len(well_separated)), atol=1e-3)


def test_rank_deficient_matrix_returns_its_rank():
    rng = np.random.default_rng(0)
    m = scipy.sparse.csr_matrix(rng.random((60, 4)) @ rng.random((4, 50)))   # rank 4
    with cached(m) as cache:
        u, s = stochastic_svd(LocalPasses(group_chunks(cache.blocks, 20), 50), k=10,
                              extra_samples=10)
    assert len(s) == 4
    np.testing.assert_allclose(s, exact(m)[1][:4], rtol=1e-8)


def test_orthonormalize_survives_a_rank_deficient_basis():
    rng = np.random.default_rng(0)
    y = rng.random((200, 3)) @ rng.random((3, 12))          # 12 columns, rank 3
    q = orthonormalize(y)
    np.testing.assert_allclose(q.T @ q, np.eye(12), atol=1e-8)
    resid = y - q @ (q.T @ y)
    assert np.abs(resid).max() < 1e-8


def test_in_place_product_and_its_fallback(monkeypatch):
    from engine.documents import parallel

    rng = np.random.default_rng(2)
    a = scipy.sparse.random(300, 40, density=0.1, random_state=3, format="csr")
    x, total = rng.random((40, 6)), rng.random((300, 6))
    want = total + a @ x
    np.testing.assert_allclose(parallel.add_product(total.copy(), a, x), want, rtol=1e-12)
    monkeypatch.setattr(parallel, "_CSR_MATVECS", None)
    np.testing.assert_allclose(parallel.add_product(total.copy(), a, x), want, rtol=1e-12)
    np.testing.assert_allclose(parallel.add_product(None, a, x), a @ x, rtol=1e-12)


def test_row_blocked_products_on_threads_equal_plain_ones():
    from engine.documents.svd import cross, times

    rng = np.random.default_rng(1)
    a, b, m = rng.random((10_000, 7)), rng.random((10_000, 5)), rng.random((7, 3))
    np.testing.assert_allclose(cross(a, b, threads=3), a.T @ b, rtol=1e-12)
    np.testing.assert_allclose(times(a, m, threads=3), a @ m, rtol=1e-12)
    q = orthonormalize(a, threads=2)
    np.testing.assert_allclose(q.T @ q, np.eye(7), atol=1e-10)


def test_merge_of_halves_equals_decomposition_of_whole():
    m = decaying_matrix(n_docs=160, n_terms=300, seed=2)
    top, half = m[:80], m[80:]
    a = Decomposition(*exact(top))              # lossless parts: full rank 80 each
    b = Decomposition(*exact(half))
    merged = merge(a, b, k=20)
    u_exact, s_exact = exact(m)
    np.testing.assert_allclose(merged.s, s_exact[:20], rtol=1e-10)
    overlap = np.abs(u_exact[:, :10].T @ merged.u[:, :10])
    np.testing.assert_allclose(overlap, np.eye(10), atol=1e-6)
    assert np.abs(a.u.T @ a.u - np.eye(80)).max() < 1e-10      # inputs untouched


def test_merge_of_streamed_halves_within_tolerance_of_whole():
    m = decaying_matrix(n_docs=400, seed=5)
    _, s_exact = exact(m)
    parts = []
    for piece in (m[:200], m[200:]):
        with cached(piece) as cache:
            parts.append(stochastic_svd(LocalPasses(group_chunks(cache.blocks, 50),
                                                    m.shape[1]), k=60, extra_samples=60))
    merged = merge(parts[0], parts[1], k=8)
    np.testing.assert_allclose(merged.s[:6], s_exact[:6], rtol=1e-3)


def test_merge_decay_and_tree_order():
    m = decaying_matrix(n_docs=120, seed=6)
    parts = [Decomposition(*exact(m[i:i + 30])) for i in range(0, 120, 30)]
    tree = merge_all(iter(parts), k=120)                # lossless: 4 parts of rank 30
    np.testing.assert_allclose(tree.s, exact(m)[1][:120], rtol=1e-9)
    # decay d: a part weighs d**(number of parts after it), as a left-to-right fold
    fold = parts[0]
    for p in parts[1:]:
        fold = merge(fold, p, k=120, decay=0.5)
    np.testing.assert_allclose(merge_all(iter(parts), k=120, decay=0.5).s, fold.s,
                               rtol=1e-8)


# ---- splitting the work -----------------------------------------------------------------------

def test_processes_and_threads_agree_with_one_process():
    m = decaying_matrix(n_docs=900, n_terms=500, seed=7)
    with cached(m, block_docs=50) as cache:
        runs = {}
        for p, t in [(1, 1), (1, 2), (2, 1)]:
            settings = SvdSettings(num_topics=12, extra_samples=20, chunksize=200, seed=5,
                                   processes=p, blas_threads=t)
            d, report = train_decomposition(cache.blocks, m.shape[1], settings)
            assert (report.split.processes, report.split.threads) == (p, t)
            runs[p, t] = d
    for key in [(1, 2), (2, 1)]:
        np.testing.assert_allclose(runs[key].s, runs[1, 1].s, rtol=1e-6)
        np.testing.assert_allclose(np.abs(runs[key].u.T @ runs[1, 1].u).diagonal(), 1,
                                   atol=1e-6)


def test_merge_method_is_the_same_whatever_the_split():
    m = decaying_matrix(n_docs=300, seed=8)
    with cached(m, block_docs=25) as cache:
        base = dict(num_topics=10, extra_samples=30, chunksize=100, method="merge")
        one, _ = train_decomposition(cache.blocks, m.shape[1], SvdSettings(**base))
        two, _ = train_decomposition(cache.blocks, m.shape[1],
                                     SvdSettings(**base, processes=1, blas_threads=2))
    np.testing.assert_allclose(two.s, one.s, rtol=1e-6)
    np.testing.assert_allclose(one.s[:3], exact(m)[1][:3], rtol=1e-3)


def test_split_choice_is_logged_with_a_reason(caplog):
    small = choose_split(0, 0, nnz=1000, width=50, passes=6, cores=8)
    assert (small.processes, small.threads) == (1, 1) and "small" in small.reason
    big = choose_split(0, 0, nnz=50_000_000, width=300, passes=6, cores=8, free=8)
    assert (big.processes, big.threads) == (1, 8)
    shared = choose_split(0, 0, nnz=50_000_000, width=300, passes=6, cores=8, free=3)
    assert (shared.processes, shared.threads) == (1, 3) and "5 of 8 cores busy" in shared.reason
    assert choose_split(2, 0, nnz=1, width=1, passes=1, cores=8).threads == 4
    with pytest.raises(ConfigError, match="processes"):
        choose_split(-1, 0, nnz=1, width=1, passes=1)
    m = decaying_matrix(n_docs=50)
    with cached(m) as cache, caplog.at_level("INFO", logger="engine"):
        train_decomposition(cache.blocks, m.shape[1], SvdSettings(num_topics=3))
    assert any("process(es) x" in r.message for r in caplog.records)


# ---- gensim equivalences ----------------------------------------------------------------------

def test_dictionary_equals_gensim_after_filter_extremes(tmp_path):
    from gensim.corpora import Dictionary as GDictionary

    docs = zipf_docs()
    ours, theirs = Dictionary(docs), GDictionary(docs)
    assert ours.token2id == theirs.token2id
    assert (ours.dfs, ours.cfs) == (theirs.dfs, theirs.cfs)
    assert (ours.num_docs, ours.num_pos, ours.num_nnz) == \
        (theirs.num_docs, theirs.num_pos, theirs.num_nnz)
    for d in (ours, theirs):
        d.filter_extremes(no_below=3, no_above=0.4, keep_n=120, keep_tokens=["w399"])
    assert ours.token2id == theirs.token2id and ours.dfs == theirs.dfs
    assert ours[5] == theirs[5] and len(ours) == len(theirs)
    assert ours.doc2bow(docs[0]) == theirs.doc2bow(docs[0])
    assert ours.doc2bow(["w1", "new", "new"], return_missing=True) == \
        theirs.doc2bow(["w1", "new", "new"], return_missing=True)
    ours.save(tmp_path / "d.json")
    back = Dictionary.load(tmp_path / "d.json")
    assert back.token2id == ours.token2id and back.cfs == ours.cfs
    assert back.num_docs == ours.num_docs


def test_streamed_dictionary_equals_gensim(tmp_path):
    from gensim.corpora import Dictionary as GDictionary

    docs = zipf_docs(n_docs=600)
    path = write_docs(tmp_path / "docs.tsv", docs)
    source = DocumentSource(path, block_bytes=2000, max_docs=50)    # many small units
    with BlockCache() as cache:
        ours, ids_path, stats = build_cache(source, cache, local_map, no_below=2,
                                            no_above=0.5, keep_n=200)
        theirs = GDictionary(docs)
        theirs.filter_extremes(no_below=2, no_above=0.5, keep_n=200)
        assert ours.token2id == theirs.token2id and ours.dfs == theirs.dfs
        assert ours.cfs == theirs.cfs and ours.num_pos == theirs.num_pos
        with open(ids_path) as fh:
            assert fh.read().split() == [f"doc{i}" for i in range(600)]
        assert stats.units > 10
        # the cached TF-IDF blocks are gensim's TF-IDF of gensim's bags of words
        tfidf = gensim.models.TfidfModel(dictionary=theirs)
        blocks = scipy.sparse.vstack([read_block(b.path) for b in cache.blocks], format="csr")
        expected = bows_to_csr([tfidf[theirs.doc2bow(d)] for d in docs], len(theirs))
        assert abs(blocks - expected).max() < 1e-12


@pytest.mark.parametrize("smartirs", [None, "ntc", "lfn", "bpc", "Ltc", "atn", "dtc", "nnn"])
def test_tfidf_equals_gensim(smartirs):
    from gensim.corpora import Dictionary as GDictionary
    from gensim.models import TfidfModel as GTfidf

    docs = zipf_docs(n_docs=120)
    d = GDictionary(docs)
    bows = [d.doc2bow(x) for x in docs]
    theirs = GTfidf(bows, smartirs=smartirs)
    ours = TfidfModel(bows, smartirs=smartirs)
    from_dict = TfidfModel(dictionary=Dictionary(docs), smartirs=smartirs)
    assert ours[[]] == []
    for bow in bows[:40] + [[(0, 2), (10_000, 1)]]:
        want = dict(theirs[bow])
        for model in (ours, from_dict):
            got = dict(model[bow])
            assert got.keys() == want.keys()
            np.testing.assert_allclose([got[i] for i in want], list(want.values()),
                                       rtol=1e-12)
    assert [dict(x) for x in ours[bows[:5]]] == [dict(ours[b]) for b in bows[:5]]


def test_fold_in_is_gensims_u_transpose_x():
    from gensim.models import LsiModel as GLsi

    docs, _ = planted_docs(n_docs=200)
    d = Dictionary(docs)
    tfidf = TfidfModel(dictionary=d)
    corpus = [tfidf[d.doc2bow(x)] for x in docs]
    ours = LsiModel(corpus, num_topics=5, id2word=d, random_seed=0, dtype=np.float64)
    theirs = GLsi(id2word=d, num_topics=5)
    theirs.projection.u, theirs.projection.s = ours.projection.u, ours.projection.s
    for bow in corpus[:10]:
        x = np.zeros(len(d))
        for i, v in bow:
            x[i] = v
        np.testing.assert_allclose([v for _, v in ours[bow]], ours.projection.u.T @ x,
                                   rtol=1e-10)
        for scaled in (False, True):
            np.testing.assert_allclose([v for _, v in ours.__getitem__(bow, scaled=scaled)],
                                       [v for _, v in theirs.__getitem__(bow, scaled=scaled)],
                                       rtol=1e-10)
    streamed = list(ours[iter(corpus[:7])])
    assert streamed == [ours[b] for b in corpus[:7]]


def test_lsi_matches_gensim_singular_values_and_topics(tmp_path):
    from gensim.models import LsiModel as GLsi

    docs, _ = planted_docs(n_docs=300)
    d = Dictionary(docs)
    tfidf = TfidfModel(dictionary=d)
    corpus = [tfidf[d.doc2bow(x)] for x in docs]
    ours = LsiModel(corpus, num_topics=8, id2word=d, random_seed=0, chunksize=100)
    theirs = GLsi(corpus, num_topics=8, id2word=d, random_seed=0, onepass=False)
    np.testing.assert_allclose(ours.projection.s[:5], theirs.projection.s[:5], rtol=1e-3)
    assert set(w for w, _ in ours.show_topic(0, 5)) == set(w for w, _ in theirs.show_topic(0, 5))
    assert ours.show_topics(2, 3)[1][1].count("*") == 3
    ours.save(tmp_path / "lsi.npz")
    back = LsiModel.load(tmp_path / "lsi.npz")
    np.testing.assert_array_equal(back.projection.u, ours.projection.u)
    assert back[corpus[3]] == ours[corpus[3]] and back.id2word[0] == d[0]


def test_add_documents_merges_into_the_model():
    m = decaying_matrix(n_docs=400, seed=3)
    model = LsiModel(m[:200].T.tocsc(), num_topics=60, extra_samples=60, random_seed=2)
    model.add_documents(m[200:].T.tocsc())
    assert model.docs_processed == 400
    np.testing.assert_allclose(model.projection.s[:6], exact(m)[1][:6], rtol=1e-3)
    with pytest.raises(InvalidArgumentError, match="num_topics"):
        LsiModel(m.T.tocsc(), num_topics=0)


def test_is_corpus_and_sparse_input():
    assert is_corpus([(0, 1.0), (3, 2.0)])[0] is False
    assert is_corpus([[(0, 1.0)], []])[0] is True
    corpus, rebuilt = is_corpus(iter([[(0, 1.0)], [(1, 2.0)]]))
    assert corpus and list(rebuilt) == [[(0, 1.0)], [(1, 2.0)]]
    m = decaying_matrix(n_docs=80, n_terms=60)
    model = LsiModel(m.T.tocsc(), num_topics=4, random_seed=1)     # gensim: terms x docs
    np.testing.assert_allclose(model.projection.s, exact(m)[1][:4], rtol=1e-4)
    with pytest.raises(InvalidArgumentError, match="document 1: term id 99"):
        model.transform([[(0, 1.0)], [(99, 1.0)]])


def test_bag_of_words_read_by_the_compiled_loop_as_by_python():
    rng = np.random.default_rng(5)
    docs = []
    for k in range(300):
        ids = rng.choice(50, size=rng.integers(0, 12), replace=False)
        pairs = [(int(i), float(v)) for i, v in zip(ids, rng.random(len(ids)))]
        if k % 3 == 1:          # numpy numbers, lists for pairs, a tuple for a document
            pairs = tuple([np.int64(i), np.float32(v)] for i, v in pairs)
        elif k % 3 == 2:
            pairs = [(i, int(10 * v)) for i, v in pairs]
        docs.append(pairs)
    got = bows_to_csr(docs, 50, first_doc=7)
    want = np.zeros((len(docs), 50))
    for row, doc in enumerate(docs):
        for i, v in doc:
            want[row, int(i)] += float(v)
    np.testing.assert_array_equal(got.toarray(), want)
    assert got.has_canonical_format and got.dtype == np.float64
    for bad, what in (([[(0, 1.0)], [(1, "x")]], "document 8: pair 0"),
                      ([[(0, 1.0)], [(1, 2.0, 3.0)]], "document 8: pair 0"),
                      ([[(0, 1.0)], [(1, None)]], "document 8: pair 0"),
                      ([[(0, 1.0)], [(1.5, 1.0)]], "document 8: term id 1.5")):
        with pytest.raises(InvalidArgumentError, match=what):
            bows_to_csr(bad, 50, first_doc=7)


def test_a_document_that_changes_while_it_is_read_is_an_error_not_a_crash():
    """flatten_bows reads lists in place: a weight whose __float__ empties its document
    (or the corpus) makes the pair count disagree with the lengths, one clear error."""
    class Emptying:
        def __init__(self, target):
            self.target = target

        def __float__(self):
            self.target.clear()
            return 1.0

    doc = [(0, 1.0), (1, 1.0), (2, 1.0)]
    doc[0] = (0, Emptying(doc))
    with pytest.raises(InvalidArgumentError, match="pairs where their lengths say 3"):
        bows_to_csr([doc], 5)
    docs = [[(0, 1.0)], [(1, 1.0)]]
    docs[0][0] = (0, Emptying(docs))
    with pytest.raises(InvalidArgumentError, match="lengths say 2"):
        bows_to_csr(docs, 5)
    with pytest.raises(InvalidArgumentError, match="document 0: pair 0"):
        bows_to_csr([[(0, 2 ** 2000)]], 5)


def test_lsi_computes_in_float32_unless_given_float64():
    m = decaying_matrix(n_docs=300, n_terms=120, seed=4)
    bows = [[(int(i), float(v)) for i, v in zip(r.indices, r.data)] for r in m]
    fast = LsiModel(bows, num_topics=10, random_seed=1)
    wide = LsiModel(bows, num_topics=10, random_seed=1, dtype=np.float64)
    assert fast.projection.u.dtype == np.float32 and wide.projection.u.dtype == np.float64
    np.testing.assert_allclose(fast.projection.s, wide.projection.s, rtol=1e-5)
    np.testing.assert_allclose(wide.projection.s, exact(m)[1][:10], rtol=1e-4)
    cos = np.abs(np.sum(fast.projection.u[:, :5] * wide.projection.u[:, :5], axis=0))
    np.testing.assert_allclose(cos, 1.0, atol=1e-4)


# ---- the documents corpus ---------------------------------------------------------------------

def test_corpus_forms(tmp_path):
    plain = tmp_path / "plain.txt.xz"
    with lzma.open(plain, "wt") as fh:
        fh.write("a b c\n\n  \nd e\n" + "long " * 3000 + "end\n")
    src = DocumentSource(str(plain), block_bytes=1000)       # a line longer than blocks
    docs = list(src.documents())
    assert [i for i, _ in docs] == ["1", "4", "5"]
    assert docs[2][1] == ["long"] * 3000 + ["end"]
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "x.txt").write_text("one two\nthree\n")
    (folder / "sub" / "y.txt").write_text("four")
    assert list(DocumentSource(str(folder)).documents()) == \
        [("sub/y.txt", ["four"]), ("x.txt", ["one", "two", "three"])]
    tabbed = tmp_path / "ids.tsv"
    tabbed.write_text("a\tx y\nb\t\nc\tz\n")
    assert [i for i, _ in DocumentSource(str(tabbed)).documents()] == ["a", "b", "c"]
    units = list(DocumentSource(write_docs(tmp_path / "m.tsv", [["w"]] * 25),
                                max_docs=10).units())
    assert [u.data.count(b"\n") for u in units] == [10, 10, 5]
    assert [u.first_line for u in units] == [1, 11, 21]


def test_pruning_while_counting_keeps_the_most_frequent(tmp_path):
    docs = zipf_docs(n_docs=600, vocab=2000)
    path = write_docs(tmp_path / "docs.tsv", docs)
    with BlockCache() as cache:
        d, _, _ = build_cache(DocumentSource(path, block_bytes=3000), cache, local_map,
                              no_below=1, no_above=1.0, keep_n=None, prune_at=300)
    assert len(d) <= 300
    full = Dictionary(docs)
    for word in [f"w{r}" for r in range(20)]:                  # never pruned
        assert d.dfs[d.token2id[word]] == full.dfs[full.token2id[word]]


def test_unicode_whitespace_takes_the_python_path_and_agrees(tmp_path):
    from gensim.corpora import Dictionary as GDictionary

    from engine.documents.corpus import Unit
    from engine.documents.stream import _c_counts, _python_counts, count_unit

    docs = [d.split() for d in ["caf\u00e9 a\u00a0b c", "b c\u2003d", "x\u00a0\u00a0y caf\u00e9"]]
    text = "caf\u00e9 a\u00a0b c\nb c\u2003d\nx\u00a0\u00a0y caf\u00e9\n"
    unit = Unit(0, "u.txt", 1, text.encode(), False)
    counts = count_unit(unit, str(tmp_path))
    tokens = counts.tokens.decode("utf-8").split("\n")
    theirs = GDictionary(docs)
    assert dict(zip(tokens, counts.dfs.tolist())) == \
        {theirs[i]: df for i, df in theirs.dfs.items()}
    assert tokens == sorted(theirs.token2id, key=theirs.token2id.get)
    ascii_docs = zipf_docs(n_docs=40)
    data = ("\n".join(" ".join(d) for d in ascii_docs) + "\n\n").encode()
    unit = Unit(0, "a.txt", 1, data, False)
    c_tokens, c_m, c_ids, c_pos = _c_counts([str(i + 1) for i in range(41)], data, True)
    p_tokens, p_m, p_ids, p_pos = _python_counts(unit, "strict")
    assert (c_tokens, c_ids, c_pos) == (p_tokens, p_ids, p_pos)
    assert abs(c_m - p_m).max() == 0


def test_bad_corpus_lines_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tx y\nb\tz\nno tab here\n")
    with pytest.raises(CorpusError, match=r"bad.tsv: line 3: no tab"):
        list(DocumentSource(str(bad)).documents())
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"ok line\n\xff\xfe bad\n")
    with pytest.raises(CorpusError, match=r"bin.txt: invalid UTF-8 at line 2"):
        list(DocumentSource(str(binary)).documents())
    with pytest.raises(CorpusError, match="not found"):
        DocumentSource(str(tmp_path / "missing.txt"))
    (tmp_path / "d.json").write_text('{"format": "something else"}')
    with pytest.raises(FormatError, match="d.json: not an engine dictionary"):
        Dictionary.load(tmp_path / "d.json")


# ---- memory -------------------------------------------------------------------------------------

MEMORY_PROBE = textwrap.dedent("""
    import sys
    from engine.documents.blocks import BlockCache
    from engine.documents.corpus import DocumentSource
    from engine.documents.lsi import SvdSettings, train_decomposition
    from engine.documents.stream import build_cache, local_map
    from engine.runtime.memory import PeakMemory
    source = DocumentSource(sys.argv[1], block_bytes=1 << 20, max_docs=5000)
    with PeakMemory(interval=0.01) as peak, BlockCache() as cache:
        before = peak.sample()
        d, _, _ = build_cache(source, cache, local_map, no_below=1, no_above=1.0)
        train_decomposition(cache.blocks, len(d), SvdSettings(num_topics=10,
                            extra_samples=10, chunksize=5000, processes=1, blas_threads=1))
    print(peak.peak_mb - before)
""")


def test_streamed_memory_is_flat_in_the_number_of_documents(tmp_path):
    rnd = random.Random(0)
    words = [f"w{i}" for i in range(3000)]
    growth = {}
    for n in (20_000, 200_000):
        path = tmp_path / f"many{n}.txt"
        with open(path, "w") as fh:
            for i in range(n):
                fh.write(" ".join(rnd.choices(words, k=12)) + "\n")
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path)], check=True,
                             capture_output=True, text=True, cwd=os.path.dirname(__file__))
        growth[n] = float(out.stdout.split()[-1])
    # the 200k documents' token lists alone would take > 150 MB
    assert growth[200_000] < growth[20_000] + 30, growth


# ---- the job ----------------------------------------------------------------------------------

def test_job_writes_every_output_and_scores_planted_triplets(tmp_path):
    docs, labels = planted_docs(n_docs=500)
    path = write_docs(tmp_path / "docs.tsv", docs)
    extra, extra_labels = planted_docs(n_docs=300, seed=9)
    by_topic = {}
    for doc, t in zip(extra, extra_labels):
        by_topic.setdefault(t, []).append(" ".join(doc))
    rnd = random.Random(1)
    with open(tmp_path / "triplets.tsv", "w") as fh:
        for _ in range(100):
            t, u = rnd.sample(sorted(by_topic), 2)
            a, p = rnd.sample(by_topic[t], 2)
            fh.write(f"{a}\t{p}\t{rnd.choice(by_topic[u])}\n")
    cfg = LsiConfig(path=path, output=str(tmp_path / "out"), num_topics=5, no_below=2,
                    chunksize=120, triplets=str(tmp_path / "triplets.tsv"), dtype="float64")
    report = run_lsi_job(cfg)
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == sorted(
        ["topics.txt", "singular_values.npy", "u.npy", "doc_vectors.npy", "doc_ids.txt",
         "dictionary.json", "report.json"])
    u, s = np.load(out / "u.npy"), np.load(out / "singular_values.npy")
    vectors = np.load(out / "doc_vectors.npy")
    d = Dictionary.load(out / "dictionary.json")
    assert u.shape == (len(d), 5) and vectors.shape == (500, 5)
    assert list(s) == sorted(s, reverse=True) and s[-1] > 0
    assert (out / "doc_ids.txt").read_text().split() == [f"doc{i}" for i in range(500)]
    tfidf = TfidfModel(dictionary=d)
    x = tfidf.weigh(bows_to_csr([d.doc2bow(doc) for doc in docs[:20]], len(d)))
    np.testing.assert_allclose(vectors[:20], x @ u, rtol=1e-5, atol=1e-6)
    assert len((out / "topics.txt").read_text().splitlines()) == 5
    assert json.loads((out / "report.json").read_text())["documents"] == 500
    assert report["triplets"]["lsi"]["accuracy"] > 0.95
    assert report["svd_split"]["reason"] and report["peak_memory_mb"] > 0


def test_job_in_a_pool_of_processes_equals_the_job_in_one(tmp_path):
    docs, _ = planted_docs(n_docs=300, seed=4)
    path = write_docs(tmp_path / "docs.tsv", docs)
    reports, outputs = {}, {}
    for p in (1, 2):
        out = tmp_path / f"out{p}"
        cfg = LsiConfig(path=path, output=str(out), num_topics=6, no_below=2, chunksize=40,
                        processes=p, blas_threads=1, dtype="float64")
        reports[p] = run_lsi_job(cfg)
        outputs[p] = {f: np.load(out / f) for f in ("singular_values.npy", "doc_vectors.npy")}
    assert reports[2]["text_processes"]["processes"] == 2
    assert reports[2]["svd_split"]["processes"] == 2
    np.testing.assert_allclose(outputs[2]["singular_values.npy"],
                               outputs[1]["singular_values.npy"], rtol=1e-6)
    signs = np.sign(np.sum(outputs[2]["doc_vectors.npy"] * outputs[1]["doc_vectors.npy"], 0))
    np.testing.assert_allclose(outputs[2]["doc_vectors.npy"] * signs,
                               outputs[1]["doc_vectors.npy"], atol=1e-5)
    assert (tmp_path / "out2" / "doc_ids.txt").read_text() == \
        (tmp_path / "out1" / "doc_ids.txt").read_text()


def test_job_config_errors_name_the_field(tmp_path):
    path = write_docs(tmp_path / "d.tsv", [["a", "b"]] * 5)
    for field, value in [("num_topics", 0), ("no_above", 1.5), ("method", "magic"),
                         ("dtype", "int8"), ("ids", "maybe"), ("chunksize", 0),
                         ("triplets", str(tmp_path / "nope.tsv")), ("smartirs", "zzz")]:
        with pytest.raises(ConfigError, match=field if field != "method" else "method"):
            run_lsi_job(LsiConfig(path=path, output=str(tmp_path / "o"), **{field: value}))
    with pytest.raises(ConfigError, match="no term"):
        run_lsi_job(LsiConfig(path=path, output=str(tmp_path / "o"), no_below=50))
    assert not (tmp_path / "o").exists()


def test_shares_cover_the_corpus_evenly_at_document_granularity(tmp_path):
    import scipy.sparse

    from engine.documents.blocks import BlockCache
    from engine.documents.lsi import plan_shares, share_pieces

    rng = np.random.default_rng(1)
    m = scipy.sparse.random(700, 50, density=0.1, format="csr", random_state=rng)
    with BlockCache(str(tmp_path)) as cache:
        cache.add_matrix(m, 300)                      # 3 blocks, cut into 5 shares
        shares = plan_shares(cache.blocks, 5)
        assert len(shares) == 5
        assert [s.first_doc for s in shares] == np.cumsum([0] + [s.n_docs for s in shares[:-1]]).tolist()
        assert sum(s.n_docs for s in shares) == 700 and sum(s.nnz for s in shares) == m.nnz
        assert max(s.nnz for s in shares) <= 1.1 * m.nnz / 5
        rebuilt = scipy.sparse.vstack([p for s in shares for p in share_pieces(s, 50)])
        assert (rebuilt != m).nnz == 0
        many = plan_shares(cache.blocks, 10_000)               # at most one per document
        assert len(many) <= 700 and all(s.n_docs >= 1 for s in many)
        assert sum(s.n_docs for s in many) == 700
