"""Checkpoints of a running job, and what a resume needs from them.

A checkpoint is a folder `OUT/checkpoints/ckpt-NNNNNN` holding the model (weights and
vocabulary, the saved-model format) and `progress.json`: the plan (epochs, learning rates,
seed, chunk count: every task's seed and learning-rate range follow from these), the ids of
the tasks done when the weights were copied, and what the job was (model settings, corpus
files with size and modification time) so that a resume of another job is refused.

The weights are copied while training goes on (a copy of shared memory takes milliseconds
per hundred MB); the folder is written by a background thread under a temporary name,
fsynced and renamed, so a crash while writing leaves the previous checkpoint intact. Tasks
that were running when the weights were copied are trained again by a resume (their partial
updates are in the copy): the report says how many words that was. The two newest
checkpoints are kept.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time

import numpy as np

from ..errors import ConfigError, EngineError
from ..runtime.atomic import atomic_dir

log = logging.getLogger("engine")

FORMAT = 2          # 2: progress.json sealed with its checksum (1: unsealed, still read)
KEEP = 2
_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|)\s*$")


def parse_every(text: str) -> tuple[str, float] | None:
    """'10m' / '90s' / '2h' -> ('seconds', n); '5000000' -> ('words', n); '' -> None."""
    if not text:
        return None
    m = _EVERY.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"[output] checkpoint_every: expected a time such as \"10m\", "
                          f"\"90s\", \"2h\" or a word count such as \"5000000\", got {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    if unit:
        return "seconds", value * {"s": 1, "m": 60, "h": 3600}[unit]
    return "words", value


def corpus_identity(files: list[str]) -> list[list]:
    out = []
    for path in files:
        st = os.stat(path)
        out.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    return out


class Checkpointer:
    """Decides when a checkpoint is due and writes it in the background."""

    def __init__(self, folder: str, every: tuple[str, float], state, plan: dict, job: dict,
                 words_before: int = 0):
        self.folder = folder
        self.kind, self.every = every
        self.state = state                       # config and vocabulary of the model
        self.plan, self.job = plan, job
        self.words_before = words_before         # trained by runs this one resumes
        self.last_time = time.monotonic()
        self.last_words = 0
        self.thread: threading.Thread | None = None
        self.written: list[dict] = []
        os.makedirs(folder, exist_ok=True)
        for stale in glob.glob(os.path.join(folder, ".ckpt-*.tmp*")):   # a crash mid-write
            shutil.rmtree(stale, ignore_errors=True)
        self.seq = max([_seq(p) for p in _complete(folder)] or [0])

    def due(self, words: int) -> bool:
        if self.thread is not None and self.thread.is_alive():
            return False                         # the previous one is still being written
        if self.kind == "seconds":
            return time.monotonic() - self.last_time >= self.every
        return words - self.last_words >= self.every

    def save(self, weights: dict, done: set, words: int, copy_seconds: float,
             running: set = frozenset(), wait: bool = False) -> None:
        """Write a checkpoint of these weights (a copy, or the weights being trained, read
        as they are while they are written) in a background thread, or in this one with
        `wait`. One that cannot be written (a full disk, say) is logged and recorded, and
        training goes on: the older checkpoints stay, and the next one is tried when it is
        due."""
        self.last_time, self.last_words = time.monotonic(), words
        self.seq += 1
        record = {"seq": self.seq, "words": words, "copy_ms": round(1000 * copy_seconds, 1)}
        self.written.append(record)
        args = (weights, sorted(done), sorted(running), words, record)
        if wait:
            self._write(*args)
            return
        self.thread = threading.Thread(target=self._write, name="checkpoint", daemon=True,
                                       args=args)
        self.thread.start()

    def _write(self, weights, done, running, words, record) -> None:
        from .state import ModelState

        t0 = time.perf_counter()
        try:
            path = os.path.join(self.folder, f"ckpt-{self.seq:06d}")
            st = self.state
            snap = ModelState(st.config, st.vocab, epochs_trained=st.epochs_trained,
                              words_trained=st.words_trained, **weights)
            with atomic_dir(path) as tmp:
                snap.save(os.path.join(tmp, "model"))
                with open(os.path.join(tmp, "progress.json"), "w") as fh:
                    json.dump(seal({"format": FORMAT, "plan": self.plan, "job": self.job,
                                    "done_tasks": done, "running_tasks": running,
                                    "words_done": self.words_before + words,
                                    "written_at": time.time()}), fh)
            for old in _complete(self.folder)[:-KEEP]:
                shutil.rmtree(old, ignore_errors=True)
            record["write_seconds"] = round(time.perf_counter() - t0, 3)
            record["path"] = path
            log.info("checkpoint %s: %d words done (copy %.0f ms, written in %.1f s)", path,
                     self.words_before + words, record["copy_ms"], record["write_seconds"])
        except BaseException as exc:             # noqa: BLE001 (recorded; training goes on)
            record["failed"] = f"{type(exc).__name__}: {exc}"
            log.warning("checkpoint %d not written (%s); training goes on, the older "
                        "checkpoints are kept", self.seq, exc)

    def close(self) -> None:
        """Let a checkpoint being written finish (a run that ends keeps it whole)."""
        if self.thread is not None:
            self.thread.join()


def _seq(path: str) -> int:
    return int(os.path.basename(path).split("-")[1])


def _complete(folder: str) -> list[str]:
    found = [p for p in glob.glob(os.path.join(folder, "ckpt-[0-9]*"))
             if os.path.exists(os.path.join(p, "progress.json"))]
    return sorted(found, key=_seq)


def _digest(progress: dict) -> str:
    body = {k: v for k, v in progress.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def seal(progress: dict) -> dict:
    """progress.json's content with its checksum (of everything else in it)."""
    return dict(progress, checksum=_digest(progress))


def read_progress(path: str) -> dict:
    """A checkpoint's progress.json, checked: its format, and its checksum when sealed."""
    with open(os.path.join(path, "progress.json")) as fh:
        progress = json.load(fh)
    if not isinstance(progress, dict):
        raise ValueError("progress.json is not an object")
    if progress.get("format") not in (1, FORMAT):
        raise ValueError(f"format {progress.get('format')!r}")
    if progress["format"] >= 2 and progress.get("checksum") != _digest(progress):
        raise ValueError("progress.json does not match its checksum (damaged or edited)")
    return progress


def resume_point(folder: str, load=None) -> tuple[str, dict, object, list[str]]:
    """The newest checkpoint that reads back whole, newest first: its progress checked and,
    with `load`, its model loaded by load(path/model) (which checks the files' checksums).
    Returns (path, progress, what load returned or None, [why each newer one was
    skipped]); EngineError if none is whole."""
    bad = []
    for path in reversed(_complete(folder)):
        try:
            progress = read_progress(path)
            loaded = load(os.path.join(path, "model")) if load is not None else None
        except (OSError, ValueError, KeyError, EngineError) as exc:
            bad.append(f"{path}: {exc}")
            continue
        for why in bad:
            log.warning("checkpoint skipped, %s; resuming from the older %s", why, path)
        return path, progress, loaded, bad
    raise EngineError(f"{folder}: no checkpoint to resume from" +
                      (f" ({'; '.join(bad)})" if bad else ""))


def refuse_other_job(progress: dict, job: dict, where: str) -> None:
    """A resume continues the same job: same model settings, same corpus files."""
    then, now = progress["job"], job
    diffs = [f"[model] {k}: {then['model'].get(k)!r} then, {v!r} now"
             for k, v in now["model"].items() if then["model"].get(k) != v]
    if then["chunk_words"] != now["chunk_words"]:
        diffs.append(f"[engine] chunk_words: {then['chunk_words']} then, "
                     f"{now['chunk_words']} now")
    files_then = {p: (s, t) for p, s, t in then["corpus"]}
    files_now = {p: (s, t) for p, s, t in now["corpus"]}
    for p in sorted(set(files_then) | set(files_now)):
        if files_then.get(p) != files_now.get(p):
            what = ("not there now" if p not in files_now else "new" if p not in files_then
                    else "changed (size or modification time)")
            diffs.append(f"corpus file {p}: {what}")
    if diffs:
        raise EngineError(f"{where}: this checkpoint is of another job: " + "; ".join(diffs[:5])
                          + (f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""))


def job_identity(model_cfg, chunk_words: int, files: list[str]) -> dict:
    return {"model": dataclasses.asdict(model_cfg), "chunk_words": int(chunk_words),
            "corpus": corpus_identity(files)}


def copy_weights(arrays: dict, names=("syn0", "syn1neg", "syn1")) -> dict:
    return {k: np.array(arrays[k], copy=True) for k in names}
