"""ClusterEngine: the dispatcher inside `engine run` when the job lists nodes.

The same interface as LocalEngine (`train(arrays, settings, stream, tasks)`): the arrays
hold the master weights, updated in place. Each node gets the sampling tables and the
weights once, then a thread per node runs exchanges with it: tasks out (with any id-stream
chunks it has not cached; a node is handed its own chunks again in later epochs), the rows
of the master changed since its last exchange out, and back the tasks it finished with its
delta (the rows it changed). Deltas are merged into the master as they arrive (summed,
frequent rows damped from 3 nodes on: engine.cluster.merge.MergeRule). Training never waits on
the network: a node holds about two rounds of tasks, so it trains on while an exchange is
in flight.

A node that fails, is killed or stops answering (every call has a deadline) is dropped:
the tasks it held go back to the queue, its unmerged delta is discarded, so every chunk is
trained and merged exactly once per epoch; the report counts them and names the node. A
node that answers later, or a new one found in the name server, joins at its next round.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import secrets
import threading
import time
import zlib
from collections import deque

import numpy as np

from ..errors import ClusterError
from ..local.kernel import TABLES, WEIGHTS
from ..runtime.cpu import own_cpu_seconds
from ..runtime.progress import Progress
from ..runtime.signals import signals_as_interrupt
from ..word2vec.checks import check_arrays, check_stream
from ..word2vec.idstream import ChunkReader, IdStream
from ..word2vec.schedule import KernelSettings, Task, TrainStats
from ..word2vec.state import is_initial
from . import transport
from .discovery import close_remote_job, find_nodes
from .merge import MergeRule, RowMaster, due_reach, track
from .placement import FAILURES, ShardPlacement
from .protocol import (
    PIECE_BYTES,
    JobSpec,
    check_cold,
    check_int,
    decode_costs,
    decode_done,
    decode_piece,
    encode_chunk,
    encode_job_spec,
    encode_rows,
    encode_task,
    hot_range,
    pack_array,
    row_pieces,
)
from .rows import WIRE_DTYPES, dtype_of, payload_bytes, row_bytes, take, values_dtype
from .transport import CommError

log = logging.getLogger("engine")

CHUNK_BYTES_PER_EXCHANGE = 4 * PIECE_BYTES   # new id chunks sent in one call
MAX_STRIKES = 3     # a node dropped this often for answers refused is not taken back


class _Node:
    def __init__(self, address: str, name: str = ""):
        self.address = address
        self.name = name or address
        self.proxy = None
        self.active = False
        self.held: dict[int, Task] = {}        # sent, not reported done
        self.provisional: dict[int, tuple[Task, int]] = {}   # done, cold rows not merged yet
        self.cached: set[int] = set()
        self.peers_version = -1         # the shard owners it was last told
        self.late = False               # joined a running job
        self.local_hot = [0, 0, 0]      # its processes' hot rows: words, sync_words, tiers
        self.peer_bytes = [0, 0]        # sent to / received from shard owners
        self.rate = 0.0                 # words/s it trains
        self.last_reply = 0.0
        self.last_progress = time.monotonic()
        self.slot = -1                  # its client slot at the dispatcher's RowMaster
        self.words = 0
        self.exchanges = 0
        self.busy_seconds = 0.0
        self.peak_mb = 0.0
        self.wire = [0, 0]              # bytes its process sent / received since it opened
        self.cpu = [0.0, 0.0, 0.0]      # its exchange / its trainers' / its dispatch thread's
                                        # CPU seconds (NodeJob.cpu)
        self.joined_at = 0.0
        self.dropped = ""
        self.thread = None
        self.info: dict = {}
        self.workers = 0
        # with four-bit rows, what the node's snapshot holds of the hot rows (name ->
        # (first row, rows)): merged hot rows go to it as a delta from this, rounded, the
        # rounding kept here for the next one
        self.shadow: dict[str, tuple[int, np.ndarray]] = {}

    def held_words(self) -> int:
        return sum(t.raw_words for t in self.held.values())


class ClusterEngine(ShardPlacement):
    def __init__(self, cfg, key: bytes | None, progress_seconds: float = 5.0,
                 show_progress: bool = True, on_tick=None, counts=None,
                 node_hot: dict | None = None, products: str = "auto"):
        self.cfg = cfg
        # [engine] products: with "auto" each node measures BLAS against the loops itself
        self.products = products
        # how each node sizes its processes' hot rows (engine.jobs.train.hot_rows_spec); None:
        # the nodes train without them
        self.node_hot = node_hot
        self.counts = None if counts is None else np.asarray(counts, np.float64)
        self.key = key
        self.progress_seconds = progress_seconds
        self.show_progress = show_progress
        self.on_tick = on_tick
        self.workers = 0

    # ---- discovery --------------------------------------------------------------------------
    def addresses(self) -> dict[str, str]:
        return find_nodes(self.cfg, self.key)

    # ---- training ---------------------------------------------------------------------------
    def train(self, arrays: dict, settings: KernelSettings, stream: IdStream,
              tasks: list[Task], checkpoint=None, init_seed: int | None = None) -> TrainStats:
        """As LocalEngine.train; checkpoints need the master here (merge_at dispatcher).
        `init_seed`: the seed syn0 was drawn with; if it still holds that draw, the nodes
        opened at the start draw it themselves instead of receiving it."""
        check_stream(stream, check_arrays(arrays, settings))   # before any node trains
        self.seeded, self.started, self.nodes_seeded = None, False, 0
        if init_seed is not None and is_initial(arrays["syn0"], init_seed):
            self.seeded = (int(init_seed), zlib.crc32(memoryview(arrays["syn0"]).cast("B")))
        self.checkpoint = checkpoint
        self.arrays = arrays
        self.shapes = {k: arrays[k].shape for k in WEIGHTS}
        self.settings = settings
        self.stream = stream
        self.reader = ChunkReader(stream.path, stream.max_chunk_ids)
        self.read_lock = threading.Lock()
        self.job_id = f"job-{secrets.token_hex(6)}"
        self.lock = threading.Lock()            # queue, accounting
        self.transfer = threading.BoundedSemaphore(2)   # deltas held at once
        self.pending: deque[Task] = deque(tasks)
        self.total_tasks = len(tasks)
        self.completed: dict[int, str] = {}
        self.duplicates = 0
        self.provisional_words = 0
        self.stats = TrainStats()
        self.bytes_out = self.bytes_in = 0
        self.wire, self.exchange_cpu = [0, 0], 0.0
        self.nodes: dict[str, _Node] = {}
        self.retired: list[_Node] = []
        self.alpha = tasks[0].alpha0 if tasks else 0.0
        self._unreachable: dict = {}
        self.failure: BaseException | None = None
        self.stop = threading.Event()
        self.all_done = threading.Event()
        self.closed = False
        self.worker_ids: dict[str, str] = {}   # a worker's id -> the address it is used at
        self.strikes: dict[str, int] = {}      # address -> times dropped for a wrong answer
        total = sum(t.raw_words for t in tasks)
        self.progress = Progress(total, self.progress_seconds, enabled=self.show_progress)
        self.n_chunks = len(stream.chunks)
        self.hot_rows = self._hot_rows(arrays["syn0"].shape[0], stream.raw_words)
        self.per_round = None if self.counts is None else \
            (self.counts * (self.cfg.round_words / max(stream.raw_words, 1))).astype(np.float32)
        self.rule = MergeRule(self.cfg.merge, self.cfg.merge_rate, self.per_round)
        self.master = RowMaster({k: arrays[k] for k in WEIGHTS},
                                {k: self._hot_mask(k) for k in WEIGHTS})
        self.sharded = None             # decided when the first nodes are open
        self.cold_every, self.tiers = self.cfg.cold_every, self.cfg.tiers   # (_settle)
        self.cold_tiers = self.cfg.cold_tiers
        self.owners: dict[int, _Node] = {}
        self.n_shards = 0
        self.generation = 0
        self.peers_version = 0
        self.shard_lock = threading.RLock()
        self.shard_moves: list[dict] = []
        t0 = time.perf_counter()
        wire0, cpu0 = transport.WIRE.snapshot(), own_cpu_seconds()
        gc.freeze()          # the collector scans the exchange's objects, not the whole heap
        try:
            with signals_as_interrupt():
                self._run()
                if self.sharded:
                    self._collect()
        finally:
            self.stop.set()
            for node in self._all_nodes():
                if node.thread is not None:
                    node.thread.join(timeout=self.cfg.timeout_seconds + self.cfg.round_seconds)
            with self.master.lock:               # a straggling thread merges nothing now
                self.closed = True
            for node in self._all_nodes():
                self._close_node(node)
            with self.read_lock:
                self.reader.close()
            gc.unfreeze()
        self.stats.seconds = time.perf_counter() - t0
        sent, received = transport.WIRE.snapshot()
        self.wire = [sent - wire0[0], received - wire0[1]]
        self.exchange_cpu = own_cpu_seconds() - cpu0       # all the dispatcher does
        self.progress.finish()
        self.stats.workers = self.workers
        self.stats.cluster = self._report()
        return self.stats

    def _hot_rows(self, vocab: int, corpus_words: int) -> int:
        if self.cfg.hot_rows:
            return min(self.cfg.hot_rows, vocab)
        counts = self.counts
        if counts is None:
            return min(vocab, 4096)
        # words a node meets about twice or more per round
        per_round = counts * (self.cfg.round_words / max(corpus_words, 1))
        return int(max(1, min(vocab, np.count_nonzero(per_round >= 2.0))))

    def _hot_mask(self, name: str) -> np.ndarray:
        rows = self.arrays[name].shape[0]
        mask = np.zeros(rows, bool)
        lo, hi = hot_range(name, rows, self.hot_rows)
        mask[lo:hi] = True
        return mask

    def _run(self) -> None:
        last_look = -1e9
        lost_since = None
        while not self.all_done.is_set():
            if time.monotonic() - last_look >= self.cfg.rejoin_seconds:
                last_look = time.monotonic()
                self._look_for_nodes(first=not self.nodes)
            if self.failure is not None:
                raise self.failure
            if not self._active():
                if not self.nodes:
                    raise ClusterError("no node could be reached: " + self._why_none())
                # the master is here (merging at the dispatcher): a node that comes back
                # within timeout_seconds carries on; with the weights' shards gone, none can
                if lost_since is None and not self.sharded:
                    lost_since = time.monotonic()
                    log.warning("every node was lost; waiting up to %.0f s for one to come "
                                "back", self.cfg.timeout_seconds)
                if self.sharded or time.monotonic() - lost_since > self.cfg.timeout_seconds:
                    raise ClusterError("every node was lost: " + "; ".join(
                        f"{n.name}: {n.dropped}" for n in self._all_nodes() if n.dropped))
            else:
                lost_since = None
            with self.lock:
                done_words, alpha = self.stats.raw_words + self.provisional_words, self.alpha
            self.progress.update(done_words, alpha)
            if self.on_tick:
                self.on_tick()
            self._maybe_checkpoint()
            self.all_done.wait(0.2)

    def _maybe_checkpoint(self) -> None:
        cp = self.checkpoint
        if cp is None or not cp.due(self.stats.raw_words):
            return
        if self.sharded:
            log.warning("checkpoints are written only with merging at the dispatcher "
                        "(merge_at = \"dispatcher\"); this job writes none")
            self.checkpoint = None
            return
        t0 = time.perf_counter()
        with self.master.lock:
            weights = {k: self.arrays[k].copy() for k in WEIGHTS}
        with self.lock:                          # complete: every row merged (cold exchange)
            done = set(self.completed)
            words = self.stats.raw_words
            running = {tid for n in self._all_nodes() for tid in (*n.held, *n.provisional)}
        cp.save(weights, done, words, time.perf_counter() - t0, running)

    def _active(self) -> list:
        return [n for n in self.nodes.values() if n.active]

    def _all_nodes(self) -> list:
        return self.retired + list(self.nodes.values())

    def _why_none(self) -> str:
        return "; ".join(f"{a}: {why}" for a, why in self._unreachable.items()) or "none listed"

    def _look_for_nodes(self, first: bool) -> None:
        """Connect to listed/registered nodes that are not active (new, or back again)."""
        self._unreachable = {}
        try:
            found = self.addresses()
        except ClusterError as exc:
            if first:
                raise
            log.warning("%s", exc)
            return
        if first:
            self._settle(len(found))
        opened = []
        for name, address in found.items():
            if self.strikes.get(address, 0) >= MAX_STRIKES:
                self._unreachable[address] = (f"not taken back: its answers were refused "
                                              f"{MAX_STRIKES} times")
                continue
            node = self.nodes.get(address)
            if node is not None and node.active:
                continue
            if node is not None and node.thread is not None and node.thread.is_alive():
                continue
            if node is not None:                # dropped, its thread over
                self._release_slot(node)
            node = _Node(address, name)
            try:
                self._open(node)
            except FAILURES as exc:
                self._strike(address, exc)
                self._not_used(node, exc, first)
                continue
            opened.append(node)
        if not opened:
            return
        if self.sharded is None:
            # "auto": at the nodes from 2 nodes on (the dispatcher's link then carries
            # less than a node's), unless checkpoints need the master here
            self.sharded = self.cfg.merge_at == "nodes" or (
                self.cfg.merge_at == "auto" and len(opened) >= 2 and self.checkpoint is None)
            if self.sharded:
                for node in opened:              # merged rows come from the shards' owners
                    node.shadow = {}
                opened = self._place_shards(opened, first)
        failed, started = [], []
        for node in opened:                      # (owners are told at each first exchange)
            try:
                node.proxy.start(self.job_id)
            except FAILURES as exc:
                self._not_used(node, exc, first)
                failed.append((node, f"{type(exc).__name__}: {exc}"))
                continue
            node.active = True
            node.joined_at = time.monotonic()
            node.late = not first
            with self.lock:
                self.workers += node.workers
            if not first:
                log.info("node %s joined the running job", node.name)
            with self.shard_lock:
                self.peers_version += 1          # the node count merges are made for changes
            address = node.address
            if address in self.nodes:
                self.retired.append(self.nodes[address])
            self.nodes[address] = node
            started.append(node)
        self.started = self.started or bool(started)   # later nodes get the weights
        for node in started:       # once all are active: the first tasks see the node count
            node.thread = threading.Thread(target=self._node_loop, args=(node,),
                                           name=f"node-{node.name}", daemon=True)
            node.thread.start()
        for node, why in failed:                 # a shard placed on a node that then failed
            with self.shard_lock:
                for j in [j for j, o in self.owners.items() if o is node]:
                    self._move_shard(j, why)

    def _strike(self, address: str, exc: BaseException) -> None:
        """Count a failure that was an answer refused, not a lost connection: a node
        refused MAX_STRIKES times is not taken back."""
        if not isinstance(exc, (CommError, OSError)):
            self.strikes[address] = self.strikes.get(address, 0) + 1

    def _not_used(self, node: _Node, exc: BaseException, first: bool) -> None:
        self._unreachable[node.address] = f"{type(exc).__name__}: {exc}"
        transport.release(node.proxy)
        if first:
            log.warning("node %s: not used (%s)", node.address, exc)

    def _control(self, node: _Node):
        """A fresh proxy for one call (the node's own may be busy in a long exchange)."""
        return transport.connect(node.address, self.key, self.cfg.timeout_seconds)

    def _open(self, node: _Node) -> None:
        t = self.cfg.timeout_seconds
        node.proxy = transport.connect(node.address, self.key, t)
        node.info = node.proxy.info()
        if not isinstance(node.info, dict):
            raise ValueError("info: expected a dict")
        wid = str(node.info.get("worker_id") or node.address)
        seen_at = self.worker_ids.setdefault(wid, node.address)
        if seen_at != node.address:
            raise ValueError(f"the same worker as {seen_at} (listed twice)")
        a = self.arrays
        local = None
        if self.node_hot is not None:
            # a node's processes train about its share of an epoch
            local = dict(self.node_hot,
                         epoch_words=int(self.stream.raw_words // max(1, len(self.cfg.nodes))))
        spec = encode_job_spec(JobSpec(
            job=self.job_id, member=f"n{secrets.token_hex(4)}", dim=int(a["syn0"].shape[1]),
            vocab=int(a["syn0"].shape[0]), settings=self.settings, products=self.products,
            max_chunk_ids=int(self.stream.max_chunk_ids),
            timeout_seconds=float(t + self.cfg.round_seconds + 30), peer_timeout=float(t),
            workers=int(self.cfg.node_workers), hot_rows=int(self.hot_rows), local_hot=local,
            tiers=int(self.tiers),
            delta_threshold=float(self.cfg.delta_threshold),
            delta_dtype=WIRE_DTYPES[self.cfg.delta_dtype], merge=self.cfg.merge,
            merge_rate=float(self.cfg.merge_rate), per_round=self.per_round,
            pause_words=self.cfg.pause_words,
            shapes={k: (a[k].shape, a[k].dtype.str) for k in WEIGHTS + TABLES}))
        reply = node.proxy.open_job(spec)
        if not isinstance(reply, dict):
            raise ValueError("open_job: expected a dict")
        node.workers = check_int(reply.get("workers"), 1, 1 << 16, "open_job workers")
        hot = reply.get("hot")
        if isinstance(hot, list) and len(hot) == 3 and all(isinstance(x, int) for x in hot) \
                and hot[0] > 0:
            node.local_hot = hot
        for k in TABLES:
            self._upload(node, k, a[k])
        node.slot = self.master.add_client()
        try:                                    # no thread uses the slot yet
            node.shadow = {}
            if self.cfg.delta_dtype == "int4" and not self.sharded:
                for k in WEIGHTS:
                    lo, hi = hot_range(k, a[k].shape[0], self.hot_rows)
                    node.shadow[k] = (lo, np.empty((hi - lo, a[k].shape[1]), np.float32))
            seeded = self.seeded is not None and not self.started and \
                node.proxy.seed_array(self.job_id, "syn0", *self.seeded) is True
            self.nodes_seeded += seeded
            for k in WEIGHTS:                   # rows changed meanwhile are pushed later
                self._upload(node, k, a[k], self.master.lock, node.shadow.get(k),
                             send=not (seeded and k == "syn0"))
        except BaseException:
            self._release_slot(node)
            raise
        log.info("node %s (%s): %d process(es)%s, %s MB free, engine %s", node.name,
                 node.address, node.workers,
                 f", {node.local_hot[0]} hot rows" if node.local_hot[0] else "",
                 node.info.get("free_mb"), node.info.get("engine"))

    def _release_slot(self, node: _Node) -> None:
        """A node gone (no thread of its own using it): its versions at the merge point go
        to the next client."""
        if node.slot >= 0:
            self.master.release_client(node.slot)
            node.slot = -1

    def _settle(self, nodes: int) -> None:
        """`cold_every` and `tiers` set to "auto": chosen for the nodes of the job's start.
        A node's copy of the rows the others change ages faster the more others there are:
        with one or two nodes rare rows may wait 32 exchanges and the hot rows go in two
        tiers; from three on, 8 and none (docs/benchmarks.md: the measurements)."""
        few = nodes <= 2
        self.cold_every = self.cfg.cold_every if self.cfg.cold_every != "auto" else \
            (32 if few else 8)
        self.tiers = self.cfg.tiers if self.cfg.tiers != "auto" else (2 if few else 0)
        self.cold_tiers = self.cfg.cold_tiers if self.cfg.cold_tiers != "auto" else 0
        log.info("cluster: exchanges every %d words per node with the %d most frequent "
                 "words' rows%s; %s every %d exchanges (rows: %s; merge: %s)",
                 self.cfg.round_words, self.hot_rows,
                 f" (in {self.tiers} tiers)" if self.tiers else "",
                 f"the other rows in {self.cold_tiers} tiers" if self.cold_tiers else
                 "all rows", self.cold_every, self.cfg.delta_dtype, self.cfg.merge)

    def _band(self, exchange: int) -> int:
        """The rows a cold exchange takes (0: all). With cold_tiers T, the rows past the
        hot ones in tiers: the most frequent 1/2^T of them at every cold exchange, twice as
        many at every second, ..., all at every 2^T-th (the first included)."""
        k = exchange // max(self.cold_every, 1)
        if not self.cold_tiers or k == 0:
            return 0
        level = (k & -k).bit_length() - 1
        if level >= self.cold_tiers:
            return 0
        vocab = self.arrays["syn0"].shape[0]
        return self.hot_rows + ((vocab - self.hot_rows) >> (self.cold_tiers - level))

    def _upload(self, node: _Node, name: str, arr: np.ndarray, lock=None,
                shadow=None, send: bool = True) -> None:
        """arr to the node in pieces (each read under `lock`; the shadow, if any, takes
        the hot rows' values as sent). A node's arrays start at zero: pieces that are all
        zero (syn1neg, before training) are not sent; with `send` false the node has drawn
        the array itself and only the shadow is filled."""
        row_bytes = arr.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))
        for a, b in row_pieces(arr.shape[0], row_bytes):
            with lock if lock is not None else contextlib.nullcontext():
                part = arr[a:b]
                piece = pack_array(part) if send and part.any() else None
                if shadow is not None:
                    lo, rows = shadow
                    x, y = max(a, lo), min(b, lo + rows.shape[0])
                    if x < y:
                        rows[x - lo:y - lo] = arr[x:y]
            if piece is None:
                continue
            node.proxy.put_array(self.job_id, name, a, piece)
            self.bytes_out += len(piece["data"])

    # ---- one thread per node ---------------------------------------------------------------
    def _node_loop(self, node: _Node) -> None:
        try:
            last_heard = time.monotonic()
            if self.sharded and node.late:      # the current weights before any training
                self._exchange(node, [], [])
            while not self.stop.is_set() and not self.all_done.is_set():
                new, chunks = self._assign(node)
                if not new and not node.held and not node.provisional:
                    if time.monotonic() - last_heard >= 1.0:     # heartbeat while idle
                        node.proxy.ping(self.job_id)
                        last_heard = time.monotonic()
                    if self.stop.wait(0.2):
                        break
                    continue
                self._exchange(node, new, chunks)
                last_heard = time.monotonic()
        except FAILURES + (KeyError, TypeError) as exc:
            if self.stop.is_set():               # the job is over: nothing to hand back
                return
            self._strike(node.address, exc)
            self._drop(node, f"{type(exc).__name__}: {exc}")
        except BaseException as exc:             # a bug: stop the job with it
            self.failure = exc
            self._drop(node, f"{type(exc).__name__}: {exc}")

    def _assign(self, node: _Node) -> tuple[list[Task], list[int]]:
        """Tasks to bring the node's queue to two rounds of words (at least queue_seconds of its
        training, so a slow link never lets it run dry): its own cached chunks first (from the head of the queue), then the head
        of the queue."""
        want = max(2 * self.cfg.round_words,
                   int(self.cfg.queue_seconds * node.rate)) - node.held_words()
        new: list[Task] = []
        with self.lock:
            if want > 0 and self.pending:
                # never across an epoch: a chunk trained again before the rest of its
                # epoch changes what is learned (and at which learning rate)
                epoch = self.pending[0].task_id // self.n_chunks
                window = min(len(self.pending), 256)
                picked = []
                for i in range(window):
                    t = self.pending[i]
                    if t.task_id // self.n_chunks != epoch:
                        break
                    if t.chunk in node.cached:
                        picked.append(i)
                        want -= t.raw_words
                        if want <= 0:
                            break
                for i in reversed(picked):
                    new.append(self.pending[i])
                    del self.pending[i]
                new.reverse()
                # chunks not cached there travel with this exchange: keep the message small
                budget = CHUNK_BYTES_PER_EXCHANGE
                while want > 0 and self.pending:
                    t = self.pending[0]
                    if t.chunk not in node.cached:
                        s, e, _ = self.stream.chunks[t.chunk].tolist()
                        if budget < 4 * (e - s) and new:
                            break
                        budget -= 4 * (e - s)
                    self.pending.popleft()
                    new.append(t)
                    want -= t.raw_words
            for t in new:
                node.held[t.task_id] = t
        chunks = sorted({t.chunk for t in new if t.chunk not in node.cached})
        return new, chunks

    def _exchange(self, node: _Node, new: list[Task], chunks: list[int]) -> None:
        t0 = time.monotonic()
        job = self.job_id
        chunk_msgs = []
        for k in chunks:
            s, e, _ = self.stream.chunks[k].tolist()
            with self.read_lock:        # one reader, one reused buffer: read and copy at once
                msg = encode_chunk(k, self.reader.read(s, e))
            chunk_msgs.append(msg)
            self.bytes_out += len(msg["ids"]["data"])
        with self.lock:     # all rows now and then; once the queue is empty, the node's
            # last flush (every change, nothing left behind) once it has finished its tasks
            cold = 2 if not self.pending else int(node.exchanges % self.cold_every == 0)
        band = self._band(node.exchanges) if cold == 1 else 0
        if self.sharded:
            if node.peers_version != self.peers_version:
                self._send_peers(node)
        else:
            self._push(node, cold, band)
        transport.set_timeout(node.proxy, self.cfg.timeout_seconds + self.cfg.round_seconds)
        rate = self.rule.alpha_scale(len(self._active()))    # on the tasks' learning rates
        reply = node.proxy.exchange(
            job, [encode_task(t, rate) for t in new],
            chunk_msgs, int(self.cfg.round_words), float(self.cfg.round_seconds), cold, band)
        transport.set_timeout(node.proxy, self.cfg.timeout_seconds)
        node.cached.update(chunks)
        done = reply["done"]
        failed = reply.get("failed_shards") or []
        flushed = check_cold(reply.get("flushed"))
        if not isinstance(done, list) or not isinstance(reply.get("pieces"), int) or \
                not isinstance(failed, list) or (flushed and flushed != cold):
            raise ValueError("exchange: malformed reply")
        if self.sharded:
            node.peer_bytes = [int(b) for b in reply.get("peer_bytes") or (0, 0)][:2]
            for j, address, why in failed:
                self._suspect(j, str(address), node, str(why))
        done = decode_done(done, node.held)      # all checked before anything is merged
        with self.transfer:
            # each piece merged as it arrives: a last flush (every row) is never held whole
            scale = self.rule.factors(len(self._active()))
            for i in range(reply["pieces"]):
                piece = [decode_piece(node.proxy.pull(job, i), self.shapes)]
                name, rows, vals = piece[0]
                self.bytes_in += rows.nbytes + payload_bytes(vals)
                track(node.shadow, piece)        # its snapshot took what it sent
                self._merge_rows(node, piece, scale)
                del piece, rows, vals
            # its tasks are complete once every row they changed is merged: not with a band
            self._merge(node, done, bool(flushed) and not band and not failed)
        node.exchanges += 1
        trained = int(reply.get("trained_words") or 0)
        now = time.monotonic()
        if trained or done or not node.held:
            node.last_progress = now
        elif now - node.last_progress > self._stall_limit(node):
            raise RuntimeError(f"no task finished for {now - node.last_progress:.0f} s "
                               f"(a training process stuck?)")
        if trained and node.last_reply:          # its training rate: words between replies
            rate = trained / max(now - node.last_reply, 1e-3)
            node.rate = 0.7 * node.rate + 0.3 * rate if node.rate else rate
        node.last_reply = now
        node.peak_mb = max(node.peak_mb, float(reply.get("memory_mb") or 0.0))
        node.wire, node.cpu = decode_costs(reply)
        node.busy_seconds += time.monotonic() - t0

    def _stall_limit(self, node: _Node) -> float:
        """How long a node may hold tasks without finishing one: the call timeout plus two
        rounds, or ten times its slowest held task at its measured rate if longer."""
        base = self.cfg.timeout_seconds + 2 * self.cfg.round_seconds
        if node.rate and node.held:
            base = max(base, 10 * max(t.raw_words for t in node.held.values()) / node.rate)
        return base

    def _push(self, node: _Node, cold: int, band: int = 0) -> None:
        """Send the master rows changed since this node last received them (hot rows every
        exchange, the others on cold ones, a band's with one), skipping rows whose master
        value already equals this node's snapshot."""
        reach = due_reach(cold, band, self.cfg.delta_threshold)
        dtype = values_dtype(WIRE_DTYPES[self.cfg.delta_dtype])
        seen, changed = self.master.due(node.slot, reach)   # later merges: next time
        for name, rows, vals, is_delta in self.master.outgoing(changed, node.shadow, dtype):
            send = node.proxy.push_delta if is_delta else node.proxy.push_rows
            size = row_bytes(self.arrays[name].shape[1], dtype_of(vals))
            for a, b in row_pieces(rows.shape[0], size):
                if a < b:
                    part = take(vals, slice(a, b))
                    send(self.job_id, name, *encode_rows(rows[a:b], part))
                    self.bytes_out += rows[a:b].nbytes + payload_bytes(part)
        self.master.seen(node.slot, seen, reach)

    def _merge_rows(self, node: _Node, delta: list, scale) -> None:
        with self.master.lock:
            if self.closed:                      # train() has returned (Ctrl-C, an error)
                raise RuntimeError("the job is over")
            self.master.merge(node.slot, delta, scale)

    def _merge(self, node: _Node, done: list, cold: bool) -> None:
        """The node's tasks reported done (decoded), once every piece of its delta is
        merged."""
        with self.master.lock:
            if self.closed:
                raise RuntimeError("the job is over")
        with self.lock:
            # a task is complete once all the rows it changed are merged: its hot rows came
            # with the exchange that reported it, its other rows come with a cold one
            for tid, counts in done:
                task = node.held.pop(tid, None)
                if task is None:
                    raise ValueError(f"exchange: task {tid} was not held by this node")
                node.provisional[tid] = (task, counts)
                self.provisional_words += task.raw_words
            if not cold:
                return
            finished, node.provisional = node.provisional, {}
            for tid, (task, counts) in finished.items():
                self.provisional_words -= task.raw_words
                if tid in self.completed:
                    self.duplicates += 1
                    continue
                self.completed[tid] = node.name
                self.stats.add(task, *counts)          # effective words, loss, examples
                node.words += task.raw_words
                self.alpha = task.alpha1
            if len(self.completed) == self.total_tasks:
                self.all_done.set()

    def _drop(self, node: _Node, why: str) -> None:
        with self.lock:
            back = list(node.held.values()) + [t for t, _ in node.provisional.values()]
            back.sort(key=lambda t: t.task_id)
            self.provisional_words -= sum(t.raw_words for t, _ in node.provisional.values())
            node.held.clear()
            node.provisional.clear()
            self.pending.extendleft(reversed(back))
            was_active, node.active = node.active, False
            node.dropped = why
        if was_active and self.sharded:
            with self.shard_lock:
                self.peers_version += 1
                for j, owner in list(self.owners.items()):
                    if owner is node:
                        self._move_shard(j, why)
        if was_active:
            with self.lock:
                self.workers -= node.workers
            self.stats.lost_workers.append({"node": node.name, "address": node.address,
                                            "why": why, "requeued_chunks": len(back)})
            log.warning("node %s dropped (%s); its %d unfinished chunk(s) go to the %d "
                        "remaining node(s)", node.name, why, len(back), len(self._active()))
        transport.release(node.proxy)

    def _close_node(self, node: _Node) -> None:
        reply = close_remote_job(node.proxy if node.active else None, self.job_id,
                                 self.cfg.timeout_seconds, node.name)
        if reply is not None:                    # its final costs (an exchange's lag one)
            try:
                node.wire, node.cpu = decode_costs(reply)
            except ValueError as exc:
                log.warning("node %s: %s", node.name, exc)

    def _report(self) -> dict:
        per_epoch: dict[int, int] = {}
        for tid in self.completed:
            per_epoch[tid // max(self.n_chunks, 1)] = per_epoch.get(tid // max(self.n_chunks, 1), 0) + 1
        nodes = self._all_nodes()
        exchanges = sum(n.exchanges for n in nodes)
        words = max(self.stats.raw_words, 1)
        wire_total = self.wire[0] + sum(n.wire[0] for n in nodes)   # every byte sent, once
        exchange_cpu = self.exchange_cpu + sum(n.cpu[0] for n in nodes)
        training_cpu = sum(n.cpu[1] for n in nodes)
        return {
            "wire": {"total_bytes": wire_total,
                     "bytes_per_trained_word": round(wire_total / words, 2),
                     "dispatcher_sent": self.wire[0], "dispatcher_received": self.wire[1],
                     "nodes_sent": sum(n.wire[0] for n in nodes),
                     "nodes_received": sum(n.wire[1] for n in nodes)},
            "cpu": {"exchange_seconds": round(exchange_cpu, 3),
                    "dispatcher_seconds": round(self.exchange_cpu, 3),
                    "nodes_exchange_seconds": round(sum(n.cpu[0] for n in nodes), 3),
                    "training_seconds": round(training_cpu, 3),
                    "nodes_dispatch_seconds": round(sum(n.cpu[2] for n in nodes), 3),
                    "exchange_share": round(exchange_cpu / training_cpu, 4)
                    if training_cpu else None},
            "nodes_used": len(nodes), "merge": self.cfg.merge, "hot_rows": self.hot_rows,
            "merge_at": "nodes" if self.sharded else "dispatcher", "shards": self.n_shards,
            "shard_moves": self.shard_moves, "nodes_seeded": self.nodes_seeded,
            "bytes_between_nodes": sum(n.peer_bytes[0] for n in nodes),
            "cold_every": self.cold_every, "tiers": self.tiers, "cold_tiers": self.cold_tiers,
            "round_words": self.cfg.round_words, "exchanges": exchanges,
            "bytes_to_nodes": self.bytes_out, "bytes_from_nodes": self.bytes_in,
            "trained_words": self.stats.raw_words, "seconds": round(self.stats.seconds, 3),
            "weights_bytes": int(sum(self.arrays[k].nbytes for k in WEIGHTS)),
            "chunks": self.n_chunks, "tasks_planned": self.total_tasks,
            "tasks_completed": len(self.completed), "duplicates": self.duplicates,
            "chunks_per_epoch": [per_epoch.get(e, 0) for e in sorted(per_epoch)],
            "dropped": [{"node": n.name, "address": n.address, "why": n.dropped}
                        for n in nodes if n.dropped],
            "per_node": [{"node": n.name, "address": n.address, "workers": n.workers,
                          "trained_words": n.words, "exchanges": n.exchanges,
                          "words_per_sec": round(n.words / max(time.monotonic() - n.joined_at, 1e-9)
                                                 if n.joined_at else 0.0, 1),
                          "peak_mb": n.peak_mb, "dropped": n.dropped,
                          "wire_sent": n.wire[0], "wire_received": n.wire[1],
                          "exchange_cpu_seconds": n.cpu[0], "training_cpu_seconds": n.cpu[1],
                          "dispatch_cpu_seconds": n.cpu[2],
                          "hot_rows": dict(zip(("words", "sync_words", "tiers"),
                                               n.local_hot))}
                         for n in nodes],
        }
