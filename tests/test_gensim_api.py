"""gensim users switch by changing one import: Word2Vec's surface, its loss, its callbacks."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import planted_corpus, topic_precision
from engine import CallbackAny2Vec, LineSentence, PathLineSentences, Text8Corpus, Word2Vec
from engine.errors import CorpusError

HERE = os.path.dirname(__file__)


def _write(path, sents):
    path.write_text("".join(" ".join(s) + "\n" for s in sents))
    return str(path)


TUTORIAL = '''
# A gensim 4 Word2Vec tutorial, with only the import changed; no `if __name__ == "__main__"`
# guard, as in most scripts and notebooks.
import json, sys
from engine import Word2Vec, KeyedVectors, LineSentence, CallbackAny2Vec

print("SCRIPT START", flush=True)
corpus_path, out = sys.argv[1], sys.argv[2]


class LossLogger(CallbackAny2Vec):
    def __init__(self):
        self.epoch = 0
        self.losses = []

    def on_epoch_end(self, model):
        self.losses.append(model.get_latest_training_loss())
        self.epoch += 1


logger = LossLogger()
sentences = LineSentence(corpus_path)
model = Word2Vec(sentences=sentences, vector_size=32, window=5, min_count=1, workers=2,
                 sg=1, epochs=5, compute_loss=True, callbacks=[logger])
model.save(out + "/word2vec.model")
model = Word2Vec.load(out + "/word2vec.model")
more = [["t0w1", "t0w2", "t0w3"], ["t1w1", "t1w2"]]
effective, raw = model.train(more, total_examples=len(more), epochs=1)
vector = model.wv["t0w1"]
sims = model.wv.most_similar("t0w1", topn=5)
model.wv.save_word2vec_format(out + "/vectors.txt")
kv = KeyedVectors.load_word2vec_format(out + "/vectors.txt")
text_roundtrip = kv.index_to_key == model.wv.index_to_key
model.build_vocab([["brandnew", "t0w1"]] * 6, update=True)
model.train([["brandnew", "t0w1"]] * 6, total_examples=6, epochs=model.epochs)
print("RESULT " + json.dumps({
    "losses": logger.losses, "epochs_seen": logger.epoch, "raw": raw,
    "vector": len(vector), "sims": [w for w, _ in sims],
    "text_roundtrip": text_roundtrip,
    "brandnew": "brandnew" in model.wv, "vocab": len(model.wv)}))
'''


def test_a_gensim_tutorial_script_runs_with_only_the_import_changed(tmp_path, planted):
    topics, sents = planted
    corpus = _write(tmp_path / "corpus.txt", sents)
    script = tmp_path / "tutorial.py"
    script.write_text(TUTORIAL)
    r = subprocess.run([sys.executable, str(script), corpus, str(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("SCRIPT START") == 1          # the children never ran the script
    res = json.loads(r.stdout.split("RESULT ", 1)[1])
    losses = res["losses"]
    assert res["epochs_seen"] == 5 and len(losses) == 5
    assert all(b > a > 0 for a, b in zip(losses, losses[1:]))   # cumulative, as gensim's
    assert res["raw"] == 5 and res["vector"] == 32
    assert sum(w.startswith("t0") for w in res["sims"]) >= 4
    assert res["text_roundtrip"] and res["brandnew"]


def _model(sents, **kw):
    args = dict(vector_size=16, min_count=1, workers=1, sg=1, epochs=4, seed=3)
    args.update(kw)
    return Word2Vec(sents, **args)


def test_the_per_epoch_loss_falls_and_processes_agree():
    # 240k words, so that both processes train: on the 36k of `planted` the first process
    # ready can train every chunk before the second has started (the same loss as one
    # process). When both train, all 54 rows are hot copies merged every few thousand
    # words, and how the two processes' merges interleave moves the loss of a run: most
    # runs land well inside 3% of one process's, a few in a hundred beyond it. A merge
    # that loses or doubles updates puts every run beyond it, so up to three runs are
    # taken and the closest must agree.
    topics, sents = planted_corpus(sentences=20000)
    one = _model(sents, workers=1)
    per_epoch = [one.last_stats.epochs[e].loss_per_example for e in range(4)]
    assert per_epoch[-1] < per_epoch[0]
    a = one.last_stats.loss / one.last_stats.examples
    gaps = []
    for _ in range(3):
        two = _model(sents, workers=2)
        gaps.append(abs(two.last_stats.loss / two.last_stats.examples - a) / a)
        if gaps[-1] < 0.03:
            break
    assert min(gaps) < 0.03, gaps
    assert one.get_latest_training_loss() == pytest.approx(one.last_stats.loss)
    assert two.last_stats.examples == pytest.approx(one.last_stats.examples, rel=0.02)


def test_callbacks_see_current_vectors_and_can_stop(planted):
    topics, sents = planted
    seen = []

    class Watch(CallbackAny2Vec):
        def on_train_begin(self, model):
            seen.append("begin")

        def on_epoch_begin(self, model):
            seen.append("epoch")

        def on_epoch_end(self, model):
            seen.append(float(np.abs(model.wv["t0w0"]).sum()))
            if sum(isinstance(x, float) for x in seen) == 2:
                model.stop_training = True

        def on_train_end(self, model):
            seen.append("end")

    m = _model(sents, workers=2, epochs=5, callbacks=[Watch()])
    assert seen[0] == "begin" and seen[-1] == "end"
    sums = [x for x in seen if isinstance(x, float)]
    assert len(sums) == 2 and sums[0] != sums[1]        # vectors moved between epochs
    assert seen.count("epoch") == 2
    assert m.epochs_trained == 2 and m.last_stats.raw_words == 2 * m.corpus_total_words
    assert m.last_stats.stopped_early


def test_generators_and_bad_calls_fail_as_in_gensim(planted):
    topics, sents = planted
    with pytest.raises(TypeError, match="generator"):
        Word2Vec((s for s in sents), min_count=1)
    m = Word2Vec(vector_size=8, min_count=1, workers=1)
    with pytest.raises(RuntimeError, match="build vocabulary"):
        m.train(sents, total_examples=len(sents), epochs=1)
    gen = (s for s in sents)
    m.build_vocab(gen)
    with pytest.raises(CorpusError, match="no words"):   # build_vocab used it up
        m.train(gen, total_examples=m.corpus_count, epochs=1)
    assert m.train((s for s in sents), total_examples=m.corpus_count, epochs=1)[1] == \
        m.corpus_total_words                              # a fresh generator trains: one pass
    with pytest.raises(ValueError, match="explicit epochs"):
        m.train(sents, total_examples=len(sents), epochs=0)
    with pytest.raises(TypeError):
        m.train(sents, total_examples=len(sents), epochs=1, compute_los=True)
    with pytest.raises(TypeError, match="Both corpus_file and corpus_iterable"):
        m.train(sents, corpus_file="x.txt", epochs=1)


def test_attributes_shapes_and_settings(planted):
    topics, sents = planted
    m = _model(sents, hs=1, negative=5, sg=True, epochs=1)
    v = len(m.wv)
    assert m.sg == 1 and m.corpus_count == len(sents)
    assert m.corpus_total_words == sum(map(len, sents))
    assert m.syn1neg.shape == (v, 16) and m.syn1.shape == (v, 16)     # gensim's shapes
    assert m.wv is m.wv                                   # one object, not one per access
    m.alpha = 0.05
    assert m.alpha == 0.05
    with pytest.raises(AttributeError):
        Word2Vec(sents, min_count=1, hs=0, workers=1, epochs=1, vector_size=8).syn1


def test_wv_norms_follow_training(planted):
    topics, sents = planted
    m = _model(sents, epochs=1)
    kv = m.wv
    before = kv.most_similar("t0w0", topn=3)
    m.train(sents, total_examples=m.corpus_count, epochs=3)
    assert m.wv is kv
    after = kv.most_similar("t0w0", topn=3)
    normed = kv.vectors / np.linalg.norm(kv.vectors, axis=1, keepdims=True)
    want = normed @ normed[kv.key_to_index["t0w0"]]
    assert after[0][1] == pytest.approx(float(np.sort(want)[-2]), abs=1e-5)
    assert before != after


def test_build_vocab_update_from_freq_and_trim_rule(planted):
    topics, sents = planted
    m = _model(sents, epochs=1)
    kv = m.wv
    old = {w: (m.wv[w].copy(), m.wv.key_to_index[w]) for w in ("t0w0", "t1w3")}
    count = m.wv.get_vecattr("t0w0", "count")
    m.build_vocab([["novel", "t0w0"]] * 3, update=True)
    assert m.wv is kv and kv.index_to_key[-1] == "novel"    # appended, the same object
    assert "novel" in kv and kv.get_vecattr("t0w0", "count") == count + 3
    for w, (vec, index) in old.items():
        assert np.array_equal(kv[w], vec) and kv.key_to_index[w] == index   # as gensim
    m.train([["novel", "t0w0"]] * 3, total_examples=3, epochs=1)

    f = Word2Vec(vector_size=8, workers=1, min_count=2)
    f.build_vocab_from_freq({"a": 5, "b": 3, "c": 1})
    assert f.wv.index_to_key == ["a", "b"]

    def rule(word, count, min_count):
        return 1 if word.startswith("t0") else 0          # gensim's RULE_DISCARD / DEFAULT

    t = Word2Vec(sents, vector_size=8, min_count=1, workers=1, epochs=1, trim_rule=rule)
    assert not any(w.startswith("t0") for w in t.wv.index_to_key)


def test_predict_output_word_is_gensims_formula(planted):
    topics, sents = planted
    m = _model(sents, epochs=2, cbow_mean=1)
    got = m.predict_output_word(["t2w0", "t2w1", "nonsense"], topn=4)
    h = (m.wv["t2w0"] + m.wv["t2w1"]) / 2
    p = np.exp(m.syn1neg @ h)
    p /= p.sum()
    top = np.argsort(-p)[:4]
    assert [w for w, _ in got] == [m.wv.index_to_key[i] for i in top]
    assert [pr for _, pr in got] == pytest.approx(p[top].tolist(), rel=1e-4)
    assert m.predict_output_word(["nonsense"]) is None


def test_load_takes_settings_and_a_checkpoint_model_trains_on(tmp_path, planted):
    topics, sents = planted
    m = _model(sents, epochs=1)
    m.save(str(tmp_path / "m.model"))
    back = Word2Vec.load(str(tmp_path / "m.model"), epochs=3, workers=1)
    assert back.epochs == 3
    back.train(sents, total_examples=back.corpus_count, epochs=back.epochs)
    assert back.epochs_trained == 4 and topic_precision(back.wv, topics) >= 0.9


@pytest.mark.parametrize("workers", [1, 2])
def test_load_with_mmap_maps_the_weights_and_training_moves_them(tmp_path, planted, workers):
    topics, sents = planted
    m = _model(sents, epochs=1)
    m.save(str(tmp_path / "m.model"))
    back = Word2Vec.load(str(tmp_path / "m.model"), mmap="r", workers=workers, epochs=2)
    vectors = back.wv.vectors

    def mapped(a):
        while a is not None:
            if isinstance(a, np.memmap):
                return True
            a = getattr(a, "base", None)
        return False

    assert mapped(vectors) and not vectors.flags.writeable
    assert np.array_equal(vectors, m.wv.vectors)
    assert back.wv.most_similar(sents[0][0], topn=3)
    back.train(sents, total_examples=back.corpus_count, epochs=back.epochs)
    assert not mapped(back.wv.vectors) and back.wv.vectors.flags.writeable
    assert np.array_equal(np.load(tmp_path / "m.model" / "syn0.npy"), m.wv.vectors)  # untouched
    assert topic_precision(back.wv, topics) >= 0.9
    with pytest.raises(ValueError, match="mmap"):
        Word2Vec.load(str(tmp_path / "m.model"), mmap="w")


def test_readers_stream_like_gensims(tmp_path, planted):
    topics, sents = planted
    path = tmp_path / "c.txt"
    _write(path, sents[:50] + [["x"] * 25])
    ls = list(LineSentence(str(path), max_sentence_length=10))
    pieces = [p for s in sents[:50] for p in (s[:10], s[10:])]      # each line of 12: 10 + 2
    assert ls[:100] == pieces and ls[100:] == [["x"] * 10] * 2 + [["x"] * 5]
    assert len(list(LineSentence(str(path), limit=7))) == 7
    with open(path) as fh:
        assert list(LineSentence(fh))[:3] == sents[:3]
    text8 = tmp_path / "t8"
    text8.write_text(" ".join(w for s in sents[:100] for w in s))
    flat = [w for s in sents[:100] for w in s]
    got = list(Text8Corpus(str(text8), max_sentence_length=100))
    assert [w for s in got for w in s] == flat and all(len(s) == 100 for s in got[:-1])
    folder = tmp_path / "many"
    folder.mkdir()
    _write(folder / "b.txt", sents[10:20])
    _write(folder / "a.txt", sents[:10])
    assert list(PathLineSentences(str(folder))) == sents[:20]
    # through the fast path (the parallel encoder), trained like corpus_file=
    a = Word2Vec(LineSentence(str(path)), vector_size=8, min_count=1, workers=1, epochs=1)
    b = Word2Vec(corpus_file=str(path), vector_size=8, min_count=1, workers=1, epochs=1)
    assert np.array_equal(a.wv.vectors, b.wv.vectors)


def test_every_epoch_curve_in_the_report(tmp_path, planted):
    from engine.config import job_from_dict
    from engine.jobs.run import run_job

    topics, sents = planted
    corpus = _write(tmp_path / "c.txt", sents)
    quads = tmp_path / "q.txt"
    quads.write_text(": topics\n" + "".join(
        f"{t[0]} {t[1]} {u[0]} {u[1]}\n" for t in topics for u in topics if t != u))
    job = job_from_dict({"corpus": {"path": corpus},
                         "model": {"min_count": 1, "vector_size": 16, "epochs": 3, "sg": 1},
                         "engine": {"workers": 2},
                         "output": {"dir": str(tmp_path / "out"), "progress_seconds": 0.2},
                         "evaluate": {"analogies": [str(quads)], "every_epoch": True}})
    report = run_job(job, show_progress=False)
    curve = report["curve"]
    assert [c["epoch"] for c in curve] == [1, 2, 3]
    assert all(c["analogy"] is not None and c["loss_per_example"] > 0 for c in curve)
    assert curve[-1]["words"] == report["trained_words"]
    assert report["loss"]["examples"] == sum(c["examples"] for c in curve)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["curve"] == curve and isinstance(saved["timeline"], list)


def test_cluster_checkpoints_with_per_epoch_evaluation_are_refused(tmp_path):
    from engine.config import job_from_dict
    from engine.errors import ConfigError
    from engine.jobs.run import run_job

    job = job_from_dict({"corpus": {"path": str(tmp_path / "c.txt")},
                         "cluster": {"nodes": ["127.0.0.1:1"]},
                         "output": {"dir": str(tmp_path / "o"), "checkpoint_every": "1000"},
                         "evaluate": {"every_epoch": True}})
    with pytest.raises(ConfigError, match="every_epoch on a cluster"):
        run_job(job, show_progress=False)
