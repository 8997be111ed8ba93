"""Shared by the measuring tools: a corpus counted and encoded once, its chunks in memory
(so the timed loops do no I/O)."""
import os
import sys
import tempfile
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.text.corpus import CorpusSource  # noqa: E402
from engine.word2vec.idstream import ChunkReader  # noqa: E402
from engine.word2vec.prepare import build_vocab, encode_corpus  # noqa: E402


@contextmanager
def encoded(corpus: str, min_count: int = 5, chunk_words: int = 20_000):
    """Yields (vocab, stream, chunks): chunks[k] the ids of the stream's chunk k."""
    src = CorpusSource(corpus)
    vocab = build_vocab(src, min_count, workers=2)
    with tempfile.TemporaryDirectory() as tmp:
        stream = encode_corpus(src, vocab, tmp, chunk_words, workers=2)
        reader = ChunkReader(stream.path, stream.max_chunk_ids)
        try:
            yield vocab, stream, [reader.read(s, e).copy() for s, e, _ in stream.chunks]
        finally:
            reader.close()
