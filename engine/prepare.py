"""Pass 1 (count words -> Vocab) and pass 2 (encode text -> id stream), in parallel over
blocks of the corpus with a pool of spawned processes, memory bounded by the blocks in
flight. Also the same two passes for an in-memory iterable of token lists."""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from .corpus import MAX_SENTENCE_WORDS, Block, CorpusSource, decode, iter_token_batches
from .procs import sigint_ignored_in_children
from .idstream import EOS, OOV, IdStream, IdStreamWriter
from .vocab import Vocab, prune_counts

_LINE_MARK = "\x00"
_INDEX: dict | None = None          # pool worker's word -> id map (set by _init_encoder)


def _text(block: Block, errors: str) -> str:
    text = decode(block, errors)
    if _LINE_MARK in text:
        text = text.replace(_LINE_MARK, " ")
    return text


def count_block(block: Block, errors: str) -> tuple[Counter, int, int]:
    """Token counts, raw token total and line count of one block."""
    tokens = _text(block, errors).split()
    return Counter(tokens), len(tokens), block.data.count(b"\n")


def _init_encoder(words: list[str]) -> None:
    global _INDEX
    _INDEX = {w: i for i, w in enumerate(words)}
    _INDEX[_LINE_MARK] = EOS


def encode_block(block: Block, errors: str) -> np.ndarray:
    """int32 ids of a block: OOV for unknown words, EOS at line ends (lines format)."""
    text = _text(block, errors)
    if not block.text8:
        text = text.replace("\n", " \x00 ")
    get = _INDEX.get
    return np.array([get(t, OOV) for t in text.split()], dtype=np.int32)


def ordered_map(pool, fn: Callable, items: Iterable, inflight: int) -> Iterator:
    """pool.imap without reading ahead of `inflight` items (imap would read the whole
    corpus into memory); results come back in order."""
    queue: deque = deque()
    for item in items:
        queue.append(pool.apply_async(fn, item))
        if len(queue) >= inflight:
            yield queue.popleft().get()
    while queue:
        yield queue.popleft().get()


class _Runner:
    """Runs block functions in-process (1 worker / small corpus) or in a spawn pool."""

    def __init__(self, workers: int, initializer=None, initargs=()):
        self.workers = workers
        self.pool = None
        if workers > 1:
            with sigint_ignored_in_children():
                self.pool = mp.get_context("spawn").Pool(workers, initializer, initargs)
        elif initializer:
            initializer(*initargs)

    def map(self, fn, items):
        if self.pool is None:
            return (fn(*item) for item in items)
        return ordered_map(self.pool, fn, items, inflight=2 * self.workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            if exc[0] is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()


def _pool_size(source: CorpusSource, workers: int, block_bytes: int) -> int:
    size = sum(os.path.getsize(f) for f in source.files)
    return 1 if size < 2 * block_bytes else min(workers, os.cpu_count() or 1)


def build_vocab(source: CorpusSource, min_count: int = 5, max_final_vocab: int = 0,
                max_vocab_size: int = 0, workers: int = 1, block_bytes: int = 2 << 20) -> Vocab:
    """Pass 1: count every token of the corpus, then keep the vocabulary."""
    counts: Counter = Counter()
    raw = lines = 0
    min_reduce = 1
    items = ((b, source.encoding_errors) for b in source.blocks(block_bytes))
    with _Runner(_pool_size(source, workers, block_bytes)) as run:
        for block_counts, block_raw, block_lines in run.map(count_block, items):
            counts.update(block_counts)
            raw += block_raw
            lines += block_lines
            if max_vocab_size and len(counts) > max_vocab_size:
                min_reduce = prune_counts(counts, max_vocab_size, min_reduce)
    return Vocab.build(counts, raw, min_count, max_final_vocab, lines, source.path)


def encode_corpus(source: CorpusSource, vocab: Vocab, folder: str, chunk_words: int,
                  workers: int = 1, block_bytes: int = 2 << 20) -> IdStream:
    """Pass 2: write the id stream of the corpus into `folder`."""
    writer = IdStreamWriter(folder, chunk_words)
    n = _pool_size(source, workers, block_bytes)
    with _Runner(n, _init_encoder, (vocab.words,)) as run:
        for path in source.files:
            items = ((b, source.encoding_errors) for b in source._file_blocks(path, block_bytes))
            for arr in run.map(encode_block, items):
                writer.add(arr)
            writer.end_file()
    return writer.close()


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
        for sentence in batch:
            for start in range(0, max(len(sentence), 1), MAX_SENTENCE_WORDS):
                ids.extend(get(t, OOV) for t in sentence[start:start + MAX_SENTENCE_WORDS])
                ids.append(EOS)
        writer.add(np.array(ids, dtype=np.int32))
    return writer.close()


# ---- both passes, isolated in their own process --------------------------------------------

def _prepare_here(source: CorpusSource, folder: str, opts: dict) -> dict:
    import time

    t0 = time.perf_counter()
    vocab = build_vocab(source, opts["min_count"], opts["max_final_vocab"],
                        opts["max_vocab_size"], opts["workers"], opts["block_bytes"])
    t1 = time.perf_counter()
    vocab.save(folder)
    encode_corpus(source, vocab, folder, opts["chunk_words"], opts["workers"], opts["block_bytes"])
    return {"vocab_seconds": t1 - t0, "encode_seconds": time.perf_counter() - t1}


def _prepare_main(path: str, fmt: str, errors: str, folder: str, opts: dict, conn) -> None:
    """Entry point of the preparation process: the full word count (every distinct token
    of the corpus) lives and dies here, never in the long-lived training parent."""
    import signal
    import traceback

    from .errors import EngineError

    def stop(signum, frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, stop)              # unwind: the pool is terminated too
    try:
        conn.send(("ok", _prepare_here(CorpusSource(path, fmt, errors), folder, opts)))
    except EngineError as exc:
        conn.send(("user", type(exc).__name__, str(exc)))
    except Exception:
        conn.send(("crash", traceback.format_exc()))
    finally:
        conn.close()


def prepare_corpus(source: CorpusSource, folder: str, min_count: int = 5,
                   max_final_vocab: int = 0, max_vocab_size: int = 0, workers: int = 1,
                   block_bytes: int = 2 << 20, chunk_words: int = 20_000) -> tuple[Vocab, IdStream, dict]:
    """Count, keep the vocabulary, encode the id stream into `folder`. A corpus bigger than
    a couple of blocks is prepared in a spawned process (with its own pool), so the memory
    of counting every distinct token is returned to the system before training starts."""
    from . import errors as errs

    opts = {"min_count": min_count, "max_final_vocab": max_final_vocab,
            "max_vocab_size": max_vocab_size, "workers": workers, "block_bytes": block_bytes,
            "chunk_words": chunk_words}
    if _pool_size(source, workers, block_bytes) == 1:
        times = _prepare_here(source, folder, opts)
    else:
        ctx = mp.get_context("spawn")
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_prepare_main, name="engine-prepare",
                           args=(source.path, source.format, source.encoding_errors, folder,
                                 opts, child_end))
        with sigint_ignored_in_children():
            proc.start()
        child_end.close()
        try:
            try:
                msg = parent_end.recv()
            except EOFError:
                msg = ("crash", f"preparation process died (exit code {proc.exitcode})")
            proc.join()
        finally:
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
            parent_end.close()
        if msg[0] == "user":
            raise getattr(errs, msg[1], errs.EngineError)(msg[2])
        if msg[0] == "crash":
            raise errs.WorkerError(f"corpus preparation failed:\n{msg[1].rstrip()}")
        times = msg[1]
    return Vocab.load(folder), IdStream(folder), times
