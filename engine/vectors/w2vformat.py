"""The original word2vec vector files, text and binary, read and written as gensim 4 does
(same bytes out; what gensim reads, read alike), compressed by suffix (.gz, .bz2, .xz).

Reading is stricter than gensim where gensim would return a wrong model quietly: a file cut
short (a text line without its newline, fewer vectors than the header declares), data after
the declared vectors, a line with too few or too many numbers, a text file read as binary or
the reverse: each is refused with a FormatError naming the file and the line or byte offset,
and nothing is returned. Words must be non-empty and free of ASCII whitespace, both ways:
such a word could not be read back.
"""
from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import re
import shutil
import zlib
from contextlib import contextmanager

import numpy as np

from ..runtime.atomic import atomic_file
from ..errors import (EngineError, FileAccessError, FormatError, MissingFileError,
                      NotSupportedError, TruncatedFileError)

log = logging.getLogger(__name__)

_COMPRESSED = {".gz": gzip, ".bz2": bz2, ".xz": lzma}
_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)
_CHUNK = 1 << 20
MAX_LINE = 64 << 20         # a longer line is refused (a text line of 100,000 numbers is ~1.5 MB)
MAX_DIM = 100_000           # a larger dimension in a header is refused unless the caller allows it
MAX_WORD = 1 << 20          # a binary record's word: at most this many bytes before its space
_WHITESPACE = re.compile(r"[ \t\n\r\x0b\x0c]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_ASCII_SPACE = b" \t\n\r\x0b\x0c"
_TEXT_BYTES = b"0123456789.+-eE" + _ASCII_SPACE     # what a text file's numbers are made of


# ---- files ---------------------------------------------------------------------------------

def _compressor(path: str):
    return _COMPRESSED.get(os.path.splitext(path)[1].lower())


class Reader:
    """A file's bytes, decompressed by suffix (unless decompress=False), with every read
    error turned into one naming the file: missing, unreadable, a corrupted / cut
    compressed stream."""

    def __init__(self, path: str, decompress: bool = True):
        self.path = path
        try:
            raw = open(path, "rb")
        except FileNotFoundError:
            raise MissingFileError(f"{path}: no such file") from None
        except OSError as exc:
            raise FileAccessError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        module = _compressor(path) if decompress else None
        self._fh = module.open(raw) if module else raw
        self._raw = raw
        self.offset = 0                       # bytes handed out so far (decompressed)

    def _call(self, method, *args) -> bytes:
        try:
            data = method(*args)
        except EngineError:
            raise
        except EOFError:
            raise TruncatedFileError(f"{self.path}: the compressed data ends early, after "
                                     f"{self.offset} bytes (truncated?)") from None
        except _DECOMPRESS_ERRORS as exc:
            raise FormatError(f"{self.path}: cannot decompress it after {self.offset} bytes "
                              f"({exc})") from None
        self.offset += len(data)
        return data

    def read(self, size: int) -> bytes:
        return self._call(self._fh.read, size)

    def readline(self, limit: int = MAX_LINE) -> bytes:
        """One line; a line longer than `limit` bytes is refused (a one-line file of
        gigabytes, or a compressed one that unpacks to that, cannot exhaust memory)."""
        line = self._call(self._fh.readline, limit + 1)
        if len(line) > limit:
            raise FormatError(f"{self.path}: byte offset {self.offset - len(line)}: a line "
                              f"longer than {limit:,} bytes (not a word2vec or vocabulary "
                              f"file?)")
        return line

    def close(self) -> None:
        self._fh.close()
        self._raw.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def writer(path: str, append: bool = False):
    """A binary file object that writes `path` atomically (a temp file beside it, fsynced,
    renamed over it: never half a file), compressed by suffix. With append, the existing
    file's bytes come first (a compressed file then gets a second stream, as gzip
    readers expect)."""
    try:
        with atomic_file(path, "wb") as raw:
            if append and os.path.exists(path):
                with open(path, "rb") as old:
                    shutil.copyfileobj(old, raw)
            module = _compressor(path)
            if module is gzip:
                with gzip.GzipFile(os.path.basename(path), "wb", fileobj=raw) as fh:
                    yield fh
            elif module is not None:
                with module.open(raw, "wb") as fh:
                    yield fh
            else:
                yield raw
    except EngineError:
        raise
    except OSError as exc:
        raise FileAccessError(f"{path}: cannot write it ({exc.strerror or exc}); nothing "
                              f"written") from None


# ---- words ---------------------------------------------------------------------------------

def bad_word(word: str) -> str | None:
    """Why `word` cannot be stored in a word2vec file (None if it can)."""
    if not word:
        return "words cannot be empty"
    if _WHITESPACE.search(word):
        return "words end at whitespace"
    return None


def check_words(path: str, words: list[str]) -> None:
    """Refuse, before anything is written, a word the format cannot hold."""
    if words and (min(map(len, words)) == 0 or _WHITESPACE.search("".join(words))):
        for word in words:
            why = bad_word(word)
            if why:
                raise FormatError(f"{path}: the word {word!r} cannot be written in the "
                                  f"word2vec format ({why}); nothing written")


# ---- reading -------------------------------------------------------------------------------

class _Rows:
    """A vectors array filled row by row; it grows as rows arrive (doubling), so that a
    header declaring a huge count allocates nothing the file does not back."""

    def __init__(self, expected: int, dim: int, dtype):
        self.expected, self.dim, self.dtype = expected, dim, np.dtype(dtype)
        self.array = np.empty((0, dim), dtype=self.dtype)
        self.n = 0

    def append(self, row) -> None:
        if self.n == len(self.array):
            first = max(1, (64 << 20) // max(1, self.dim * self.dtype.itemsize))
            grown = np.empty((min(self.expected, max(first, 2 * self.n)), self.dim),
                             dtype=self.dtype)
            grown[:self.n] = self.array[:self.n]
            self.array = grown
        self.array[self.n] = row
        self.n += 1

    def result(self) -> np.ndarray:
        return self.array if self.n == len(self.array) else self.array[:self.n].copy()


class _Collector:
    """Keys and vectors as read: a repeated word keeps its first vector (as gensim: the
    others are logged and dropped)."""

    def __init__(self, path: str, expected: int, dim: int, dtype):
        self.path = path
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        self.rows = _Rows(expected, dim, dtype)

    def add(self, word: str, vector, where: str) -> None:
        why = bad_word(word)
        if why:
            raise FormatError(f"{self.path}: {where}: the word {word!r} ({why})")
        if word in self.index:
            log.warning("%s: %s: duplicate word %r, keeping its first vector", self.path,
                        where, word)
            return
        self.index[word] = len(self.keys)
        self.keys.append(word)
        self.rows.append(vector)


def _header(reader: Reader, encoding: str, binary: bool,
            max_dim: int = MAX_DIM) -> tuple[int, int]:
    line = reader.readline()
    path = reader.path
    if not line.endswith(b"\n"):
        where = "in" if line else "before"
        raise TruncatedFileError(f"{path}: line 1: the file ends {where} its header (a line "
                                 f"'COUNT DIMENSIONS')")
    try:
        fields = line.decode(encoding).split()
    except UnicodeDecodeError:
        fields = []
    if len(fields) != 2 or not all(f.isascii() and f.isdigit() for f in fields):
        hint = "" if binary else "; a file without one: no_header=True"
        raise FormatError(f"{path}: line 1: expected a header 'COUNT DIMENSIONS', got "
                          f"{line[:60]!r}{hint}")
    n, dim = int(fields[0]), int(fields[1])
    if not 0 < dim <= max_dim:
        raise FormatError(f"{path}: line 1: {dim} dimensions, expected 1 to {max_dim:,} "
                          f"(max_dim= raises the limit for a file you trust)")
    return n, dim


def _read_binary(reader: Reader, rows: _Collector, n: int, dim: int, encoding: str,
                 unicode_errors: str, whole: bool) -> None:
    """n binary records 'WORD ' + dim little-endian float32; with whole (every declared
    vector read), only whitespace may follow. The buffer holds one record and what follows
    it: what is consumed is dropped before more is read, and a record that needs more is
    read up to its end at once, so no byte is copied more than twice."""
    path, vec_bytes = reader.path, 4 * dim
    buf, start, base = bytearray(), 0, reader.offset     # base: file offset of buf[0]
    for i in range(n):
        while True:
            space = buf.find(b" ", start)
            if space >= 0 and len(buf) - space - 1 >= vec_bytes:
                break
            if space < 0 and len(buf) - start > MAX_WORD:
                raise FormatError(f"{path}: byte offset {base + start}: no space in "
                                  f"{MAX_WORD:,} bytes where a word should end (not a "
                                  f"word2vec binary file?)")
            need = space + 1 + vec_bytes - len(buf) if space >= 0 else 0
            if start:                                # drop what was consumed
                del buf[:start]
                base, start = base + start, 0
            more = reader.read(max(_CHUNK, need))
            if not more:
                raise TruncatedFileError(
                    f"{path}: byte offset {base + len(buf)}: the file ends after {i} of the "
                    f"{n} vectors its header declares (truncated?)")
            buf += more
        where = f"byte offset {base + start}"
        try:
            word = buf[start:space].decode(encoding, unicode_errors).lstrip("\n")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{path}: byte offset {base + start + exc.start}: a word that "
                              f"is not valid {encoding} ({exc.reason})") from None
        if i == 0:
            first = bytes(buf[space + 1:space + 1 + vec_bytes])
            if first and not first.strip(_TEXT_BYTES):
                raise FormatError(f"{path}: {where}: the first vector's bytes are digits "
                                  f"and spaces: a text file? binary=False")
        vector = np.frombuffer(buf, "<f4", dim, space + 1)
        rows.add(word, vector, where)                # copied into the matrix
        del vector                                   # (a view would pin the buffer's size)
        start = space + 1 + vec_bytes
    if whole:
        _only_whitespace_left(reader, bytes(buf[start:]), base + start, n)


def _only_whitespace_left(reader: Reader, rest: bytes, offset: int, n: int) -> None:
    """Nothing but whitespace from `rest` (at file offset `offset`) to the end."""
    while True:
        blank = len(rest) - len(rest.lstrip(_ASCII_SPACE))
        if blank < len(rest):
            raise FormatError(f"{reader.path}: byte offset {offset + blank}: data after the "
                              f"{n} vectors the header declares (a wrong count, or a text "
                              f"file read with binary=True?)")
        offset += len(rest)
        rest = reader.read(_CHUNK)
        if not rest:
            return


def _text_line(reader: Reader, lineno: int, encoding: str,
               unicode_errors: str) -> list[str] | None:
    """One text line split at spaces (None at the end of the file); a last line without
    its newline is a cut file."""
    line = reader.readline()
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise TruncatedFileError(f"{reader.path}: line {lineno}: the file ends in the "
                                 f"middle of this line (truncated?)")
    try:
        return line.decode(encoding, unicode_errors).rstrip().split(" ")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{reader.path}: line {lineno}: not valid {encoding} text "
                          f"({exc.reason} at byte {exc.start} of the line); a binary file? "
                          f"binary=True") from None


def _read_text(reader: Reader, rows: _Collector, n: int, dim: int, first_line: int,
               encoding: str, unicode_errors: str, datatype, whole: bool) -> None:
    """n lines 'WORD x1 ... xdim'; with whole, only blank lines may follow."""
    for i in range(n):
        lineno = first_line + i
        parts = _text_line(reader, lineno, encoding, unicode_errors)
        if parts is None:
            raise TruncatedFileError(f"{reader.path}: line {lineno}: the file ends after {i} "
                                     f"of the {n} vectors it declares (truncated?)")
        if len(parts) != dim + 1:
            raise FormatError(f"{reader.path}: line {lineno}: expected a word and {dim} "
                              f"numbers separated by single spaces, found "
                              f"{len(parts) - 1} numbers{_binary_hint(parts)}")
        try:
            vector = np.array(parts[1:], dtype=datatype)
        except ValueError:
            bad = next(p for p in parts[1:] if not _is_number(p, datatype))
            raise FormatError(f"{reader.path}: line {lineno}: {bad[:40]!r} is not a "
                              f"number{_binary_hint(parts)}") from None
        rows.add(parts[0], vector, f"line {lineno}")
    if whole:
        lineno = first_line + n
        while line := reader.readline():
            if line.strip(_ASCII_SPACE):
                raise FormatError(f"{reader.path}: line {lineno}: more lines than the {n} "
                                  f"vectors the header declares (a wrong count?)")
            lineno += 1


def _binary_hint(parts: list[str]) -> str:
    """A hint for a line with control characters: what a binary file read as text has."""
    if _CONTROL.search(" ".join(parts)):
        return "; a binary file? binary=True"
    return ""


def _is_number(text: str, datatype) -> bool:
    try:
        np.array([text], dtype=datatype)
    except ValueError:
        return False
    return True


def _count_text(path: str, limit: int | None, encoding: str,
                unicode_errors: str) -> tuple[int, int]:
    """A headerless text file's vector count (at most limit) and dimensions, from a first
    pass (as gensim's no_header)."""
    count, dim = 0, None
    with Reader(path) as reader:
        while not limit or count < limit:
            parts = _text_line(reader, count + 1, encoding, unicode_errors)
            if parts is None:
                break
            if dim is None:
                dim = len(parts) - 1
            count += 1
    if dim is None:
        raise TruncatedFileError(f"{path}: the file is empty (no vectors)")
    return count, dim


def read_word2vec(path: str, binary: bool = False, encoding: str = "utf8",
                  unicode_errors: str = "strict", limit: int | None = None,
                  datatype=np.float32, no_header: bool = False, max_dim: int = MAX_DIM
                  ) -> tuple[list[str], np.ndarray, int]:
    """(keys, vectors, declared count after limit) of a word2vec file; see the module
    docstring for what is refused."""
    if no_header and binary:
        raise NotSupportedError(f"{path}: no_header works with text files only (binary "
                                f"files always have a header)")
    if no_header:
        n, dim = _count_text(path, limit, encoding, unicode_errors)
    with Reader(path) as reader:
        if not no_header:
            n, dim = _header(reader, encoding, binary, max_dim)
        declared = n
        if limit:
            n = min(n, limit)
        rows = _Collector(path, n, dim, datatype)
        whole = n == declared and not no_header
        if binary:
            _read_binary(reader, rows, n, dim, encoding, unicode_errors, whole)
        else:
            _read_text(reader, rows, n, dim, 1 if no_header else 2, encoding, unicode_errors,
                       datatype, whole)
    vectors = rows.rows.result() if rows.keys else np.zeros((0, dim), dtype=datatype)
    return rows.keys, vectors, n


def read_counts(path: str, unicode_errors: str = "strict") -> dict[str, int]:
    """A vocabulary file ('WORD COUNT' lines, the C tool's -save-vocab) as {word: count}."""
    counts = {}
    with Reader(path) as reader:
        lineno = 0
        while line := reader.readline():
            lineno += 1
            fields = line.decode("utf8", unicode_errors).split()
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise FormatError(f"{path}: line {lineno}: expected 'WORD COUNT', got "
                                  f"{line[:60]!r}")
            counts[fields[0]] = int(fields[1])
    return counts


# ---- writing -------------------------------------------------------------------------------

def write_word2vec(path: str, words: list[str], vectors: np.ndarray, binary: bool,
                   header: str | None, append: bool, order=None) -> None:
    """Write `words` (prefix already applied) and their rows of `vectors` (in that order, or
    rows order[i] for words[i]: taken a block at a time, never the whole matrix) atomically;
    header: the first line without its newline, or None for none."""
    check_words(path, words)
    with writer(path, append) as fh:
        if header is not None:
            fh.write(f"{header}\n".encode("utf8"))
        block = max(1, (16 << 20) // max(1, 4 * vectors.shape[1]))
        for start in range(0, len(words), block):
            rows = (vectors[start:start + block] if order is None
                    else vectors[order[start:start + block]])
            names = words[start:start + block]
            if binary:
                raw = np.ascontiguousarray(rows, dtype="<f4").tobytes()
                size = 4 * rows.shape[1]
                fh.write(b"".join(f"{w} ".encode("utf8") + raw[i * size:(i + 1) * size]
                                  for i, w in enumerate(names)))
            else:
                fh.write("".join(f"{w} {' '.join(map(str, row))}\n"
                                 for w, row in zip(names, rows)).encode("utf8"))


def write_counts(path: str, words: list[str], counts, append: bool) -> None:
    """A vocabulary file: 'WORD COUNT' lines, atomically."""
    check_words(path, words)
    with writer(path, append) as fh:
        fh.write("".join(f"{w} {c}\n" for w, c in zip(words, counts)).encode("utf8"))
