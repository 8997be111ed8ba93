"""Documents corpus, streamed: a file with one document per line (optionally `ID<TAB>text`),
or a folder with one document per file; .gz/.bz2/.xz read transparently (engine.text.corpus).

The text is cut into *units* of whole documents, each document on one line: at most
`max_docs` of them and about `block_bytes` of text (a longer document is joined from its
pieces, so a unit never splits one). Units are what worker processes tokenize and count;
memory stays about one unit per process whatever the corpus size.

Document ids: the ID column where the file has one (ids="auto": the file's first line has
a tab; "tab": always; "none": never), else the line number in the file; in a folder, the
file's path relative to the folder. Blank lines are not documents.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from ..text.corpus import CorpusSource
from ..errors import ConfigError, CorpusError

ID_MODES = ("auto", "tab", "none")
# whitespace str.split() knows beyond ASCII (as engine.word2vec.prepare): such text takes Python's
# path
UNICODE_SPACE = re.compile("[\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
_BLANK = re.compile(rb"[\x00\t-\r\x1c- ]*")          # the C tokenizer's whitespace only
_NEWLINES = bytes.maketrans(b"\n\r", b"  ")


@dataclass(frozen=True)
class Unit:
    """Whole documents, one per line of `data`, from `path` starting at line `first_line`
    (1-based; 0 for a folder, where `names` holds the documents' ids)."""
    index: int
    path: str
    first_line: int
    data: bytes
    tab_ids: bool
    names: tuple[str, ...] | None = None


def _decode(unit: Unit, encoding_errors: str) -> str:
    try:
        return unit.data.decode("utf-8", errors=encoding_errors)
    except UnicodeDecodeError as exc:
        before = unit.data.count(b"\n", 0, exc.start)
        where = (f"line {unit.first_line + before}" if unit.names is None
                 else f"document {unit.names[before]}")
        raise CorpusError(f"{unit.path}: invalid UTF-8 at {where}: not text, or not UTF-8; "
                          f"set encoding_errors = \"replace\" to substitute such bytes") from None


def _no_tab(unit: Unit, line: int) -> CorpusError:
    return CorpusError(f"{unit.path}: line {unit.first_line + line}: no tab: expected "
                       f"ID<TAB>text as on the file's first line (set ids = \"none\" if the "
                       f"file has no ID column)")


def parse_unit(unit: Unit, encoding_errors: str = "strict") -> Iterator[tuple[str, list[str]]]:
    """(id, tokens) of each document of a unit (Python's str.split decides the tokens;
    NUL counts as a space, as in the C tokenizer)."""
    lines = _decode(unit, encoding_errors).replace("\x00", " ").split("\n")
    if lines and not lines[-1]:
        lines.pop()
    if unit.names is not None:
        yield from zip(unit.names, (line.split() for line in lines))
        return
    for i, line in enumerate(lines):
        if unit.tab_ids:
            doc_id, tab, body = line.partition("\t")
            if not tab:
                if not line.strip():
                    continue
                raise _no_tab(unit, i)
            yield doc_id, body.split()
        else:
            tokens = line.split()
            if tokens:
                yield str(unit.first_line + i), tokens


def unit_text(unit: Unit, encoding_errors: str = "strict"
              ) -> tuple[list[str], bytes, bool] | None:
    """The unit for the C tokenizer (engine._text): (ids, UTF-8 texts one per line,
    whether documents without tokens are blank lines to drop). None where the text holds
    whitespace only Python's str.split knows: parse_unit decides those."""
    data = unit.data
    if not data.isascii():
        text = _decode(unit, encoding_errors)
        if UNICODE_SPACE.search(text):
            return None
        data = text.encode("utf-8")
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    if unit.names is not None:
        return list(unit.names), data, False
    if not unit.tab_ids:
        return [str(unit.first_line + i) for i in range(len(lines))], data, True
    ids, texts = [], []
    for i, line in enumerate(lines):
        doc_id, tab, body = line.partition(b"\t")
        if not tab:
            if _BLANK.fullmatch(line):
                continue
            raise _no_tab(unit, i)
        ids.append(doc_id.decode("utf-8"))
        texts.append(body)
    return ids, b"\n".join(texts) + b"\n" if texts else b"", False


class DocumentSource:
    """The documents of a file or folder (see the module's note). Re-iterable: iterating
    yields token lists (what Dictionary and the gensim-style API take); `units()` yields
    units for parallel counting; `documents()` yields (id, tokens)."""

    def __init__(self, path: str, ids: str = "auto", encoding_errors: str = "strict",
                 block_bytes: int = 4 << 20, max_docs: int = 20_000):
        if ids not in ID_MODES:
            raise ConfigError(f"ids: {ids!r} is not one of {', '.join(ID_MODES)}")
        if max_docs < 1:
            raise ConfigError(f"chunksize: {max_docs} documents; must be at least 1")
        self.path = str(path)
        self.ids = ids
        self.encoding_errors = encoding_errors
        self.block_bytes = int(block_bytes)
        self.max_docs = int(max_docs)
        self.source = CorpusSource(self.path, format="lines", encoding_errors=encoding_errors)
        self.folder = os.path.isdir(self.path)

    @property
    def files(self) -> list[str]:
        return self.source.files

    def units(self) -> Iterator[Unit]:
        """The corpus as units, in document order."""
        make = self._folder_units if self.folder else self._file_units
        for index, unit in enumerate(make()):
            yield replace(unit, index=index)

    def documents(self) -> Iterator[tuple[str, list[str]]]:
        for unit in self.units():
            yield from parse_unit(unit, self.encoding_errors)

    def __iter__(self) -> Iterator[list[str]]:
        return (tokens for _, tokens in self.documents())

    # ---- one document per line ----------------------------------------------------------

    def _file_units(self) -> Iterator[Unit]:
        path = self.files[0]
        pending: list[bytes] = []           # the unfinished last line, in pieces
        line = 1
        tab_ids = None
        for block in self.source.blocks(self.block_bytes):
            data = block.data
            if tab_ids is None:
                tab_ids = self._has_id_column(data)
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                pending.append(data)
                continue
            whole = b"".join(pending) + data[:cut] if pending else data[:cut]
            pending = [data[cut:]] if cut < len(data) else []
            for part in self._split_lines(whole):
                yield Unit(0, path, line, part, tab_ids)
                line += part.count(b"\n")
        if pending:
            yield Unit(0, path, line, b"".join(pending) + b"\n", bool(tab_ids))

    def _has_id_column(self, first_block: bytes) -> bool:
        if self.ids != "auto":
            return self.ids == "tab"
        end = first_block.find(b"\n")
        return b"\t" in (first_block if end < 0 else first_block[:end])

    def _split_lines(self, data: bytes) -> Iterator[bytes]:
        """`data` (whole lines) in pieces of at most max_docs lines."""
        if data.count(b"\n") <= self.max_docs:
            yield data
            return
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
        start = 0
        for end in ends[self.max_docs - 1::self.max_docs].tolist() + [len(data)]:
            if end > start:
                yield data[start:end]
            start = end

    # ---- one document per file ----------------------------------------------------------

    def _folder_units(self) -> Iterator[Unit]:
        docs: list[bytes] = []
        names: list[str] = []
        size = 0
        for path, pieces in self._files_text():
            docs.append(b" ".join(pieces))
            names.append(os.path.relpath(path, self.path).replace(os.sep, "/"))
            size += len(docs[-1])
            if size >= self.block_bytes or len(docs) >= self.max_docs:
                yield Unit(0, self.path, 0, b"\n".join(docs) + b"\n", False, tuple(names))
                docs, names, size = [], [], 0
        if docs:
            yield Unit(0, self.path, 0, b"\n".join(docs) + b"\n", False, tuple(names))

    def _files_text(self) -> Iterator[tuple[str, list[bytes]]]:
        """(path, its text in pieces, line ends made spaces) of each non-empty file."""
        path, pieces = None, []
        for block in self.source.blocks(self.block_bytes):
            if block.path != path:
                if pieces:
                    yield path, pieces
                path, pieces = block.path, []
            pieces.append(block.data.translate(_NEWLINES))
        if pieces:
            yield path, pieces
