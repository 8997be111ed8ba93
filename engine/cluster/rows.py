"""Rows as they travel in an exchange: float32 values, or integers with one scale per row
(`Quantized`: value = scale * q): int8 (the scale being the row's largest magnitude / 127),
or four bits a value (-7..7, the scale its largest magnitude / 7), two values a byte (q
then uint8, (rows, ceil(dim / 2))). A scale is rounded up to a bfloat16 (a float32 whose
low 16 bits are 0), so it travels in two bytes; q is rounded against it.

A quantized delta keeps its rounding: the side that sends it holds a copy of what the other
side has (a node: its snapshot; the dispatcher: a node's shadow), which takes what is sent,
so the rest stays in the difference and goes with a later delta. Merged rows sent to a node
as values (int8, or four bits with four-bit deltas) replace its snapshot, so their rounding
does not add up either: it is noise on the node's copy until the row's next values, never
in the master, whose own rows are float32. The loops are in the compiled kernels
(engine._kernels), one pass each without the GIL.
"""
from __future__ import annotations

from typing import NamedTuple, Union

import numpy as np

# [cluster] delta_dtype -> the dtype a node's delta travels in
WIRE_DTYPES = {"float32": "<f4", "float16": "<f2", "int8": "|i1", "int4": "|u1"}
QUANTIZED = ("|i1", "|u1")               # int8; four bits a value, packed two a byte


def values_dtype(delta_dtype: str) -> str:
    """The dtype merged master values travel in: that of quantized deltas (int8, four
    bits), else float32."""
    return delta_dtype if delta_dtype in QUANTIZED else "<f4"


class Quantized(NamedTuple):
    q: np.ndarray           # (rows, dim) int8, or (rows, ceil(dim / 2)) uint8: four bits
    scale: np.ndarray       # (rows,) float32


def q_width(dim: int, dtype: str) -> int:
    """Bytes of q per row."""
    return (dim + 1) // 2 if dtype == "|u1" else dim


Payload = Union[np.ndarray, Quantized]


def quantize_values(src: np.ndarray, rows: np.ndarray, dtype: str = "|i1") -> Quantized:
    """src[rows] as int8 values, or four bits (dtype "|u1"); src float32, C-contiguous."""
    rows = np.ascontiguousarray(rows, np.int32)
    dim = src.shape[1]
    out = Quantized(np.empty((rows.shape[0], q_width(dim, dtype)), np.dtype(dtype)),
                    np.empty(rows.shape[0], np.float32))
    from .._kernels import quantize_values as int8, quantize_values4 as four
    (four if dtype == "|u1" else int8)(src, rows, out.q, out.scale)
    return out


def quantize_delta(live: np.ndarray, snap: np.ndarray, rows: np.ndarray,
                   dtype: str = "|i1") -> Quantized:
    """live[rows] - snap[rows] as int8 (or four bits, dtype "|u1"); snap[rows] takes the
    sent (rounded) delta."""
    rows = np.ascontiguousarray(rows, np.int32)
    dim = live.shape[1]
    out = Quantized(np.empty((rows.shape[0], q_width(dim, dtype)), np.dtype(dtype)),
                    np.empty(rows.shape[0], np.float32))
    from .._kernels import quantize_delta as int8, quantize_delta4 as four
    (four if dtype == "|u1" else int8)(live, snap, rows, out.q, out.scale)
    return out


def changed_delta(live: np.ndarray, snap: np.ndarray, dtype: str, first: int = 0,
                  step: int = 1) -> tuple[np.ndarray, Payload]:
    """changed_rows(live, snap, 0) and their deltas in one pass over the block (live and
    snap: the same rows, contiguous): (rows, deltas rounded as quantize_delta does, or
    float32 ones for dtype "<f4"); snap takes what is sent. With `step`, only the block's
    rows first, first + step, ... (one shard's)."""
    from .._kernels import delta_block
    n, dim = live.shape
    levels = {"|u1": 7.0, "|i1": 127.0, "<f4": 0.0}[dtype]
    width = 4 * dim if dtype == "<f4" else q_width(dim, dtype)
    most = max(0, -(-(n - first) // step))
    rows = np.empty(most, np.int32)
    q = np.empty((most, width), np.uint8)
    scale = np.empty(most, np.float32)
    k = delta_block(live, snap, levels, rows, q, scale, first, step) if most else 0
    if dtype == "<f4":
        return rows[:k], q[:k].view(np.float32)
    q = q[:k] if dtype == "|u1" else q[:k].view(np.int8)
    return rows[:k], Quantized(q, scale[:k])


def unpack4(p: np.ndarray, dim: int) -> np.ndarray:
    """Four-bit values (two a byte, the even one low) as int8, (rows, dim)."""
    q = np.empty((p.shape[0], 2 * p.shape[1]), np.int8)
    q[:, 0::2] = (p << 4).view(np.int8) >> 4
    q[:, 1::2] = p.view(np.int8) >> 4
    return q[:, :dim]


def changed_rows(live: np.ndarray, snap: np.ndarray, theta: float) -> np.ndarray:
    """Rows of live (a contiguous block) that differ from snap, and with theta > 0 by at
    least theta times the row's norm in snap."""
    out = np.empty(live.shape[0], np.int32)
    from .._kernels import changed_rows as kernel
    n = kernel(live, snap, float(theta), out)
    return out[:n]


def to_float(payload: Payload, dim: int) -> np.ndarray:
    if isinstance(payload, Quantized):
        q = unpack4(payload.q, dim) if payload.q.dtype == np.uint8 else payload.q
        return q.astype(np.float32) * payload.scale[:, None]
    return payload


def take(payload: Payload, sel) -> Payload:
    if isinstance(payload, Quantized):
        return Quantized(payload.q[sel], payload.scale[sel])
    return payload[sel]


def scaled(payload: Payload, factors: np.ndarray) -> Payload:
    """Each row times its factor."""
    if isinstance(payload, Quantized):
        return Quantized(payload.q, payload.scale * factors)
    return payload * factors[:, None]


def add_into(dst: np.ndarray, rows: np.ndarray, payload: Payload, factor: float = 1.0) -> None:
    """dst[rows] += factor * payload (rows distinct, inside dst)."""
    if isinstance(payload, Quantized):
        from .._kernels import add_quantized as int8, add_quantized4 as four
        kernel = four if payload.q.dtype == np.uint8 else int8
        kernel(dst, np.ascontiguousarray(rows, np.int32), payload.q, payload.scale,
               float(factor))
    elif factor == 1.0:
        dst[rows] += payload
    else:
        dst[rows] += np.float32(factor) * payload


def add_into_both(a: np.ndarray, b: np.ndarray, rows: np.ndarray, payload: Payload) -> None:
    """a[rows] += payload and b[rows] += payload (a node's weights and its snapshot taking a
    delta), four-bit rows unpacked once."""
    if isinstance(payload, Quantized) and payload.q.dtype == np.uint8:
        from .._kernels import add_quantized4
        add_quantized4(a, np.ascontiguousarray(rows, np.int32), payload.q, payload.scale,
                       1.0, b)
    else:
        add_into(a, rows, payload)
        add_into(b, rows, payload)


def rebase(live: np.ndarray, snap: np.ndarray, rows: np.ndarray, payload: Payload) -> None:
    """Merged master values arrive: live += value - snap; snap = value (the node's own unsent
    changes, live - snap, are kept)."""
    if isinstance(payload, Quantized):
        from .._kernels import rebase_quantized as int8, rebase_quantized4 as four
        (four if payload.q.dtype == np.uint8 else int8)(
            live, snap, np.ascontiguousarray(rows, np.int32), payload.q, payload.scale)
        return
    # in small blocks: live[idx] += x reads all rows, then writes them back, and whatever
    # the training processes wrote to those rows in between would be lost
    for a in range(0, rows.shape[0], 512):
        i = rows[a:a + 512]
        v = payload[a:a + 512]
        live[i] += v - snap[i]
        snap[i] = v


def row_bytes(dim: int, dtype: str) -> int:
    """Bytes one row takes on the wire (its index included)."""
    if dtype in QUANTIZED:
        return 4 + q_width(dim, dtype) + 2
    return 4 + dim * np.dtype(dtype).itemsize


def dtype_of(payload: Payload) -> str:
    return payload.q.dtype.str if isinstance(payload, Quantized) else payload.dtype.str


def payload_bytes(payload: Payload) -> int:
    if isinstance(payload, Quantized):
        return payload.q.nbytes + 2 * payload.scale.shape[0]    # scales as bfloat16
    return payload.nbytes
