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

from .rows import QUANTIZED, Payload, add_into, quantize_delta, quantize_values, scaled, take

MERGES = ("scaled", "damped", "sum", "average")


def damped_factors(per_round: np.ndarray, nodes: int, rate: float) -> np.ndarray:
    """Per-row merge factors from how often a node updates each row in a round (k, in
    updates of the word: its share of the corpus times the round's words). A row whose
    updates pull it towards one place, closing exp(-rate) of the gap each, goes
    1 - exp(-rate N k) of the way after N nodes' k updates each, where the sum of their
    deltas goes N (1 - exp(-rate k)): the sum overshoots rows every node moves all the way,
    and N such deltas summed swing the row N - 1 times past its place, each round further.
    The factor is twice the ratio of the two, at most 1: the sum for rows updated rarely, and
    for frequent rows the swing two nodes' sum makes (measured best at 2 nodes), whatever N;
    at 2 nodes it is the sum."""
    x = rate * np.asarray(per_round, np.float64)
    den = -nodes * np.expm1(-x)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(den > 0, -np.expm1(-nodes * x) / den, 1.0)
    return np.minimum(1.0, 2.0 * ratio).astype(np.float32)


class MergeRule:
    """How nodes' deltas are merged: "scaled" (every row over the nodes, each node having
    trained at N times the learning rate: see `alpha_scale`), "damped" (see
    damped_factors), "sum" (what one shared-memory run does) or "average" (every row over
    the nodes, at the job's learning rate). Factors are computed once per node count (and
    shard: `part` picks a shard's rows).

    Why "scaled" matches one machine's training: a row that only one node's words touch
    gets that node's step (N alpha, over N); a row every node moves the same way in a
    round moves N steps of alpha, as N times the words would move it; and a row that has
    settled (the frequent words', which all nodes pull to the same place) keeps the noise
    of one run at alpha: each node's copy wanders with a spread that grows with its step
    (N alpha), and the mean of N such copies has 1/N of it. The plain sum keeps the first
    two and multiplies the third by N (at 4 nodes it does not train); the plain average
    divides the first two by N."""

    def __init__(self, merge: str, rate: float = 0.1, per_round: np.ndarray | None = None):
        if merge not in MERGES:
            raise ValueError(f"merge: expected one of {', '.join(MERGES)}, got {merge!r}")
        self.merge, self.rate, self.per_round = merge, rate, per_round
        self._cache: dict = {}

    def factors(self, nodes: int, part: slice = slice(None)):
        """A factor for every row (a float), or {matrix: factor per row} for the rows of
        syn0 and syn1neg (word rows; syn1's Huffman nodes are summed)."""
        nodes = max(nodes, 1)
        if self.merge in ("average", "scaled"):
            return 1.0 / nodes
        if self.merge == "sum" or nodes <= 2 or self.per_round is None:
            return 1.0
        key = (nodes, part.start, part.step)
        if key not in self._cache:
            f = damped_factors(self.per_round[part], nodes, self.rate)
            self._cache[key] = {"syn0": f, "syn1neg": f}
        return self._cache[key]

    def alpha_scale(self, nodes: int) -> float:
        """The factor on the learning rate of the tasks handed to nodes while `nodes` train."""
        return float(max(nodes, 1)) if self.merge == "scaled" else 1.0


ALL_ROWS = 1 << 62          # a reach that takes every row


def due_reach(cold: int, band: int, threshold: float) -> int:
    """How many of each matrix's most frequent rows a client gets beyond the hot ones when
    merged since it last had them: every row on a cold exchange (1) without a band, and
    always with a threshold (only rows that moved are merged); the `band` most frequent on
    a cold exchange with one; none on a hot exchange, nor on a last flush (2), which needs
    no rare rows: the job's weights are the master's."""
    if threshold > 0 or (cold == 1 and band <= 0):
        return ALL_ROWS
    return int(band) if cold == 1 else 0


def frequency_rank(name: str, rows: np.ndarray, n_rows: int) -> np.ndarray:
    """Each of a matrix's `rows` (global numbers) ranked by its word's frequency, 0 the
    most frequent, as hot_range orders them: syn0/syn1neg by row, syn1 (the Huffman tree,
    its top last) from its last row."""
    rows = np.asarray(rows, np.int64)
    return (n_rows - 1 - rows) if name == "syn1" else rows


# A shadow: what a merge point knows of a client's snapshot of some rows, {matrix: (first
# row, those rows)}; merged rows in it go to the client as a delta from it (RowMaster.outgoing)


def _inside(shadow: dict, name: str, rows: np.ndarray) -> np.ndarray | None:
    """Which of `rows` the shadow of `name` holds (None: it holds none of that matrix)."""
    if name not in shadow:
        return None
    lo, s = shadow[name]
    return (rows >= lo) & (rows < lo + s.shape[0])


def track(shadow: dict, delta: list, factor: float = 1.0) -> None:
    """A client's snapshot took these rows [(name, rows, values)] (its own delta, or one
    sent to it; factor -1 takes a delta back): its shadow takes them too."""
    for name, rows, vals in delta:
        inside = _inside(shadow, name, rows)
        if inside is not None and inside.any():
            lo, s = shadow[name]
            add_into(s, rows[inside] - lo, take(vals, inside), factor)


class RowMaster:
    def __init__(self, arrays: dict[str, np.ndarray], hot: dict[str, np.ndarray],
                 version: int = 0, rank: dict[str, np.ndarray] | None = None):
        self.arrays = arrays                    # name -> (rows, dim) float32, merged in place
        self.hot = hot                          # name -> bool per row
        # name -> each row's frequency rank (0 the most frequent; due's `reach`)
        self.rank = rank or {k: frequency_rank(k, np.arange(a.shape[0]), a.shape[0])
                             for k, a in arrays.items()}
        self.version = version
        self.versions = {k: np.full(a.shape[0], version, np.int64) for k, a in arrays.items()}
        self.clean_for = {k: np.full(a.shape[0], -1, np.int32) for k, a in arrays.items()}
        self.synced: list[dict[str, np.ndarray] | None] = []  # per client: the version
        self.free: list[int] = []                       # as of which it holds each row;
        self.lock = threading.RLock()                   # slots released, for reuse
        self.scopes: dict = {}                          # (name, reach) -> rows (_scope)

    def add_client(self, current: bool = True) -> int:
        """A slot for a new client (a released one first), which holds the current values
        (or, with current=False, values as old as version 0: every row changed since is
        due)."""
        with self.lock:
            v = self.version if current else 0
            held = {k: np.full(a.shape[0], v, np.int64) for k, a in self.arrays.items()}
            if self.free:
                slot = self.free.pop()
                self.synced[slot] = held
                return slot
            self.synced.append(held)
            return len(self.synced) - 1

    def release_client(self, slot: int) -> None:
        """A client gone for good (a dropped node: if it comes back it is a new client):
        its versions are freed for the slot's next client, and no row stays marked as
        equal to its snapshot."""
        with self.lock:
            if self.synced[slot] is None:
                return
            self.synced[slot] = None
            for marks in self.clean_for.values():
                marks[marks == slot] = -1
            self.free.append(slot)

    def forget(self, slot: int) -> None:
        """The client's view is unknown (a new master after a lost shard): send it every
        row changed since version 0."""
        with self.lock:
            for held in self.synced[slot].values():
                held[:] = 0

    def _scope(self, name: str, reach: int) -> slice:
        """The rows an exchange of this reach covers, the hot ones and the `reach` most
        frequent: a run of rows, rows being stored by frequency (made once per reach)."""
        key = (name, reach)
        scope = self.scopes.get(key)
        if scope is None:
            idx = np.flatnonzero(self.hot[name] | (self.rank[name] < reach))
            if idx.size and idx[-1] - idx[0] + 1 != idx.size:
                raise ValueError(f"{name}: hot rows that are not the most frequent")
            scope = self.scopes[key] = slice(int(idx[0]), int(idx[-1]) + 1) if idx.size \
                else slice(0, 0)
        return scope

    def due(self, slot: int, reach: int) -> tuple[int, dict[str, np.ndarray]]:
        """(version now, {name: rows}) the client has not seen: the hot rows and the
        `reach` most frequent (due_reach; ALL_ROWS: every row); rows whose master value is
        the client's own snapshot are left out."""
        with self.lock:
            out = {}
            for name, versions in self.versions.items():
                s = self._scope(name, reach)
                newer = (versions[s] > self.synced[slot][name][s]) & \
                    (self.clean_for[name][s] != slot)
                out[name] = (np.flatnonzero(newer) + s.start).astype(np.int32)
            return self.version, out

    def read(self, name: str, rows: np.ndarray, dtype: str = "<f4") -> Payload:
        """Master rows as float32, or as int8 or four-bit values (dtype "|i1", "|u1")."""
        with self.lock:
            if dtype in QUANTIZED:
                return quantize_values(self.arrays[name], rows, dtype)
            return self.arrays[name][rows]

    def delta(self, name: str, rows: np.ndarray, lo: int, shadow: np.ndarray,
              dtype: str) -> Payload:
        """Master rows minus a client's shadow (its snapshot of rows lo.., as this side
        knows it), quantized; the shadow takes what is sent (the rounding stays for the
        next delta)."""
        with self.lock:
            m = self.arrays[name]
            return quantize_delta(m[lo:lo + shadow.shape[0]], shadow, rows - lo, dtype)

    def outgoing(self, due: dict[str, np.ndarray], shadow: dict,
                 dtype: str) -> list[tuple[str, np.ndarray, Payload, bool]]:
        """The due rows as they go to a client: [(matrix, rows, payload, is_delta)]; those
        in its shadow as a four-bit delta from it (the shadow takes what is sent), the
        others as values in `dtype`."""
        out = []
        for name, rows in due.items():
            inside = _inside(shadow, name, rows)
            if inside is not None:
                hot, rows = rows[inside], rows[~inside]
                if hot.size:
                    lo, s = shadow[name]
                    out.append((name, hot, self.delta(name, hot, lo, s, "|u1"), True))
            if rows.size:
                out.append((name, rows, self.read(name, rows, dtype), False))
        return out

    def seen(self, slot: int, version: int, reach: int) -> None:
        """The client now holds every row due at `version` with this reach."""
        with self.lock:
            for name, held in self.synced[slot].items():
                scope = self._scope(name, reach)
                held[scope] = np.maximum(held[scope], version)

    def merge(self, slot: int, delta: list, scale=1.0) -> None:
        """Add a client's delta [(name, rows, values)] to the master, scaled (a factor, or
        {matrix: factor per row}, as MergeRule.factors gives); the rows of each piece
        distinct, values float32 or int8 with scales."""
        with self.lock:
            self.version += 1
            v = self.version
            for name, rows, vals in delta:
                if rows.size == 0:
                    continue
                m = self.arrays[name]
                versions = self.versions[name]
                # rows nobody else changed since this client's last sync now equal its
                # snapshot (under a plain sum): they need not be sent back to it
                clean = versions[rows] <= self.synced[slot][name][rows]
                f = scale.get(name, 1.0) if isinstance(scale, dict) else scale
                if np.isscalar(f):
                    add_into(m, rows, vals, f)
                else:                            # a factor per row
                    f = f[rows]
                    add_into(m, rows, scaled(vals, f))
                clean &= f == 1.0
                versions[rows] = v
                self.clean_for[name][rows] = np.where(clean, slot, -1)


class Shard:
    """The master of the rows r % count == index of every matrix, kept by the node that
    owns it, merged from every node's delta. Rows are addressed globally on the wire and
    stored compactly here (local row = r // count)."""

    def __init__(self, index: int, count: int, source: dict[str, np.ndarray],
                 hot: dict[str, tuple[int, int]], generation: int):
        self.index, self.count, self.generation = index, count, generation
        arrays, masks, rank = {}, {}, {}
        for name, full in source.items():
            arrays[name] = np.array(full[index::count], dtype=np.float32)
            lo, hi = hot[name]
            g = self.to_global(np.arange(arrays[name].shape[0]))
            masks[name] = (g >= lo) & (g < hi)
            rank[name] = frequency_rank(name, g, full.shape[0])
        # a new generation (a shard rebuilt elsewhere) starts above version 0, so every
        # row is due to every client that has not synced with it yet
        self.master = RowMaster(arrays, masks, version=0 if generation == 0 else 1, rank=rank)
        self.clients: dict[str, int] = {}
        self.inbox: dict[int, list] = {}
        self.outbox: dict[int, list] = {}
        # four-bit rows: the hot rows go to a client as a delta from a shadow of its
        # snapshot. A first master (generation 0) starts from the weights every client
        # started from, so each client's shadow starts as a copy of these; a rebuilt one
        # does not know its clients' snapshots and sends values.
        self.initial = {}
        if generation == 0:
            for name, mask in masks.items():
                hot = np.flatnonzero(mask)
                if hot.size:
                    lo, hi = int(hot[0]), int(hot[-1]) + 1
                    self.initial[name] = (lo, arrays[name][lo:hi].copy())
        self.shadows: dict[int, dict] = {}
        self.pending: dict[int, tuple[int, list]] = {}    # slot -> (version, deltas sent)

    def shadow(self, slot: int) -> dict:
        """The client's shadow ({name: (first local row, rows)}; {} when there is none)."""
        if slot not in self.shadows:
            self.shadows[slot] = {k: (lo, a.copy()) for k, (lo, a) in self.initial.items()}
        return self.shadows[slot]

    def settle(self, slot: int, generation, version) -> None:
        """The client acknowledged the reply of (generation, version): the deltas sent with
        it are in its snapshot. Any other acknowledgement means that reply never reached
        it (a lost connection): its deltas are taken back from the shadow, as the rows'
        marks already make them due again."""
        sent = self.pending.pop(slot, None)
        if sent is not None and (generation != self.generation or version != sent[0]):
            track(self.shadow(slot), sent[1], -1.0)

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
