"""LocalSession: P training processes on shared-memory weights, kept up across runs; hands
out chunks and survives a process that dies."""
from __future__ import annotations

import logging
import time
from collections import deque
from multiprocessing import connection

from ..errors import WorkerError
from ..runtime.shm import SharedArrays, sweep_orphans
from ..word2vec.schedule import KernelSettings, Task
from .kernel import TABLES, WEIGHTS
from .workers import Standby, spawn_trainer, stop_all, stop_pairs, worker_main

log = logging.getLogger("engine")

MAX_OUTSTANDING = 2


class LocalSession:
    """P training processes attached to shared weights, up until `close()`.

    `arrays` holds the weights and sampling tables (copied into shared memory once); the
    weights are then read and written through `session.weights` (views of the shared
    segments) while processes train. `run(source)` trains until the source is exhausted."""

    def __init__(self, arrays: dict, settings: KernelSettings, ids_path: str, max_ids: int,
                 workers: int, hot_words: int = 0, sync_words: int = 1024,
                 hot_tiers: int = 0, shared: SharedArrays | None = None,
                 stall_seconds: float = 120.0, standby: "Standby | None" = None,
                 weights: SharedArrays | None = None):
        """hot_words > 0: the processes train the rows of that many most frequent words on
        their own copies, merged every sync_words trained words (hot_tiers > 0: in tiers,
        all of them every 2^hot_tiers merges; Trainer). `standby`: processes started
        earlier (Standby), used before any new one is started. `shared`: the weights and
        tables already in shared memory (unlinked at close); `weights`: the weights
        already in shared memory (the model's own: trained in place, never unlinked
        here), the tables then copied in."""
        self.workers = max(1, int(workers))
        self.stall_seconds = stall_seconds
        # with hot rows a process reports chunks once merged in full (every sync_words <<
        # hot_tiers): hand it enough chunks ahead that it never waits for work between them
        self.ahead_words = sync_words << hot_tiers if hot_words else 0
        swept = sweep_orphans()
        if swept:
            log.warning("removed %d shared-memory segment(s) left by killed runs", len(swept))
        self.own = None                  # what this session unlinks at close
        if shared is not None:
            self.shared = self.own = shared
        elif weights is not None:
            self.own = SharedArrays.create({k: arrays[k] for k in TABLES})
            self.shared = SharedArrays.joined(weights, self.own)
        else:
            self.shared = self.own = SharedArrays.create({k: arrays[k] for k in WEIGHTS + TABLES})
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
                        stop_pairs([waiting.pop(0)])
                    else:
                        waiting.pop(0)
                        self.procs[slot], self.conns[slot] = proc, conn
                        continue
                self.procs[slot], self.conns[slot] = spawn_trainer(worker_main, slot, *work)
        except BaseException:
            stop_pairs(waiting)
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
        stop_all(self.procs, self.conns)
        self.procs, self.conns = {}, {}
        if self.own is not None:
            self.own.unlink()
            self.own = None
        self.shared = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

