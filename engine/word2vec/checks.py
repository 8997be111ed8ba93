"""Checks run once per job before any kernel: the kernels trust every id and row width, so
whatever they index with must stay inside the weights (an id stream of another vocabulary,
a model whose matrices disagree, a corrupt sampling table would write outside them)."""
from __future__ import annotations

import numpy as np

from ..errors import EngineError, ResourceError

WEIGHT_NAMES = ("syn0", "syn1neg", "syn1")


def check_arrays(arrays: dict, settings, where: str = "model") -> int:
    """Shapes and table entries against the vocabulary (syn0's rows). Returns its size."""
    syn0 = arrays["syn0"]
    if syn0.ndim != 2 or syn0.shape[0] < 1 or syn0.shape[1] < 1:
        raise EngineError(f"{where}: syn0 has shape {syn0.shape}, expected (words, dims)")
    v, d = syn0.shape
    want = {"syn1neg": v if settings.negative else None,
            "syn1": max(v - 1, 1) if settings.hs else None}
    for name in WEIGHT_NAMES:
        a = arrays[name]
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            raise EngineError(f"{where}: {name} must be C-contiguous float32, is {a.dtype}")
        if name == "syn0":
            continue
        if want[name] is not None and (a.ndim != 2 or a.shape[0] < want[name] or
                                       a.shape[1] != d):
            raise EngineError(f"{where}: {name} has shape {a.shape}, expected "
                              f"({want[name]}, {d}) for {v} words of {d} dimensions")
    if arrays["keep"].shape[0] < v:
        raise EngineError(f"{where}: the subsampling table has {arrays['keep'].shape[0]} "
                          f"entries for {v} words")
    noise = arrays["noise"]
    if settings.negative and noise.size and int((noise >> np.uint64(32)).max()) >= v:
        raise EngineError(f"{where}: the negative-sampling table points past {v} words")
    if settings.hs:
        codes, points, lens = arrays["codes"], arrays["points"], arrays["code_lens"]
        if points.ndim != 2 or codes.shape != points.shape or points.shape[0] < v or \
                lens.shape[0] < v:
            raise EngineError(f"{where}: Huffman tables of shapes {codes.shape}, "
                              f"{points.shape}, {lens.shape} for {v} words")
        if lens.min() < 0 or lens.max() > points.shape[1]:
            raise EngineError(f"{where}: a Huffman code longer than its table")
        if points.min() < 0 or points.max() >= arrays["syn1"].shape[0]:
            raise EngineError(f"{where}: a Huffman node outside syn1")
    return v


def check_stream(stream, vocab_size: int) -> None:
    """The id stream belongs to this vocabulary and is whole."""
    import os

    size = os.path.getsize(stream.path)
    if size != 4 * stream.n_ids:
        raise EngineError(f"{stream.path}: {size} bytes, expected {4 * stream.n_ids} "
                          f"({stream.n_ids} ids): the id stream is damaged; remove "
                          f"{stream.folder} to rebuild it")
    chunks = stream.chunks
    if len(chunks) and (chunks[:, 0].min() < 0 or chunks[:, 1].max() > stream.n_ids or
                        (chunks[:, 1] < chunks[:, 0]).any()):
        raise EngineError(f"{stream.folder}: chunk table outside the id stream")
    if stream.max_id >= vocab_size or stream.min_id < -1:
        raise EngineError(f"{stream.folder}: the id stream holds ids {stream.min_id}.."
                          f"{stream.max_id} but the vocabulary has {vocab_size} words (a "
                          f"stream of another vocabulary?); remove it to rebuild it")


def human_size(n: float) -> str:
    """Bytes for a message: '512 bytes', '40 KB', '3.2 MB', '1.5 GB'."""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}" if n < 100 * size else f"{n / size:,.0f} {unit}"
    return f"{int(n)} bytes"


def check_disk_room(folder: str, need: int, what: str, hint: str = "",
                    credit: int = 0) -> None:
    """ResourceError naming `folder` when its disk has less than `need` bytes free (plus
    `credit`: room that writing there frees, a file being replaced)."""
    import shutil

    free = shutil.disk_usage(folder).free + credit
    if need > free:
        raise ResourceError(f"{folder}: {human_size(free)} free on its disk, {what} needs "
                            f"about {human_size(need)}" + (f"; {hint}" if hint else ""))
