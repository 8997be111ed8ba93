"""Corpus input, streamed: line-per-sentence files, text8-style single-line files, folders
of either, with transparent .gz/.bz2/.xz.

Text is read in blocks that end on a line end (lines) or on whitespace (text8, and a line
longer than a block), so a block never splits a token or a UTF-8 character; blocks can be
counted and encoded in parallel, and memory stays about two blocks whatever the line length.
A token longer than MAX_TOKEN_BYTES (binary data, text without spaces) is cut to its first
MAX_TOKEN_BYTES bytes, with a warning naming the file (gensim has no limit; the word2vec C
tool cuts at 100 bytes), so one huge "word" cannot fill memory or the vocabulary.

Each file's size and modification time are recorded the first time it is read (counting)
and checked on every later read (encoding): a corpus that changes or disappears between
the passes, or while one reads it, stops the job with a line naming the file.
"""
from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import re
import stat
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import CorpusError

log = logging.getLogger("engine")

MAX_SENTENCE_WORDS = 10_000          # longer lines / text8 streams are cut (as gensim does)
MAX_TOKEN_BYTES = 1000               # longer tokens are cut to this many bytes (see above)
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# the tokenizer's whitespace (ext/_text.pyx is_space; Python's str.split agrees on ASCII)
_SPACE = re.compile(rb"[\x00\t-\r\x1c- ]")
_LONG_TOKEN = re.compile(rb"[^\x00\t-\r\x1c- ]{%d,}" % (MAX_TOKEN_BYTES + 1))
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
    """A piece of one file: `data` begins at decompressed byte `offset` of `path` (a block
    in which an overlong token was cut is shorter than the bytes it covers)."""
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
            f"{block.path}: invalid UTF-8 at byte {block.offset + exc.start} (of the "
            f"decompressed text): not text, or not UTF-8; set [corpus] encoding_errors = "
            f"\"replace\" to substitute such bytes") from None


def last_space(data: bytes) -> int:
    """Index of the last whitespace byte of `data`, -1 if it has none."""
    pos = max(data.rfind(b" "), data.rfind(b"\n"))
    for m in _SPACE.finditer(data, pos + 1):      # rarer whitespace after it (tabs...)
        pos = m.start()
    return pos


def has_long_token(data: bytes) -> bool:
    """Whether `data` may hold a token longer than MAX_TOKEN_BYTES. Such a token covers a
    whole aligned window of half that length, so testing windows for whitespace (a find
    or two each) finds every one, at a small fraction of the tokenizer's cost."""
    w = MAX_TOKEN_BYTES // 2
    find = data.find
    for k in range(0, len(data) - w + 1, w):
        if find(b" ", k, k + w) < 0 and find(b"\n", k, k + w) < 0 and \
                _SPACE.search(data, k, k + w) is None:
            return True
    return False


def utf8_prefix(data: bytes, n: int) -> bytes:
    """data[:n], moved back (at most 3 bytes) so as not to end inside a UTF-8 character."""
    end = min(n, len(data))
    while n - 3 < end < len(data) and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end]


def _changed(path: str, then: tuple[int, int], now: tuple[int, int], when: str) -> CorpusError:
    what = (f"size {then[0]:,} -> {now[0]:,} bytes" if then[0] != now[0]
            else "same size, new modification time")
    return CorpusError(f"{path}: changed {when} ({what}): the vocabulary and the encoded "
                       f"text would disagree; run again once the corpus stays put")


class CorpusSource:
    """The files of a corpus and how to read them. Re-iterable, never holds a whole file."""

    def __init__(self, path: str, format: str = "auto", encoding_errors: str = "strict"):
        self.path = str(path)
        self.format = format
        self.encoding_errors = encoding_errors
        self.files = self._list_files(self.path)
        self.seen: dict[str, tuple[int, int]] = {}   # path -> (size, mtime_ns) at 1st read
        self._empty: set[str] = set()
        self._warned: set[str] = set()

    @staticmethod
    def _list_files(path: str) -> list[str]:
        if not path:
            raise CorpusError("[corpus] path: no corpus given")
        if os.path.isdir(path):
            def unlistable(exc: OSError):
                raise CorpusError(f"{exc.filename}: cannot list this corpus folder "
                                  f"({exc.strerror or exc})")

            files = sorted(
                os.path.join(root, name)
                for root, dirs, names in os.walk(path, onerror=unlistable)
                for name in names if not name.startswith("."))
            if not files:
                raise CorpusError(f"{path}: folder holds no corpus files")
            for f in files:
                _check_regular(f)
            return files
        if not os.path.lexists(path):
            raise CorpusError(f"{path}: corpus file not found")
        _check_regular(path)
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

    def _signature(self, path: str, when: str) -> tuple[int, int]:
        """(size, mtime_ns) of a file now; a file gone since an earlier read is an error."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if path in self.seen:
                raise CorpusError(f"{path}: disappeared {when}; run again with the corpus "
                                  f"in place") from None
            raise CorpusError(f"{path}: cannot open (No such file or directory)") from None
        except OSError as exc:
            raise CorpusError(f"{path}: cannot open ({exc.strerror or exc})") from None
        return st.st_size, st.st_mtime_ns

    def _file_blocks(self, path: str, block_bytes: int) -> Iterator[Block]:
        sig = self._signature(path, "since its words were counted")
        first = self.seen.setdefault(path, sig)
        if first != sig:
            raise _changed(path, first, sig, "since its words were counted")
        text8 = self.is_text8(path)
        try:
            fh = open_binary(path)
        except OSError as exc:
            raise CorpusError(f"{path}: cannot open ({exc.strerror or exc})") from None
        cuts = [0, 0]                        # overlong tokens cut: how many, first offset
        with fh:
            any_data = yield from self._read_blocks(fh, path, text8, block_bytes, cuts)
        now = self._signature(path, "while it was being read")
        if now != sig:
            raise _changed(path, sig, now, "while it was being read")
        if cuts[0] and path not in self._warned:
            self._warned.add(path)
            log.warning("%s: %d token(s) longer than %s bytes (binary data? text without "
                        "spaces?) cut to their first %s bytes; the first at byte %s", path,
                        cuts[0], f"{MAX_TOKEN_BYTES:,}", f"{MAX_TOKEN_BYTES:,}",
                        f"{cuts[1]:,}")
        if not any_data:
            self._no_text(path)

    def _no_text(self, path: str) -> None:
        """An empty file: an error for a one-file corpus or a folder of empty files, else
        skipped with a warning."""
        if len(self.files) == 1:
            raise CorpusError(f"{path}: corpus file is empty")
        self._empty.add(path)
        if len(self._empty) == len(self.files):
            raise CorpusError(f"{self.path}: all {len(self.files)} corpus files are empty")
        if path not in self._warned:
            self._warned.add(path)
            log.warning("%s: empty corpus file, skipped", path)

    def _read_blocks(self, fh, path: str, text8: bool, block_bytes: int, cuts: list):
        """The blocks of one open file (see the module's note); returns whether it held
        any data."""
        offset = 0                           # decompressed offset of carry + the new data
        carry = b""
        any_data = skipping = False
        while True:
            try:
                data = fh.read(block_bytes)
            except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
                raise read_error(path, exc, offset + len(carry)) from None
            if not data:
                break
            any_data = True
            if skipping:                     # the rest of an overlong token: dropped
                m = _SPACE.search(data)
                if m is None:
                    offset += len(data)
                    continue
                offset += m.start()
                data, skipping = data[m.start():], False
            data = carry + data
            cut = 0 if text8 else data.rfind(b"\n") + 1
            if cut == 0:                     # text8, or a line longer than the block
                cut = last_space(data) + 1
            if cut == 0:                     # all one token so far
                if len(data) <= MAX_TOKEN_BYTES:
                    carry = data
                    continue
                self._count_cut(cuts, offset)
                yield Block(path, offset, utf8_prefix(data, MAX_TOKEN_BYTES), text8)
                offset += len(data)
                carry, skipping = b"", True
                continue
            yield Block(path, offset, self._shorten(data[:cut], offset, cuts), text8)
            offset += cut
            carry = data[cut:]
        if carry:
            yield Block(path, offset, self._shorten(carry, offset, cuts), text8)
        return any_data

    @staticmethod
    def _count_cut(cuts: list, offset: int) -> None:
        if not cuts[0]:
            cuts[1] = offset
        cuts[0] += 1

    def _shorten(self, data: bytes, offset: int, cuts: list) -> bytes:
        """`data` with every token longer than MAX_TOKEN_BYTES cut to that length."""
        if not has_long_token(data):
            return data
        parts, last = [], 0
        for m in _LONG_TOKEN.finditer(data):
            self._count_cut(cuts, offset + m.start())
            parts += [data[last:m.start()], utf8_prefix(m.group(), MAX_TOKEN_BYTES)]
            last = m.end()
        return b"".join(parts) + data[last:] if parts else data

    def sentences(self) -> Iterator[list[str]]:
        """Token lists as training sees them (long lines cut at MAX_SENTENCE_WORDS)."""
        for path in self.files:
            pending: list[str] = []          # tokens of the sentence still open
            for block in self._file_blocks(path, 2 << 20):
                text = decode(block, self.encoding_errors)
                lines = [text] if block.text8 else text.split("\n")
                for i, line in enumerate(lines):
                    pending.extend(line.split())
                    full = len(pending) - len(pending) % MAX_SENTENCE_WORDS
                    for k in range(0, full, MAX_SENTENCE_WORDS):
                        yield pending[k:k + MAX_SENTENCE_WORDS]
                    del pending[:full]
                    if i < len(lines) - 1 and pending:     # a line end closes it
                        yield pending
                        pending = []
            if pending:
                yield pending

    def __iter__(self):
        return self.sentences()


def _check_regular(path: str) -> None:
    """A corpus file must be a regular file: a pipe cannot be read twice (counting, then
    encoding), a device may never end, a broken link reads nothing."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CorpusError(f"{path}: cannot open (a broken link?)") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot open ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise CorpusError(f"{path}: not a regular file (a pipe or device cannot be read "
                          f"twice, for counting and then encoding)")


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
