"""Rows as they travel in an exchange: float32 values, or int8 values with one float32 scale
per row (`Quantized`: value = scale * q, the scale being the row's largest magnitude / 127).

A node's delta in int8 keeps its rounding (the snapshot takes what is sent, so the rest stays
in live - snapshot and goes with a later delta); merged rows sent to a node in int8 are
values, so their rounding does not add up from one exchange to the next. The loops are in
the compiled kernels (engine._kernels), one pass each without the GIL.
"""
from __future__ import annotations

from typing import NamedTuple, Union

import numpy as np

# [cluster] delta_dtype -> the dtype a node's delta travels in
WIRE_DTYPES = {"float32": "<f4", "float16": "<f2", "int8": "|i1"}


def values_dtype(delta_dtype: str) -> str:
    """The dtype merged master values travel in: int8 with int8 deltas, else float32."""
    return "|i1" if delta_dtype == "|i1" else "<f4"


class Quantized(NamedTuple):
    q: np.ndarray           # (rows, dim) int8
    scale: np.ndarray       # (rows,) float32


Payload = Union[np.ndarray, Quantized]


def quantize_values(src: np.ndarray, rows: np.ndarray) -> Quantized:
    """src[rows] as int8 values (src float32, C-contiguous)."""
    rows = np.ascontiguousarray(rows, np.int32)
    out = Quantized(np.empty((rows.shape[0], src.shape[1]), np.int8),
                    np.empty(rows.shape[0], np.float32))
    from .._kernels import quantize_values as kernel
    kernel(src, rows, out.q, out.scale)
    return out


def quantize_delta(live: np.ndarray, snap: np.ndarray, rows: np.ndarray) -> Quantized:
    """live[rows] - snap[rows] as int8; snap[rows] takes the sent (rounded) delta."""
    rows = np.ascontiguousarray(rows, np.int32)
    out = Quantized(np.empty((rows.shape[0], live.shape[1]), np.int8),
                    np.empty(rows.shape[0], np.float32))
    from .._kernels import quantize_delta as kernel
    kernel(live, snap, rows, out.q, out.scale)
    return out


def changed_rows(live: np.ndarray, snap: np.ndarray, theta: float) -> np.ndarray:
    """Rows of live (a contiguous block) that differ from snap, and with theta > 0 by at
    least theta times the row's norm in snap."""
    out = np.empty(live.shape[0], np.int32)
    from .._kernels import changed_rows as kernel
    n = kernel(live, snap, float(theta), out)
    return out[:n]


def to_float(payload: Payload) -> np.ndarray:
    if isinstance(payload, Quantized):
        return payload.q.astype(np.float32) * payload.scale[:, None]
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
        from .._kernels import add_quantized
        add_quantized(dst, np.ascontiguousarray(rows, np.int32), payload.q, payload.scale,
                      float(factor))
    elif factor == 1.0:
        dst[rows] += payload
    else:
        dst[rows] += np.float32(factor) * payload


def rebase(live: np.ndarray, snap: np.ndarray, rows: np.ndarray, payload: Payload) -> None:
    """Merged master values arrive: live += value - snap; snap = value (the node's own unsent
    changes, live - snap, are kept)."""
    if isinstance(payload, Quantized):
        from .._kernels import rebase_quantized
        rebase_quantized(live, snap, np.ascontiguousarray(rows, np.int32), payload.q,
                         payload.scale)
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
    return 4 + (dim + 4 if dtype == "|i1" else dim * np.dtype(dtype).itemsize)


def dtype_of(payload: Payload) -> str:
    return "|i1" if isinstance(payload, Quantized) else payload.dtype.str


def payload_bytes(payload: Payload) -> int:
    if isinstance(payload, Quantized):
        return payload.q.nbytes + payload.scale.nbytes
    return payload.nbytes
