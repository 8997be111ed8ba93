"""Saved files are whole or refused: a truncated or corrupted file is named when it is read,
never loaded as a partial or different model.

A manifest (model.json, vocab.json) records the size and SHA-256 of each file it stands
for, and is sealed with the SHA-256 of its own content in canonical form (sorted keys, no
spaces), so that a byte changed anywhere, in a file or in the manifest itself, is found.
"""
from __future__ import annotations

import hashlib
import json
import os

from ..errors import EngineError

_CHUNK = 16 << 20


def file_record(path: str) -> dict:
    """{"bytes": size, "sha256": hex digest} of a file (read in chunks: any size)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
            size += len(block)
    return {"bytes": size, "sha256": h.hexdigest()}


def _canonical_digest(meta: dict) -> str:
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def seal(meta: dict) -> dict:
    """`meta` with its "checksum": the digest of everything else in it."""
    return dict(meta, checksum=_canonical_digest(meta))


def read_manifest(path: str) -> tuple[dict, bool]:
    """A JSON object from `path` and whether it was sealed (a sealed one whose checksum
    does not match is refused). Missing: FileNotFoundError; anything else wrong: an
    EngineError naming the file."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as exc:     # bad JSON, bad UTF-8, deep nesting
        raise EngineError(f"{path}: not valid JSON ({_short(exc)}): the file is damaged"
                          ) from None
    if not isinstance(meta, dict):
        raise EngineError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if "checksum" not in meta:
        return meta, False
    body = {k: v for k, v in meta.items() if k != "checksum"}
    try:
        ok = meta["checksum"] == _canonical_digest(body)
    except (ValueError, TypeError):                 # NaN or the like: not what was written
        ok = False
    if not ok:
        raise EngineError(f"{path}: its content does not match its checksum: the file is "
                          f"corrupted")
    return body, True


def check_file(path: str, record, manifest: str) -> None:
    """The file at `path` is exactly the one `record` (from file_record) describes."""
    if not isinstance(record, dict) or not isinstance(record.get("bytes"), int) or \
            not isinstance(record.get("sha256"), str):
        raise EngineError(f"{manifest}: no valid size and checksum for {os.path.basename(path)}")
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise EngineError(f"{path}: missing (listed in {manifest})") from None
    except OSError as exc:
        raise EngineError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size != record["bytes"]:
        what = "truncated" if size < record["bytes"] else "longer than written"
        raise EngineError(f"{path}: {what}: {size:,} bytes, expected {record['bytes']:,}")
    try:
        got = file_record(path)["sha256"]
    except OSError as exc:
        raise EngineError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if got != record["sha256"]:
        raise EngineError(f"{path}: corrupted: its content does not match the checksum in "
                          f"{manifest}")


def _short(exc: BaseException, limit: int = 80) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."
