"""Corpus input, streamed: line-per-sentence files, text8-style single-line files, folders
of either, with transparent .gz/.bz2/.xz.

Text is read in blocks that end on a line end (lines) or on whitespace (text8), so a block
never splits a token or a UTF-8 character; blocks can be counted and encoded in parallel.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import CorpusError

MAX_SENTENCE_WORDS = 10_000          # longer lines / text8 streams are cut (as gensim does)
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_LAST_SPACE = re.compile(rb"[ \t\n\r\f\v][^ \t\n\r\f\v]*\Z")
_SNIFF_BYTES = 1 << 20


def read_error(path: str, exc: BaseException, offset: int) -> CorpusError:
    """One line for a file that cannot be read on: truncated or corrupt compressed data, or
    an I/O error, with where it happened (in decompressed bytes)."""
    if isinstance(exc, EOFError):
        return CorpusError(f"{path}: truncated: the compressed data ends early, after "
                           f"{offset:,}+ bytes of text (an interrupted download or copy?)")
    if isinstance(exc, (lzma.LZMAError, zlib.error)) or "invalid" in str(exc).lower() or \
            "crc" in str(exc).lower():
        return CorpusError(f"{path}: corrupt compressed data after {offset:,} bytes of text "
                           f"({exc})")
    return CorpusError(f"{path}: cannot read after {offset:,} bytes ({exc})")


def open_binary(path: str):
    """Open a corpus file for reading bytes, decompressing by extension."""
    opener = _OPENERS.get(os.path.splitext(path)[1].lower(), open)
    return opener(path, "rb")


@dataclass(frozen=True)
class Block:
    """A piece of one file: `data` begins at decompressed byte `offset` of `path`."""
    path: str
    offset: int
    data: bytes
    text8: bool


def decode(block: Block, errors: str) -> str:
    """Bytes -> str; an invalid byte is an error naming the file and its byte offset."""
    try:
        return block.data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{block.path}: invalid UTF-8 at byte {block.offset + exc.start} "
            f"(of the decompressed text); set [corpus] encoding_errors = \"replace\" "
            f"to substitute such bytes") from None


class CorpusSource:
    """The files of a corpus and how to read them. Re-iterable, never holds a whole file."""

    def __init__(self, path: str, format: str = "auto", encoding_errors: str = "strict"):
        self.path = str(path)
        self.format = format
        self.encoding_errors = encoding_errors
        self.files = self._list_files(self.path)

    @staticmethod
    def _list_files(path: str) -> list[str]:
        if not path:
            raise CorpusError("[corpus] path: no corpus given")
        if os.path.isdir(path):
            files = sorted(
                os.path.join(root, name)
                for root, dirs, names in os.walk(path)
                for name in names if not name.startswith("."))
            if not files:
                raise CorpusError(f"{path}: folder holds no corpus files")
            return files
        if not os.path.exists(path):
            raise CorpusError(f"{path}: corpus file not found")
        return [path]

    def is_text8(self, path: str) -> bool:
        if self.format != "auto":
            return self.format == "text8"
        try:
            with open_binary(path) as fh:
                head = b""
                while len(head) < _SNIFF_BYTES:     # (a compressed stream returns less)
                    more = fh.read(min(_SNIFF_BYTES - len(head), 1 << 16))
                    if not more:
                        break
                    head += more
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or isinstance(exc, PermissionError):
                raise CorpusError(f"{path}: cannot open ({exc.strerror or exc})") from None
            raise read_error(path, exc, len(head)) from None
        except (EOFError, lzma.LZMAError, zlib.error) as exc:
            raise read_error(path, exc, len(head)) from None
        return len(head) >= _SNIFF_BYTES and b"\n" not in head

    def blocks(self, block_bytes: int = 2 << 20) -> Iterator[Block]:
        """Yield blocks of every file in order; each file ends with its own last block."""
        for path in self.files:
            yield from self._file_blocks(path, block_bytes)

    def _file_blocks(self, path: str, block_bytes: int) -> Iterator[Block]:
        text8 = self.is_text8(path)
        offset = 0
        carry = b""
        any_data = False
        try:
            fh = open_binary(path)
        except OSError as exc:
            raise CorpusError(f"{path}: cannot open ({exc.strerror or exc})") from None
        with fh:
            while True:
                try:
                    data = fh.read(block_bytes)
                except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
                    raise read_error(path, exc, offset + len(carry)) from None
                if not data:
                    break
                any_data = True
                data = carry + data
                if text8:
                    m = _LAST_SPACE.search(data)
                    cut = m.start() + 1 if m else 0
                else:
                    cut = data.rfind(b"\n") + 1
                if cut == 0:
                    carry = data
                    continue
                yield Block(path, offset, data[:cut], text8)
                offset += cut
                carry = data[cut:]
        if carry:
            yield Block(path, offset, carry, text8)
        if not any_data:
            raise CorpusError(f"{path}: corpus file is empty")

    def sentences(self) -> Iterator[list[str]]:
        """Token lists as training sees them (long lines cut at MAX_SENTENCE_WORDS)."""
        for path in self.files:
            pending: list[str] = []
            for block in self._file_blocks(path, 2 << 20):
                text = decode(block, self.encoding_errors)
                if block.text8:
                    pending.extend(text.split())
                    while len(pending) >= MAX_SENTENCE_WORDS:
                        yield pending[:MAX_SENTENCE_WORDS]
                        pending = pending[MAX_SENTENCE_WORDS:]
                    continue
                for line in text.split("\n"):
                    tokens = line.split()
                    for i in range(0, len(tokens), MAX_SENTENCE_WORDS):
                        yield tokens[i:i + MAX_SENTENCE_WORDS]
            if pending:
                yield pending

    def __iter__(self):
        return self.sentences()


def iter_token_batches(sentences: Iterable, batch_words: int = 1 << 20) -> Iterator[list[list[str]]]:
    """Group an iterable of token lists into batches of about batch_words tokens."""
    batch, words = [], 0
    for i, sentence in enumerate(sentences):
        if isinstance(sentence, str) or not hasattr(sentence, "__iter__"):
            raise CorpusError(f"sentence {i}: expected a list of tokens, got "
                              f"{type(sentence).__name__}")
        sentence = list(sentence)
        batch.append(sentence)
        words += len(sentence)
        if words >= batch_words:
            yield batch
            batch, words = [], 0
    if batch:
        yield batch
