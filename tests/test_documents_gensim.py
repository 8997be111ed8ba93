"""The documents' gensim face beyond the models: Dictionary's text format, merging, special
tokens and frequency queries, and TfidfModel's hooks, pivoted norms and files, each checked
against gensim itself on the same documents."""
import gzip
import random

import numpy as np
import pytest

from engine.documents import Dictionary, TfidfModel
from engine.documents.tfidf import df2idf, precompute_idfs
from engine.errors import FormatError, InvalidArgumentError, NotSupportedError

gensim = pytest.importorskip("gensim")


def _docs(n_docs=150, vocab=300, seed=4):
    rnd = random.Random(seed)
    weights = [1 / (r + 1) for r in range(vocab)]
    words = [f"t{r}" if r % 7 else f"té{r}" for r in range(vocab)]      # some non-ASCII
    return [rnd.choices(words, weights, k=rnd.randint(3, 60)) for _ in range(n_docs)]


def _same(ours, theirs):
    assert ours.token2id == theirs.token2id
    assert ours.dfs == theirs.dfs
    assert (ours.num_docs, ours.num_nnz) == (theirs.num_docs, theirs.num_nnz)


@pytest.mark.parametrize("sort_by_word", [True, False])
def test_text_format_reads_and_writes_what_gensim_does(tmp_path, sort_by_word):
    from gensim.corpora import Dictionary as G

    docs = _docs()
    ours, theirs = Dictionary(docs), G(docs)
    ours.save_as_text(tmp_path / "ours.txt", sort_by_word=sort_by_word)
    theirs.save_as_text(str(tmp_path / "theirs.txt"), sort_by_word=sort_by_word)
    a = (tmp_path / "ours.txt").read_text("utf-8").splitlines()
    b = (tmp_path / "theirs.txt").read_text("utf-8").splitlines()
    assert a[0] == b[0] == str(len(docs))
    assert sorted(a[1:]) == sorted(b[1:])           # ties in frequency may come in any order
    if sort_by_word:
        assert a == b
    dfs = [int(line.split("\t")[2]) for line in a[1:]]
    if not sort_by_word:
        assert dfs == sorted(dfs, reverse=True)
    _same(Dictionary.load_from_text(tmp_path / "theirs.txt"), G.load_from_text(
        str(tmp_path / "ours.txt")))
    legacy = tmp_path / "legacy.txt"                # no document count on the first line
    legacy.write_text("1\tprvé\t1\n2\tslovo\t2\n", "utf-8")
    got = Dictionary.load_from_text(legacy)
    assert got.token2id == {"prvé": 1, "slovo": 2} and got.dfs == {1: 1, 2: 2}
    assert got.num_docs == 0


def test_text_format_refuses_what_it_cannot_hold(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("3\n0\ta\t1\n1\tb\n", "utf-8")
    with pytest.raises(FormatError, match=r"bad.txt:3: expected 'id<TAB>token"):
        Dictionary.load_from_text(bad)
    bad.write_text("3\n0\ta\t1\n1\ta\t2\n", "utf-8")
    with pytest.raises(FormatError, match="given twice"):
        Dictionary.load_from_text(bad)
    d = Dictionary([["a\tb", "c"]])
    with pytest.raises(InvalidArgumentError, match="tab or a line break"):
        d.save_as_text(tmp_path / "x.txt")
    assert not (tmp_path / "x.txt").exists()


def test_merge_from_corpus_and_frequency_queries_match_gensim():
    from gensim.corpora import Dictionary as G

    docs = _docs()
    a, b = Dictionary(docs[:90]), Dictionary(docs[90:])
    ga, gb = G(docs[:90]), G(docs[90:])
    transform, gtransform = a.merge_with(b), ga.merge_with(gb)
    _same(a, ga)
    assert a.num_pos == ga.num_pos
    assert set(a.token2id) == set(Dictionary(docs).token2id)
    bow = b.doc2bow(docs[100])
    assert transform[bow] == gtransform[bow] and transform[[bow]] == [gtransform[bow]]
    assert transform[iter([bow, bow])] == [gtransform[bow]] * 2      # a stream of them
    # occurrences add up too (gensim's merge leaves them out)
    whole = Dictionary(docs)
    assert {t: a.cfs[i] for t, i in a.token2id.items()} == \
        {t: whole.cfs[i] for t, i in whole.token2id.items()}

    whole_g = G(docs)
    assert whole.most_common(5) == whole_g.most_common(5)
    assert [c for _, c in whole.most_common()] == [c for _, c in whole_g.most_common()]
    corpus = [whole.doc2bow(d) for d in docs]
    for id2word in (None, whole):
        ours, theirs = Dictionary.from_corpus(corpus, id2word), G.from_corpus(corpus, id2word)
        _same(ours, theirs)
        assert ours.num_pos == theirs.num_pos
        assert ours.cfs == whole.cfs                 # counted too (gensim leaves them out)
    d, g = Dictionary(docs), G(docs)
    d.filter_n_most_frequent(7)
    g.filter_n_most_frequent(7)
    _same(d, g)
    assert "t1" not in d.token2id and len(d) == len(whole) - 7


def test_special_tokens_take_their_ids_and_the_displaced_keep_their_counts():
    from gensim.corpora import Dictionary as G

    docs = _docs(n_docs=40)
    special = {"<pad>": 0, "t2": 1, "<unk>": 3}     # t2 is in the corpus, elsewhere
    d, g = Dictionary(docs), G(docs)
    before = {t: (d.dfs[i], d.cfs[i]) for t, i in d.token2id.items()}
    d.patch_with_special_tokens(special)
    g.patch_with_special_tokens(special)
    assert d.token2id == g.token2id
    assert sorted(d.token2id.values()) == list(range(len(before) + 2))
    for t, i in d.token2id.items():
        assert (d.dfs[i], d.cfs[i]) == before.get(t, (0, 0)), t
        assert d[i] == t
    assert (0, 1) in d.doc2bow(["<pad>"] + docs[0])
    with pytest.raises(InvalidArgumentError, match="neither held nor the next id"):
        d.patch_with_special_tokens({"<far>": 10_000})


@pytest.mark.parametrize("smartirs", ["nnu", "ltu", "nnb", "bfb"])
def test_pivoted_smart_norms_match_gensim(smartirs):
    from gensim.corpora import Dictionary as G
    from gensim.models import TfidfModel as GT

    docs = _docs()
    g = G(docs)
    bows = [g.doc2bow(x) for x in docs]
    theirs = GT(dictionary=g, smartirs=smartirs, slope=0.3)
    ours = TfidfModel(dictionary=Dictionary(docs), smartirs=smartirs, slope=0.3)
    assert ours.pivot == pytest.approx(theirs.pivot, rel=1e-12)
    for bow in bows[:30]:
        want = dict(theirs[bow])
        got = dict(ours[bow])
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[i] for i in want], list(want.values()), rtol=1e-12)
    with pytest.raises(InvalidArgumentError, match="needs dictionary="):
        TfidfModel(bows, smartirs="nnb")


def test_users_weight_functions_as_gensim_calls_them():
    from gensim.corpora import Dictionary as G
    from gensim.models import TfidfModel as GT

    docs = _docs()
    g = G(docs)
    bows = [g.doc2bow(x) for x in docs]

    def wlocal(tf):
        return iter(np.sqrt(tf) + 1)                  # an iterator, as gensim allows

    def wglobal(df, total):
        return 1.0 + (df < total / 4)                # numbers or arrays

    def slow_global(df, total):                       # only a number: term by term
        return 2.0 if df > 3 else 0.5

    for wg in (wglobal, slow_global):
        theirs = GT(bows, wlocal=wlocal, wglobal=wg)
        ours = TfidfModel(bows, wlocal=wlocal, wglobal=wg)
        assert ours.idfs == pytest.approx(theirs.idfs, rel=1e-12)
        for bow in bows[:20]:
            want, got = dict(theirs[bow]), dict(ours[bow])
            assert got.keys() == want.keys()
            np.testing.assert_allclose([got[i] for i in want], list(want.values()),
                                       rtol=1e-12)
    model = TfidfModel(bows)
    assert model.idfs == precompute_idfs(model.wglobal, model.dfs, len(bows))
    assert model.wglobal is df2idf
    with pytest.raises(NotSupportedError, match="cannot be saved"):
        TfidfModel(bows, wglobal=wglobal).save("never-written.json")


@pytest.mark.parametrize("name", ["m.json", "m.json.gz"])
def test_tfidf_saves_and_loads_without_pickle(tmp_path, name):
    docs = _docs()
    d = Dictionary(docs)
    bows = [d.doc2bow(x) for x in docs]
    for kwargs in ({}, {"smartirs": "Lpc"}, {"pivot": 10.0, "slope": 0.5},
                   {"normalize": False}, {"smartirs": "nnb", "dictionary": d},
                   {"smartirs": "ltu"}):
        model = TfidfModel(bows if "dictionary" not in kwargs else None, **kwargs)
        model.save(tmp_path / name)
        back = TfidfModel.load(tmp_path / name, mmap=None)
        assert back.idfs == model.idfs
        assert [back[b] for b in bows[:10]] == [model[b] for b in bows[:10]]
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    if name.endswith(".gz"):
        assert gzip.decompress(raw).startswith(b"{")
    pickled = tmp_path / "gensim.model"
    pickled.write_bytes(b"\x80\x04\x95" + b"\0" * 20)
    with pytest.raises(FormatError, match="never unpickles"):
        TfidfModel.load(pickled)


def test_lsi_without_id2word_names_terms_by_id_and_maps_its_file(tmp_path):
    from engine.documents import LsiModel

    docs = _docs()
    d = Dictionary(docs)
    bows = [d.doc2bow(x) for x in docs]
    model = LsiModel(bows, num_topics=4, random_seed=1)
    assert len(model.id2word) == len(d) and model.id2word[3] == "3"
    assert 3 in model.id2word and len(d) not in model.id2word
    topics = model.get_topics()
    assert topics.shape == (4, len(d))
    np.testing.assert_allclose(np.linalg.norm(topics, axis=1), 1.0)
    # a model made from another's id2word has that many terms, and learns online
    online = LsiModel(None, num_topics=4, id2word=model.id2word, random_seed=1)
    online.add_documents(bows[:50])
    online.add_documents(bows[50:])
    assert online.num_terms == model.num_terms and online.docs_processed == len(bows)
    model.save(tmp_path / "m.npz", sep_limit=0)
    mapped = LsiModel.load(tmp_path / "m.npz", mmap="r")
    assert isinstance(mapped.projection.u, np.memmap)
    np.testing.assert_array_equal(mapped.projection.u, model.projection.u)
    np.testing.assert_array_equal(mapped.projection.s, model.projection.s)
    assert mapped[bows[0]] == model[bows[0]]
    assert mapped.id2word[5] == "5" and len(mapped.id2word) == model.num_terms
    with pytest.raises(InvalidArgumentError, match="mmap"):
        LsiModel.load(tmp_path / "m.npz", mmap="w")


def test_lsi_fed_tfidf_of_a_corpus_equals_the_same_documents_weighed_one_by_one():
    """LsiModel(tfidf[bows]) weighs the raw documents a block at a time: the matrix it
    decomposes is the one the documents weighed one by one make."""
    from engine.documents import LsiModel

    docs = _docs(n_docs=300)
    d = Dictionary(docs)
    bows = [d.doc2bow(x) for x in docs] + [[(len(d) + 5, 2)]]   # an id tfidf never saw
    tfidf = TfidfModel(bows[:200])                   # ids past its documents weigh nothing
    fast = LsiModel(tfidf[bows], num_topics=5, random_seed=3)
    slow = LsiModel([tfidf[b] for b in bows], num_topics=5, random_seed=3)
    assert fast.num_terms == slow.num_terms
    np.testing.assert_allclose(fast.projection.s, slow.projection.s, rtol=1e-10)
    np.testing.assert_allclose(np.abs(fast.projection.u), np.abs(slow.projection.u),
                               atol=1e-10)
    fixed = LsiModel(tfidf[bows[:-1]], num_topics=5, id2word=d, random_seed=3)
    assert fixed.num_terms == len(d)


def test_lda_maps_its_file_unless_compressed(tmp_path):
    from engine import LdaModel
    from engine.errors import FileAccessError

    docs = _docs()
    d = Dictionary(docs)
    bows = [d.doc2bow(x) for x in docs]
    model = LdaModel(bows, num_topics=3, id2word=d, random_state=2, eval_every=0)
    model.save(tmp_path / "m.npz")
    mapped = LdaModel.load(tmp_path / "m.npz", mmap="r")
    assert isinstance(mapped.expElogbeta, np.memmap)
    np.testing.assert_array_equal(mapped.expElogbeta, model.expElogbeta)
    np.testing.assert_array_equal(mapped.get_topics(), model.get_topics())
    got = mapped.get_document_topics(bows[0], minimum_probability=0)
    want = model.get_document_topics(bows[0], minimum_probability=0)
    assert [t for t, _ in got] == [t for t, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=0.02)  # own draws
    model.save(tmp_path / "m.npz.gz")
    assert (tmp_path / "m.npz.gz").stat().st_size < (tmp_path / "m.npz").stat().st_size
    with pytest.raises(FileAccessError, match="compressed"):
        LdaModel.load(tmp_path / "m.npz.gz", mmap="r")
    back = LdaModel.load(tmp_path / "m.npz.gz")
    np.testing.assert_array_equal(back.get_topics(), model.get_topics())
