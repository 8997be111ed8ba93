"""engine.KeyedVectors against gensim 4's own: the same vectors built in both, every method's
answer compared (scores to 1e-5, keys in the same order, the same exception types), the
word2vec files both ways; and damaged files refused (exhaustive cuts, hypothesis fuzzing)."""
import bz2
import gzip
import importlib.util
import os
import sys
import tempfile
import warnings

import numpy as np
import pytest

from engine import KeyedVectors
from engine.errors import (EngineError, FormatError, MissingFileError, NotSupportedError,
                           TruncatedFileError, UnknownKeyError)
from engine.vectors.w2vformat import bad_word

gensim_kv = pytest.importorskip("gensim.models.keyedvectors")
GKV = gensim_kv.KeyedVectors
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gensim")

D = 8


def _build(keys, vecs, counts=None):
    """The same vectors in engine's and gensim's KeyedVectors, built the gensim way."""
    ours, theirs = KeyedVectors(vecs.shape[1]), GKV(vecs.shape[1])
    ours.add_vectors(keys, vecs.copy())
    theirs.add_vectors(keys, vecs.copy())
    for kv in (ours, theirs):
        for key, count in zip(keys, [] if counts is None else counts):
            kv.set_vecattr(key, "count", int(count))
    return ours, theirs


@pytest.fixture(scope="module")
def pair():
    rs = np.random.default_rng(0)
    keys = [f"w{i}" for i in range(60)]
    return _build(keys, rs.normal(size=(60, D)).astype(np.float32),
                  rs.integers(1, 40, 60))


def _same_neighbours(ours, theirs):
    assert [k for k, _ in ours] == [k for k, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-5)
    assert all(type(s) is float for _, s in ours)


def _same_error(call_ours, call_theirs):
    """Both raise; ours is an EngineError and an instance of the type gensim raised."""
    with pytest.raises(Exception) as theirs:
        call_theirs()
    with pytest.raises(EngineError) as ours:
        call_ours()
    assert isinstance(ours.value, type(theirs.value)), (ours.value, theirs.value)
    return ours.value, theirs.value


# ---- construction, lookups, attributes ----------------------------------------------------

def test_lookups_match_gensim(pair):
    ours, theirs = pair
    assert str(ours) == str(theirs) and len(ours) == len(theirs) == 60
    assert ours.vector_size == theirs.vector_size == D
    assert ours.index_to_key == theirs.index_to_key and ours.key_to_index == theirs.key_to_index
    for key in ("w3", 3, np.int64(5)):
        np.testing.assert_array_equal(ours[key], theirs[key])
        assert ours.get_index(key) == theirs.get_index(key)
    np.testing.assert_array_equal(ours[["w1", "w7", 2]], theirs[["w1", "w7", 2]])
    np.testing.assert_allclose(ours.get_vector("w4", norm=True),
                               theirs.get_vector("w4", norm=True), atol=1e-6)
    assert not ours.get_vector("w4").flags.writeable
    assert ours.get_index("nope", default=-1) == -1
    for key in ("w1", "nope", 59, 60, -1):
        assert (key in ours) == (key in theirs) == ours.has_index_for(key)
    assert ours.get_vecattr("w2", "count") == theirs.get_vecattr("w2", "count")
    assert type(ours.get_vecattr("w2", "count")) is type(theirs.get_vecattr("w2", "count"))
    err, gerr = _same_error(lambda: ours["nope"], lambda: theirs["nope"])
    assert str(err) == str(gerr) == "\"Key 'nope' not present\""
    assert isinstance(err, UnknownKeyError)
    _same_error(lambda: ours.get_vecattr("w2", "size"), lambda: theirs.get_vecattr("w2", "size"))
    _same_error(lambda: ours.set_vecattr("w2", "count", "many"),
                lambda: theirs.set_vecattr("w2", "count", "many"))
    _same_error(lambda: ours[[]], lambda: theirs[[]])


def test_growing_and_replacing_match_gensim():
    rs = np.random.default_rng(1)
    vecs = rs.normal(size=(5, 3)).astype(np.float32)
    built = []
    for cls in (KeyedVectors, GKV):
        kv = cls(3, count=2)
        assert kv.index_to_key == [None, None] and kv.vectors.shape == (2, 3)
        rows = [kv.add_vector("a", vecs[0]), kv.add_vector("b", vecs[1])]
        with pytest.warns(UserWarning, match="grows by one"):
            rows.append(kv.add_vector("c", vecs[2]))
        kv.add_vectors(["d", "a"], vecs[3:5])              # 'a' keeps its vector
        kv["b"] = vecs[4]                                    # replaced
        kv[["e", "d"]] = vecs[[0, 1]]
        built.append((rows, kv))
    (rows, ours), (grows, theirs) = built
    assert rows == grows == [0, 1, 2]
    assert ours.index_to_key == theirs.index_to_key == ["a", "b", "c", "d", "e"]
    np.testing.assert_array_equal(ours.vectors, theirs.vectors)
    ours.fill_norms()
    ours["a"] = vecs[1]
    assert ours.norms is None                     # a change drops the cached norms
    ours.add_vectors(["f", "g"], vecs[:2], extras={"count": np.array([7, 9])})
    assert ours.get_vecattr("g", "count") == 9 and ours.get_vecattr("a", "count") == 0


def test_from_arrays_shares_the_array():
    vecs = np.ones((2, 4), np.float32)
    kv = KeyedVectors.from_arrays(["a", "b"], vecs, [5, 3])
    assert kv.vectors is vecs and kv.vector_size == 4
    assert kv.get_vecattr("b", "count") == 3
    with pytest.raises(TypeError):                   # gensim's constructor takes a size
        KeyedVectors(["a", "b"], vecs, [5, 3])
    with pytest.raises(ValueError, match="repeated"):
        KeyedVectors.from_arrays(["a", "a"], vecs)


def test_sort_vectors_for_all_and_normalising_match_gensim(pair):
    ours, theirs = pair
    a, b = (kv.vectors_for_all(["w5", "nope", "w2", "w5", "w9"], copy_vecattrs=True)
            for kv in (ours, theirs))
    assert a.index_to_key == b.index_to_key == ["w5", "w2", "w9"]
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert a.expandos["count"].tolist() == b.expandos["count"].tolist()
    a.sort_by_descending_frequency()
    b.sort_by_descending_frequency()
    assert a.index_to_key == b.index_to_key and a.key_to_index == b.key_to_index
    np.testing.assert_array_equal(a.vectors, b.vectors)
    a.unit_normalize_all()
    np.testing.assert_allclose(np.linalg.norm(a.vectors, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(ours.get_normed_vectors(), theirs.get_normed_vectors(), atol=1e-6)


# ---- similarity queries --------------------------------------------------------------------

def _forms(kv):
    v = kv.vectors
    return [dict(positive="w1"), dict(positive=["w1", "w2"], negative=["w3"]),
            dict(positive=[("w1", 0.5), ("w4", 2.0)], negative=[("w3", 1.0)]),
            dict(positive=[v[5], "w6"]), dict(positive=v[5]), dict(positive=v[[5, 7]]),
            dict(negative="w8"), dict(positive=[7, "w9"]), dict(positive=[(v[2], 0.3), "w1"]),
            dict(positive="w1", topn=3), dict(positive="w1", topn=0),
            dict(positive="w1", restrict_vocab=20), dict(positive="w1", clip_start=10),
            dict(positive="w1", clip_start=5, clip_end=30, topn=50),
            dict(positive=["w2"], topn=None), dict(positive="w2", topn=None, clip_end=9)]


def test_most_similar_every_form_matches_gensim(pair):
    ours, theirs = pair
    for form in _forms(theirs):
        got, want = ours.most_similar(**form), theirs.most_similar(**form)
        if form.get("topn", 10) is None:
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-5)
        else:
            _same_neighbours(got, want)
    v = theirs.vectors
    for form in (dict(positive="w1"), dict(positive=["w1", "w2"], negative=["w3"]),
                 dict(positive=[v[5], "w6"], negative="w2", topn=4), dict(positive=v[[1, 2]]),
                 dict(positive=["w2"], topn=None), dict(positive="w2", topn=0)):
        got, want = ours.most_similar_cosmul(**form), theirs.most_similar_cosmul(**form)
        if isinstance(want, np.ndarray):
            assert got.dtype == want.dtype
            np.testing.assert_allclose(got, want, rtol=1e-5)
        else:
            _same_neighbours(got, want)
    for method in ("similar_by_word", "similar_by_key"):
        _same_neighbours(getattr(ours, method)("w3", topn=4), getattr(theirs, method)("w3", 4))
    _same_neighbours(ours.similar_by_vector(ours["w3"], restrict_vocab=30),
                     theirs.similar_by_vector(theirs["w3"], restrict_vocab=30))


def test_most_similar_cosmul_honours_restrict_vocab(pair):
    ours, _ = pair
    assert len(ours.most_similar_cosmul("w1", topn=None, restrict_vocab=15)) == 15
    assert {k for k, _ in ours.most_similar_cosmul("w1", topn=50, restrict_vocab=15)} == \
        {f"w{i}" for i in range(15)} - {"w1"}


def test_most_similar_errors_match_gensim(pair):
    ours, theirs = pair
    err, _ = _same_error(lambda: ours.most_similar("nope"), lambda: theirs.most_similar("nope"))
    assert isinstance(err, KeyError)
    _same_error(lambda: ours.most_similar(), lambda: theirs.most_similar())
    _same_error(lambda: ours.most_similar_cosmul(negative="w1"),
                lambda: theirs.most_similar_cosmul(negative="w1"))
    _same_error(lambda: ours.n_similarity([], ["w1"]), lambda: theirs.n_similarity([], ["w1"]))
    _same_error(lambda: ours.get_mean_vector([]), lambda: theirs.get_mean_vector([]))
    _same_error(lambda: ours.get_mean_vector(["w1"], [1, 2]),
                lambda: theirs.get_mean_vector(["w1"], [1, 2]))
    _same_error(lambda: ours.get_mean_vector(["w1", "x"], ignore_missing=False),
                lambda: theirs.get_mean_vector(["w1", "x"], ignore_missing=False))
    _same_error(lambda: ours.similarity("w1", "x"), lambda: theirs.similarity("w1", "x"))
    _same_error(lambda: ours.doesnt_match(["x", "y"]), lambda: theirs.doesnt_match(["x", "y"]))


def test_indexer_answers_instead():
    class Indexer:
        def most_similar(self, vector, topn):
            self.asked = (vector, topn)
            return [("from the indexer", 1.0)]

    ours, theirs = _build(["a", "b", "c"], np.eye(3, dtype=np.float32))
    mine, gensims = Indexer(), Indexer()
    assert ours.most_similar(["a", "b"], topn=2, indexer=mine) == [("from the indexer", 1.0)]
    theirs.most_similar(["a", "b"], topn=2, indexer=gensims)
    assert mine.asked[1] == 2
    np.testing.assert_allclose(mine.asked[0], gensims.asked[0], atol=1e-6)


def test_most_similar_uses_the_cached_norms(pair):
    ours, _ = pair
    kv = KeyedVectors.from_arrays(ours.index_to_key, ours.vectors.copy())
    kv.fill_norms()
    before = kv.most_similar("w1", topn=None)
    kv.norms = kv.norms * 2                       # not recomputed: the answer halves
    np.testing.assert_allclose(kv.most_similar("w1", topn=None) * 2, before, rtol=1e-6)
    kv.fill_norms(force=True)
    np.testing.assert_allclose(kv.most_similar("w1", topn=None), before, rtol=1e-6)


def test_other_queries_match_gensim(pair):
    ours, theirs = pair
    same_value = [("similarity", ("w1", "w2")), ("distance", ("w1", "w2")),
                  ("n_similarity", (["w1", "w2", "nope"], ["w3"])),
                  ("rank", ("w1", "w9")), ("closer_than", ("w1", "w9")),
                  ("most_similar_to_given", ("w1", ["w4", "w5", "w6"])),
                  ("relative_cosine_similarity", ("w1", "w2")),
                  ("doesnt_match", (["w1", "w2", "w3", "nope"],)),
                  ("distances", ("w1",)), ("distances", ("w1", ["w2", "w3"])),
                  ("distances", (ours.vectors[4], ["w2"])),
                  ("get_mean_vector", (["w1", "w2", "nope"],)),
                  ("get_mean_vector", (["w1", ours.vectors[3]], [0.5, -1.0], False, True)),
                  ("get_mean_vector", (np.array(["w1", "w2"]), np.array([1.0, 2.0], np.float32)))]
    for name, args in same_value:
        got, want = getattr(ours, name)(*args), getattr(theirs, name)(*args)
        assert type(got) is type(want), name
        if isinstance(want, (list, str, int)):
            assert got == want, name
        else:
            assert np.asarray(got).dtype == np.asarray(want).dtype, name
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
    got, want = ours.rank_by_centrality(["w1", "w2", "w3"]), theirs.rank_by_centrality(
        ["w1", "w2", "w3"])
    assert [w for _, w in got] == [w for _, w in want]
    assert all(type(s) is np.float32 for s, _ in got)
    v = ours.vectors
    np.testing.assert_allclose(KeyedVectors.cosine_similarities(v[0], v[1:5]),
                               GKV.cosine_similarities(v[0], v[1:5]), atol=1e-6)


def test_wmdistance(pair, monkeypatch):
    ours, theirs = pair
    docs = (["w1", "w2", "w2", "nope"], ["w3", "w1"])
    if importlib.util.find_spec("ot") is not None:            # POT: the wmd extra
        assert ours.wmdistance(*docs) == pytest.approx(theirs.wmdistance(*docs), abs=1e-6)
        assert ours.wmdistance(["w1"], ["w1", "w1"]) == theirs.wmdistance(["w1"], ["w1"]) == 0
        assert ours.wmdistance(["nope"], ["w1"]) == float("inf")
    monkeypatch.setitem(sys.modules, "ot", None)           # POT not installed
    with pytest.raises(ImportError, match="pip install POT"):
        ours.wmdistance(*docs)


# ---- evaluations ---------------------------------------------------------------------------

def _cased_vocab(seed):
    """Words in related pairs (y = x + a shared offset, so analogies x1 y1 x2 y2 have an
    answer) and less frequent case variants lying close to them; returns keys, vectors,
    the pairs."""
    rs = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    xs = list(dict.fromkeys("".join(rs.choice(letters, 5)) for _ in range(25)))[:20]
    ys = [x[::-1] + "q" for x in xs]
    xv = rs.normal(size=(len(xs), D))
    offset = rs.normal(size=D)
    keys = xs + ys
    vecs = list(xv) + list(xv + offset + rs.normal(size=xv.shape) * 0.2)
    for i in rs.choice(len(keys), 25, replace=False):
        word = keys[i]
        for variant in dict.fromkeys([word.upper(), word.capitalize(), word[:2].upper()
                                      + word[2:]][:rs.integers(1, 4)]):
            keys.append(variant)
            vecs.append(vecs[i] + rs.normal(size=D) * 0.3)
    return keys, np.array(vecs, np.float32), list(zip(xs, ys))


def _analogy_file(path, rs, pairs, words):
    lines = [": first"]
    for i in range(150):
        if i % 4:
            (a, b), (c, d) = (pairs[j] for j in rs.choice(len(pairs), 2, replace=False))
            quad = [a, b, c, d]
        else:
            quad = [str(w) for w in rs.choice(words, 4, replace=False)]
        if i % 3 == 0:
            quad = [w.upper() if rs.random() < 0.5 else w for w in quad]
        lines.append(" ".join(quad))
        if i == 70:
            lines += [": second", f"{quad[0]} {quad[1]} unknown {quad[2]}", "too few words",
                      ": empty", ": third"]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("case_insensitive", [True, False])
@pytest.mark.parametrize("dummy4unknown", [False, True])
@pytest.mark.parametrize("restrict_vocab", [300000, 50])
def test_evaluate_word_analogies_matches_gensim_on_a_cased_vocabulary(
        tmp_path, case_insensitive, dummy4unknown, restrict_vocab):
    keys, vecs, pairs = _cased_vocab(3)
    ours, theirs = _build(keys, vecs)
    path = tmp_path / "questions.txt"
    _analogy_file(path, np.random.default_rng(4), pairs, keys)
    kw = dict(restrict_vocab=restrict_vocab, case_insensitive=case_insensitive,
              dummy4unknown=dummy4unknown)
    score, sections = ours.evaluate_word_analogies(str(path), **kw)
    gscore, gsections = theirs.evaluate_word_analogies(str(path), **kw)
    assert sections == gsections
    assert score == gscore and type(score) is type(gscore)
    assert 0.05 < score < 0.95                           # both kinds of answer happen


def test_analogies_case_variants_count_as_the_word(tmp_path):
    """A less frequent case variant as the best answer is right; a case variant of a
    question word is not an answer (gensim's rules)."""
    rs = np.random.default_rng(5)
    keys = ["man", "woman", "king", "queen", "prince", "princess", "Queen", "Prince", "x", "y"]
    vecs = rs.normal(size=(len(keys), D)).astype(np.float32)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs[6] = unit[2] - unit[0] + unit[1]                       # 'Queen': the best answer
    vecs[3] = -vecs[6]                                          # 'queen' itself far away
    target = unit[4] - unit[0] + unit[1]
    vecs[7] = target                                            # 'Prince' the nearest...
    vecs[5] = target + rs.normal(size=D) * 0.05                 # ... then 'princess'
    ours, theirs = _build(keys, vecs)
    path = tmp_path / "q.txt"
    path.write_text(": royal\nman woman king queen\nman woman prince princess\n")
    result = ours.evaluate_word_analogies(str(path))
    assert result == theirs.evaluate_word_analogies(str(path))
    assert result[0] == 1.0
    assert result[1][0]["correct"] == [("MAN", "WOMAN", "KING", "QUEEN"),
                                       ("MAN", "WOMAN", "PRINCE", "PRINCESS")]


def test_analogies_with_3cosmul_and_bad_files(tmp_path, pair):
    ours, theirs = pair
    path = tmp_path / "q.txt"
    _analogy_file(path, np.random.default_rng(6), [("w1", "w2"), ("w3", "w4"), ("w5", "w6")],
                  ours.index_to_key)
    score, _ = ours.evaluate_word_analogies(str(path), similarity_function="most_similar_cosmul")
    assert 0 <= score <= 1
    with pytest.raises(ValueError, match="similarity_function"):
        ours.evaluate_word_analogies(str(path), similarity_function="nearest")
    path.write_text("w1 w2 w3 w4\n")
    _same_error(lambda: ours.evaluate_word_analogies(str(path)),
                lambda: theirs.evaluate_word_analogies(str(path)))
    path.write_text(": only a header\n")                     # gensim: ZeroDivisionError
    with pytest.raises(FormatError, match="no analogy questions"):
        ours.evaluate_word_analogies(str(path))
    err, _ = _same_error(lambda: ours.evaluate_word_analogies(str(tmp_path / "none.txt")),
                         lambda: theirs.evaluate_word_analogies(str(tmp_path / "none.txt")))
    assert isinstance(err, MissingFileError) and "none.txt" in str(err)


@pytest.mark.parametrize("kw", [{}, dict(dummy4unknown=True), dict(case_insensitive=False),
                                dict(restrict_vocab=40, delimiter=",")])
def test_evaluate_word_pairs_matches_gensim(tmp_path, kw):
    keys, vecs, _ = _cased_vocab(7)
    ours, theirs = _build(keys, vecs)
    rs = np.random.default_rng(8)
    sep = kw.get("delimiter", "\t")
    lines = ["# a comment", f"w1{sep}w2", f"w1{sep}w2{sep}not a number", ""]
    while len(lines) < 124:
        a, b = rs.choice(keys + ["unknown"], 2)
        a = a.lower() if rs.random() < 0.3 else a
        if a.upper() != b.upper():     # a word with itself: a similarity of 1 up to float32
            lines.append(f"{a}{sep}{b}{sep}{rs.random() * 10:.2f}")   # rounding, ties vary
    path = tmp_path / "pairs.tsv"
    path.write_text("\r\n".join(lines) + "\n")
    (p, s, oov), (gp, gs, goov) = (kv.evaluate_word_pairs(str(path), **kw)
                                   for kv in (ours, theirs))
    assert oov == goov and 0 < oov < 100
    for mine, gensims in ((p, gp), (s, gs)):
        assert mine.statistic == pytest.approx(gensims.statistic, abs=1e-5)
        assert mine.pvalue == pytest.approx(gensims.pvalue, rel=1e-4, abs=1e-9)
        assert mine[0] == mine.statistic == mine.correlation and mine[1] == mine.pvalue
    path.write_text("unknown\tother\t3\n")
    _same_error(lambda: ours.evaluate_word_pairs(str(path)),
                lambda: theirs.evaluate_word_pairs(str(path)))


# ---- word2vec format, both ways ------------------------------------------------------------

def _decompressed(path):
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(os.path.splitext(path)[1], open)
    with opener(path, "rb") as fh:
        return fh.read()


def _equal(a, b):
    assert a.index_to_key == b.index_to_key
    np.testing.assert_array_equal(a.vectors, b.vectors)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("suffix", ["", ".gz", ".bz2"])
def test_word2vec_files_both_ways(tmp_path, pair, binary, suffix):
    ours, theirs = pair
    mine, gensims = str(tmp_path / f"ours{suffix}"), str(tmp_path / f"theirs{suffix}")
    ours.save_word2vec_format(mine, fvocab=mine + ".vocab", binary=binary)
    theirs.save_word2vec_format(gensims, fvocab=gensims + ".vocab", binary=binary)
    assert _decompressed(mine) == _decompressed(gensims)             # the same bytes
    assert _decompressed(mine + ".vocab") == _decompressed(gensims + ".vocab")
    for kw in ({}, dict(limit=7), dict(fvocab=gensims + ".vocab"), dict(datatype=np.float64)):
        back = KeyedVectors.load_word2vec_format(gensims, binary=binary, **kw)
        gback = GKV.load_word2vec_format(mine, binary=binary, **kw)
        _equal(back, gback)
        assert back.vectors.dtype == gback.vectors.dtype
        assert back.expandos["count"].tolist() == gback.expandos["count"].tolist()
    assert back.index_to_key[0] == theirs.index_to_key[int(np.argmax(
        theirs.expandos["count"]))]                                   # sorted by count


def test_word2vec_text_options_match_gensim(tmp_path, pair):
    ours, theirs = pair
    for kw in (dict(write_header=False), dict(prefix="p_", total_vec=99),
               dict(sort_attr="none")):
        outs = []
        for kv, name in ((ours, "ours"), (theirs, "theirs")):
            path = str(tmp_path / name)
            kv.save_word2vec_format(path, **kw)
            outs.append(open(path, "rb").read())
        assert outs[0] == outs[1], kw
    ours.save_word2vec_format(str(tmp_path / "glove"), write_header=False)
    for kw in ({}, dict(limit=5)):
        _equal(KeyedVectors.load_word2vec_format(str(tmp_path / "glove"), no_header=True, **kw),
               GKV.load_word2vec_format(str(tmp_path / "glove"), no_header=True, **kw))
    _same_error(lambda: KeyedVectors.load_word2vec_format(str(tmp_path / "glove"), binary=True,
                                                          no_header=True),
                lambda: GKV.load_word2vec_format(str(tmp_path / "glove"), binary=True,
                                                 no_header=True))
    assert issubclass(NotSupportedError, NotImplementedError)
    halves = [KeyedVectors.from_arrays(ours.index_to_key[s], ours.vectors[s])
              for s in (slice(0, 20), slice(20, 60))]
    for binary, suffix in ((False, ""), (True, ""), (True, ".gz")):  # append: halves -> one
        path = str(tmp_path / f"appended{binary}{suffix}")
        halves[0].save_word2vec_format(path, binary=binary, total_vec=60)
        halves[1].save_word2vec_format(path, binary=binary, write_header=False, append=True)
        _equal(KeyedVectors.load_word2vec_format(path, binary=binary), ours)
    plain, gplain = _build(["a"], np.ones((1, 2), np.float32))     # no 'count' attribute
    _same_error(lambda: plain.save_word2vec_format(str(tmp_path / "x"), fvocab=str(tmp_path)),
                lambda: gplain.save_word2vec_format(str(tmp_path / "x"), fvocab=str(tmp_path)))


def test_defaults_are_text_and_the_wrong_kind_is_refused(tmp_path, pair):
    """The old silent bug: save_word2vec_format('v.txt') wrote binary and a text file read
    as binary gave garbage keys. Now text is the default both ways, as gensim, and a file
    of the other kind is refused, not misread."""
    plain = KeyedVectors.from_arrays(pair[0].index_to_key, pair[0].vectors)   # no counts
    text, binary = str(tmp_path / "v.txt"), str(tmp_path / "v.bin")
    plain.save_word2vec_format(text)
    _equal(GKV.load_word2vec_format(text), plain)
    _equal(KeyedVectors.load_word2vec_format(text), plain)
    plain.save_word2vec_format(binary, binary=True)
    with pytest.raises(FormatError, match="binary=True"):
        KeyedVectors.load_word2vec_format(binary)
    with pytest.raises(FormatError, match="binary=False"):
        KeyedVectors.load_word2vec_format(text, binary=True)
    short = KeyedVectors.from_arrays(["a", "b"], np.array([[0.5, 1], [2, 0.25]], np.float32))
    short.save_word2vec_format(text)                          # numbers of 4 bytes or less
    with pytest.raises(FormatError, match="binary=False"):
        KeyedVectors.load_word2vec_format(text, binary=True)


def test_gensim_quirks_engine_does_not_copy(tmp_path, caplog):
    """A repeated word keeps its first vector (gensim leaves an empty None slot at the end);
    a line with too few numbers is refused (gensim broadcasts one number to all); a word
    missing from fvocab gets count 0 with a warning (gensim raises TypeError)."""
    path = tmp_path / "v.txt"
    path.write_text("3 2\na 1 2\nb 3 4\na 5 6\n")
    kv = KeyedVectors.load_word2vec_format(str(path))
    assert kv.index_to_key == ["a", "b"] and kv.vectors.tolist() == [[1, 2], [3, 4]]
    assert "duplicate word 'a'" in caplog.text
    path.write_text("1 3\na 0.5\n")
    with pytest.raises(FormatError, match="line 2: expected a word and 3 numbers"):
        KeyedVectors.load_word2vec_format(str(path))
    path.write_text("2 2\na 1 2\nb 3 4\n")
    (tmp_path / "vocab").write_text("a 10\n")
    kv = KeyedVectors.load_word2vec_format(str(path), fvocab=str(tmp_path / "vocab"))
    assert kv.expandos["count"].tolist() == [10, 0] and "incomplete" in caplog.text


def test_unwritable_words_are_refused_before_writing(tmp_path):
    path = tmp_path / "v.txt"
    KeyedVectors.from_arrays(["fine"], np.ones((1, 2))).save_word2vec_format(str(path))
    before = path.read_bytes()
    for keys in (["ok", "new york"], ["ok", ""], ["tab\there", "x"]):
        kv = KeyedVectors.from_arrays(keys, np.ones((2, 2)))
        with pytest.raises(FormatError, match="cannot be written"):
            kv.save_word2vec_format(str(path))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["v.txt"]


# ---- damaged files: every cut refused, fuzzing -----------------------------------------------

def _sample_files(folder):
    rs = np.random.default_rng(9)
    kv = KeyedVectors.from_arrays(["alpha", "bé", "c", "delta_4"],
                                  rs.normal(size=(4, 3)).astype(np.float32))
    files = {}
    for binary in (False, True):
        path = os.path.join(folder, f"sample{int(binary)}")
        kv.save_word2vec_format(path, binary=binary)
        files[binary] = open(path, "rb").read()
    return kv, files


@pytest.mark.parametrize("binary", [False, True])
def test_every_cut_of_a_file_is_refused_with_its_position(tmp_path, binary):
    kv, files = _sample_files(str(tmp_path))
    data, path = files[binary], str(tmp_path / "cut")
    for cut in range(len(data)):
        with open(path, "wb") as fh:
            fh.write(data[:cut])
        with pytest.raises(TruncatedFileError) as err:
            KeyedVectors.load_word2vec_format(path, binary=binary)
        assert isinstance(err.value, EOFError) and isinstance(err.value, ValueError)
        assert str(err.value).startswith(f"{path}: ")
        assert ("line " if not binary else "byte offset ") in str(err.value) or cut < 5
    with gzip.open(path + ".gz", "wb") as fh:
        fh.write(data)
    packed = open(path + ".gz", "rb").read()
    with open(path + ".gz", "wb") as fh:
        fh.write(packed[:len(packed) // 2])
    with pytest.raises(TruncatedFileError, match="cut.gz"):
        KeyedVectors.load_word2vec_format(path + ".gz", binary=binary)


def test_wrong_counts_in_the_header_are_refused(tmp_path):
    kv, files = _sample_files(str(tmp_path))
    path = str(tmp_path / "v")
    for binary, data in files.items():
        for header in (b"3 3\n", b"5 3\n", b"4 2\n", b"4\n", b"x 3\n"):
            with open(path, "wb") as fh:
                fh.write(header + data.split(b"\n", 1)[1])
            with pytest.raises(FormatError, match=r"v: (line|byte offset) \d+"):
                KeyedVectors.load_word2vec_format(path, binary=binary)
        _equal(KeyedVectors.load_word2vec_format(
            os.path.join(tmp_path, f"sample{int(binary)}"), binary=binary, limit=3),
            KeyedVectors.from_arrays(kv.index_to_key[:3], kv.vectors[:3]))


def _load_or_refuse(path, binary):
    """A KeyedVectors that is whole (and writes back to an equal one), or a FormatError."""
    try:
        kv = KeyedVectors.load_word2vec_format(path, binary=binary)
    except FormatError as exc:
        assert str(exc).startswith(path)
        return None
    assert len(kv.index_to_key) == len(kv.vectors) == len(kv.key_to_index)
    kv.save_word2vec_format(path + ".again", binary=binary)
    again = KeyedVectors.load_word2vec_format(path + ".again", binary=binary)
    assert again.index_to_key == kv.index_to_key
    np.testing.assert_array_equal(again.vectors, kv.vectors)
    return kv


def test_fuzz_random_and_corrupted_files():
    """Random bytes and damaged valid files into both loaders: a whole KeyedVectors or a
    FormatError, nothing else; a file only cut short: the original or a FormatError; any
    keys and float32 values (nan, inf, -0, subnormals) written and read back exactly, by
    gensim too."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    def settings(examples):
        return hypothesis.settings(max_examples=examples, deadline=None, derandomize=True,
                                   database=None,
                                   suppress_health_check=list(hypothesis.HealthCheck))

    with tempfile.TemporaryDirectory() as folder:
        kv, files = _sample_files(folder)
        path = os.path.join(folder, "fuzz")

        def write(data):
            with open(path, "wb") as fh:
                fh.write(data)

        @settings(500)
        @hypothesis.given(st.booleans(), st.sampled_from([b"", b"2 3\n", b"1 1\n", b"3 2\n"]),
                          st.binary(max_size=80))
        def random_bytes(binary, header, data):
            write(header + data)
            _load_or_refuse(path, binary)

        @settings(1200)
        @hypothesis.given(st.booleans(), st.data())
        def corrupted(binary, draw):
            data = bytearray(files[binary])
            cut = draw.draw(st.one_of(st.just(len(data)), st.integers(0, len(data))))
            edits = draw.draw(st.lists(st.tuples(st.integers(0, len(data) - 1),
                                                 st.integers(0, 255)), max_size=3))
            for at, byte in edits:
                data[at] = byte
            write(bytes(data[:cut]))
            back = _load_or_refuse(path, binary)
            if back is not None and not edits:          # only cut: the original or nothing
                _equal(back, kv)

        words = st.text(min_size=1, max_size=6).filter(lambda w: bad_word(w) is None)

        @settings(300)
        @hypothesis.given(st.booleans(), st.integers(1, 3).flatmap(lambda d: st.lists(
            st.tuples(words, st.lists(st.floats(width=32), min_size=d, max_size=d)),
            min_size=1, max_size=4, unique_by=lambda t: t[0])))
        def round_trip(binary, rows):
            keys = [k for k, _ in rows]
            original = KeyedVectors.from_arrays(keys, np.array([v for _, v in rows],
                                                               np.float32))
            original.save_word2vec_format(path, binary=binary)
            for back in (KeyedVectors.load_word2vec_format(path, binary=binary),
                         GKV.load_word2vec_format(path, binary=binary)):
                assert back.index_to_key == keys
                np.testing.assert_array_equal(back.vectors, original.vectors)
                assert (np.signbit(back.vectors) == np.signbit(original.vectors)).all() \
                    or np.isnan(original.vectors).any()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            random_bytes()
            corrupted()
            round_trip()


# ---- engine's own save / load ----------------------------------------------------------------

def test_save_and_load_round_trip_with_mmap(tmp_path, pair):
    ours, _ = pair
    path = str(tmp_path / "vectors.kv")
    ours.save(path)
    ours.save(path)                                  # the second save replaces the first
    assert len(os.listdir(tmp_path)) == 2            # vectors.kv and one .npy, no temp files
    for mmap in (None, "r"):
        back = KeyedVectors.load(path, mmap=mmap)
        _equal(back, ours)
        assert back.expandos["count"].tolist() == ours.expandos["count"].tolist()
        _same_neighbours(back.most_similar("w1"), ours.most_similar("w1"))
    assert isinstance(back.vectors, np.memmap) and not back.vectors.flags.writeable
    empty = KeyedVectors(3, count=2)
    empty.add_vector("x", np.ones(3))
    empty.save(path)
    back = KeyedVectors.load(path)
    assert back.index_to_key == ["x", None] and back.next_index == 1


def test_load_refuses_other_files_by_name(tmp_path, pair):
    ours, theirs = pair
    path = str(tmp_path / "vectors.kv")
    theirs.save(path)                                     # a gensim pickle
    with pytest.raises(FormatError, match="gensim"):
        KeyedVectors.load(path)
    ours.save_word2vec_format(path)
    with pytest.raises(FormatError, match="not a KeyedVectors file"):
        KeyedVectors.load(path)
    ours.save(path)
    for name in os.listdir(tmp_path):
        if name.endswith(".npy"):
            os.unlink(tmp_path / name)
    with pytest.raises(MissingFileError, match="vectors of"):
        KeyedVectors.load(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        KeyedVectors.load(str(tmp_path / "none"))
