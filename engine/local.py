"""LocalEngine: train on every core of one machine.

P processes, started with `spawn`, attach by name to the weight matrices in shared memory
and update them lock-free (Hogwild) through the nogil kernels. The parent hands out chunks
of the id stream (each worker holds at most two, so fast workers take more), derives each
chunk's learning rate from its planned place in the run (linear decay over all planned
words), shows progress, and survives a worker that dies: the chunks it held go to the
others. With one process the same loop runs in-process, with no shared memory.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import connection, get_context

import numpy as np

from .errors import Interrupted, WorkerError
from .idstream import ChunkReader, IdStream
from .procs import sigint_ignored_in_children
from .progress import Progress
from .shm import SharedArrays

log = logging.getLogger("engine")

WEIGHTS = ("syn0", "syn1neg", "syn1")
TABLES = ("keep", "noise", "codes", "points", "code_lens")
MAX_OUTSTANDING = 2
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class KernelSettings:
    sg: int
    hs: int
    negative: int
    window: int
    cbow_mean: int


@dataclass(frozen=True)
class Task:
    """One chunk of one epoch: ids [start, end), its raw words, RNG seed, alpha range."""
    task_id: int
    start: int
    end: int
    raw_words: int
    seed: int
    alpha0: float
    alpha1: float


@dataclass
class TrainStats:
    raw_words: int = 0              # corpus words (all epochs) trained
    effective_words: int = 0        # after subsampling
    seconds: float = 0.0
    workers: int = 1
    lost_workers: list = field(default_factory=list)

    @property
    def words_per_sec(self) -> float:
        return self.raw_words / self.seconds if self.seconds > 0 else 0.0


def chunk_seed(seed: int, epoch: int, chunk: int) -> int:
    """A distinct RNG start for each (seed, epoch, chunk): results do not depend on which
    process trains a chunk."""
    return (seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xC2B2AE3D27D4EB4F
            + (chunk + 1) * 0x165667B19E3779F9) & _MASK64


def plan_tasks(stream: IdStream, epochs: int, alpha: float, min_alpha: float, seed: int,
               first_epoch: int = 0, total_epochs: int | None = None) -> list[Task]:
    """Every chunk of every epoch, in order, with alpha decaying linearly from `alpha` to
    `min_alpha` over all planned raw words."""
    total_epochs = total_epochs or (first_epoch + epochs)
    raw = stream.chunks[:, 2]
    starts = np.concatenate([[0], np.cumsum(raw)[:-1]])
    total = float(max(stream.raw_words * (total_epochs - first_epoch), 1))
    tasks = []
    for epoch in range(first_epoch, first_epoch + epochs):
        done_before = (epoch - first_epoch) * stream.raw_words
        for k, (s, e, r) in enumerate(stream.chunks.tolist()):
            p0 = (done_before + starts[k]) / total
            p1 = (done_before + starts[k] + r) / total
            tasks.append(Task(len(tasks), s, e, r, chunk_seed(seed, epoch, k),
                              alpha - (alpha - min_alpha) * p0, alpha - (alpha - min_alpha) * p1))
    return tasks


def make_trainer(arrays: dict, settings: KernelSettings, hot_words: int = 0,
                 sync_every: int = 1024):
    from ._kernels import Trainer

    return Trainer(arrays["syn0"], arrays["syn1neg"], arrays["syn1"], arrays["keep"],
                   arrays["noise"], arrays["codes"], arrays["points"],
                   arrays["code_lens"], settings.sg, settings.hs, settings.negative,
                   settings.window, settings.cbow_mean, hot_words, sync_every)


def _limit_blas():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _worker_main(slot: int, spec: dict, settings: KernelSettings, hot: tuple, ids_path: str,
                 max_ids: int, conn) -> None:
    """Entry point of a spawned training process: attach, then train chunks until told to
    stop (None) or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # (already ignored from birth) the
    signal.signal(signal.SIGTERM, signal.SIG_DFL)    # parent decides how to stop
    shared = None
    reader = None
    try:
        _limit_blas()
        shared = SharedArrays.attach(spec)
        trainer = make_trainer(shared.arrays, settings, *hot)
        reader = ChunkReader(ids_path, max_ids)
        conn.send(("ready", slot, os.getpid()))
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
            conn.send(("done", task.task_id, trained))
    except Exception:
        try:
            conn.send(("error", slot, traceback.format_exc()))
        except Exception:
            pass
        raise SystemExit(1)
    finally:
        if reader:
            reader.close()
        if shared:
            del trainer
            shared.close()


class _StopRequested(BaseException):
    pass


class LocalEngine:
    """Trains the weights in `arrays` (numpy, updated in place) on an id stream."""

    def __init__(self, workers: int = 1, progress_seconds: float = 5.0, show_progress=True,
                 on_tick=None, hot_words: int = 0, sync_words: int = 1024):
        self.workers = max(1, int(workers))
        self.hot_words = hot_words
        self.sync_words = sync_words
        self.progress_seconds = progress_seconds
        self.show_progress = show_progress
        self.on_tick = on_tick

    def train(self, arrays: dict, settings: KernelSettings, stream: IdStream,
              tasks: list[Task]) -> TrainStats:
        total = sum(t.raw_words for t in tasks)
        progress = Progress(total, self.progress_seconds, enabled=self.show_progress)
        stats = TrainStats(workers=self.workers)
        t0 = time.perf_counter()
        with _signals_as_interrupt():
            if self.workers == 1:
                self._train_inprocess(arrays, settings, stream, tasks, progress, stats)
            else:
                self._train_processes(arrays, settings, stream, tasks, progress, stats)
        stats.seconds = time.perf_counter() - t0
        progress.finish()
        return stats

    # ---- one process ------------------------------------------------------------------
    def _train_inprocess(self, arrays, settings, stream, tasks, progress, stats):
        trainer = make_trainer(arrays, settings)
        reader = ChunkReader(stream.path, stream.max_chunk_ids)
        try:
            with _limit_blas():
                for task in tasks:
                    ids = reader.read(task.start, task.end)
                    stats.effective_words += trainer.train(ids, task.seed, task.alpha0,
                                                           task.alpha1)
                    stats.raw_words += task.raw_words
                    progress.update(stats.raw_words, task.alpha1)
                    if self.on_tick:
                        self.on_tick()
        finally:
            reader.close()

    # ---- P processes --------------------------------------------------------------------
    def _train_processes(self, arrays, settings, stream, tasks, progress, stats):
        ctx = get_context("spawn")
        shared = SharedArrays.create({k: arrays[k] for k in WEIGHTS + TABLES})
        procs: dict[int, object] = {}
        conns: dict[int, object] = {}
        try:
            for slot in range(self.workers):
                parent_end, child_end = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=_worker_main, name=f"engine-train-{slot}",
                                   args=(slot, shared.spec, settings,
                                         (self.hot_words, self.sync_words), stream.path,
                                         stream.max_chunk_ids, child_end), daemon=True)
                with sigint_ignored_in_children():
                    proc.start()
                child_end.close()
                procs[slot], conns[slot] = proc, parent_end
            self._dispatch(procs, conns, tasks, progress, stats)
            for k in WEIGHTS:
                arrays[k][...] = shared[k]
        finally:
            _stop_all(procs, conns)
            shared.unlink()

    def _dispatch(self, procs, conns, tasks, progress, stats):
        pending = deque(tasks)
        held: dict[int, deque] = {slot: deque() for slot in procs}
        by_id = {t.task_id: t for t in tasks}
        alive = set(procs)
        ready = set()
        remaining = len(tasks)
        while remaining:
            for slot in list(alive & ready):
                while pending and len(held[slot]) < MAX_OUTSTANDING:
                    task = pending.popleft()
                    try:
                        conns[slot].send(task)
                    except (BrokenPipeError, OSError):
                        pending.appendleft(task)
                        break
                    held[slot].append(task.task_id)
            waitables = {conns[s]: s for s in alive}
            waitables.update({procs[s].sentinel: s for s in alive})
            for obj in connection.wait(list(waitables), timeout=0.5):
                slot = waitables[obj]
                if slot not in alive:
                    continue
                if obj is conns[slot]:
                    try:
                        msg = conns[slot].recv()
                    except (EOFError, OSError):
                        msg = None
                    if msg is None:
                        self._lost(slot, procs, held, pending, by_id, alive, stats)
                    elif msg[0] == "ready":
                        ready.add(slot)
                    elif msg[0] == "done":
                        _, task_id, trained = msg
                        held[slot].remove(task_id)
                        task = by_id[task_id]
                        stats.raw_words += task.raw_words
                        stats.effective_words += trained
                        remaining -= 1
                        progress.update(stats.raw_words, task.alpha1)
                    elif msg[0] == "error":
                        raise WorkerError(f"training process {slot} failed:\n{msg[2].rstrip()}")
                else:
                    self._lost(slot, procs, held, pending, by_id, alive, stats)
            if self.on_tick:
                self.on_tick()
            if not alive:
                raise WorkerError("every training process died; see the log for exit codes")

    def _lost(self, slot, procs, held, pending, by_id, alive, stats):
        proc = procs[slot]
        proc.join(timeout=5)
        code = proc.exitcode
        alive.discard(slot)
        back = [by_id[t] for t in held[slot]]
        held[slot].clear()
        for task in reversed(back):
            pending.appendleft(task)
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        stats.lost_workers.append({"slot": slot, "pid": proc.pid, "exit": code,
                                   "requeued_chunks": len(back)})
        log.warning("training process %d (pid %s) died with %s; its %d unfinished chunk(s) "
                    "go to the %d remaining process(es)", slot, proc.pid, how, len(back),
                    len(alive))


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
