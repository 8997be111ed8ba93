"""Hostile input costs one clear line, found before training; the kernels are never handed
what would make them write outside the weights; saved files are whole or absent."""
import bz2
import gzip
import lzma
import os
import subprocess
import tempfile

import numpy as np
import pytest

from engine.runtime.procs import engine_command
from engine.word2vec.checks import check_arrays, check_stream
from engine.config import ModelConfig
from engine.text.corpus import CorpusSource
from engine.errors import CorpusError, EngineError, ResourceError
from engine.word2vec.prepare import build_vocab_iterable, encode_iterable, prepare_corpus
from engine.runtime.shm import check_room
from engine.word2vec.state import ModelState
from engine.jobs.outputs import check_output_room
from engine.vectors.keyedvectors import KeyedVectors
from engine.word2vec.vocab import Vocab


def _run_job(tmp_path, corpus, out):
    job = tmp_path / "job.toml"
    job.write_text(f'[corpus]\npath = "{corpus}"\n[model]\nmin_count = 1\nepochs = 1\n'
                   f'vector_size = 8\n[output]\ndir = "{out}"\n')
    cmd, env = engine_command()
    return subprocess.run(cmd + ["run", str(job)], capture_output=True, text=True, env=env,
                          timeout=300)


def _text(lines=40000):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    return "".join(" ".join(rng.choice(words, 12)) + "\n" for _ in range(lines)).encode()


@pytest.mark.parametrize("opener", [gzip.open, bz2.open, lzma.open], ids=["gz", "bz2", "xz"])
def test_a_truncated_compressed_corpus_is_one_line_naming_the_file(tmp_path, opener):
    ext = {gzip.open: "gz", bz2.open: "bz2", lzma.open: "xz"}[opener]
    whole = tmp_path / f"whole.txt.{ext}"
    with opener(whole, "wb") as fh:
        fh.write(_text())
    data = whole.read_bytes()
    cut = tmp_path / f"cut.txt.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    assert sum(len(s) for s in CorpusSource(str(whole))) == 40000 * 12   # the whole one reads
    with pytest.raises(CorpusError, match=rf"cut\.txt\.{ext}: truncated"):
        sum(len(s) for s in CorpusSource(str(cut)))
    r = _run_job(tmp_path, cut, tmp_path / "out")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1 and "truncated" in lines[0] and str(cut) in lines[0]


def test_an_output_folder_that_cannot_be_made_fails_before_training(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(_text(2000))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = _run_job(tmp_path, corpus, blocker / "out")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"[output] dir {blocker / 'out'}: cannot write there" in r.stderr
    assert "vocabulary:" not in r.stderr          # nothing was read, let alone trained


def test_too_little_disk_or_shared_memory_is_refused_with_the_numbers(tmp_path):
    with pytest.raises(ResourceError, match=r"MB free on its disk, the outputs need about"):
        check_output_room(str(tmp_path), 10**12, ModelConfig(vector_size=300), True)
    check_output_room(str(tmp_path), 100, ModelConfig(vector_size=10), True)   # fits
    with pytest.raises(ResourceError, match=r"need [\d,]+ MB of shared memory but .* free"):
        check_room(1 << 60)
    check_room(1 << 20)
    # a model made in ordinary memory (one process) is checked too, before any allocation
    import psutil

    from engine.word2vec.state import ModelState
    from engine.word2vec.vocab import Vocab

    n = psutil.virtual_memory().available // (4 * 100_000) + 1   # syn0 alone is too much
    huge = Vocab([f"w{i}" for i in range(n)], np.ones(n, np.int64), n, 1)
    with pytest.raises(ResourceError, match=r"the model's weights need [\d,]+ MB but"):
        ModelState(ModelConfig(vector_size=100_000, min_count=1), huge)


def test_a_second_job_in_one_folder_encodes_with_its_own_vocabulary(tmp_path):
    """The encoder's table was cached by folder path only: a second job writing another
    vocabulary into the same cache folder was encoded with the first one's ids."""
    folder = str(tmp_path / "ids")
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("".join(f"a{i % 500} b{i % 7} c{i % 3}\n" for i in range(3000)))
    second.write_text("zz yy\nyy xx\n" * 50)
    prepare_corpus(CorpusSource(str(first)), folder, min_count=1)
    vocab, stream, _ = prepare_corpus(CorpusSource(str(second)), folder, min_count=1)
    assert len(vocab) == 3
    check_stream(stream, len(vocab))             # ids inside this vocabulary
    ids = np.fromfile(stream.path, dtype=np.int32)
    words = [vocab.words[i] for i in ids if i >= 0]
    assert words[:4] == ["zz", "yy", "yy", "xx"]


def test_a_stream_or_weights_that_do_not_fit_are_refused_before_any_kernel(tmp_path):
    sents = [["a", "b", "c", "d"]] * 50
    big = build_vocab_iterable(sents, min_count=1)
    stream = encode_iterable(sents, big, str(tmp_path / "ids"), chunk_words=100)
    small = build_vocab_iterable([["a", "b"]] * 50, min_count=1)
    state = ModelState(ModelConfig(vector_size=8, min_count=1, epochs=1), small)
    arrays = state.kernel_arrays()
    v = check_arrays(arrays, state.kernel_settings)
    with pytest.raises(EngineError, match=r"holds ids .* vocabulary has 2 words"):
        check_stream(stream, v)
    from engine.local.engine import LocalEngine
    from engine.local.sources import plan_tasks

    tasks = plan_tasks(stream, 1, 0.025, 0.0001, 1)
    before = state.syn0.copy()
    with pytest.raises(EngineError, match="another vocabulary"):
        LocalEngine(1, show_progress=False).train(arrays, state.kernel_settings, stream, tasks)
    assert np.array_equal(state.syn0, before)
    bad = dict(arrays, syn1neg=np.zeros((2, 9), np.float32))
    with pytest.raises(EngineError, match=r"syn1neg has shape \(2, 9\), expected"):
        check_arrays(bad, state.kernel_settings)


def test_a_saved_model_whose_matrices_disagree_does_not_load(tmp_path):
    vocab = build_vocab_iterable([["a", "b", "c"]] * 20, min_count=1)
    state = ModelState(ModelConfig(vector_size=8, min_count=1), vocab)
    folder = str(tmp_path / "m")
    state.save(folder)
    assert ModelState.load(folder).syn0.shape == (3, 8)
    np.save(os.path.join(folder, "syn1neg.npy"), np.zeros((3, 5), np.float32))
    with pytest.raises(EngineError, match=r"syn1neg has shape \(3, 5\), expected \(3, 8\)"):
        ModelState.load(folder)


def test_any_token_survives_the_vocabulary_round_trip(tmp_path):
    odd = ["new\nline", "carriage\rreturn", "tab\tbed", "back\\slash", "\\n", "plain", "é"]
    vocab = Vocab.build({w: 10 + i for i, w in enumerate(odd)}, 100, 1, 0, 1, "test")
    vocab.save(str(tmp_path))
    back = Vocab.load(str(tmp_path))
    assert back.words == vocab.words and back.counts.tolist() == vocab.counts.tolist()


def test_a_word_with_whitespace_is_refused_by_the_word2vec_format(tmp_path):
    path = tmp_path / "v.bin"
    KeyedVectors.from_arrays(["good", "fine"], np.ones((2, 3), np.float32)).save_word2vec_format(str(path))
    before = path.read_bytes()
    kv = KeyedVectors.from_arrays(["good", "new york", "x"], np.ones((3, 3), np.float32))
    for binary in (True, False):
        with pytest.raises(EngineError, match="'new york' cannot be written"):
            kv.save_word2vec_format(str(path), binary=binary)
    assert path.read_bytes() == before            # the earlier file is intact


# ---- checkpoints and resume ----------------------------------------------------------------

def _ckpt_job(tmp_path, corpus, extra=""):
    job = tmp_path / "job.toml"
    job.write_text(f'[corpus]\npath = "{corpus}"\n[model]\nsg = 1\nmin_count = 1\n'
                   f'epochs = 60\nvector_size = 16\nwindow = 4\nsample = 0\n'
                   f'[engine]\nworkers = 2\nchunk_words = 3000\n'
                   f'[output]\ndir = "{tmp_path / "out"}"\ncheckpoint_every = "60000"\n'
                   f'progress_seconds = 0.2\n{extra}')
    return job


def test_a_run_killed_whole_resumes_from_its_checkpoint(tmp_path, planted_file):
    """SIGKILL of the whole run (parent and its training processes), then --resume: the run
    continues from the newest checkpoint, trains the planned words once in total, learns,
    and nothing of the killed run is left behind."""
    import glob
    import json
    import signal
    import time

    from engine.runtime.shm import PREFIX

    from conftest import topic_precision

    topics, corpus = planted_file
    job = _ckpt_job(tmp_path, corpus)
    cmd, env = engine_command()
    proc = subprocess.Popen(cmd + ["run", str(job)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    ckpts = tmp_path / "out" / "checkpoints"
    deadline = time.monotonic() + 120
    while len(glob.glob(str(ckpts / "ckpt-*" / "progress.json"))) < 2:
        assert proc.poll() is None, "the run ended before its second checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out" / "report.json").exists(), "the run finished before the kill"
    older, newest = sorted(glob.glob(str(ckpts / "ckpt-[0-9]*")),
                           key=lambda p: int(p.rsplit("-", 1)[1]))[-2:]
    # the newest is damaged (a bit flipped in its weights): --resume takes the older one
    weights = sorted(glob.glob(os.path.join(newest, "model", "*.npy")))[0]
    with open(weights, "r+b") as fh:
        fh.seek(-8, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-8, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 0x10]))
    # from Python: a checkpoint's model loads and trains on
    from engine import Word2Vec

    m = Word2Vec.load(os.path.join(older, "model"), workers=1)
    assert m.train(corpus_file=corpus, epochs=1)[1] == m.corpus_total_words

    r = subprocess.run(cmd + ["run", str(job), "--resume"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"checkpoint skipped, {newest}" in r.stderr and f"the older {older}" in r.stderr
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    res = rep["resumed"]
    assert res["from"] == older and len(res["skipped"]) == 1 and newest in res["skipped"][0]
    assert res["words_done_before"] > 0 and res["tasks_done_before"] > 0
    planned = 60 * rep["corpus_words"]
    assert rep["trained_words_total"] == planned                  # every task trained once
    assert rep["trained_words"] == planned - res["words_done_before"]
    assert 0 <= res["retrained_words"] < rep["trained_words"]
    assert not ckpts.exists()                                     # done with them
    kv = KeyedVectors.load_word2vec_format(str(tmp_path / "out" / "vectors.bin"), binary=True)
    assert topic_precision(kv, topics) >= 0.9
    # the killed run's shared memory and id-stream folder were swept by the resumed one
    assert not glob.glob(f"/dev/shm/{PREFIX}{proc.pid}_*")
    assert not glob.glob(os.path.join(tempfile.gettempdir(), f"engine-ids-{proc.pid}-*"))


def test_a_checkpoint_of_another_job_is_refused(tmp_path, planted_file):
    import json

    topics, corpus = planted_file
    job = _ckpt_job(tmp_path, corpus)
    cmd, env = engine_command()
    r = subprocess.run(cmd + ["run", str(job), "--resume"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 2 and "no checkpoint to resume from" in r.stderr
    # a checkpoint written by this job, then the job changes
    from engine.word2vec.checkpoint import Checkpointer, job_identity, parse_every
    from engine.config import load_job

    cfg = load_job(str(job))
    vocab = build_vocab_iterable([["a", "b"]] * 5, min_count=1)
    state = ModelState(cfg.model, vocab)
    cp = Checkpointer(str(tmp_path / "out" / "checkpoints"), parse_every("1"), state,
                      {"chunks": 1}, job_identity(cfg.model, cfg.engine.chunk_words,
                                                  [str(corpus)]))
    cp.save({k: getattr(state, k) for k in ("syn0", "syn1neg", "syn1")}, {0}, 10, 0.0)
    cp.close()
    r = subprocess.run(cmd + ["run", str(job), "--resume", "--set", "model.window=3"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "checkpoint is of another job: [model] window: 4 then, 3 now" in r.stderr
    with open(corpus, "a") as fh:
        fh.write("one more line\n")
    r = subprocess.run(cmd + ["run", str(job), "--resume"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 2 and f"corpus file {corpus}: changed" in r.stderr
    assert json.loads((tmp_path / "out" / "checkpoints" / "ckpt-000001" /
                       "progress.json").read_text())["done_tasks"] == [0]     # kept


def test_checkpoint_every_is_checked(tmp_path):
    from engine.word2vec.checkpoint import parse_every
    from engine.errors import ConfigError

    assert parse_every("10m") == ("seconds", 600) and parse_every("5000") == ("words", 5000)
    assert parse_every("") is None
    for bad in ("ten minutes", "-5", "0", "5x"):
        with pytest.raises(ConfigError, match="checkpoint_every"):
            parse_every(bad)


def _checkpointer(tmp_path, folder):
    from engine.word2vec.checkpoint import Checkpointer, job_identity, parse_every

    corpus = tmp_path / "c.txt"
    corpus.write_text("a b\n" * 5)
    state = ModelState(ModelConfig(min_count=1, vector_size=4),
                       build_vocab_iterable([["a", "b"]] * 5, min_count=1))
    cp = Checkpointer(str(folder), parse_every("1"), state, {"chunks": 1},
                      job_identity(state.config, 1000, [str(corpus)]))
    weights = {k: getattr(state, k) for k in ("syn0", "syn1neg", "syn1")}
    return cp, weights


def test_progress_is_sealed_and_a_damaged_one_falls_back_to_the_older(tmp_path):
    import json

    from engine.word2vec.checkpoint import resume_point
    from engine.word2vec.state import ModelState as State

    folder = tmp_path / "checkpoints"
    cp, weights = _checkpointer(tmp_path, folder)
    for words in (10, 20):
        cp.save(weights, {0}, words, 0.0)
        cp.close()
    newest = folder / "ckpt-000002" / "progress.json"
    progress = json.loads(newest.read_text())
    assert progress["checksum"]
    path, got, state, skipped = resume_point(str(folder), State.load)
    assert path.endswith("ckpt-000002") and got["words_done"] == 20 and not skipped
    newest.write_text(json.dumps(dict(progress, words_done=999)))      # edited
    path, got, state, skipped = resume_point(str(folder), State.load)
    assert path.endswith("ckpt-000001") and got["words_done"] == 10
    assert len(skipped) == 1 and "checksum" in skipped[0]
    (folder / "ckpt-000001" / "progress.json").write_text("{")             # both damaged
    with pytest.raises(EngineError, match="no checkpoint to resume from.*checksum"):
        resume_point(str(folder), State.load)


def test_a_checkpoint_that_cannot_be_written_does_not_stop_training(tmp_path, monkeypatch,
                                                                     caplog):
    from engine.word2vec import state as state_module

    folder = tmp_path / "checkpoints"
    cp, weights = _checkpointer(tmp_path, folder)
    real = state_module.ModelState.save
    calls = []

    def full_disk_once(self, path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(self, path)

    monkeypatch.setattr(state_module.ModelState, "save", full_disk_once)
    cp.save(weights, {0}, 10, 0.0)                  # fails in the background
    cp.close()
    cp.save(weights, {0, 1}, 20, 0.0)               # no error raised: the next one is tried
    cp.close()
    assert "No space left" in cp.written[0]["failed"] and "failed" not in cp.written[1]
    assert [p.name for p in sorted(folder.glob("ckpt-*"))] == ["ckpt-000002"]
    assert "training goes on" in caplog.text
