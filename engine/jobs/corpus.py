"""The corpus side of a job: the source (a file, a folder or the bundled sample), the
vocabulary (pass 1), the id stream (pass 2, or reused from a cache folder) and the scratch
folder that holds it."""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time

from ..config import CorpusConfig, EngineConfig, ModelConfig
from ..errors import ConfigError, EngineError
from ..runtime.shm import sweep_temp_dirs
from ..text.corpus import CorpusSource
from ..word2vec.idstream import IdStream
from ..word2vec.prepare import (
    build_vocab,
    build_vocab_iterable,
    encode_corpus,
    encode_iterable,
)
from ..word2vec.vocab import Vocab
from .outputs import check_writable

log = logging.getLogger("engine")
IDS_PREFIX = "engine-ids-"


def corpus_source(cfg: CorpusConfig) -> CorpusSource:
    path = cfg.path
    if not path:
        from ..text.sample import sample_corpus_path

        path = sample_corpus_path()
        log.info("corpus: the bundled sample (King James Bible) at %s", path)
    return CorpusSource(path, cfg.format, cfg.encoding_errors)


def make_vocab(corpus, model: ModelConfig, engine: EngineConfig) -> Vocab:
    """Pass 1 over a CorpusSource (parallel) or an iterable of token lists."""
    if isinstance(corpus, CorpusSource):
        return build_vocab(corpus, model.min_count, model.max_final_vocab, model.max_vocab_size,
                           engine.processes, engine.block_bytes)
    return build_vocab_iterable(corpus, model.min_count, model.max_final_vocab,
                                model.max_vocab_size)


def make_stream(corpus, vocab: Vocab, folder: str, engine: EngineConfig) -> IdStream:
    """Pass 2: encode the corpus once into an id stream in `folder`."""
    if isinstance(corpus, CorpusSource):
        return encode_corpus(corpus, vocab, folder, engine.chunk_words, engine.processes,
                             engine.block_bytes)
    return encode_iterable(corpus, vocab, folder, engine.chunk_words)


class scratch_folder:
    """The id-stream folder: the configured cache_dir (kept) or a temp folder (removed)."""

    def __init__(self, configured: str = ""):
        self.configured = configured

    def __enter__(self) -> str:
        if self.configured:
            check_writable(self.configured, "[engine] cache_dir")
            self.lock = lock_folder(self.configured, "[engine] cache_dir")
            return self.configured
        sweep_temp_dirs(IDS_PREFIX)           # left by runs that were killed
        try:
            self.tmp = tempfile.mkdtemp(prefix=f"{IDS_PREFIX}{os.getpid()}-")
        except OSError as exc:
            raise EngineError(f"{tempfile.gettempdir()}: cannot make a folder for the id "
                              f"stream there ({exc.strerror or exc}); set [engine] "
                              f"cache_dir") from None
        return self.tmp

    def __exit__(self, *exc):
        if not self.configured:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            os.close(self.lock)                  # the lock goes with the descriptor


LOCK_FILE = ".engine.lock"


def lock_folder(folder: str, what: str) -> int:
    """Hold `folder` for this job alone: an exclusive lock on folder/.engine.lock, which the
    kernel frees when the process ends, however it ends (a SIGKILLed job does not leave the
    folder locked). A second job is refused in one line naming the holder. Returns the
    descriptor to close when done."""
    path = os.path.join(folder, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"{what} {folder}: cannot create {LOCK_FILE} "
                          f"({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another job"
        finally:
            os.close(fd)
        raise ConfigError(f"{what} {folder} is in use by {holder}; give each job that runs "
                          f"at the same time a cache_dir of its own") from None
    os.ftruncate(fd, 0)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    os.pwrite(fd, f"the job of process {os.getpid()} (started {started})".encode(), 0)
    return fd


def stream_for(source: CorpusSource, vocab: Vocab, folder: str, e: EngineConfig,
               reuse: bool) -> tuple[IdStream, dict]:
    """The id stream of the corpus in this vocabulary: the one in `folder` if it was encoded
    with exactly these words (a kept cache_dir), else encoded again."""
    t0 = time.perf_counter()
    if reuse:
        try:
            if Vocab.load(folder).words == vocab.words:
                stream = IdStream(folder)
                log.info("id stream reused from %s", folder)
                return stream, {"vocab_seconds": 0.0, "encode_seconds": 0.0}
        except (OSError, ValueError, KeyError, EngineError):
            pass
    stream = encode_corpus(source, vocab, folder, e.chunk_words, e.processes, e.block_bytes)
    return stream, {"vocab_seconds": 0.0, "encode_seconds": time.perf_counter() - t0}


def retrained_words(stream: IdStream, running: list) -> int:
    """Words of the tasks that were running when the checkpoint's weights were copied:
    their partial updates are in those weights, and they train again."""
    raw = stream.chunks[:, 2]
    return int(sum(int(raw[t % len(raw)]) for t in running))
