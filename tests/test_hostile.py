"""Hostile input costs one clear line: a bad job file, corpus, output folder or
saved model is one line on stderr naming the file and what is wrong, exit code 2, no
traceback, found before training, and nothing is lost or left half-written. Also: the
Huffman tree of a vocabulary of millions of words builds in seconds."""
import errno
import heapq
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.runtime.procs import engine_command
from engine.config import (_SECTION_TYPES, EvaluateConfig, JobConfig, ModelConfig, job_from_dict,
                           load_job)
from engine.text.corpus import MAX_SENTENCE_WORDS, MAX_TOKEN_BYTES, CorpusSource
from engine.errors import ConfigError, CorpusError, EngineError, ResourceError
from engine.word2vec.idstream import IDS_FILE, META_FILE
from engine.word2vec.prepare import (build_vocab, build_vocab_iterable, encode_corpus,
                                     prepare_corpus)
from engine.word2vec.state import ModelState
from engine.jobs.outputs import check_evaluate_files
from engine.word2vec.vocab import Vocab

FUZZ = settings(deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


def _fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)


def _corpus(path, lines=2000):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    path.write_text("".join(" ".join(rng.choice(words, 12)) + "\n" for _ in range(lines)))
    return path


def _job(tmp_path, corpus, out, extra="", model=""):
    job = tmp_path / "job.toml"
    job.write_text(f'[corpus]\npath = "{corpus}"\n[model]\nmin_count = 1\nepochs = 1\n'
                   f'vector_size = 8\n{model}[output]\ndir = "{out}"\n{extra}')
    return job


def _engine(*args):
    cmd, env = engine_command()
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env,
                          timeout=300)


def _one_line(r) -> str:
    """The run failed with exit code 2 and said why in one line, without a traceback."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1, r.stderr
    return lines[0]


# ---- the job file -------------------------------------------------------------------------

@pytest.mark.parametrize("text,message", [
    ("[corpus]\npath = 'c.txt'\n[model\nsg = 1\n",
     "job.toml, line 3, column 7: not valid TOML: expected ']'"),
    ("[model]\nwindow =\n", "job.toml, line 2, column 9: not valid TOML: invalid value"),
    ("[model]\nwindwo = 3\n", "job.toml [model] windwo: unknown key (did you mean 'window'?)"),
    ("[modle]\n", "job.toml: unknown section [modle] (did you mean [model]?)"),
    ("[model]\ncolour = 3\n", "job.toml [model] colour: unknown key (known: 'sg', 'hs'"),
    ("[model]\nwindow = 'five'\n", "job.toml [model] window: expected an integer in [1, 1000], "
                                   "got 'five'"),
    ("[evaluate]\nanalogies = [1, 2]\n", "analogies: expected a list of strings, got [1, 2]"),
    ("[model]\nepochs = 1000000000\n", "[model] epochs: expected an integer in [1, 100000]"),
    ("[model]\nalpha = 1" + "0" * 400 + "\n", "[model] alpha: expected a number in (0.0, 10.0], "
                                               "got 1000"),
    ("[model]\nalpha = 0.01\nmin_alpha = 0.1\n",
     "job.toml [model] min_alpha: expected <= alpha (0.01), got 0.1"),
    ("[model]\nnegative = 0\n", "job.toml [model] negative: must be > 0 when hs = 0"),
    ("[engine]\nblock_bytes = 99999999999999\n", "[engine] block_bytes: expected an integer"),
])
def test_a_bad_job_file_is_one_line_naming_the_file_and_key(tmp_path, text, message):
    job = tmp_path / "job.toml"
    job.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_job(str(job))
    assert message in str(e.value).replace(str(tmp_path) + "/", "")
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_a_job_path_that_is_no_job_file(tmp_path):
    (tmp_path / "j").mkdir()
    with pytest.raises(ConfigError, match=r"j: is a folder, expected a job file"):
        load_job(str(tmp_path / "j"))
    (tmp_path / "bin.toml").write_bytes(b"sg = 1\n\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"bin.toml, line 2: not UTF-8 text"):
        load_job(str(tmp_path / "bin.toml"))
    with pytest.raises(ConfigError, match=r"nope.toml: job file not found"):
        load_job(str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"--set model.window=3: \[model\] is not a table"):
        job_from_dict({"model": 5}, ["model.window=3"], "job.toml")


def test_a_missing_evaluate_file_is_found_before_training(tmp_path):
    corpus = _corpus(tmp_path / "c.txt")
    check_evaluate_files(EvaluateConfig(analogies=[], similarity=[]))    # none: fine
    job = _job(tmp_path, corpus, tmp_path / "out",
               extra=f'[evaluate]\nanalogies = ["{tmp_path}/questions.txt"]\n')
    r = _engine("run", str(job))
    line = _one_line(r)
    assert f"[evaluate] analogies: {tmp_path}/questions.txt: file not found" in line
    assert "vocabulary:" not in r.stderr and not (tmp_path / "out" / "vectors.bin").exists()


# ---- the corpus ---------------------------------------------------------------------------

def test_a_corpus_that_is_no_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    for path in (tmp_path / "fifo", "/dev/zero"):     # read twice / never ending
        with pytest.raises(CorpusError, match=r"not a regular file"):
            CorpusSource(str(path))
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "fifo")
    with pytest.raises(CorpusError, match=r"d/fifo: not a regular file"):
        CorpusSource(str(tmp_path / "d"))


def test_permission_denied_names_the_file_or_folder(tmp_path, monkeypatch):
    import engine.text.corpus

    corpus = _corpus(tmp_path / "c.txt", 10)

    def deny(path, *args, **kwargs):        # what open() raises for a chmod 000 file
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(engine.text.corpus, "open", deny, raising=False)
    with pytest.raises(CorpusError, match=r"c.txt: cannot open \(Permission denied\)"):
        build_vocab(CorpusSource(str(corpus)), min_count=1)
    monkeypatch.undo()
    folder = tmp_path / "locked"
    folder.mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(CorpusError, match=r"locked: cannot list this corpus folder "
                                          r"\(Permission denied\)"):
        CorpusSource(str(folder))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_an_unreadable_corpus_file(tmp_path):
    corpus = _corpus(tmp_path / "c.txt", 10)
    corpus.chmod(0)
    with pytest.raises(CorpusError, match=r"c.txt: cannot open \(Permission denied\)"):
        build_vocab(CorpusSource(str(corpus)), min_count=1)


def test_empty_files_in_a_folder_are_skipped_unless_all_are(tmp_path, caplog):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.txt").write_text("")
    (folder / "b.txt").write_text("x y\nz\n")
    assert list(CorpusSource(str(folder))) == [["x", "y"], ["z"]]
    assert "a.txt: empty corpus file, skipped" in caplog.text
    (folder / "b.txt").write_text("")
    with pytest.raises(CorpusError, match=r"f: all 2 corpus files are empty"):
        build_vocab(CorpusSource(str(folder)))


def test_binary_garbage_is_refused_as_not_text_or_replaced(tmp_path):
    garbage = tmp_path / "g.bin"
    garbage.write_bytes(np.random.default_rng(0).bytes(1 << 20))
    r = _engine("run", str(_job(tmp_path, garbage, tmp_path / "out")))
    assert re.search(r"g.bin: invalid UTF-8 at byte \d+ \(of the decompressed text\): not text",
                     _one_line(r))
    src = CorpusSource(str(garbage), encoding_errors="replace")
    vocab, stream, _ = prepare_corpus(src, str(tmp_path / "ids"), min_count=1)
    assert stream.raw_words == vocab.raw_words > 10_000
    assert all(len(w.encode("utf-8", "surrogateescape")) <= MAX_TOKEN_BYTES for w in vocab.words)


def test_a_line_of_30_mb_is_read_in_bounded_blocks_and_cut_into_sentences(tmp_path):
    words = 5_300_000
    path = tmp_path / "line.txt"
    path.write_text(" ".join(f"w{i % 5000}" for i in range(words)) + "\n")
    assert path.stat().st_size > 30_000_000
    src = CorpusSource(str(path), format="lines")
    block = 1 << 20
    sizes = [len(b.data) for b in src.blocks(block)]
    assert max(sizes) <= 2 * block and sum(sizes) == path.stat().st_size   # nothing lost
    vocab, stream, _ = prepare_corpus(src, str(tmp_path / "ids"), min_count=1,
                                      block_bytes=block)
    assert vocab.raw_words == stream.raw_words == words and len(vocab) == 5000
    assert stream.sentences == math.ceil(words / MAX_SENTENCE_WORDS)
    ids = np.fromfile(stream.path, dtype=np.int32)
    ends = np.flatnonzero(ids == -1)
    assert np.diff(np.r_[-1, ends]).max() - 1 == MAX_SENTENCE_WORDS


@pytest.mark.parametrize("fmt", ["lines", "text8"])
def test_a_word_of_megabytes_is_cut_to_max_token_bytes(tmp_path, fmt, caplog):
    text = "a b c\n" * 200 + "x" * (5 << 20) + " d\n" + "a" + "é" * (1 << 20) + "\ne f\n"
    path = tmp_path / "big.txt"
    path.write_text(text)
    src = CorpusSource(str(path), format=fmt)
    assert max(len(b.data) for b in src.blocks(1 << 16)) <= 2 << 16
    vocab, stream, _ = prepare_corpus(src, str(tmp_path / "ids"), min_count=1,
                                      block_bytes=1 << 16)
    long_x, long_e = "x" * MAX_TOKEN_BYTES, "a" + "é" * ((MAX_TOKEN_BYTES - 1) // 2)
    assert long_x in vocab.index and long_e in vocab.index     # cut before a character
    assert max(len(w.encode()) for w in vocab.words) == MAX_TOKEN_BYTES
    assert vocab.raw_words == stream.raw_words == 200 * 3 + 5
    got = [vocab.words[i] for i in np.fromfile(stream.path, dtype=np.int32) if i >= 0]
    assert got[600:603] == [long_x, "d", long_e]
    assert f"big.txt: 2 token(s) longer than {MAX_TOKEN_BYTES:,} bytes" in caplog.text
    assert caplog.text.count("token(s) longer") == 1                 # once, not per pass


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([1, 3, 999, 1000, 1001, 2500, 9000]),
                          st.sampled_from([" ", "\n", "\t", "  \n", "\x1f"])),
                min_size=1, max_size=30),
       st.sampled_from([4096, 5000, 8192]), st.sampled_from(["lines", "text8"]))
def test_tokens_survive_any_block_size_and_long_ones_are_cut(lengths, block, fmt):
    """Every token comes through the blocks whole, whatever the block size, except that a
    token over MAX_TOKEN_BYTES comes through as its first MAX_TOKEN_BYTES bytes."""
    tokens = [chr(97 + i % 26) * n for i, (n, _) in enumerate(lengths)]
    text = "".join(t + sep for t, (_, sep) in zip(tokens, lengths))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write(text)
    try:
        src = CorpusSource(fh.name, format=fmt)
        got = b"".join(b.data + b" " for b in src.blocks(block)).decode().split()
    finally:
        os.unlink(fh.name)
    assert got == [t[:MAX_TOKEN_BYTES] for t in tokens]


def test_a_file_that_changes_or_goes_between_the_passes_stops_the_job(tmp_path):
    corpus = _corpus(tmp_path / "c.txt", 200)
    src = CorpusSource(str(corpus))
    vocab = build_vocab(src, min_count=1)
    with open(corpus, "a") as fh:
        fh.write("one more line\n")
    cache = tmp_path / "ids"
    with pytest.raises(CorpusError, match=r"c.txt: changed since its words were counted "
                                          r"\(size [\d,]+ -> [\d,]+ bytes\)"):
        encode_corpus(src, vocab, str(cache), 1000)
    assert not (cache / IDS_FILE).exists() and not (cache / META_FILE).exists()
    src = CorpusSource(str(corpus))
    vocab = build_vocab(src, min_count=1)
    info = corpus.stat()
    os.utime(corpus, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))     # touched
    with pytest.raises(CorpusError, match=r"same size, new modification time"):
        encode_corpus(src, vocab, str(cache), 1000)
    src = CorpusSource(str(corpus))
    vocab = build_vocab(src, min_count=1)
    corpus.unlink()
    with pytest.raises(CorpusError, match=r"c.txt: disappeared since its words were counted"):
        encode_corpus(src, vocab, str(cache), 1000)


def test_a_file_that_grows_while_it_is_counted(tmp_path):
    corpus = _corpus(tmp_path / "c.txt", 2000)
    blocks = CorpusSource(str(corpus)).blocks(4096)
    next(blocks)
    with open(corpus, "a") as fh:
        fh.write("appended while being read\n")
    with pytest.raises(CorpusError, match=r"c.txt: changed while it was being read"):
        list(blocks)


# ---- output -------------------------------------------------------------------------------

class _tmpfs:
    """A small tmpfs mounted on `path` (root only; the test is skipped where it cannot)."""

    def __init__(self, path, size="2m", readonly=False):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        opts = f"size={size}" + (",ro" if readonly else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", self.path],
                           capture_output=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        if subprocess.run(["umount", self.path], capture_output=True).returncode:
            subprocess.run(["umount", "-l", self.path], check=True)     # busy: detach it


def _fill(folder, leave):
    free = shutil.disk_usage(folder).free
    with open(os.path.join(folder, "filler"), "wb") as fh:
        fh.write(b"\0" * max(free - leave, 0))


def _contents(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


def test_a_full_disk_is_one_line_and_the_earlier_outputs_stay_whole(tmp_path, monkeypatch):
    corpus = _corpus(tmp_path / "c.txt")
    with _tmpfs(tmp_path / "small") as disk:
        out = os.path.join(disk, "out")
        job = _job(tmp_path, corpus, out)
        assert _engine("run", str(job), "--quiet").returncode == 0
        before = _contents(out)
        _fill(disk, 16 << 10)
        line = _one_line(_engine("run", str(job), "--quiet"))      # found before training
        assert f"[output] dir {out}: 0.0" in line and "MB free on its disk, the outputs " \
                                                       "need about" in line
        assert _contents(out) == before
        # the estimate passed but the disk fills while writing (another writer, say)
        import engine.jobs.run
        from engine.jobs.run import run_job

        monkeypatch.setattr(engine.jobs.run, "check_output_room", lambda *a: None)
        with pytest.raises(EngineError, match=rf"\[output\] dir {out}: cannot write "
                                              rf"(vectors.bin|model) \(No space left on "
                                              rf"device\); the earlier outputs there are "
                                              rf"unchanged"):
            run_job(load_job(str(job)), show_progress=False)
        assert _contents(out) == before                 # whole, and no temporary left


def test_a_read_only_output_folder_fails_before_anything_is_read(tmp_path):
    corpus = _corpus(tmp_path / "c.txt")
    with _tmpfs(tmp_path / "ro", "1m", readonly=True) as disk:
        r = _engine("run", str(_job(tmp_path, corpus, os.path.join(disk, "out"))))
        assert "cannot write there (Read-only file system)" in _one_line(r)
        assert "vocabulary:" not in r.stderr


def test_a_cache_dir_that_cannot_be_used_is_one_line(tmp_path):
    from engine.jobs.corpus import scratch_folder

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(EngineError, match=rf"\[engine\] cache_dir {blocker}: cannot write "
                                          rf"there \(File exists\)"):
        with scratch_folder(str(blocker)):
            pass


def test_no_room_for_the_id_stream_is_found_before_encoding(tmp_path, monkeypatch):
    import engine.word2vec.prepare

    corpus = _corpus(tmp_path / "c.txt", 45_000)           # 540,000 words: ~2.3 MB of ids
    with _tmpfs(tmp_path / "small") as disk:
        with pytest.raises(ResourceError, match=rf"{disk}: [\d.]+ MB free on its disk, the "
                                                rf"id stream of 540,000 words needs about"):
            prepare_corpus(CorpusSource(str(corpus)), disk, min_count=1)
        monkeypatch.setattr(engine.word2vec.prepare, "check_stream_room", lambda *a: None)
        with pytest.raises(ResourceError, match=rf"{disk}: cannot write the id stream \(No "
                                                rf"space left on device\)"):
            prepare_corpus(CorpusSource(str(corpus)), disk, min_count=1)
        assert not os.path.exists(os.path.join(disk, IDS_FILE))      # no partial stream


# ---- saved models -------------------------------------------------------------------------

def _saved_model(folder):
    vocab = build_vocab_iterable([["a", "b", "c", "a", "d\te", "a", "b"]] * 20, min_count=1)
    state = ModelState(ModelConfig(vector_size=4, min_count=1, hs=1), vocab,
                       epochs_trained=3, words_trained=420)
    state.syn1neg[:] = np.arange(state.syn1neg.size).reshape(state.syn1neg.shape)
    state.save(str(folder))
    return state


def _same(a: ModelState, b: ModelState) -> bool:
    return (a.config == b.config and a.vocab.words == b.vocab.words and
            a.vocab.counts.tolist() == b.vocab.counts.tolist() and
            (a.vocab.raw_words, a.vocab.sentences) == (b.vocab.raw_words, b.vocab.sentences)
            and (a.epochs_trained, a.words_trained) == (b.epochs_trained, b.words_trained)
            and all(np.array_equal(getattr(a, n), getattr(b, n))
                    for n in ("syn0", "syn1neg", "syn1")))


MODEL_FILES = ["model.json", "vocab.json", "vocab.tsv", "syn0.npy", "syn1neg.npy", "syn1.npy"]


@pytest.mark.parametrize("name", MODEL_FILES)
def test_a_damaged_file_of_a_saved_model_is_named_and_refused(tmp_path, name):
    folder = tmp_path / "m"
    original = _saved_model(folder)
    assert _same(ModelState.load(str(folder)), original)
    path = folder / name
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(EngineError, match=rf"{name}: "):
        ModelState.load(str(folder))
    flipped = bytearray(whole)
    flipped[len(whole) - 12] ^= 0x04              # a digit, a count, a weight, a key
    path.write_bytes(bytes(flipped))
    with pytest.raises(EngineError, match=rf"{name}: "):
        ModelState.load(str(folder))
    path.unlink()
    with pytest.raises(EngineError, match=rf"{name}|no model.json"):
        ModelState.load(str(folder))


def test_a_model_saved_before_checksums_still_loads_and_is_checked(tmp_path):
    folder = tmp_path / "m"
    original = _saved_model(folder)
    meta = json.loads((folder / "model.json").read_text())
    old = {"format": 1, "model": meta["model"], "epochs_trained": 3, "words_trained": 420}
    (folder / "model.json").write_text(json.dumps(old))
    vmeta = json.loads((folder / "vocab.json").read_text())
    (folder / "vocab.json").write_text(json.dumps(
        {k: vmeta[k] for k in ("raw_words", "sentences", "escaped")}))
    assert _same(ModelState.load(str(folder)), original)
    syn0 = (folder / "syn0.npy").read_bytes()
    (folder / "syn0.npy").write_bytes(syn0[:-5])
    with pytest.raises(EngineError, match=r"syn0.npy: truncated: [\d,]+ bytes, expected"):
        ModelState.load(str(folder))
    v = len(original.vocab)
    claim = f"({v}, 4), }}".encode()           # the header claims 64 GB, same header length
    huge = syn0.replace(claim + b" " * 9, f"({v}000000000, 4), }}".encode())
    assert len(huge) == len(syn0)
    (folder / "syn0.npy").write_bytes(huge)
    with pytest.raises(EngineError, match=rf"syn0.npy: truncated: [\d,]+ bytes, expected "
                                          rf"{v * 16},000,000,\d+ for a \({v}000000000, 4\)"):
        ModelState.load(str(folder))


@pytest.mark.parametrize("line,message", [
    ("a\t3\na\t2\n", r"line 2: the word 'a' again"),
    ("a\t3\nb\t²\n", r"line 2: expected word<TAB>count"),
    ("a\t3\nb 2\n", r"line 2: expected word<TAB>count"),
    ("a\t-3\n", r"line 1: expected word<TAB>count"),
])
def test_a_vocabulary_file_with_a_bad_line_names_it(tmp_path, line, message):
    (tmp_path / "vocab.tsv").write_text(line)
    (tmp_path / "vocab.json").write_text('{"raw_words": 5, "sentences": 1, "escaped": true}')
    with pytest.raises(EngineError, match=message):
        Vocab.load(str(tmp_path))


# ---- fuzz ---------------------------------------------------------------------------------

_NAMES = sorted({n for cls in _SECTION_TYPES.values()
                 for n in cls.__dataclass_fields__} | set(_SECTION_TYPES))
_SCALARS = (st.integers() | st.integers(min_value=-3, max_value=1200) | st.floats() |
            st.booleans() | st.text(max_size=8) | st.none() | st.sampled_from(
                ["auto", "lines", "sum", "10m", "", "[]"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) |
                       st.dictionaries(st.sampled_from(_NAMES) | st.text(max_size=6), inner,
                                       max_size=3), max_leaves=6)
_KEYS = st.sampled_from(_NAMES) | st.text(max_size=8)


@_fuzz(1500)
@given(st.dictionaries(st.sampled_from(list(_SECTION_TYPES)) | st.text(max_size=8),
                       st.dictionaries(_KEYS, _VALUES, max_size=5) | _VALUES, max_size=4),
       st.lists(st.builds(lambda s, k, v: f"{s}.{k}={v}", st.sampled_from(list(_SECTION_TYPES)),
                          _KEYS, st.text(max_size=6)) | st.text(max_size=10), max_size=2))
def test_fuzz_job_from_dict_gives_a_job_or_one_config_error(data, overrides):
    try:
        job = job_from_dict(data, overrides, "job.toml")
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(job, JobConfig)


_GOOD = ('[corpus]\npath = "c.txt"\nformat = "lines"\n[model]\nsg = 1\nwindow = 5\n'
         'alpha = 0.025\nmin_alpha = 0.0001\n[engine]\nworkers = 2\n[output]\ndir = "out"\n'
         '[evaluate]\nanalogies = ["q.txt"]\ntopn = 5\n')


@_fuzz(1200)
@given(st.one_of(
    st.text(max_size=80),
    st.binary(max_size=80),
    st.lists(st.tuples(st.integers(0, len(_GOOD)), st.integers(0, 4),
                       st.text("=[]\"'.,#\n -0123456789abcdefghijklmnopqrstuvwxyz", max_size=4)),
             min_size=1, max_size=4)))
def test_fuzz_load_job_on_random_toml_gives_a_job_or_one_config_error(tmp_path_factory, edit):
    if isinstance(edit, list):                  # a valid job with a few spans replaced
        text = _GOOD
        for at, cut, new in edit:
            text = text[:at] + new + text[at + cut:]
        edit = text
    path = tmp_path_factory.getbasetemp() / "fuzz.toml"
    path.write_bytes(edit if isinstance(edit, bytes) else edit.encode("utf-8", "surrogatepass"))
    try:
        job = load_job(str(path))
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(job, JobConfig)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz") / "m"
    state = _saved_model(folder)
    return folder, state, {n: (folder / n).read_bytes() for n in MODEL_FILES}


@_fuzz(1000)
@given(st.sampled_from(MODEL_FILES), st.data())
def test_fuzz_a_corrupted_saved_model_loads_equal_or_is_refused(saved_model, name, data):
    folder, original, files = saved_model
    whole = files[name]
    if data.draw(st.booleans()):
        damaged = whole[:data.draw(st.integers(0, len(whole)))]
    else:
        damaged = bytearray(whole)
        for _ in range(data.draw(st.integers(1, 3))):
            damaged[data.draw(st.integers(0, len(whole) - 1))] = data.draw(st.integers(0, 255))
    (folder / name).write_bytes(bytes(damaged))
    try:
        loaded = ModelState.load(str(folder))
    except EngineError as exc:
        assert "\n" not in str(exc)
    else:
        assert _same(loaded, original)
    finally:
        (folder / name).write_bytes(whole)


# ---- scale: the Huffman tree --------------------------------------------------------------

def _huffman_before(counts):
    """Vocab.huffman as it was (a heap of (count, id), then a walk per word): the reference
    the linear version must match exactly."""
    n = len(counts)
    lens = np.zeros(n, dtype=np.int32)
    if n < 2:
        return (np.zeros((n, 1), np.uint8), np.zeros((n, 1), np.int32), lens)
    heap = [(int(c), i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    parent = np.zeros(2 * n - 1, dtype=np.int64)
    bit = np.zeros(2 * n - 1, dtype=np.uint8)
    for inner in range(n, 2 * n - 1):
        c1, a = heapq.heappop(heap)
        c2, b = heapq.heappop(heap)
        parent[a], parent[b] = inner, inner
        bit[b] = 1
        heapq.heappush(heap, (c1 + c2, inner))
    root = 2 * n - 2
    paths = []
    for w in range(n):
        codes, points, node = [], [], w
        while node != root:
            codes.append(bit[node])
            node = parent[node]
            points.append(node - n)
        paths.append((codes[::-1], points[::-1]))
        lens[w] = len(codes)
    depth = int(lens.max())
    codes_arr = np.zeros((n, depth), dtype=np.uint8)
    points_arr = np.zeros((n, depth), dtype=np.int32)
    for w, (codes, points) in enumerate(paths):
        codes_arr[w, :len(codes)] = codes
        points_arr[w, :len(points)] = points
    return codes_arr, points_arr, lens


def _count_sets():
    rng = np.random.default_rng(7)
    yield from ([1], [5, 5], [3, 1], [2, 2, 2], [0, 0, 1], [1, 2, 4, 8, 16, 32],
                [7] * 257, [1, 1, 2, 2, 3, 3, 4, 4])
    for _ in range(30):
        n = int(rng.integers(2, 3000))
        high = int(rng.choice([2, 5, 50, 10**6]))        # few values: many ties
        counts = rng.integers(1, high + 1, n)
        yield np.sort(counts)[::-1] if rng.random() < 0.7 else counts


def test_the_linear_huffman_tree_is_the_heap_tree_exactly():
    for counts in _count_sets():
        v = Vocab([str(i) for i in range(len(counts))], counts, int(np.sum(counts)))
        new, old = v.huffman(), _huffman_before(v.counts)
        for a, b in zip(new, old):
            assert a.dtype == b.dtype and np.array_equal(a, b), list(counts)[:20]


def test_a_vocabulary_of_half_a_million_words_builds_its_tree_in_seconds():
    n = 500_000
    counts = np.maximum(5, 2e9 / np.arange(1, n + 1) ** 1.05).astype(np.int64)
    v = Vocab([str(i) for i in range(n)], counts, int(counts.sum()))
    t0 = time.perf_counter()
    codes, points, lens = v.huffman()
    took = time.perf_counter() - t0
    assert took < 6.0, took               # a bound a heap and per-word walk would miss
    assert (counts * lens).sum() == _huffman_cost(counts)
    assert points.max() == n - 2 and (points[:, 0] == n - 2).all()


def _huffman_cost(counts):
    """Sum of the merge sums: the weighted path length of any optimal tree."""
    h = [int(c) for c in counts]
    heapq.heapify(h)
    cost = 0
    while len(h) > 1:
        s = heapq.heappop(h) + heapq.heappop(h)
        cost += s
        heapq.heappush(h, s)
    return cost


# ---- hostile vector files ----------------------------------------------------------------

def test_a_binary_header_with_a_huge_dimension_is_refused(tmp_path):
    from engine.errors import FormatError
    from engine.vectors.keyedvectors import KeyedVectors

    path = tmp_path / "huge.bin"
    path.write_bytes(b"3 1000000000\nword " + b"\0" * 64)
    with pytest.raises(FormatError, match=r"line 1: 1000000000 dimensions, expected 1 to "
                                          r"100,000 \(max_dim="):
        KeyedVectors.load_word2vec_format(str(path), binary=True)
    fine = tmp_path / "wide.bin"                         # the largest allowed reads as usual
    dim = 100_000
    vecs = np.arange(2 * dim, dtype=np.float32).reshape(2, dim)
    fine.write_bytes(b"2 %d\n" % dim + b"a " + vecs[0].tobytes() + b"\nb " + vecs[1].tobytes()
                     + b"\n")
    kv = KeyedVectors.load_word2vec_format(str(fine), binary=True)
    assert np.array_equal(kv["b"], vecs[1])
    wider = tmp_path / "wider.bin"
    wider.write_bytes(b"1 100001\nc " + np.ones(100_001, np.float32).tobytes())
    with pytest.raises(FormatError, match="100001 dimensions"):
        KeyedVectors.load_word2vec_format(str(wider), binary=True)
    assert KeyedVectors.load_word2vec_format(str(wider), binary=True,
                                             max_dim=200_000)["c"].shape == (100_001,)


def test_a_binary_record_without_its_space_is_refused_in_bounded_memory(tmp_path):
    import gzip

    from engine.errors import FormatError
    from engine.vectors.keyedvectors import KeyedVectors

    path = tmp_path / "bomb.bin.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:    # ~30 MB of one word, unpacked
        fh.write(b"1 100000\n")
        for _ in range(30):
            fh.write(b"w" * (1 << 20))
    with pytest.raises(FormatError, match=r"no space in 1,048,576 bytes"):
        KeyedVectors.load_word2vec_format(str(path), binary=True)


def test_a_one_line_compressed_bomb_is_refused_at_the_line_limit(tmp_path):
    import gzip

    from engine.errors import FormatError
    from engine.vectors.keyedvectors import KeyedVectors
    from engine.vectors.w2vformat import MAX_LINE

    path = tmp_path / "line.txt.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:     # 65 MB without a newline
        for _ in range(MAX_LINE // (1 << 20) + 1):
            fh.write(b"1" * (1 << 20))
    t0 = time.monotonic()
    with pytest.raises(FormatError, match=r"a line longer than 67,108,864 bytes"):
        KeyedVectors.load_word2vec_format(str(path))
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize("attr,message", [
    ({"dtype": "(536870911,)f4", "values": [1.0, 2.0]}, "expected a plain number"),
    ({"dtype": "<f4", "values": [1.0]}, "1 values for 2 keys"),
    ({"dtype": "<i8", "values": [[1, 2], [3, 4]]}, "one value per key"),
    ({"dtype": "O", "values": [1, 2]}, "expected a plain number"),
])
def test_a_saved_attribute_must_be_one_scalar_per_key(tmp_path, attr, message):
    from engine.errors import FormatError
    from engine.vectors.keyedvectors import KeyedVectors

    kv = KeyedVectors.from_arrays(["a", "b"], np.ones((2, 3), np.float32), [5, 4])
    kv.save(str(tmp_path / "kv"))
    meta = json.loads((tmp_path / "kv").read_text())
    meta["vecattrs"]["hostile"] = attr
    (tmp_path / "kv").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match=message):
        KeyedVectors.load(str(tmp_path / "kv"))
