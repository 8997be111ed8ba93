import numpy as np
import pytest

from engine.errors import EngineError
from engine.vectors.keyedvectors import KeyedVectors
from engine.vectors.correlation import spearman, pearson


def _kv():
    words = ["king", "queen", "man", "woman", "apple", "Paris"]
    vecs = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0.1], [0, 0, 1, 0.1],
                     [0, 0, 0, 1], [0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    return KeyedVectors.from_arrays(words, vecs)


def test_most_similar_and_analogy_vector():
    kv = _kv()
    # king - man + woman = queen
    assert kv.most_similar(positive=["king", "woman"], negative=["man"], topn=1)[0][0] == "queen"
    near = kv.most_similar("king", topn=3)
    assert "king" not in [w for w, _ in near]
    assert [s for _, s in near] == sorted([s for _, s in near], reverse=True)
    assert kv.most_similar("king", topn=10, restrict_vocab=3)[0][0] in ("queen", "man")
    assert len(kv.most_similar("king", topn=10, restrict_vocab=3)) == 2
    assert kv.similarity("king", "king") == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(KeyError):
        kv.most_similar("nope")


def test_evaluate_word_analogies(tmp_path):
    kv = _kv()
    q = tmp_path / "q.txt"
    q.write_text(": royal\nMAN WOMAN KING QUEEN\nman woman king apple\n"
                 ": other\nman unknown king queen\n")
    acc, sections = kv.evaluate_word_analogies(str(q))
    assert acc == 0.5
    assert sections[-1]["section"] == "Total accuracy"
    assert len(sections[0]["correct"]) == 1 and len(sections[0]["incorrect"]) == 1
    # as gensim: a section without a usable question is still listed, empty
    assert [s["section"] for s in sections] == ["royal", "other", "Total accuracy"]
    assert sections[1]["correct"] == sections[1]["incorrect"] == []


def test_word_pairs_correlations(tmp_path):
    kv = _kv()
    f = tmp_path / "ws.tsv"
    f.write_text("# comment\nking\tqueen\t8\nking\tapple\t1\nman\twoman\t6\nking\tzzz\t3\n")
    p, s, oov = kv.evaluate_word_pairs(str(f))
    assert oov == 25.0
    sims = [kv.similarity("king", "queen"), kv.similarity("king", "apple"),
            kv.similarity("man", "woman")]
    assert s.statistic == pytest.approx(spearman(sims, [8, 1, 6]))
    assert p.statistic == pytest.approx(pearson(sims, [8, 1, 6]))


def test_rank_correlations_match_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rs = np.random.default_rng(0)
    x = rs.integers(0, 5, 50).astype(float)          # with ties
    y = x + rs.normal(size=50)
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y)[0])
    assert pearson(x, y) == pytest.approx(scipy_stats.pearsonr(x, y)[0])


@pytest.mark.parametrize("binary", [True, False])
def test_word2vec_format_round_trip(tmp_path, binary):
    rs = np.random.default_rng(0)
    kv = KeyedVectors.from_arrays(["a", "bé", "c_d"], rs.normal(size=(3, 5)).astype(np.float32))
    path = str(tmp_path / ("v.bin" if binary else "v.txt"))
    kv.save_word2vec_format(path, binary=binary)
    back = KeyedVectors.load_word2vec_format(path, binary=binary)
    assert back.index_to_key == kv.index_to_key
    assert np.array_equal(back.vectors, kv.vectors)       # exact, text included
    assert [p.name for p in tmp_path.iterdir()] == [path.rsplit("/", 1)[1]]   # no temp left


def test_truncated_file_is_a_clear_error(tmp_path):
    kv = KeyedVectors.from_arrays(["a", "b"], np.ones((2, 4), np.float32))
    path = tmp_path / "v.bin"
    kv.save_word2vec_format(str(path), binary=True)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(EngineError, match="ends after 1 of the 2 vectors"):
        KeyedVectors.load_word2vec_format(str(path), binary=True)


@pytest.mark.parametrize("binary", [True, False])
def test_gensim_reads_ours_and_we_read_gensims(tmp_path, binary):
    gensim_kv = pytest.importorskip("gensim.models.keyedvectors")
    rs = np.random.default_rng(1)
    kv = KeyedVectors.from_arrays(["x", "yé", "z"], rs.normal(size=(3, 7)).astype(np.float32))
    ours = str(tmp_path / "ours")
    kv.save_word2vec_format(ours, binary=binary)
    g = gensim_kv.KeyedVectors.load_word2vec_format(ours, binary=binary)
    assert g.index_to_key == kv.index_to_key
    assert np.array_equal(g.vectors, kv.vectors)
    theirs = str(tmp_path / "theirs")
    g2 = gensim_kv.KeyedVectors(7)
    g2.add_vectors(["p", "q"], rs.normal(size=(2, 7)).astype(np.float32))
    g2.save_word2vec_format(theirs, binary=binary)
    back = KeyedVectors.load_word2vec_format(theirs, binary=binary)
    assert back.index_to_key == ["p", "q"]
    np.testing.assert_array_equal(back.vectors, g2.vectors)


def test_evaluations_match_gensim(tmp_path):
    gensim_kv = pytest.importorskip("gensim.models.keyedvectors")
    rs = np.random.default_rng(2)
    words = [f"w{i}" for i in range(40)]
    kv = KeyedVectors.from_arrays(words, rs.normal(size=(40, 6)).astype(np.float32))
    g = gensim_kv.KeyedVectors(6)
    g.add_vectors(words, kv.vectors.copy())
    q = tmp_path / "q.txt"
    lines = [": s1"] + [" ".join(rs.choice(words, 4, replace=False)) for _ in range(200)]
    q.write_text("\n".join(lines) + "\n")
    acc, _ = kv.evaluate_word_analogies(str(q), restrict_vocab=30)
    gacc, _ = g.evaluate_word_analogies(str(q), restrict_vocab=30)
    assert acc == pytest.approx(gacc)
    ws = tmp_path / "ws.tsv"
    pairs = [rs.choice(words, 2, replace=False) for _ in range(60)]
    ws.write_text("".join(f"{a}\t{b}\t{rs.random() * 10:.2f}\n" for a, b in pairs))
    p, s, oov = kv.evaluate_word_pairs(str(ws))
    gp, gs, goov = g.evaluate_word_pairs(str(ws))
    assert s.statistic == pytest.approx(gs[0], abs=1e-6)
    assert p.statistic == pytest.approx(gp[0], abs=1e-6)
