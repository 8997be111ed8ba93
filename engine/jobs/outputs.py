"""What a job writes and scores: its output folder checked before training (writable,
room for the results), the vectors and the model saved, the evaluations and neighbours
that go into report.json."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile

from ..config import ModelConfig
from ..errors import ConfigError, EngineError, ResourceError
from ..runtime.atomic import atomic_file, fsync_dir
from ..word2vec.state import ModelState

log = logging.getLogger("engine")


def check_output(out: str) -> None:
    """The output folder can be created and written: found before any work, not after."""
    check_writable(out, "[output] dir")


def check_writable(folder: str, setting: str) -> None:
    """`folder` exists or can be made, and a file can be written in it; else one
    EngineError line naming the setting and the folder."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".engine-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise EngineError(f"{setting} {folder}: cannot write there ({exc.strerror or exc})"
                          ) from None


def check_output_room(out: str, words: int, model: ModelConfig, text_vectors: bool) -> None:
    """Enough disk for the outputs (estimated from the vocabulary), before training. The
    outputs are written beside the earlier ones before replacing them, so the room they
    need is all of theirs."""
    d = model.vector_size
    matrices = 1 + (1 if model.negative else 0) + (1 if model.hs else 0)
    need = words * (4 * d * (matrices + 1) + 64)            # model folder + vectors.bin
    need += 64 << 10                                        # model.json, report.json...
    if text_vectors:
        need += words * (13 * d + 32)
    free = shutil.disk_usage(out).free
    if need > free:
        raise ResourceError(f"[output] dir {out}: {_mb(free)} MB free on its disk, the "
                            f"outputs need about {_mb(need)} MB")


def _mb(n: int) -> str:
    """Bytes as MB for a message, with the decimals a small number needs."""
    mb = n / 2**20
    return f"{mb:,.0f}" if mb >= 100 else f"{mb:.1f}" if mb >= 1 else f"{mb:.3f}"


def check_evaluate_files(cfg) -> None:
    """Every [evaluate] file can be opened: found before the corpus is read, not after
    training."""
    for key in ("analogies", "similarity"):
        for path in getattr(cfg, key):
            try:
                with open(path, "rb") as fh:
                    fh.read(1)
            except FileNotFoundError:
                raise ConfigError(f"[evaluate] {key}: {path}: file not found") from None
            except OSError as exc:
                raise ConfigError(f"[evaluate] {key}: {path}: cannot read "
                                  f"({exc.strerror or exc})") from None


def write_outputs(kv, state: ModelState, out: str, text_vectors: bool) -> None:
    """vectors.bin (and .txt) and the model folder, all or nothing: the vectors are staged
    under hidden names, the model folder replaces the earlier one atomically, then the
    staged files are renamed into place (which takes no room). A disk that fills up is an
    EngineError naming the path, and leaves the earlier outputs as they were."""
    os.makedirs(out, exist_ok=True)
    staged: list[tuple[str, str]] = []
    try:
        for name, binary in [("vectors.bin", True)] + ([("vectors.txt", False)]
                                                        if text_vectors else []):
            tmp = os.path.join(out, f".{name}.staged")
            with _output_errors(out, name):
                kv.save_word2vec_format(tmp, binary=binary)
            staged.append((tmp, os.path.join(out, name)))
        with _output_errors(out, "model"):
            state.save(os.path.join(out, "model"))
        while staged:
            os.replace(*staged.pop())
        fsync_dir(out)
    finally:
        for tmp, _ in staged:
            os.unlink(tmp)


class _output_errors:
    """An OSError writing output `name` -> one EngineError line naming it."""

    def __init__(self, out: str, name: str):
        self.out, self.name = out, name

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if isinstance(exc, OSError):
            raise EngineError(f"[output] dir {self.out}: cannot write {self.name} "
                              f"({exc.strerror or exc}); the earlier outputs there are "
                              f"unchanged") from None
        return False


def evaluate(kv, cfg, report: dict) -> None:
    """Run the configured evaluations into report['evaluation']. A file that cannot be
    scored (no question in the vocabulary, too few pairs) is recorded with the reason and
    logged: the trained model and the other figures are not lost over it."""
    ev = report.setdefault("evaluation", {})
    for path in cfg.analogies:
        try:
            acc, sections = kv.evaluate_word_analogies(path, restrict_vocab=cfg.restrict_vocab)
        except EngineError as exc:
            ev.setdefault("analogies", {})[path] = {"accuracy": None, "error": str(exc)}
            log.warning("analogies %s: not scored: %s", path, exc)
            continue
        total = sections[-1]
        n = len(total["correct"]) + len(total["incorrect"])
        ev.setdefault("analogies", {})[path] = {
            "accuracy": round(acc, 4), "evaluated": n,
            "sections": {s["section"]: round(len(s["correct"]) / max(
                len(s["correct"]) + len(s["incorrect"]), 1), 4) for s in sections[:-1]}}
        log.info("analogies %s: %.4f over %d questions", path, acc, n)
    for path in cfg.similarity:
        try:
            p, s, oov = kv.evaluate_word_pairs(path)
        except EngineError as exc:
            ev.setdefault("similarity", {})[path] = {"spearman": None, "error": str(exc)}
            log.warning("word pairs %s: not scored: %s", path, exc)
            continue
        ev.setdefault("similarity", {})[path] = {
            "spearman": round(s.statistic, 4), "pearson": round(p.statistic, 4),
            "oov_pct": round(oov, 2)}
        log.info("word pairs %s: spearman %.4f pearson %.4f (oov %.1f%%)", path, s.statistic,
                 p.statistic, oov)


def epoch_scores(kv, cfg) -> dict:
    """The first analogy file's accuracy and the first word-pair file's Spearman (a curve
    point); the full figures are report['evaluation'], after training."""
    report: dict = {}
    evaluate(kv, dataclasses.replace(cfg, analogies=cfg.analogies[:1],
                                     similarity=cfg.similarity[:1]), report)
    ev = report.get("evaluation", {})
    acc = next(iter(ev.get("analogies", {}).values()), {}).get("accuracy")
    rho = next(iter(ev.get("similarity", {}).values()), {}).get("spearman")
    return {"analogy": acc, "similarity": rho}


def neighbours(kv, cfg) -> dict:
    out = {}
    for word in cfg.neighbours:
        if word in kv:
            out[word] = [(w, round(s, 3)) for w, s in kv.most_similar(word, topn=cfg.topn)]
    return out


def write_report(out: str, report: dict) -> None:
    """OUT/report.json, written whole or not at all."""
    try:
        with atomic_file(os.path.join(out, "report.json"), "w") as fh:
            json.dump(report, fh, indent=2)
    except OSError as exc:
        raise EngineError(f"[output] dir {out}: cannot write report.json "
                          f"({exc.strerror or exc})") from None
