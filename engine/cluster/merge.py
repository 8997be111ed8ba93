"""The master copy of some rows of the weights, and the bookkeeping of a merge point.

One class serves both places a merge happens: the dispatcher (every row, when merging is
at the dispatcher) and each node that owns a shard of the rows (when merging is spread
over the nodes, so that no link carries every node's traffic).

Clients (nodes) send deltas (rows they changed since they last synced, relative to the
master values they last received) and receive the rows merged since they last received
them. Every merge bumps a version; each row remembers the version that last changed it and,
when only one client's delta changed it since that client last synced, that client (its
master value then equals the client's own snapshot, so it need not be sent back). Hot rows
(the most frequent words) are exchanged every time; the others only on "cold" exchanges,
so each client keeps one version mark for each kind.
"""
from __future__ import annotations

import threading

import numpy as np

from .rows import Payload, add_into, quantize_values, take


def merge_scale(merge: str, nodes: int) -> tuple[float, float]:
    """The factors deltas are merged with: (hot rows, the others). "sum": what one
    shared-memory run does; "average": every row over the nodes; "auto": the hot rows (which
    every node changes every round, each towards the same place) averaged, the others
    (changed by one node or a few) summed."""
    avg = 1.0 / max(nodes, 1)
    return {"sum": (1.0, 1.0), "average": (avg, avg), "auto": (avg, 1.0)}[merge]


def every_due_row(cold: int, threshold: float) -> bool:
    """Whether a client gets every row merged since it last synced, not only the hot ones:
    on a cold exchange (1), and always with a threshold (only rows that moved are merged).
    A last flush (2) needs no rare rows: the job's weights are the master's."""
    return cold == 1 or threshold > 0


class RowMaster:
    def __init__(self, arrays: dict[str, np.ndarray], hot: dict[str, np.ndarray],
                 version: int = 0):
        self.arrays = arrays                    # name -> (rows, dim) float32, merged in place
        self.hot = hot                          # name -> bool per row
        self.version = version
        self.versions = {k: np.full(a.shape[0], version, np.int64) for k, a in arrays.items()}
        self.clean_for = {k: np.full(a.shape[0], -1, np.int32) for k, a in arrays.items()}
        self.synced: list[list[int]] = []       # per client: [hot version, all-rows version]
        self.lock = threading.RLock()

    def add_client(self, current: bool = True) -> int:
        """A slot for a new client, which holds the current values (or, with
        current=False, values as old as version 0: every row changed since is due)."""
        with self.lock:
            v = self.version if current else 0
            self.synced.append([v, v])
            return len(self.synced) - 1

    def forget(self, slot: int) -> None:
        """The client's view is unknown (a new master after a lost shard): send it every
        row changed since version 0."""
        with self.lock:
            self.synced[slot] = [0, 0]

    def due(self, slot: int, cold: bool) -> tuple[int, dict[str, np.ndarray]]:
        """(version now, {name: rows}) the client has not seen: hot rows, or all rows when
        cold; rows whose master value is the client's own snapshot are left out."""
        with self.lock:
            hot_v, cold_v = self.synced[slot]
            out = {}
            for name, versions in self.versions.items():
                hot = self.hot[name]
                newer = versions > np.where(hot, hot_v, cold_v)
                if not cold:
                    newer &= hot
                out[name] = np.flatnonzero(newer & (self.clean_for[name] != slot)
                                           ).astype(np.int32)
            return self.version, out

    def read(self, name: str, rows: np.ndarray, dtype: str = "<f4") -> Payload:
        """Master rows as float32, or as int8 values (dtype "|i1")."""
        with self.lock:
            if dtype == "|i1":
                return quantize_values(self.arrays[name], rows)
            return self.arrays[name][rows]

    def seen(self, slot: int, version: int, cold: bool) -> None:
        """The client now holds every due row as of `version`."""
        with self.lock:
            s = self.synced[slot]
            s[0] = max(s[0], version)
            if cold:
                s[1] = max(s[1], version)

    def merge(self, slot: int, delta: list, scale=1.0) -> None:
        """Add a client's delta [(name, rows, values)] to the master, scaled (a factor, or
        (factor of the hot rows, factor of the others)); the rows of each piece distinct,
        values float32 or int8 with scales."""
        with self.lock:
            self.version += 1
            v = self.version
            hot_v, cold_v = self.synced[slot]
            for name, rows, vals in delta:
                if rows.size == 0:
                    continue
                m = self.arrays[name]
                versions = self.versions[name]
                # rows nobody else changed since this client's last sync now equal its
                # snapshot (under a plain sum): they need not be sent back to it
                clean = versions[rows] <= np.where(self.hot[name][rows], hot_v, cold_v)
                hot_f, cold_f = scale if isinstance(scale, tuple) else (scale, scale)
                if hot_f == cold_f:
                    add_into(m, rows, vals, cold_f)
                    clean &= cold_f == 1.0
                else:
                    hot = self.hot[name][rows]
                    add_into(m, rows[hot], take(vals, hot), hot_f)
                    add_into(m, rows[~hot], take(vals, ~hot), cold_f)
                    clean &= np.where(hot, hot_f == 1.0, cold_f == 1.0)
                versions[rows] = v
                self.clean_for[name][rows] = np.where(clean, slot, -1)


class Shard:
    """The master of the rows r % count == index of every matrix, kept by the node that
    owns it, merged from every node's delta. Rows are addressed globally on the wire and
    stored compactly here (local row = r // count)."""

    def __init__(self, index: int, count: int, source: dict[str, np.ndarray],
                 hot: dict[str, tuple[int, int]], generation: int):
        self.index, self.count, self.generation = index, count, generation
        arrays, masks = {}, {}
        for name, full in source.items():
            arrays[name] = np.array(full[index::count], dtype=np.float32)
            lo, hi = hot[name]
            g = self.to_global(np.arange(arrays[name].shape[0]))
            masks[name] = (g >= lo) & (g < hi)
        # a new generation (a shard rebuilt elsewhere) starts above version 0, so every
        # row is due to every client that has not synced with it yet
        self.master = RowMaster(arrays, masks, version=0 if generation == 0 else 1)
        self.clients: dict[str, int] = {}
        self.inbox: dict[int, list] = {}
        self.outbox: dict[int, list] = {}

    def to_global(self, local: np.ndarray) -> np.ndarray:
        return (local * self.count + self.index).astype(np.int32)

    def to_local(self, name: str, rows: np.ndarray) -> np.ndarray:
        n = self.master.arrays[name].shape[0]
        if rows.size and ((rows % self.count != self.index).any() or rows.min() < 0
                          or rows.max() // self.count >= n):
            raise ValueError(f"shard {self.index}: rows of {name} that are not in this shard")
        return (rows // self.count).astype(np.int64)

    def slot(self, client: str, current: bool = False) -> int:
        if client not in self.clients:
            self.clients[client] = self.master.add_client(current)
        return self.clients[client]
