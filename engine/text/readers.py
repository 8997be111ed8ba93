"""Corpus readers with gensim's names and behaviour: LineSentence, Text8Corpus and
PathLineSentences. Each streams (nothing is held whole) and yields lists of str tokens, as
gensim's do; given to `Word2Vec`, a reader that names files is trained through the parallel
encoder (the same path as `corpus_file=`), not a Python loop per sentence.
"""
from __future__ import annotations

import io
import itertools
import os

from .corpus import MAX_SENTENCE_WORDS as MAX_SENTENCE
from .corpus import CorpusSource, open_binary
from ..errors import CorpusError


def _path_tokens(path: str, block: int = 1 << 20):
    """The tokens of a (possibly compressed) file, in pieces of about `block` characters
    (a single-line text8 file is never held whole)."""
    carry = ""
    with open_binary(path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as fh:
        while data := fh.read(block):
            data = carry + data
            tokens = data.split()
            carry = tokens.pop() if tokens and not data[-1].isspace() else ""
            yield tokens
    if carry:
        yield [carry]


def _path_lines(path: str):
    """Token lists of every line of a (possibly compressed) file, uncut."""
    with open_binary(path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as fh:
        for line in fh:
            yield line.split()


def _cut(tokens: list, n: int):
    for i in range(0, len(tokens), n):
        yield tokens[i:i + n]


class LineSentence:
    """One sentence per line, tokens split on whitespace; a line longer than
    `max_sentence_length` is cut into pieces; `limit` reads only the first lines. `source` is
    a path (.gz, .bz2, .xz read transparently) or an open file (text or bytes)."""

    def __init__(self, source, max_sentence_length: int = MAX_SENTENCE, limit: int | None = None):
        self.source = source
        self.max_sentence_length = int(max_sentence_length)
        self.limit = limit
        if isinstance(source, (str, os.PathLike)):
            CorpusSource(str(source), "lines")           # missing file: one clear line now

    def corpus_source(self) -> CorpusSource | None:
        """The files behind this reader, when the fast path reads exactly what iterating
        would yield (a path, no limit, the default sentence cap)."""
        if (isinstance(self.source, (str, os.PathLike)) and self.limit is None
                and self.max_sentence_length == MAX_SENTENCE):
            return CorpusSource(str(self.source), "lines")
        return None

    def _lines(self):
        if isinstance(self.source, (str, os.PathLike)):
            yield from _path_lines(str(self.source))
            return
        if hasattr(self.source, "seek"):
            self.source.seek(0)                          # re-iterable, like gensim's
        for line in self.source:
            if isinstance(line, bytes):
                line = line.decode("utf-8")
            yield line.split()

    def __iter__(self):
        for tokens in itertools.islice(self._lines(), self.limit):
            yield from _cut(tokens, self.max_sentence_length)


class Text8Corpus:
    """A file of whitespace-separated tokens with or without line ends (text8), yielded as
    sentences of `max_sentence_length` tokens."""

    def __init__(self, fname, max_sentence_length: int = MAX_SENTENCE):
        self.fname = str(fname)
        self.max_sentence_length = int(max_sentence_length)
        CorpusSource(self.fname, "text8")

    def corpus_source(self) -> CorpusSource | None:
        if self.max_sentence_length == MAX_SENTENCE:
            return CorpusSource(self.fname, "text8")
        return None

    def __iter__(self):
        rest: list = []
        n = self.max_sentence_length
        for piece in _path_tokens(self.fname):
            rest.extend(piece)
            while len(rest) >= n:
                yield rest[:n]
                rest = rest[n:]
        if rest:
            yield rest


class PathLineSentences:
    """Every file in a folder (sorted by name), each read like LineSentence; or one file."""

    def __init__(self, source, max_sentence_length: int = MAX_SENTENCE, limit: int | None = None):
        self.source = str(source)
        self.max_sentence_length = int(max_sentence_length)
        self.limit = limit
        if os.path.isfile(self.source):
            self.input_files = [self.source]
        elif os.path.isdir(self.source):
            self.input_files = sorted(os.path.join(self.source, f)
                                      for f in os.listdir(self.source)
                                      if os.path.isfile(os.path.join(self.source, f)))
            if not self.input_files:
                raise CorpusError(f"{self.source}: folder holds no files")
        else:
            raise CorpusError(f"{self.source}: no such file or folder")

    def corpus_source(self) -> CorpusSource | None:
        if self.limit is None and self.max_sentence_length == MAX_SENTENCE:
            src = CorpusSource(self.input_files[0], "lines")
            src.files = list(self.input_files)
            src.path = self.source
            return src
        return None

    def __iter__(self):
        for path in self.input_files:
            yield from LineSentence(path, self.max_sentence_length, self.limit)
