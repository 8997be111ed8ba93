"""A word2vec job on one node of the cluster (NodeJob; engine.cluster.service serves it).

A dispatcher opens the job (settings, table and weight shapes), uploads the sampling tables
and the current weights (straight into shared memory), then calls `exchange` again and
again: each call brings tasks (and the id-stream chunks this node has not cached yet), and
returns the tasks finished since the last call with the weights' delta (rows changed since
then). A LocalSession trains the queued tasks continuously in the background, so the node
keeps training while deltas and merged rows are in flight. Merged rows from the dispatcher
(`push_rows`) are rebased onto the live weights: the node's own unsent changes are kept.

When merging is spread over the nodes, the job also owns shards of the rows (their merge
point) and syncs its delta with the other shards' owners. Every argument is checked
(engine.cluster.protocol) before anything is written.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil

from ..errors import EngineError
from ..local.hotrows import choose_hot_rows
from ..local.kernel import WEIGHTS, settle_products
from ..local.session import LocalSession
from ..local.sources import FeedSource
from ..local.workers import Standby
from ..runtime.cpu import CpuTally, ThreadCpu, own_cpu_seconds
from ..runtime.memory import tree_pss_mb
from ..runtime.shm import SharedArrays, sweep_temp_dirs
from ..word2vec.checks import check_arrays
from ..word2vec.schedule import KernelSettings
from ..word2vec.state import init_vectors
from . import transport
from .jobs import CallGuard
from .merge import MergeRule, Shard, due_reach, track
from .protocol import (
    check_band,
    check_cold,
    check_int as _int,
    decode_chunk,
    decode_job_spec,
    decode_local_hot,
    decode_piece,
    piece_is_delta,
    decode_rows,
    decode_task,
    encode_done,
    encode_piece,
    encode_rows,
    hot_range,
    is_name,
    pack_array,
    row_pieces,
    unpack_array,
)
from .rows import (
    QUANTIZED,
    add_into_both,
    changed_delta,
    changed_rows,
    dtype_of,
    payload_bytes,
    quantize_delta,
    rebase as rebase_rows,
    row_bytes,
    take,
    to_float,
    values_dtype,
)
from .transport import CommError

log = logging.getLogger("engine")

MEMORY_EVERY = 10.0     # seconds between readings of a node's memory (its peak in the report)

_SCRATCH_PREFIX = "engine-node-"


# the last flush of quantized rows: each part carries the rounding of the one before
FLUSH_PARTS = ["|u1", "|i1", "|i1"]


MAX_PUT_PIECES = 4096                    # pieces of one shard_put call
# rows a shard_put call carries, or a shard_sync reply (the rest: pulled a piece at a time);
# a round's hot rows fit in one, and a node's messages in flight stay small
SHARD_CALL_BYTES = 1 << 20


def sweep_scratch() -> None:
    """Remove cache folders left by workers that were killed (their pid is gone)."""
    sweep_temp_dirs(_SCRATCH_PREFIX)


def _local_hot(spec, processes: int, vocab: int, dim: int,
               settings: KernelSettings) -> tuple[int, int, int]:
    """This node's processes' hot rows (words, sync_words, tiers), chosen as the local
    engine chooses them (choose_hot_rows) for this node's process count, from the job's
    settings as they came over the wire (checked). None sent: no hot rows."""
    hot = decode_local_hot(spec, vocab)
    if hot is None:
        return 0, 1024, 0
    return choose_hot_rows(hot[0], processes, vocab, dim, hot[1], settings)


class NodeJob(CallGuard):
    """One job on this node: shared weights, snapshot, chunk cache, training session."""

    def __init__(self, spec: dict, workers: int, key: bytes | None = None):
        js = decode_job_spec(spec)
        super().__init__(js.job)
        self.member = js.member
        self.key = key
        self.peer_timeout = js.peer_timeout
        # merging spread over the nodes: the shards this node owns, who owns the others
        self.shards: dict[int, Shard] = {}
        self.n_shards = 0
        self.peers: dict[int, str] = {}
        self.peer_proxies: dict[int, object] = {}
        self.acks: dict[int, list] = {}
        self.merge_nodes = 1                    # the node count the shards merge for
        self.pool = None
        self.peer_bytes = [0, 0]
        self.shard_lock = threading.Lock()
        # what the exchange costs here: bytes through this process's sockets, and its own
        # CPU (every exchange, merge and rebase runs in it) against its trainers'
        self.wire0 = transport.WIRE.snapshot()
        self.train_cpu = CpuTally()
        # the thread that hands tasks to the training processes and takes their results
        # (LocalSession.run, which a local run's parent runs too): not the exchange's
        self.dispatch_cpu = ThreadCpu()
        self.memory_at, self.memory_last = -1e9, 0.0
        self.dim, self.vocab = js.dim, js.vocab
        self.settings = settle_products(js.settings, js.products, js.dim, js.vocab,
                                        f"job {js.job} products", strict=False)
        # counted from here: choosing the kernel (timing BLAS against the loops, as a local
        # run does too) is not the exchange's
        self.cpu0 = own_cpu_seconds()
        self.max_ids = js.max_chunk_ids
        self.timeout = js.timeout_seconds
        self.workers = min(workers, js.workers or workers)
        self.hot_rows, self.tiers = js.hot_rows, js.tiers
        self.deltas = 0                         # deltas taken (their count picks the tier)
        self.delta_threshold, self.delta_dtype = js.delta_threshold, js.delta_dtype
        # past this many words since the last exchange no task is handed to the training
        # processes until the next exchange takes the delta (0: never)
        self.pause_words = js.pause_words
        self.rule = MergeRule(js.merge, js.merge_rate, js.per_round)
        self.local_hot = _local_hot(js.local_hot, self.workers, js.vocab, js.dim,
                                    self.settings)
        shapes = js.shapes
        need = sum(math.prod(sh) * np.dtype(dt).itemsize for sh, dt in shapes.values())
        snap = sum(math.prod(shapes[n][0]) * 4 for n in WEIGHTS)
        avail = psutil.virtual_memory().available
        if need + snap > 0.9 * avail:
            raise MemoryError(f"this job needs {(need + snap) / 2**20:,.0f} MB (weights, tables "
                              f"and snapshot) but {avail / 2**20:,.0f} MB are available")
        self.shapes = shapes
        self.weight_shapes = {n: shapes[n][0] for n in WEIGHTS}
        self.shared = SharedArrays.create_empty(shapes)     # (checks /dev/shm first)
        self.scratch = None
        try:
            self._setup(shapes)
        except BaseException:                   # nothing of a job that did not open stays
            self.shared.unlink()
            if getattr(self, "ids_fh", None) is not None:
                self.ids_fh.close()
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)
            raise

    def _setup(self, shapes: dict) -> None:
        """The job's id file, snapshot, counters and standby processes."""
        self.scratch = tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-")
        self.ids_path = os.path.join(self.scratch, "ids.i32")
        self.ids_fh = open(self.ids_path, "wb")
        self.ids_written = 0
        self.chunk_at: dict[int, tuple[int, int]] = {}
        self.snapshot = {n: np.zeros(shapes[n][0], np.float32) for n in WEIGHTS}
        self.lock = threading.Lock()            # done list, counters
        self.setup_lock = threading.Lock()      # put_array against start
        self.done: list = []
        self.fed = self.finished = 0
        self.trained_words = 0                  # raw words trained since the last exchange
        self.total_words = 0
        self.error: str | None = None
        self.session = None
        self.feed = FeedSource(gate=self._may_train)
        self.stop = threading.Event()
        self.thread = None
        self.out_pieces: list = []
        self.last_call = time.monotonic()
        self.wake = threading.Condition(self.lock)
        self.round_wanted = 0                   # the words an exchange waits for (wait_round)
        # the training processes start now, while the tables and weights arrive (last: a
        # failure above leaves none behind)
        self.standby = Standby(self.workers)

    # ---- setup --------------------------------------------------------------------------
    def put_array(self, name: str, start: int, packed: dict) -> None:
        if name not in self.shapes:
            raise ValueError(f"put_array: unknown array {name!r}")
        shape, dtype = self.shapes[name]
        arr = unpack_array(packed, dtype, len(shape), (None,) + shape[1:], name)
        _int(start, 0, shape[0], "start")
        if start + arr.shape[0] > shape[0]:
            raise ValueError(f"put_array {name}: rows {start}..{start + arr.shape[0]} past "
                             f"{shape[0]}")
        with self.setup_lock:                    # never after start has checked the tables
            if self.session is not None:
                raise ValueError("put_array: the job has started (its weights are live)")
            self.shared[name][start:start + arr.shape[0]] = arr
            if name in self.snapshot:
                self.snapshot[name][start:start + arr.shape[0]] = arr

    def seed_array(self, name: str, seed: int, crc: int) -> bool:
        """Draw syn0 from the job's seed as local training draws it (what the dispatcher
        would otherwise upload). True if it matches the dispatcher's checksum of its own
        copy; if not, the array goes back to zeros and the dispatcher uploads it."""
        if name != "syn0":
            raise ValueError(f"seed_array: only syn0 is drawn from a seed, not {name!r}")
        _int(seed, 0, (1 << 63) - 1, "seed")
        _int(crc, 0, (1 << 32) - 1, "crc")
        with self.setup_lock:
            if self.session is not None:
                raise ValueError("seed_array: the job has started (its weights are live)")
            arr = self.shared[name]
            init_vectors(arr, seed)
            if zlib.crc32(memoryview(arr).cast("B")) != crc:
                arr[:] = 0
                return False
            self.snapshot[name][:] = arr
            return True

    def _check_tables(self) -> None:
        """The kernels index with these: every entry must stay inside the weights."""
        arrays = {k: self.shared[k] for k in self.shapes}
        if self.shapes["syn0"][0][0] != self.vocab:
            raise ValueError(f"weights syn0: {self.shapes['syn0'][0][0]} rows for a "
                             f"vocabulary of {self.vocab}")
        try:
            check_arrays(arrays, self.settings, "job")
        except EngineError as exc:
            raise ValueError(str(exc)) from None

    def start(self) -> None:
        with self.setup_lock:
            if self.session is not None:
                raise ValueError("start: the job has started already")
            self._check_tables()
            words, sync, tiers = self.local_hot
            self.session = LocalSession({}, self.settings, self.ids_path, self.max_ids,
                                        self.workers, hot_words=words, sync_words=sync,
                                        hot_tiers=tiers, shared=self.shared,
                                        standby=self.standby)
        self.thread = threading.Thread(target=self._train, name="node-train", daemon=True)
        self.thread.start()

    def _task_done(self, task, effective, loss=0.0, examples=0) -> None:
        """A training process finished a task (LocalSession.run's on_done)."""
        with self.lock:
            self.done.append(encode_done(task.task_id, effective, loss, examples))
            self.finished += 1
            self.trained_words += task.raw_words
            self.total_words += task.raw_words
            # wake an exchange waiting for its round only once it may go on: every
            # wake-up is a context switch on the cores that train
            if self.trained_words >= self.round_wanted or self.finished >= self.fed:
                self.wake.notify_all()

    def _train(self) -> None:
        self.dispatch_cpu.begin()
        try:
            self.session.run(self.feed, self._task_done, stop=self.stop)
        except BaseException as exc:           # reported at the next exchange
            with self.lock:
                self.error = f"{type(exc).__name__}: {exc}"
                self.wake.notify_all()
        finally:
            self.dispatch_cpu.end()

    # ---- rounds -------------------------------------------------------------------------
    def push_rows(self, name: str, rows: dict, values: dict) -> None:
        """Rebase merged master rows: live += master - snapshot; snapshot = master."""
        if name not in WEIGHTS:
            raise ValueError(f"push_rows: unknown matrix {name!r}")
        idx, vals = decode_rows(rows, values, self.shapes[name][0][0], self.dim,
                                f"push_rows {name}")
        self.rebase(name, idx, vals)

    def push_delta(self, name: str, rows: dict, values: dict) -> None:
        """Merged master rows as a delta from this node's snapshot (the dispatcher keeps a
        shadow of it): live += delta; snapshot += delta (the node's own unsent changes,
        live - snapshot, are kept)."""
        if name not in WEIGHTS:
            raise ValueError(f"push_delta: unknown matrix {name!r}")
        idx, vals = decode_rows(rows, values, self.shapes[name][0][0], self.dim,
                                f"push_delta {name}")
        self.take_rows(name, idx, vals, True)

    def take_rows(self, name: str, idx: np.ndarray, vals, is_delta: bool) -> None:
        """Merged rows from a merge point: a delta from this node's snapshot (added to the
        weights and the snapshot), or values (rebased onto)."""
        if is_delta:
            add_into_both(self.shared[name], self.snapshot[name], idx, vals)
        else:
            self.rebase(name, idx, vals)

    def rebase(self, name: str, idx: np.ndarray, vals) -> None:
        rebase_rows(self.shared[name], self.snapshot[name], idx, vals)

    def add_chunks(self, chunks) -> None:
        if not isinstance(chunks, list):
            raise ValueError("chunks: expected a list")
        for item in chunks:
            k, ids = decode_chunk(item, self.max_ids, self.vocab)
            if k in self.chunk_at:
                continue
            self.ids_fh.write(ids.tobytes())
            self.chunk_at[k] = (self.ids_written, ids.shape[0])
            self.ids_written += ids.shape[0]
        self.ids_fh.flush()

    def add_tasks(self, tasks) -> None:
        if not isinstance(tasks, list):
            raise ValueError("tasks: expected a list")
        local = [decode_task(t, self.chunk_at) for t in tasks]
        with self.lock:
            self.fed += len(local)
        self.feed.feed(local)

    def _may_train(self) -> bool:
        """Whether the training processes may take another task (see pause_words)."""
        return self.pause_words <= 0 or self.trained_words < self.pause_words

    def wait_round(self, round_words: int, wait: float) -> None:
        deadline = time.monotonic() + wait
        with self.lock:
            self.round_wanted = round_words
            try:
                while (self.error is None and self.trained_words < round_words
                       and self.finished < self.fed and not self.stop.is_set()):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.wake.wait(min(left, 1.0))
            finally:
                self.round_wanted = 0

    def take_delta(self, cold: int, block_rows: int = 16384, band: int = 0) -> dict:
        """Rows changed since the last delta: (live - snapshot); the snapshot catches up.
        Only the hot rows (or, with a threshold, the rows that changed by at least that
        fraction of their norm) unless `cold` is 1 (then every changed row); the others'
        changes wait in live - snapshot. With int8 rows, their rounding stays there too.
        `cold` 2 asks for the last flush: every change, nothing left behind (see _delta),
        once every task sent here is done (until then, a hot exchange). With `band` > 0 a
        cold exchange takes only the `band` most frequent rows of each matrix (the others
        wait for a cold exchange without one). The reply's `flushed` says which was made: the
        tasks it reports are complete only when it is 1 (asked without a band) or 2."""
        # the done list first: every update of a task reported done is in this delta
        with self.lock:
            done, self.done = self.done, []
            trained, self.trained_words = self.trained_words, 0
            error = self.error
            drained = self.finished >= self.fed
        self.feed.wake()                         # a paused node trains on
        if error:
            raise RuntimeError(f"training on this node failed: {error}")
        if cold == 2 and not drained:            # the last flush waits for the last task
            cold = 0
        band = band if cold == 1 else 0
        failed = {}
        self.out_pieces = []
        if self.n_shards:                        # merged at the shards' owners, not here
            parts: dict[int, list] = {j: [] for j in range(self.n_shards)}
            rows_total = self._delta(cold, block_rows,
                                     lambda j, *piece: parts[j].append(piece), self.n_shards,
                                     band)
            failed = self.sync_shards(parts, cold, band)
            del parts
        else:
            # each block into messages of at most PIECE_BYTES as it is made: the rows of a
            # last flush (every row) are never held twice
            def encode(_, name, idx, vals):
                for lo, hi in row_pieces(idx.shape[0], row_bytes(self.dim, dtype_of(vals))):
                    self.out_pieces.append(
                        encode_piece(name, idx[lo:hi], take(vals, slice(lo, hi))))

            rows_total = self._delta(cold, block_rows, encode, band=band)
        return {"done": done, "pieces": len(self.out_pieces), "rows": rows_total,
                "flushed": cold,
                "trained_words": trained, "queued": self.fed - self.finished,
                "memory_mb": self.memory_mb(),
                "failed_shards": [[j, self.peers.get(j, ""), why] for j, why in failed.items()],
                "peer_bytes": list(self.peer_bytes), "wire": self.wire(),
                "cpu": self.cpu()}

    def _delta(self, cold: int, block_rows: int, sink, shards: int = 0, band: int = 0) -> int:
        """This delta, the snapshot caught up, handed to sink(shard, matrix, rows, values) a
        block at a time (shard: the owner of those rows, row % `shards`; 0 without shards).
        Four bits or int8 (the rows chosen and rounded in one compiled pass; the rounding
        stays in live - snapshot), float16 (the same), or float32. The last flush (cold 2)
        leaves nothing behind: with quantized rows each row goes in three parts, four bits,
        then int8, then int8 again, each carrying the rounding of the one before (what
        stays is at most 1/903,224 of the row's largest change; two thirds of the bytes of
        float32), else in float32. A cold exchange with a `band` carries the hot rows and
        the band's. Returns how many rows it carries (a row of a flush once for each part)."""
        rows_total = 0
        n = max(shards, 1)
        theta = 0.0 if cold else self.delta_threshold
        parts = [self.delta_dtype]
        if cold == 2:
            parts = FLUSH_PARTS if self.delta_dtype in QUANTIZED else ["<f4"]
        dtype = parts[0]
        hot = self.hot_now()
        for name in WEIGHTS:
            live, snap = self.shared[name], self.snapshot[name]
            lo, hi = (0, live.shape[0]) if (cold and not band) or theta else \
                hot_range(name, live.shape[0], max(hot, band))   # band: cold only
            for a in range(lo, hi, block_rows):  # blocks: bounded float temporaries
                b = min(a + block_rows, hi)
                if not theta and dtype in QUANTIZED + ("<f4",):  # choose, round: one pass
                    for j in range(n):           # each shard's rows of the block apart
                        for part in parts:
                            rows, vals = changed_delta(live[a:b], snap[a:b], part,
                                                       (j - a) % n, n)
                            rows += a
                            if rows.size:
                                rows_total += rows.size
                                sink(j, name, rows, vals)
                    continue
                changed = changed_rows(live[a:b], snap[a:b], theta) + a
                for j in range(n):
                    rows = changed[changed % n == j] if n > 1 else changed
                    if rows.size == 0:
                        continue
                    if dtype in QUANTIZED:
                        vals = quantize_delta(live, snap, rows, dtype)
                    else:
                        now = live[rows]         # one read: what the snapshot takes
                        vals = (now - snap[rows]).astype(dtype)
                        if dtype == "<f4":
                            snap[rows] = now
                        else:                    # what travels; the rounding stays here
                            snap[rows] += vals
                    rows_total += rows.size
                    sink(j, name, rows, vals)
        return rows_total

    def hot_now(self) -> int:
        """The hot rows this delta carries. With tiers T, the most frequent 1/2^T of them go
        with every delta, twice as many with every second, ... all with every 2^T-th: a
        row waits at most as many rounds as it is frequent words' times rarer."""
        k, self.deltas = self.deltas, self.deltas + 1
        if not self.tiers or k == 0:
            return self.hot_rows
        level = min((k & -k).bit_length() - 1, self.tiers)
        return self.hot_rows >> (self.tiers - level)

    def memory_mb(self) -> float:
        """This node's memory (PSS of its process tree), measured at most every MEMORY_EVERY
        seconds: reading it walks the page tables of every process, weights included."""
        now = time.monotonic()
        if now - self.memory_at >= MEMORY_EVERY:
            self.memory_at, self.memory_last = now, round(tree_pss_mb(), 1)
        return self.memory_last

    def wire(self) -> list[int]:
        """[sent, received]: bytes through this process's sockets since the job opened."""
        sent, received = transport.WIRE.snapshot()
        return [sent - self.wire0[0], received - self.wire0[1]]

    def cpu(self) -> list[float]:
        """[exchange, training, dispatch]: CPU seconds since the job opened of this process
        (exchanges, merges, rebases, chunks and tasks received) less its dispatch thread,
        of its training processes, and of that thread (tasks handed to the training
        processes, their results taken: what a local run's parent does)."""
        procs = self.session.procs.values() if self.session is not None else ()
        dispatch = self.dispatch_cpu.read()
        return [round(max(0.0, own_cpu_seconds() - self.cpu0 - dispatch), 3),
                round(self.train_cpu.read(p.pid for p in procs), 3), round(dispatch, 3)]

    # ---- merging spread over the nodes -------------------------------------------------
    def own_shard(self, index: int, count: int, generation: int) -> None:
        """Become the merge point of rows r % count == index, starting from this node's
        snapshot (the master as it last saw it)."""
        _int(count, 1, 1 << 16, "shard count")
        _int(index, 0, count - 1, "shard")
        _int(generation, 0, 1 << 40, "generation")
        if self.n_shards and count != self.n_shards:
            raise ValueError(f"shard count {count}: this job has {self.n_shards}")
        hot = {n: hot_range(n, self.shapes[n][0][0], self.hot_rows) for n in WEIGHTS}
        shard = Shard(index, count, self.snapshot, hot, generation)
        if generation:
            shard.slot(self.member, current=True)
        with self.shard_lock:
            self.shards[index] = shard
            self.n_shards = count

    def set_peers(self, peers, nodes) -> None:
        if not isinstance(peers, list):
            raise ValueError("peers: expected [[shard, address], ...]")
        found = {}
        for item in peers:
            if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], str):
                raise ValueError("peers: expected [[shard, address], ...]")
            found[_int(item[0], 0, 1 << 16, "shard")] = item[1][:300]
        if not found or sorted(found) != list(range(len(found))):
            raise ValueError("peers: every shard 0..n-1 needs an owner")
        self.merge_nodes = _int(nodes, 1, 1 << 16, "nodes")
        with self.shard_lock:
            for j, address in found.items():
                if self.peers.get(j) != address:     # a new owner: a new master, new marks
                    transport.release(self.peer_proxies.pop(j, None))
                    self.acks.pop(j, None)
            self.peers, self.n_shards = found, len(found)
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=min(16, len(found)),
                                           thread_name_prefix="shard-sync")

    def _peer(self, j: int):
        proxy = self.peer_proxies.get(j)
        if proxy is None:
            proxy = transport.connect(self.peers[j], self.key, self.peer_timeout)
            self.peer_proxies[j] = proxy
        return proxy

    def sync_shards(self, parts: dict, cold: int, band: int = 0) -> dict:
        """Send each shard's owner its part of this delta ({shard: [(matrix, rows,
        values)]}); rebase what it merged since. Returns {shard: why} for owners that could
        not be reached: the part not yet handed over stays in live - snapshot and goes with
        the next exchange."""
        n = self.n_shards
        futures = {j: self.pool.submit(self._sync_one, j, parts[j], cold, band)
                   for j in range(n)}
        failed = {}
        for j, fut in futures.items():
            try:
                fut.result()
            except (CommError, OSError, ValueError, KeyError, RuntimeError) as exc:
                failed[j] = f"{type(exc).__name__}: {exc}"[:500]
                with self.shard_lock:
                    transport.release(self.peer_proxies.pop(j, None))
        return failed

    def _sync_one(self, j: int, parts: list, cold: int, band: int = 0) -> None:
        local = self.shards.get(j)
        handed = False
        try:
            if local is not None:
                handed = True
                version, got = self.shard_sync(j, self.member, cold, self.merge_nodes,
                                               self.acks.get(j), delta=parts, band=band)
                for name, idx, vals, is_delta in got:
                    self.take_rows(name, idx, vals, is_delta)
                # the version its rows were chosen at (later merges by others: next time)
                self.acks[j] = [local.generation, version, cold, band]
                return
            proxy = self._peer(j)
            batch, size = [], 0                  # pieces in calls of at most SHARD_CALL_BYTES
            for name, idx, vals in parts:
                row = row_bytes(self.dim, dtype_of(vals))
                for a, b in row_pieces(idx.shape[0], row, SHARD_CALL_BYTES):
                    if a == b:
                        continue
                    if batch and size + (b - a) * row > SHARD_CALL_BYTES:
                        proxy.shard_put(self.job_id, j, self.member, batch)
                        batch, size = [], 0
                    batch.append([name, *encode_rows(idx[a:b], take(vals, slice(a, b)))])
                    size += (b - a) * row
                    self.peer_bytes[0] += (b - a) * row
            if batch:
                proxy.shard_put(self.job_id, j, self.member, batch)
            handed = True                        # merged from here on, even if the reply is lost
            reply = proxy.shard_sync(self.job_id, j, self.member, cold, self.merge_nodes,
                                     self.acks.get(j), band)
            count = _int(reply["pieces"], 0, 1 << 30, "pieces")
            inline = reply.get("rows")
            if not isinstance(inline, list) or len(inline) > count:
                raise ValueError("shard_sync: rows expected a list of at most `pieces`")
            got = []                             # all pieces, then applied: the owner's
            for i in range(count):               # shadow of this node counts on all or none
                p = inline[i] if i < len(inline) else \
                    proxy.shard_pull(self.job_id, j, self.member, i)
                name, idx, vals = decode_piece(p, self.weight_shapes)
                got.append((name, idx, vals, piece_is_delta(p)))
                self.peer_bytes[1] += idx.nbytes + payload_bytes(vals)
            for name, idx, vals, is_delta in got:
                self.take_rows(name, idx, vals, is_delta)
            self.acks[j] = [reply["generation"], reply["version"], cold, band]
        except BaseException:
            if not handed:                       # the owner never merged it: send it again
                for name, idx, vals in parts:
                    self.snapshot[name][idx] -= to_float(vals, self.dim)
            raise

    def shard_put(self, j: int, client: str, pieces) -> None:
        """A client's delta to this shard, [[matrix, rows, values], ...] (the pieces of one
        call), kept until its shard_sync merges them."""
        shard = self._shard(j)
        if not is_name(client) or not isinstance(pieces, list) or \
                not 0 < len(pieces) <= MAX_PUT_PIECES:
            raise ValueError(f"shard_put: expected a client and 1..{MAX_PUT_PIECES} pieces")
        got = []
        for piece in pieces:                     # all checked before any is kept
            if not isinstance(piece, list) or len(piece) != 3 or piece[0] not in WEIGHTS:
                raise ValueError("shard_put: expected [matrix, rows, values] pieces")
            name = piece[0]
            idx, vals = decode_rows(piece[1], piece[2], self.shapes[name][0][0], self.dim,
                                    f"shard_put {name}")
            got.append((name, shard.to_local(name, idx), vals))
        with shard.master.lock:
            slot = shard.slot(client)
            shard.inbox.setdefault(slot, []).extend(got)

    def shard_sync(self, j: int, client: str, cold, nodes, ack, delta=None, band=0):
        """Merge the client's delta, then hand it the rows merged since its last ack
        (pieces to pull; for this node's own client, (version, the rows themselves)): the
        hot ones, or on a cold exchange every row (with a `band`, its most frequent rows)."""
        shard = self._shard(j)
        if not is_name(client):
            raise ValueError("shard_sync: bad arguments")
        check_cold(cold)
        check_band(band)
        scale = self.rule.factors(_int(nodes, 1, 1 << 16, "nodes"),
                                  slice(shard.index, None, shard.count))
        m = shard.master
        with m.lock:
            slot = shard.slot(client)
            inbox = shard.inbox.pop(slot, [])
        if delta is not None:                    # this node's own delta, global rows
            inbox += [(name, shard.to_local(name, idx), vals) for name, idx, vals in delta]
        if ack is not None:
            if not isinstance(ack, list) or len(ack) != 4:
                raise ValueError("shard_sync: bad ack")
            check_cold(ack[2])
            check_band(ack[3])
            _int(ack[1], 0, 1 << 62, "ack")
            if ack[0] == shard.generation:       # marks of an older master mean nothing here
                m.seen(slot, ack[1], due_reach(ack[2], ack[3], self.delta_threshold))
        shadow = shard.shadow(slot) if self.delta_dtype == "|u1" else {}
        shard.settle(slot, *(ack[:2] if ack is not None else (None, None)))
        m.merge(slot, inbox, scale)
        track(shadow, inbox)                     # the client's snapshot took its delta
        version, due = m.due(slot, due_reach(cold, band, self.delta_threshold))
        out = m.outgoing(due, shadow, values_dtype(self.delta_dtype))   # local rows
        if delta is not None:                    # this node's own: applied at once
            return version, [(name, shard.to_global(rows), vals, is_delta)
                             for name, rows, vals, is_delta in out]
        sent = [(name, rows, vals) for name, rows, vals, is_delta in out if is_delta]
        if sent:
            shard.pending[slot] = (version, sent)
        pieces, inline, size = [], 0, 0
        for name, rows, vals, is_delta in out:
            idx = shard.to_global(rows)
            row = row_bytes(self.dim, dtype_of(vals))
            for a, b in row_pieces(idx.shape[0], row, SHARD_CALL_BYTES):
                pieces.append(encode_piece(name, idx[a:b], take(vals, slice(a, b)), is_delta))
                size += (b - a) * row
                if size <= SHARD_CALL_BYTES:     # the reply carries what fits in one call
                    inline = len(pieces)
        shard.outbox[slot] = pieces
        return {"pieces": len(pieces), "rows": pieces[:inline], "version": version,
                "generation": shard.generation}

    def shard_pull(self, j: int, client: str, piece: int) -> dict:
        shard = self._shard(j)
        box = shard.outbox.get(shard.clients.get(client, -1)) or []
        if not box:
            raise ValueError(f"shard {j}: nothing to pull for {client!r}")
        return box[_int(piece, 0, len(box) - 1, "piece")]

    def shard_read(self, j: int, name: str, start: int, count: int) -> dict:
        """Master rows start..start+count (local numbering) of one matrix of a shard."""
        shard = self._shard(j)
        if name not in WEIGHTS:
            raise ValueError(f"shard_read: unknown matrix {name!r}")
        arr = shard.master.arrays[name]
        a = _int(start, 0, arr.shape[0], "start")
        b = min(a + _int(count, 0, 1 << 31, "count"), arr.shape[0])
        with shard.master.lock:
            return pack_array(arr[a:b])

    def _shard(self, j) -> Shard:
        shard = self.shards.get(j) if isinstance(j, int) else None
        if shard is None:
            raise ValueError(f"shard {j!r} is not kept on this node")
        return shard

    def close(self) -> None:
        self.refuse_calls()
        self.stop.set()                          # a call waiting for its round returns now
        self.wait_calls()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        for proxy in self.peer_proxies.values():
            transport.release(proxy)
        self.peer_proxies = {}
        self.shards = {}
        self.stop.set()                          # the training loop returns at its next wake
        self.feed.close()
        if self.thread is not None:
            self.thread.join(timeout=10)
        if self.session is not None:
            self.session.close()                 # stops processes, unlinks shared memory
            self.session = None
        elif self.shared is not None:
            self.shared.unlink()
        self.standby.close()                     # any the session did not take
        self.shared = None
        self.feed.release()
        self.ids_fh.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.snapshot = {}
        self.out_pieces = []
