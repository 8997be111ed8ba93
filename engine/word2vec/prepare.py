"""Pass 1 (count words -> Vocab) and pass 2 (encode text -> id stream), in parallel over
blocks of the corpus with a pool of spawned processes, memory bounded by the blocks in
flight. Also the same two passes for an in-memory iterable of token lists."""
from __future__ import annotations

import errno
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

from .._text import TokenTable
from ..errors import EngineError, ResourceError
from ..runtime.procs import ProcessPool
from ..text.corpus import (
    MAX_SENTENCE_WORDS,
    Block,
    CorpusSource,
    decode,
    iter_token_batches,
)
from .checks import check_disk_room
from .idstream import (
    CHUNKS_FILE,
    EOS,
    IDS_FILE,
    META_FILE,
    OOV,
    IdStream,
    IdStreamWriter,
)
from .vocab import Vocab, prune_counts

log = logging.getLogger("engine")

_INDEX = None                        # (vocab folder, TokenTable word -> id) of this process
# whitespace that str.split() knows beyond ASCII: such text takes the Python path
_UNICODE_SPACE = re.compile("[\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


def _clean(block: Block, errors: str) -> tuple[bytes | None, list[str] | None]:
    """The block as UTF-8 bytes for the C tokenizer, or (None, tokens) when it holds Unicode
    whitespace (then Python's str.split decides). Invalid UTF-8 raises CorpusError (strict)
    or is replaced/dropped and re-encoded."""
    data = block.data
    if data.isascii():
        return data, None
    text = decode(block, errors)
    if _UNICODE_SPACE.search(text):
        if block.text8:
            return None, text.replace("\x00", " ").split()
        return None, [t for line in text.replace("\x00", " ").split("\n")
                      for t in line.split() + ["\n"]][:-1]
    return (data if errors == "strict" else text.encode("utf-8", "surrogateescape")), None


def count_block(block: Block, errors: str) -> tuple[tuple, int, int]:
    """Token counts (a TokenTable export), raw token total and line count of one block."""
    table = TokenTable()
    data, tokens = _clean(block, errors)
    if data is not None:
        raw = table.count_bytes(data)
    else:
        raw = 0
        for t in tokens:
            if t != "\n":
                table.add(t.encode("utf-8", "surrogateescape"))
                raw += 1
    return table.export(), raw, block.data.count(b"\n")


def _encoder(vocab_folder: str) -> TokenTable:
    """This process's word -> id table for the vocabulary saved in `vocab_folder` (loaded
    once per process: the same pool serves counting, then encoding)."""
    global _INDEX
    # keyed by the vocabulary file itself, not just its folder: a later job writing another
    # vocabulary into the same folder must not be encoded with this one's ids
    st = os.stat(os.path.join(vocab_folder, "vocab.tsv"))
    key = (os.path.abspath(vocab_folder), st.st_ino, st.st_size, st.st_mtime_ns)
    if _INDEX is None or _INDEX[0] != key:
        _INDEX = (key, TokenTable.from_words(Vocab.load(vocab_folder).words))
    return _INDEX[1]


def encode_block(block: Block, errors: str, vocab_folder: str) -> np.ndarray:
    """int32 ids of a block: OOV for unknown words, EOS at line ends (lines format)."""
    table = _encoder(vocab_folder)
    data, tokens = _clean(block, errors)
    if data is not None:
        return table.encode_bytes(data, not block.text8, OOV, EOS)
    get = table.get
    return np.array([EOS if t == "\n" else get(t.encode("utf-8", "surrogateescape"), OOV)
                     for t in tokens], dtype=np.int32)


class _Runner:
    """Runs block functions in-process (1 worker / small corpus) or in a ProcessPool."""

    def __init__(self, workers: int):
        self.pool = ProcessPool(workers, "engine-prepare") if workers > 1 else None

    def map(self, fn, items):
        if self.pool is None:
            return (fn(*item) for item in items)
        return self.pool.map(fn, items)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if self.pool is not None:
            self.pool.close(force=exc_type is not None)


def _pool_size(source: CorpusSource, workers: int, block_bytes: int) -> int:
    """Processes for counting/encoding: none extra for a corpus of under two blocks (a
    file gone meanwhile counts as empty here: reading it says what happened)."""
    total = 0
    for f in source.files:
        try:
            total += os.path.getsize(f)
        except OSError:
            pass
    return 1 if total < 2 * block_bytes else min(workers, os.cpu_count() or 1)


def _count(run: _Runner, source: CorpusSource, min_count: int, max_final_vocab: int,
           max_vocab_size: int, block_bytes: int) -> Vocab:
    table = TokenTable()
    raw = lines = 0
    min_reduce = 1
    items = ((b, source.encoding_errors) for b in source.blocks(block_bytes))
    for block_counts, block_raw, block_lines in run.map(count_block, items):
        table.merge(block_counts)
        raw += block_raw
        lines += block_lines
        while max_vocab_size and len(table) > max_vocab_size:
            table = table.pruned(min_reduce)
            min_reduce += 1
    return Vocab.from_table(table, raw, min_count, max_final_vocab, lines, source.path)


def check_stream_room(folder: str, vocab: Vocab, files: int) -> None:
    """Enough disk in `folder` for the id stream (4 bytes a word and a sentence end, at
    most), found before encoding; a stream already there is replaced, so its room counts."""
    ids = vocab.raw_words + vocab.sentences + vocab.raw_words // MAX_SENTENCE_WORDS + files
    try:
        old = os.path.getsize(os.path.join(folder, IDS_FILE))
    except OSError:
        old = 0
    check_disk_room(folder, 4 * ids + (1 << 16), f"the id stream of {vocab.raw_words:,} words",
                    "set [engine] cache_dir to a folder on a bigger disk", credit=old)


def _save_vocab(vocab: Vocab, folder: str) -> None:
    """The vocabulary beside its id stream (the encoders load it from there)."""
    try:
        vocab.save(folder)
    except OSError as exc:
        raise _write_error(folder, "the vocabulary", exc) from None


def _write_error(folder: str, what: str, exc: OSError) -> EngineError:
    """One line for a failed write: a ResourceError when the disk is full."""
    cls = ResourceError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else EngineError
    return cls(f"{folder}: cannot write {what} ({exc.strerror or exc})")


def _discard_stream(folder: str) -> None:
    """Remove a stream whose encoding failed, so that no later run takes it for whole."""
    for name in (META_FILE, CHUNKS_FILE, IDS_FILE):
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass


def _encode(run: _Runner, source: CorpusSource, vocab_folder: str, folder: str,
            chunk_words: int, block_bytes: int) -> IdStream:
    """Pass 2 into `folder`; on any failure nothing of a stream is left there, and a
    disk that fills up is a ResourceError naming the folder."""
    writer = None
    try:
        writer = IdStreamWriter(folder, chunk_words)
        for path in source.files:
            items = ((b, source.encoding_errors, vocab_folder)
                     for b in source._file_blocks(path, block_bytes))
            for arr in run.map(encode_block, items):
                writer.add(arr)
            writer.end_file()
        return writer.close()
    except BaseException as exc:
        if writer is not None:
            writer._fh.close()               # (the writer has no abort of its own)
        _discard_stream(folder)
        if isinstance(exc, OSError):
            raise _write_error(folder, "the id stream", exc) from None
        raise


def build_vocab(source: CorpusSource, min_count: int = 5, max_final_vocab: int = 0,
                max_vocab_size: int = 0, workers: int = 1, block_bytes: int = 2 << 20) -> Vocab:
    """Pass 1: count every token of the corpus (in C tables, merged here), keep the
    vocabulary."""
    with _Runner(_pool_size(source, workers, block_bytes)) as run:
        return _count(run, source, min_count, max_final_vocab, max_vocab_size, block_bytes)


def encode_corpus(source: CorpusSource, vocab: Vocab, folder: str, chunk_words: int,
                  workers: int = 1, block_bytes: int = 2 << 20) -> IdStream:
    """Pass 2: write the id stream of the corpus into `folder`."""
    os.makedirs(folder, exist_ok=True)
    check_stream_room(folder, vocab, len(source.files))
    _save_vocab(vocab, folder)
    with _Runner(_pool_size(source, workers, block_bytes)) as run:
        return _encode(run, source, folder, folder, chunk_words, block_bytes)


def prepare_corpus(source: CorpusSource, folder: str, min_count: int = 5,
                   max_final_vocab: int = 0, max_vocab_size: int = 0, workers: int = 1,
                   block_bytes: int = 2 << 20, chunk_words: int = 20_000
                   ) -> tuple[Vocab, IdStream, dict]:
    """Both passes with one pool: count (the table of every distinct token is C memory,
    freed once the vocabulary is kept), then encode the id stream into `folder`."""
    import time

    os.makedirs(folder, exist_ok=True)
    with _Runner(_pool_size(source, workers, block_bytes)) as run:
        t0 = time.perf_counter()
        vocab = _count(run, source, min_count, max_final_vocab, max_vocab_size, block_bytes)
        log.info("counted: %d words kept, %.1f s", len(vocab), time.perf_counter() - t0)
        check_stream_room(folder, vocab, len(source.files))
        _save_vocab(vocab, folder)
        t1 = time.perf_counter()
        stream = _encode(run, source, folder, folder, chunk_words, block_bytes)
    return vocab, stream, {"vocab_seconds": t1 - t0, "encode_seconds": time.perf_counter() - t1}


# ---- in-memory iterables (Python API) ------------------------------------------------------

def build_vocab_iterable(sentences: Iterable, min_count: int = 5, max_final_vocab: int = 0,
                         max_vocab_size: int = 0) -> Vocab:
    counts: Counter = Counter()
    raw = n = 0
    min_reduce = 1
    for batch in iter_token_batches(sentences):
        for sentence in batch:
            counts.update(sentence)
            raw += len(sentence)
            n += 1
        if max_vocab_size and len(counts) > max_vocab_size:
            min_reduce = prune_counts(counts, max_vocab_size, min_reduce)
    return Vocab.build(counts, raw, min_count, max_final_vocab, n, "sentences")


def encode_iterable(sentences: Iterable, vocab: Vocab, folder: str, chunk_words: int) -> IdStream:
    writer = IdStreamWriter(folder, chunk_words)
    get = vocab.index.get
    for batch in iter_token_batches(sentences):
        ids: list[int] = []
        for sentence in batch:                 # the writer cuts sentences over the cap
            ids.extend(get(t, OOV) for t in sentence)
            ids.append(EOS)
        writer.add(np.array(ids, dtype=np.int32))
    return writer.close()
