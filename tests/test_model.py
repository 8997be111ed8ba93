import numpy as np
import pytest

from engine import ConfigError, EngineError, Word2Vec
from engine.config import physical_cores
from conftest import topic_precision


def test_api_defaults_and_attributes(planted):
    _, sents = planted
    m = Word2Vec(sentences=sents[:200], min_count=1, vector_size=8, epochs=1, workers=1)
    assert m.sg == 0 and m.window == 5 and m.negative == 5 and m.vector_size == 8
    assert m.wv.vectors.shape == (len(m.wv), 8)
    assert m.syn1neg.shape == m.wv.vectors.shape
    assert Word2Vec().workers == physical_cores()


def test_bad_arguments():
    with pytest.raises(TypeError, match="size"):
        Word2Vec(size=100)                     # gensim 3's name: a TypeError, as in gensim 4
    with pytest.raises(ConfigError, match=r"Word2Vec window: expected an integer"):
        Word2Vec(window=0)
    with pytest.raises(TypeError, match="sentences must be an iterable of token lists"):
        Word2Vec(sentences="a b c", min_count=1)
    with pytest.raises(EngineError, match="sentence 1: expected a list of tokens"):
        Word2Vec(sentences=[["a"], 3], min_count=1)


def test_save_load_continue(tmp_path, planted, planted_file):
    topics, sents = planted
    m = Word2Vec(sentences=sents, sg=1, vector_size=16, min_count=1, epochs=1, workers=1)
    m.save(str(tmp_path / "m"))
    back = Word2Vec.load(str(tmp_path / "m"), workers=1)
    assert back.wv.index_to_key == m.wv.index_to_key
    assert np.array_equal(back.wv.vectors, m.wv.vectors)
    assert np.array_equal(back.syn1neg, m.syn1neg)
    assert back.state.vocab.counts.tolist() == m.state.vocab.counts.tolist()
    assert back.sg == 1 and back.state.epochs_trained == 1
    before = back.wv.vectors.copy()
    effective, raw = back.train(corpus_file=planted_file[1], epochs=3)
    assert back.state.epochs_trained == 4
    assert raw == 3 * m.corpus_total_words and 0 < effective <= raw
    assert not np.array_equal(before, back.wv.vectors)
    assert topic_precision(back.wv, topics) >= 0.9
    with pytest.raises(EngineError, match="not a saved model"):
        Word2Vec.load(str(tmp_path))
