import bz2
import gzip
import lzma

import numpy as np
import pytest

from engine.text.corpus import MAX_SENTENCE_WORDS, CorpusSource
from engine.errors import CorpusError
from engine.word2vec.prepare import build_vocab, encode_corpus
from engine.word2vec.idstream import ChunkReader
from conftest import decode_stream

LINES = ["the cat sat", "", "on the  mat", "the end"]


def _write(path, text: bytes):
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "wb") as fh:
        fh.write(text)
    return path


@pytest.mark.parametrize("suffix", [".txt", ".gz", ".bz2", ".xz"])
def test_lines_any_compression(tmp_path, suffix):
    p = _write(tmp_path / f"c{suffix}", ("\n".join(LINES) + "\n").encode())
    src = CorpusSource(str(p))
    assert [s for s in src.sentences() if s] == [l.split() for l in LINES if l]


def test_text8_single_line_cut_at_max_sentence(tmp_path):
    words = [f"w{i % 97}" for i in range(MAX_SENTENCE_WORDS * 2 + 5)]
    p = _write(tmp_path / "t8", (" " + " ".join(words)).encode())
    src = CorpusSource(str(p), format="text8")
    sents = list(src.sentences())
    assert [len(s) for s in sents] == [MAX_SENTENCE_WORDS, MAX_SENTENCE_WORDS, 5]
    assert sum(sents, []) == words


def test_text8_blocks_never_split_tokens(tmp_path):
    words = [f"word{i}" for i in range(5000)]
    p = _write(tmp_path / "t8", " ".join(words).encode())
    src = CorpusSource(str(p), format="text8")
    tokens = []
    for b in src.blocks(block_bytes=4096):           # many small blocks
        tokens += b.data.decode().split()
    assert tokens == words


def test_auto_detects_text8(tmp_path):
    p = _write(tmp_path / "t8.gz", b" ".join([b"abc"] * 400_000))   # 1.6 MB, no newline
    src = CorpusSource(str(p))
    assert src.is_text8(src.files[0])
    q = _write(tmp_path / "lines.txt", b"a b\nc d\n")
    assert not CorpusSource(str(q)).is_text8(str(q))


def test_directory_of_files(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    _write(d / "b.txt.gz", b"x y\n")
    _write(d / "a.txt", b"u v\nw\n")
    _write(d / ".hidden", b"nope\n")
    assert list(CorpusSource(str(d)).sentences()) == [["u", "v"], ["w"], ["x", "y"]]


def test_invalid_utf8_names_file_and_offset(tmp_path):
    p = _write(tmp_path / "bad.txt", b"good line\nbad \xff byte\n")
    with pytest.raises(CorpusError, match=r"bad.txt: invalid UTF-8 at byte 14"):
        list(CorpusSource(str(p)).sentences())
    with pytest.raises(CorpusError, match=r"bad.txt: invalid UTF-8 at byte 14"):
        build_vocab(CorpusSource(str(p)), min_count=1)
    ok = list(CorpusSource(str(p), encoding_errors="replace").sentences())
    assert ok == [["good", "line"], ["bad", "\ufffd", "byte"]]


def test_empty_and_missing(tmp_path):
    p = _write(tmp_path / "empty.txt", b"")
    with pytest.raises(CorpusError, match="empty.txt: corpus file is empty"):
        build_vocab(CorpusSource(str(p)))
    with pytest.raises(CorpusError, match="corpus file not found"):
        CorpusSource(str(tmp_path / "nope.txt"))
    (tmp_path / "d").mkdir()
    with pytest.raises(CorpusError, match="folder holds no corpus files"):
        CorpusSource(str(tmp_path / "d"))
    blank = _write(tmp_path / "blank.txt", b"\n\n  \n")
    with pytest.raises(CorpusError, match="no words found"):
        build_vocab(CorpusSource(str(blank)))


def test_no_word_reaches_min_count(tmp_path):
    p = _write(tmp_path / "c.txt", b"a b c\nd e\n")
    with pytest.raises(CorpusError, match="min_count=5"):
        build_vocab(CorpusSource(str(p)), min_count=5)


@pytest.mark.parametrize("workers", [1, 2])
def test_encode_round_trip(tmp_path, workers):
    rs = np.random.default_rng(0)
    vocab_words = [f"w{i}" for i in range(50)]
    lines = [" ".join(rs.choice(vocab_words, size=rs.integers(0, 30))) for _ in range(3000)]
    lines[7] = " ".join(["w1"] * (MAX_SENTENCE_WORDS + 3))       # a too-long line
    p = _write(tmp_path / "c.txt.gz", ("\n".join(lines) + "\n").encode())
    src = CorpusSource(str(p))
    vocab = build_vocab(src, min_count=40, workers=workers, block_bytes=8192)
    stream = encode_corpus(src, vocab, str(tmp_path / "ids"), chunk_words=500,
                           workers=workers, block_bytes=8192)
    ids = np.fromfile(stream.path, dtype=np.int32)
    # decode back: the sentences of the corpus with OOV words dropped, long line cut
    decoded = decode_stream(stream, vocab.words)
    want = []
    for s in src.sentences():
        want.append([w for w in s if w in vocab.index])
    assert [d for d in decoded if d] == [w for w in want if w]
    assert stream.raw_words == sum(len(l.split()) for l in lines) == vocab.raw_words
    ch = stream.chunks
    assert ch[0, 0] == 0 and ch[-1, 1] == len(ids)
    assert (ch[1:, 0] == ch[:-1, 1]).all()                      # contiguous, no overlap
    assert (ids[ch[:, 1] - 1] == -1).all()                      # every chunk ends a sentence
    assert ch[:, 2].sum() == stream.raw_words
    reader = ChunkReader(stream.path, stream.max_chunk_ids)
    assert np.array_equal(reader.read(*ch[1, :2]), ids[ch[1, 0]:ch[1, 1]])
    reader.close()


def test_parallel_and_serial_vocab_agree(tmp_path):
    rs = np.random.default_rng(1)
    words = [f"v{i}" for i in range(300)]
    text = "\n".join(" ".join(rs.choice(words, 20)) for _ in range(4000)) + "\n"
    p = _write(tmp_path / "c.txt", text.encode())
    a = build_vocab(CorpusSource(str(p)), min_count=2, workers=1, block_bytes=4096)
    b = build_vocab(CorpusSource(str(p)), min_count=2, workers=2, block_bytes=4096)
    assert a.words == b.words and np.array_equal(a.counts, b.counts)


def test_big_blocks_through_the_pool(tmp_path):
    """Blocks and results far larger than a pipe buffer (no send/send deadlock)."""
    rs = np.random.default_rng(3)
    words = np.array([f"tok{i}" for i in range(60_000)])
    lines = [" ".join(rs.choice(words, 40)) for _ in range(30_000)]      # ~7 MB
    p = _write(tmp_path / "c.txt", ("\n".join(lines) + "\n").encode())
    src = CorpusSource(str(p))
    one = build_vocab(src, min_count=1, workers=1, block_bytes=1 << 20)
    two = build_vocab(src, min_count=1, workers=2, block_bytes=1 << 20)
    assert one.words == two.words and np.array_equal(one.counts, two.counts)
    stream = encode_corpus(src, two, str(tmp_path / "ids"), 20_000, workers=2,
                           block_bytes=1 << 20)
    assert stream.n_ids == sum(len(l.split()) for l in lines) + len(lines)
