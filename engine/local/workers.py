"""The training processes: their entry points, how they are started (spawn, Ctrl-C left to
the parent) and stopped, and Standby, processes started before their work is known."""
from __future__ import annotations

import os
import signal
import time
import traceback
from multiprocessing import get_context

from ..runtime.procs import sigint_ignored_in_children
from ..runtime.shm import SharedArrays
from ..word2vec.idstream import ChunkReader
from ..word2vec.schedule import KernelSettings, Task
from .kernel import limit_blas, make_trainer


def _standby_main(slot: int, conn) -> None:
    """Entry point of a process started ahead of its work (Standby): its imports done, it
    waits for what to train (worker_main's arguments) or for None, then trains."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from .._kernels import Trainer  # noqa: F401  (loaded now, while waiting)
    try:
        msg = conn.recv()
    except (EOFError, OSError):
        return                                       # parent gone before any work
    if msg is not None:
        worker_main(slot, *msg, conn)


def worker_main(slot: int, spec: dict, settings: KernelSettings, hot: tuple, ids_path: str,
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
        limit_blas()           # after the trainer, which may load scipy's BLAS (threadpoolctl
        #                         limits only the libraries loaded when it is called)
        reader = ChunkReader(ids_path, max_ids, vocab=shared.arrays["syn0"].shape[0])
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


def spawn_trainer(target, slot: int, *args) -> tuple:
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
                self.waiting.append(spawn_trainer(_standby_main, slot))
        except BaseException:
            self.close()
            raise

    def take(self, n: int) -> list:
        """Up to n of the waiting processes (process, connection), now the caller's."""
        taken, self.waiting = self.waiting[:n], self.waiting[n:]
        return taken

    def close(self) -> None:
        waiting, self.waiting = self.waiting, []
        stop_pairs(waiting)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stop_all(procs: dict, conns: dict, grace: float = 3.0) -> None:
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


def stop_pairs(pairs: list) -> None:
    """stop_all for a list of (process, connection) pairs (Standby's)."""
    stop_all(dict(enumerate(p for p, _ in pairs)), dict(enumerate(c for _, c in pairs)))

