"""The local engine: train on every core of one machine.

P processes, started with `spawn`, attach by name to the weight matrices in shared memory
and update them lock-free (Hogwild) through the nogil kernels. A LocalSession keeps those
processes and the shared weights up across calls: the parent hands out chunks from a task
source (each process holds at most two, so fast ones take more; with hot rows, a merge
interval's worth, since it reports chunks once merged), and survives a process that dies:
the chunks it held go to the others. LocalEngine.train is one session run over
a task list; with one process the same loop runs in-process, with no shared memory. The
cluster's nodes feed a session continuously (engine.cluster); this module knows nothing of
the network.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from collections import deque
from multiprocessing import connection, get_context

import numpy as np

from .blas import sgemm_capsule
from .checks import check_arrays, check_stream
from .errors import Interrupted, WorkerError
from .idstream import ChunkReader, IdStream
from .procs import sigint_ignored_in_children
from .progress import Progress
from .schedule import KernelSettings, Task, TrainStats, by_epoch, chunk_seed  # noqa: F401
from .shm import SharedArrays, sweep_orphans

log = logging.getLogger("engine")

WEIGHTS = ("syn0", "syn1neg", "syn1")
TABLES = ("keep", "noise", "codes", "points", "code_lens")
MAX_OUTSTANDING = 2
# Hot rows merged this often (trained words per process): 79,587 cost a 5M-word, 1-epoch
# skip-gram run a point of analogy accuracy (0.0301 against 0.0405 without hot rows, 2 seeds),
# 16,384 kept it (0.0399). Through copies it does not need, one process runs 0.97-0.99x
# (README, "Tiered hot rows").
SYNC_WORDS = 16384
# ... the most frequent 1/2^HOT_TIERS of them, that is; all of them every 2^HOT_TIERS merges
HOT_TIERS = 3


HOT_MAX = 16384            # at most this many hot rows
# a row one process draws this often between two merges is hot whatever its share: left
# shared, it would move between cores at nearly every draw (a 512-word vocabulary: two CBOW
# processes 1.29x one with 312 of its rows hot, 1.76x with all 512; README, "Where the
# second core goes; small vocabularies"). 32 leaves the shared corpus's choices as they were
# (the first row past the share rule's is drawn 5 times between merges by a CBOW process,
# 13 by a skip-gram one at window 5, 24 at window 10) and takes every row of a vocabulary
# of a few thousand words. The draws are estimated: a row's share
# is hot_draw_shares' (kept words twice an update, noise words `negative` times), times the
# rows an update draws (row_draws); CBOW draws more kept words an update than that mix
# says, so its tail rows read up to 1.7x busier than they are
HOT_TOUCHES = 32


def hot_draw_shares(counts, keep, negative: int, ns_exponent: float) -> np.ndarray:
    """Cumulative share of the row draws taken by the most frequent words (entry i: words
    0..i), kept words as centers and context, the noise words drawn as counts**ns_exponent;
    at most HOT_MAX entries (all that auto sizes ever look at)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size == 0 or counts.sum() <= 0:
        return np.zeros(0, np.float64)
    kept = counts * np.asarray(keep, dtype=np.float64)
    draws = kept / kept.sum()
    if negative:
        noise = counts ** ns_exponent
        draws = (2 * draws + negative * noise / noise.sum()) / (2 + negative)
    return np.cumsum(draws[:HOT_MAX])


def updates_per_word(sg: int, window: int, shrink_windows: int) -> float:
    """Updates the classic kernel makes per trained word: skip-gram one per context word (on
    average window + 1 with shrinking windows, else 2 * window), CBOW one."""
    if not sg:
        return 1.0
    return float(window + 1 if shrink_windows else 2 * window)


def size_hot_rows(shares, vocab: int, processes: int, vector_size: int, epoch_words: int = 0,
                  updates_per_word: float = 6.0, tiers: int | None = None,
                  row_draws: float = 2.0, sync_words: int = 0) -> tuple[int, int, int]:
    """(hot_words, sync_words, tiers) for `processes` processes sharing one model of `vocab`
    words whose cumulative row-draw shares are `shares` (hot_draw_shares): the most
    frequent words whose rows draw a share 1 - 1/(2P) (at most 0.9) of the row updates, and
    with them every word whose rows a process draws at least HOT_TOUCHES times between two
    merges (`row_draws` rows an update, `updates_per_word` updates a word: on a small
    vocabulary every row is that busy, and one left shared moves between the cores at
    nearly every draw; `sync_words`: the job's merge interval, 0 = the automatic one),
    between 256 and HOT_MAX rows (fewer for a smaller vocabulary; capped so the copies take
    at most 64 MB a process); merged every SYNC_WORDS trained words, and at least 32 times an
    epoch of `epoch_words` per process (copies trained apart for long and then summed lose
    accuracy early in training: README, "Hot rows"), in HOT_TIERS tiers (`tiers`: that many
    instead; fewer where a full merge would come less than 8 times an epoch): the first
    1/2^L of the rows at every merge, all of them every 2^L-th, so a merge moves
    first * (1 + L/2) rows on average. That may be at most 1/8 of a row per update the
    kernel makes (`updates_per_word`), so merging costs a fast kernel no more than a slow
    one. (0, 0, 0) for one process."""
    shares = np.asarray(shares, dtype=np.float64)
    if processes < 2 or vocab < 1 or shares.size == 0 or shares[-1] <= 0:
        return 0, 0, 0
    share = min(0.9, 1.0 - 1.0 / (2 * processes))
    words = int(np.searchsorted(shares, share) + 1)
    cap = max(256, (64 << 20) // (4 * 4 * max(1, vector_size)))
    sync = auto_sync_words(processes, epoch_words)
    # draws of each row by one process between two merges (shares are sorted by frequency)
    between = (sync_words or sync) * updates_per_word * row_draws
    quiet = np.diff(shares, prepend=0.0) * between < HOT_TOUCHES
    words = max(words, int(np.argmax(quiet)) if quiet.any() else shares.size)
    tiers = HOT_TIERS if tiers is None else max(0, int(tiers))
    if epoch_words:
        while tiers and sync << tiers > max(sync, epoch_words // (8 * processes)):
            tiers -= 1
    per_merge = sync * updates_per_word / 8        # rows a merge may move on average
    words = min(words, HOT_MAX, cap, int(per_merge / (1 + tiers / 2)) << tiers)
    return min(vocab, max(256, words)), sync, tiers


def auto_hot_rows(counts, keep, negative: int, ns_exponent: float, processes: int,
                  vector_size: int, epoch_words: int = 0, updates_per_word: float = 6.0,
                  tiers: int | None = None) -> tuple[int, int, int]:
    """size_hot_rows for a vocabulary's counts and keep probabilities."""
    if processes < 2:
        return 0, 0, 0
    return size_hot_rows(hot_draw_shares(counts, keep, negative, ns_exponent), len(counts),
                         processes, vector_size, epoch_words, updates_per_word, tiers,
                         2.0 + negative)


def row_draws(sg: int, window: int, shrink_windows: int, negative: int) -> float:
    """Rows one update draws: skip-gram the context word's and the center's output row (2),
    CBOW every context word's (window + 1 on average with shrinking windows, else
    2 * window) and the center's; and each noise word's. (Hierarchical softmax's output
    rows are tree nodes, not words' rows: counted as a center's, which errs towards more
    hot rows.)"""
    words = 2.0 if sg else 1.0 + (window + 1 if shrink_windows else 2 * window)
    return words + max(0, int(negative))


def choose_hot_rows(spec: dict, processes: int, vocab: int, vector_size: int,
                    epoch_words: int, kernel) -> tuple[int, int, int]:
    """(hot_words, sync_words, tiers) for `processes` processes from a job's hot-row
    settings (engine.train.hot_rows_spec: `words` fixed, or the vocabulary's cumulative draw
    `shares` for "auto"; `sync_words` 0 = sized; `tiers` -1 = "auto"), over an epoch of
    `epoch_words` per these processes, for `kernel` (its sg, window, shrink_windows and
    negative: a ModelConfig or KernelSettings). The local engine and each cluster node (for
    its own process count) both choose with it. No hot rows: (0, 1024, 0)."""
    sync, tiers = int(spec.get("sync_words", 0)), int(spec.get("tiers", -1))
    if processes < 2:
        return 0, 1024, 0
    if "shares" not in spec:
        words = min(vocab, int(spec.get("words", 0)))
        if not words:
            return 0, 1024, 0
        return words, sync or auto_sync_words(processes, epoch_words), max(tiers, 0)
    k = kernel
    words, auto_sync, tiers = size_hot_rows(
        spec["shares"], vocab, processes, vector_size, epoch_words,
        updates_per_word(k.sg, k.window, k.shrink_windows), None if tiers < 0 else tiers,
        row_draws(k.sg, k.window, k.shrink_windows, k.negative), sync)
    if not words:
        return 0, 1024, 0
    return words, sync or auto_sync, tiers


def auto_sync_words(processes: int, epoch_words: int = 0) -> int:
    """Trained words between merges of hot rows (see auto_hot_rows)."""
    sync = SYNC_WORDS
    if epoch_words:
        sync = min(sync, max(1024, epoch_words // (32 * max(1, processes))))
    return sync


def plan_tasks(stream: IdStream, epochs: int, alpha: float, min_alpha: float, seed: int,
               first_epoch: int = 0, total_epochs: int | None = None) -> list[Task]:
    """Every chunk of the id stream for `epochs` epochs (see schedule.plan_tasks)."""
    from .schedule import plan_tasks as plan

    return plan(stream.chunks, stream.raw_words, epochs, alpha, min_alpha, seed,
                first_epoch, total_epochs)


def make_trainer(arrays: dict, settings: KernelSettings, hot_words: int = 0,
                 sync_every: int = 1024, hot_tiers: int = 0):
    from ._kernels import Trainer

    return Trainer(arrays["syn0"], arrays["syn1neg"], arrays["syn1"], arrays["keep"],
                   arrays["noise"], arrays["codes"], arrays["points"],
                   arrays["code_lens"], settings.sg, settings.hs, settings.negative,
                   settings.window, settings.cbow_mean, hot_words, sync_every,
                   settings.compute_loss, settings.shrink_windows, settings.prefetch_ahead,
                   settings.batched, settings.cbow_batch, hot_tiers, settings.two_pass,
                   _sgemm(settings.blas))


def _sgemm(blas: int):
    """BLAS sgemm's capsule for the kernel when the settings ask for BLAS products."""
    if not blas:
        return None
    cap = sgemm_capsule()
    if cap is None:
        raise ValueError("blas products need scipy's BLAS (scipy.linalg.cython_blas with "
                         "sgemm), which does not load here")
    return cap


_PRODUCT_RATES: dict = {}


def measure_products(settings: KernelSettings, vector_size: int, vocab_words: int,
                     words: int = 0, rounds: int = 3) -> tuple[float, float]:
    """Words/s of batched skip-gram on this machine with its small products in
    register-blocked loops and through BLAS sgemm: (loops, blas), each the best of `rounds`
    interleaved trials (after one untimed) on one synthetic chunk of `words` ids (0: 20,000
    at 100 dims, window 5 and negative 5, fewer for more work a word) drawn Zipf-like from
    at most 20,000 words (fewer above 100 dims), sentences of 20, at the job's vector_size,
    window, negative and loss setting; in this process, BLAS held to one thread as in
    training. Which is faster depends on the host: OpenBLAS has a fast path for small
    matrices on some processors only (README, "BLAS products": BLAS 1.04-1.28x the loops on
    one VM, under half their rate on another). Remembered per process for the same shape
    (whatever `settings.blas` says)."""
    import dataclasses
    from collections import Counter

    from .vocab import Vocab

    d = max(1, int(vector_size))
    v = max(2, min(int(vocab_words), 20_000, 2_000_000 // d))        # at most 8 MB a matrix
    # about the work of 20,000 words at 100 dims, window 5, negative 5 (0.02-0.05 s a trial)
    work = d * (settings.window + 1) * (settings.negative + 1)
    words = int(words) or int(min(20_000, max(500, 72_000_000 // work)))
    trial = dataclasses.replace(settings, sg=1, hs=0, batched=1, blas=0)
    key = (dataclasses.astuple(trial), d, v, words)
    if key in _PRODUCT_RATES:
        return _PRODUCT_RATES[key]
    counts = Counter({f"w{i}": max(1, int(1e7 / (i + 1))) for i in range(v)})
    vocab = Vocab.build(counts, sum(counts.values()), min_count=1)
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, v + 1)
    ids = rng.choice(v, size=words, p=p / p.sum()).astype(np.int32)
    ids[19::20] = -1                                   # sentence ends
    syn0 = ((rng.random((v, d), dtype=np.float32) * 2 - 1) / d).astype(np.float32)
    arrays = {"syn0": syn0, "syn1neg": np.zeros((v, d), np.float32),
              "syn1": np.zeros((0, d), np.float32), "keep": vocab.keep_table(1e-3),
              "noise": vocab.noise_table(0.75), "codes": np.zeros((1, 1), np.uint8),
              "points": np.zeros((1, 1), np.int32), "code_lens": np.zeros(1, np.int32)}
    trainers = [make_trainer(arrays, dataclasses.replace(trial, blas=blas)) for blas in (0, 1)]
    best = [float("inf"), float("inf")]
    with _limit_blas():
        for r in range(rounds + 1):                    # the first round warms up, untimed
            for k in ((0, 1) if r % 2 else (1, 0)):
                t0 = time.perf_counter()
                trainers[k].train(ids, r + 1, 0.025, 0.025)
                if r:
                    best[k] = min(best[k], time.perf_counter() - t0)
    rates = (words / best[0], words / best[1])
    _PRODUCT_RATES[key] = rates
    return rates


def products_by_measure(settings: KernelSettings, vector_size: int, vocab_words: int,
                        lib: str | None, who: str) -> bool:
    """products = "auto": whether batched skip-gram's products go through BLAS here, that is
    whether scipy's BLAS (`lib`, from blas_products) measures faster than the loops on this
    machine (measure_products); the choice and both rates are logged under `who`. The
    local engine and each cluster node decide with it."""
    if lib is None:
        log.info("%s: loops (auto; scipy's BLAS sgemm does not load here)", who)
        return False
    loops, blas = measure_products(settings, vector_size, vocab_words)
    log.info("%s: %s (auto, measured here: loops %s words/s, BLAS (%s) %s)", who,
             "BLAS sgemm" if blas > loops else "loops", f"{loops:,.0f}", lib, f"{blas:,.0f}")
    return blas > loops


def _limit_blas():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _standby_main(slot: int, conn) -> None:
    """Entry point of a process started ahead of its work (Standby): its imports done, it
    waits for what to train (_worker_main's arguments) or for None, then trains."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from . import _kernels  # noqa: F401  (loaded now, while waiting)
    try:
        msg = conn.recv()
    except (EOFError, OSError):
        return                                       # parent gone before any work
    if msg is not None:
        _worker_main(slot, *msg, conn)


def _worker_main(slot: int, spec: dict, settings: KernelSettings, hot: tuple, ids_path: str,
                 max_ids: int, conn) -> None:
    """Entry point of a spawned training process: attach, then train chunks until told to
    stop (None) or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # (already ignored from birth) the
    signal.signal(signal.SIGTERM, signal.SIG_DFL)    # parent decides how to stop
    shared = trainer = reader = None
    hot_words, sync_words, hot_tiers = hot
    try:
        shared = SharedArrays.attach(spec)
        trainer = make_trainer(shared.arrays, settings, hot_words, sync_words, hot_tiers)
        _limit_blas()           # after the trainer, which may load scipy's BLAS (threadpoolctl
        #                         limits only the libraries loaded when it is called)
        reader = ChunkReader(ids_path, max_ids)
        conn.send(("ready", slot, os.getpid()))
        unsynced = []           # (merges done when it finished, its report): hot rows only
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break                                # parent gone
            if msg is None:
                break
            task: Task = msg
            ids = reader.read(task.start, task.end)
            trained = trainer.train(ids, task.seed, task.alpha0, task.alpha1)
            report = ("done", task.task_id, trained, trainer.last_loss, trainer.last_examples)
            if not hot_words:
                conn.send(report)
                continue
            # hot rows: a chunk is reported done only once its updates are all in the shared
            # weights (a lost process's unreported chunks are trained again); merge now if
            # nothing else is waiting, else send what earlier merges already carried
            unsynced.append((trainer.syncs, report))
            if not conn.poll():
                trainer.sync()
            while unsynced and unsynced[0][0] < trainer.syncs:
                conn.send(unsynced.pop(0)[1])
    except Exception:
        try:
            conn.send(("error", slot, traceback.format_exc()))
        except Exception:
            pass
        raise SystemExit(1)
    finally:
        if reader is not None:
            reader.close()
        trainer = None
        if shared is not None:
            shared.close()


def _spawn(target, slot: int, *args) -> tuple:
    """One training process running target(slot, *args, conn): (process, parent's end)."""
    ctx = get_context("spawn")
    parent_end, child_end = ctx.Pipe(duplex=True)
    try:
        proc = ctx.Process(target=target, name=f"engine-train-{slot}",
                           args=(slot, *args, child_end), daemon=True)
        with sigint_ignored_in_children():
            proc.start()
    except BaseException:
        parent_end.close()
        raise
    finally:
        child_end.close()
    return proc, parent_end


class Standby:
    """Training processes started before their work is known, so that their start (a spawned
    interpreter importing numpy and the kernels, 0.2-0.3 s) overlaps the counting and
    encoding of the corpus instead of delaying the first chunk (scipy's BLAS, where the
    kernel takes it, loads once the work is known). A LocalSession takes them (`standby=`);
    `close()` stops any it did not take. Use it as a context manager."""

    def __init__(self, workers: int):
        self.waiting: list = []
        try:
            for slot in range(max(0, int(workers))):
                self.waiting.append(_spawn(_standby_main, slot))
        except BaseException:
            self.close()
            raise

    def take(self, n: int) -> list:
        """Up to n of the waiting processes (process, connection), now the caller's."""
        taken, self.waiting = self.waiting[:n], self.waiting[n:]
        return taken

    def close(self) -> None:
        waiting, self.waiting = self.waiting, []
        _stop_pairs(waiting)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ListSource:
    """A fixed list of tasks: the run ends when all are done."""

    def __init__(self, tasks):
        self.pending = deque(tasks)
        self.wake_fd = None

    def take(self):
        return self.pending.popleft() if self.pending else None

    def give_back(self, tasks) -> None:
        self.pending.extendleft(reversed(list(tasks)))

    def exhausted(self) -> bool:
        return not self.pending


class FeedSource:
    """Tasks that arrive while the session runs (a cluster node's queue): thread-safe; the
    run ends when `close()` was called and everything fed is done. `feed` wakes the run."""

    def __init__(self):
        self.pending: deque = deque()
        self._lock = threading.Lock()
        self._closed = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self.wake_fd = self._rfd

    def _wake(self) -> None:
        try:
            os.write(self._wfd, b"x")
        except (BlockingIOError, OSError):
            pass

    def feed(self, tasks) -> None:
        with self._lock:
            self.pending.extend(tasks)
        self._wake()

    def take(self):
        with self._lock:
            return self.pending.popleft() if self.pending else None

    def give_back(self, tasks) -> None:
        with self._lock:
            self.pending.extendleft(reversed(list(tasks)))

    def drain_wake(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def queued(self) -> int:
        with self._lock:
            return len(self.pending)

    def close(self) -> None:
        self._closed = True
        self._wake()

    def exhausted(self) -> bool:
        with self._lock:
            return self._closed and not self.pending

    def release(self) -> None:
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass


class LocalSession:
    """P training processes attached to shared weights, up until `close()`.

    `arrays` holds the weights and sampling tables (copied into shared memory once); the
    weights are then read and written through `session.weights` (views of the shared
    segments) while processes train. `run(source)` trains until the source is exhausted."""

    def __init__(self, arrays: dict, settings: KernelSettings, ids_path: str, max_ids: int,
                 workers: int, hot_words: int = 0, sync_words: int = 1024,
                 hot_tiers: int = 0, shared: SharedArrays | None = None,
                 stall_seconds: float = 120.0, standby: "Standby | None" = None):
        """hot_words > 0: the processes train the rows of that many most frequent words on
        their own copies, merged every sync_words trained words (hot_tiers > 0: in tiers,
        all of them every 2^hot_tiers merges; Trainer). `standby`: processes started
        earlier (Standby), used before any new one is started."""
        self.workers = max(1, int(workers))
        self.stall_seconds = stall_seconds
        # with hot rows a process reports chunks once merged in full (every sync_words <<
        # hot_tiers): hand it enough chunks ahead that it never waits for work between them
        self.ahead_words = sync_words << hot_tiers if hot_words else 0
        swept = sweep_orphans()
        if swept:
            log.warning("removed %d shared-memory segment(s) left by killed runs", len(swept))
        self.shared = shared or SharedArrays.create({k: arrays[k] for k in WEIGHTS + TABLES})
        self.procs: dict[int, object] = {}
        self.conns: dict[int, object] = {}
        self.lost_workers: list = []
        work = (self.shared.spec, settings, (hot_words, sync_words, hot_tiers), ids_path,
                max_ids)
        waiting = standby.take(self.workers) if standby is not None else []
        try:
            for slot in range(self.workers):
                if waiting:                          # started earlier: only the work to send
                    proc, conn = waiting[0]          # (still in `waiting` until sent)
                    try:
                        conn.send(work)
                    except (BrokenPipeError, OSError):   # it died meanwhile: start another
                        _stop_pairs([waiting.pop(0)])
                    else:
                        waiting.pop(0)
                        self.procs[slot], self.conns[slot] = proc, conn
                        continue
                self.procs[slot], self.conns[slot] = _spawn(_worker_main, slot, *work)
        except BaseException:
            _stop_pairs(waiting)
            self.close()
            raise
        self.alive = set(self.procs)
        self.ready: set = set()
        self.held: dict[int, deque] = {slot: deque() for slot in self.procs}
        self.by_id: dict[int, Task] = {}
        self.heard = {slot: time.monotonic() for slot in self.procs}   # heartbeat
        self.slowest = 0.0        # the longest silence seen before a chunk was done

    @property
    def weights(self) -> dict:
        return {k: self.shared[k] for k in WEIGHTS}

    def run(self, source, on_done=None, on_tick=None, stop=None) -> None:
        """Hand out tasks from `source` until it is exhausted and nothing is held.
        on_done(task, effective_words, loss, examples) is called for every finished task
        (loss and examples are 0 unless the settings compute the loss); `stop` (an
        Event) ends the run early, the held tasks given back to the source."""
        conns, procs = self.conns, self.procs
        while True:
            for slot in list(self.alive & self.ready):
                while (len(self.held[slot]) < MAX_OUTSTANDING
                       or self._held_words(slot) < self.ahead_words):
                    task = source.take()
                    if task is None:
                        break
                    if not self.held[slot]:      # it was idle: its clock starts now
                        self.heard[slot] = time.monotonic()
                    try:
                        conns[slot].send(task)
                    except (BrokenPipeError, OSError):
                        source.give_back([task])
                        break
                    self.by_id[task.task_id] = task
                    self.held[slot].append(task.task_id)
            if not any(self.held.values()) and source.exhausted():
                return
            if stop is not None and stop.is_set():
                return
            waitables = {conns[s]: s for s in self.alive}
            waitables.update({procs[s].sentinel: s for s in self.alive})
            if source.wake_fd is not None:
                waitables[source.wake_fd] = None
            for obj in connection.wait(list(waitables), timeout=0.5):
                slot = waitables[obj]
                if slot is None:
                    source.drain_wake()
                elif slot in self.alive:
                    if obj is conns[slot]:
                        self._receive(slot, source, on_done)
                    else:                      # exited: first read what it sent before
                        while slot in self.alive and self._poll(slot):
                            self._receive(slot, source, on_done)
                        if slot in self.alive:
                            self._lost(slot, source)
            self._kill_hung()
            if on_tick:
                on_tick()
            if not self.alive:
                raise WorkerError("every training process died; see the log for exit codes")

    def _held_words(self, slot) -> int:
        return sum(self.by_id[t].raw_words for t in self.held[slot])

    def _kill_hung(self) -> None:
        """A process that holds chunks and has sent nothing for stall_seconds is hung
        (stopped, deadlocked): kill it; its exit hands its chunks to the others."""
        now = time.monotonic()
        limit = max(self.stall_seconds, 10 * self.slowest)   # chunks this slow are normal
        for slot in list(self.alive):
            if self.held[slot] and now - self.heard[slot] > limit:
                proc = self.procs[slot]
                log.warning("training process %d (pid %s) reported nothing for %.0f s while "
                            "holding chunks: killing it", slot, proc.pid, now - self.heard[slot])
                try:
                    proc.kill()
                except OSError:
                    pass
                self.heard[slot] = now           # its sentinel fires at the next wait

    def _poll(self, slot) -> bool:
        try:
            return self.conns[slot].poll()
        except (EOFError, OSError):
            return False

    def _receive(self, slot, source, on_done) -> None:
        try:
            msg = self.conns[slot].recv()
        except (EOFError, OSError):
            msg = None
        now = time.monotonic()
        if msg is not None and msg[0] == "done":
            self.slowest = max(self.slowest, now - self.heard[slot])
        self.heard[slot] = now
        if msg is None:
            self._lost(slot, source)
        elif msg[0] == "ready":
            self.ready.add(slot)
        elif msg[0] == "done":
            task_id, trained = msg[1], msg[2]
            loss, examples = (msg[3], msg[4]) if len(msg) > 4 else (0.0, 0)
            self.held[slot].remove(task_id)
            task = self.by_id.pop(task_id)
            if on_done:
                on_done(task, trained, loss, examples)
        elif msg[0] == "error":
            raise WorkerError(f"training process {slot} failed:\n{msg[2].rstrip()}")

    def _lost(self, slot, source) -> None:
        proc = self.procs[slot]
        proc.join(timeout=5)
        code = proc.exitcode
        self.alive.discard(slot)
        back = [self.by_id.pop(t) for t in self.held[slot]]
        self.held[slot].clear()
        source.give_back(back)
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        self.lost_workers.append({"slot": slot, "pid": proc.pid, "exit": code,
                                  "requeued_chunks": len(back)})
        log.warning("training process %d (pid %s) died with %s; its %d unfinished chunk(s) "
                    "go to the %d remaining process(es)", slot, proc.pid, how, len(back),
                    len(self.alive))

    def close(self) -> None:
        """Stop every process (ask, then terminate, then kill) and release shared memory."""
        _stop_all(self.procs, self.conns)
        self.procs, self.conns = {}, {}
        if self.shared is not None:
            self.shared.unlink()
            self.shared = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalEngine:
    """Trains the weights in `arrays` (numpy, updated in place) on an id stream."""

    def __init__(self, workers: int = 1, progress_seconds: float = 5.0, show_progress=True,
                 on_tick=None, hot_words: int = 0, sync_words: int = 1024,
                 stall_seconds: float = 120.0, hot_tiers: int = 0,
                 standby: Standby | None = None):
        self.workers = max(1, int(workers))
        self.stall_seconds = stall_seconds
        self.standby = standby          # processes started earlier, taken by the session
        self.hot_words = hot_words
        self.sync_words = sync_words
        self.hot_tiers = hot_tiers
        self.progress_seconds = progress_seconds
        self.show_progress = show_progress
        self.on_tick = on_tick
        self.stats: TrainStats | None = None     # the run in progress (read by samplers)

    def train(self, arrays: dict, settings: KernelSettings, stream: IdStream,
              tasks: list[Task], checkpoint=None, on_epoch_end=None) -> TrainStats:
        """Train the tasks epoch by epoch (an epoch's tasks all finish before the next
        epoch's start). `checkpoint` (an engine.checkpoint.Checkpointer) is handed a copy of
        the weights and the finished task ids whenever it says one is due. After each epoch
        `on_epoch_end(epoch, stats, weights)` is called, `weights` the current weights (views
        of the matrices being trained, valid during the call: nothing trains meanwhile);
        it returns True to stop training there. `self.stats` is the run's live TrainStats."""
        check_stream(stream, check_arrays(arrays, settings))   # before any kernel runs
        total = sum(t.raw_words for t in tasks)
        progress = Progress(total, self.progress_seconds, enabled=self.show_progress)
        stats = self.stats = TrainStats(workers=self.workers)
        finished: set[int] = set()
        live = {"weights": arrays, "epoch": []}   # the weights being trained; this epoch

        def done(task, trained, loss=0.0, examples=0):
            stats.add(task, trained, loss, examples)
            finished.add(task.task_id)
            progress.update(stats.raw_words, task.alpha1)

        def tick():
            if self.on_tick:
                self.on_tick()
            if checkpoint is not None and checkpoint.due(stats.raw_words):
                c0 = time.perf_counter()
                weights = {k: np.array(live["weights"][k]) for k in WEIGHTS}
                waiting = {t.task_id for t in source.pending}
                running = (set() if self.workers == 1 else   # in-process: between tasks
                           {t.task_id for t in live["epoch"]} - waiting - finished)
                checkpoint.save(weights, set(finished), stats.raw_words,
                                time.perf_counter() - c0, running)

        def epoch_over(epoch_tasks, weights) -> bool:
            if on_epoch_end is None:
                return False
            h0 = time.perf_counter()
            try:
                return bool(on_epoch_end(epoch_tasks[0].epoch, stats,
                                         {k: weights[k] for k in WEIGHTS}))
            finally:                     # training time excludes the callbacks' own time
                stats.hook_seconds += time.perf_counter() - h0

        source = ListSource([])
        t0 = time.perf_counter()
        with _signals_as_interrupt():
            if self.workers == 1:
                trainer = make_trainer(arrays, settings)
                for epoch_tasks in by_epoch(tasks):
                    live["epoch"] = epoch_tasks
                    self._train_inprocess(trainer, stream, epoch_tasks, done, tick)
                    if epoch_over(epoch_tasks, arrays):
                        stats.stopped_early = True
                        break
            else:
                with LocalSession(arrays, settings, stream.path, stream.max_chunk_ids,
                                  self.workers, self.hot_words, self.sync_words,
                                  self.hot_tiers, stall_seconds=self.stall_seconds,
                                  standby=self.standby) as session:
                    live["weights"] = session.shared
                    try:
                        for epoch_tasks in by_epoch(tasks):
                            live["epoch"] = epoch_tasks
                            source = ListSource(epoch_tasks)
                            session.run(source, done, tick)
                            if epoch_over(epoch_tasks, session.shared):
                                stats.stopped_early = True
                                break
                    finally:
                        stats.lost_workers = session.lost_workers
                        stats.hot_rows = {"words": self.hot_words, "sync_words":
                                          self.sync_words if self.hot_words else 0,
                                          "tiers": self.hot_tiers if self.hot_words else 0}
                    for k in WEIGHTS:
                        arrays[k][...] = session.shared[k]
        stats.seconds = time.perf_counter() - t0 - stats.hook_seconds
        progress.finish()
        return stats

    @staticmethod
    def _train_inprocess(trainer, stream, tasks, done, tick):
        reader = ChunkReader(stream.path, stream.max_chunk_ids)
        try:
            with _limit_blas():
                for task in tasks:
                    ids = reader.read(task.start, task.end)
                    trained = trainer.train(ids, task.seed, task.alpha0, task.alpha1)
                    done(task, trained, trainer.last_loss, trainer.last_examples)
                    tick()
        finally:
            reader.close()


def _stop_all(procs: dict, conns: dict, grace: float = 3.0) -> None:
    """Ask every process to stop, then terminate/kill stragglers; join all (no orphans)."""
    for slot, conn in conns.items():
        try:
            conn.send(None)
        except Exception:
            pass
    deadline = time.monotonic() + grace
    for proc in procs.values():
        proc.join(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs.values():
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=2)
        if proc.is_alive():
            proc.kill()
            proc.join()
    for conn in conns.values():
        conn.close()


def _stop_pairs(pairs: list) -> None:
    """_stop_all for a list of (process, connection) pairs (Standby's)."""
    _stop_all(dict(enumerate(p for p, _ in pairs)), dict(enumerate(c for _, c in pairs)))


class _StopRequested(BaseException):
    pass


class _signals_as_interrupt:
    """Within the block, Ctrl-C and SIGTERM raise Interrupted in the main thread (so the
    finally-blocks that stop processes and unlink shared memory always run)."""

    def __enter__(self):
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise _StopRequested(signum)

    def __exit__(self, exc_type, exc, tb):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        if exc_type is KeyboardInterrupt:
            raise Interrupted("interrupted (Ctrl-C); training processes stopped, shared "
                              "memory released") from None
        if exc_type is _StopRequested:
            raise Interrupted("terminated (SIGTERM); training processes stopped, shared "
                              "memory released", exit_code=143) from None
        return False


signals_as_interrupt = _signals_as_interrupt
