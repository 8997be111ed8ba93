"""Starting helper processes so that Ctrl-C is the parent's business alone, and so that a
user's script never runs again inside them."""
from __future__ import annotations

import multiprocessing.spawn as mp_spawn
import os
import signal
import sys
import threading
from contextlib import contextmanager
from multiprocessing import resource_tracker

_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")
_starting = threading.local()           # .depth > 0: this thread is starting engine's children


def _preparation_without_main(original):
    """spawn's preparation data, less the parent's __main__ for the children engine starts:
    a spawned child normally re-imports the user's script (as __mp_main__), which runs a
    script without an `if __name__ == "__main__":` guard again in every child (and fails in
    notebooks). Engine's children only run engine's own functions, which need nothing from
    __main__. Other processes (the user's own, any thread) are prepared as always."""
    def prepare(name):
        data = original(name)
        if getattr(_starting, "depth", 0):
            for key in _MAIN_KEYS:
                data.pop(key, None)
        return data
    prepare.engine_wrapped = True
    return prepare


if not getattr(mp_spawn.get_preparation_data, "engine_wrapped", False):
    mp_spawn.get_preparation_data = _preparation_without_main(mp_spawn.get_preparation_data)


@contextmanager
def sigint_ignored_in_children():
    """Start processes inside this block: they begin life with SIGINT blocked (a blocked
    signal mask survives fork and exec; they then ignore it), so a Ctrl-C sent to the whole
    process group reaches only the parent, which then stops them in order; no child dies
    mid-import with a traceback. The parent loses nothing: a Ctrl-C that arrives meanwhile
    is held and raised (KeyboardInterrupt, or whatever handler was set) when the block ends.
    They also start without the parent's __main__ (see _preparation_without_main); this
    thread only, so a user's own processes started meanwhile elsewhere are untouched."""
    # multiprocessing's resource tracker, started by a first spawn, unblocks SIGINT once it
    # is up: start it before blocking
    resource_tracker.ensure_running()
    _starting.depth = getattr(_starting, "depth", 0) + 1
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    held: list[int] = []
    old = None
    main = threading.current_thread() is threading.main_thread()
    if main:           # another thread may take the signal: its handler holds it too
        old = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        _starting.depth -= 1
        if main:
            signal.signal(signal.SIGINT, old)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)    # one pending here comes now
        if held and callable(old):
            old(signal.SIGINT, None)


def _pool_worker(conn) -> None:
    """Run (fn, args) tasks from the parent until None; reply ('ok', result) or
    ('err', exception)."""
    import signal as _signal

    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        fn, args = task
        try:
            reply = ("ok", fn(*args))
        except BaseException as exc:          # noqa: BLE001 (sent to the parent to re-raise)
            reply = ("err", exc)
        try:
            conn.send(reply)
        except Exception as exc:              # e.g. an unpicklable exception
            conn.send(("err", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")
                       if reply[0] == "err" else exc))


class ProcessPool:
    """A small pool of spawned processes with ordered, bounded mapping.

    Unlike multiprocessing.Pool it never reads ahead of one task per process (so memory
    stays bounded on a huge corpus), re-raises a task's exception as is, notices a process
    that died, and always shuts down: ask, wait, terminate, kill."""

    def __init__(self, processes: int, name: str = "engine-pool"):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.procs, self.conns = [], []
        try:
            for i in range(processes):
                parent_end, child_end = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=_pool_worker, args=(child_end,), name=f"{name}-{i}",
                                   daemon=True)
                with sigint_ignored_in_children():
                    proc.start()
                child_end.close()
                self.procs.append(proc)
                self.conns.append(parent_end)
        except BaseException:
            self.close(force=True)
            raise

    def map(self, fn, items):
        """Yield fn(*item) for each item, in order. Each process holds one task at a time:
        a task is sent only to an idle process, so the parent never blocks sending a large
        block to a process that is itself blocked sending its result back (a deadlock once
        both exceed the pipe buffer), and at most one block per process is in memory."""
        from collections import deque
        from multiprocessing import connection

        from ..errors import WorkerError

        busy: deque = deque()                 # processes with a task, in submission order
        idle = deque(range(len(self.procs)))
        items = iter(items)
        exhausted = False
        while True:
            while idle and not exhausted:
                try:
                    item = next(items)
                except StopIteration:
                    exhausted = True
                    break
                w = idle.popleft()
                self.conns[w].send((fn, item))
                busy.append(w)
            if not busy:
                return
            w = busy.popleft()
            conn, proc = self.conns[w], self.procs[w]
            while True:
                ready = connection.wait([conn, proc.sentinel])
                if conn in ready:
                    try:
                        status, value = conn.recv()
                    except (EOFError, OSError):
                        status = None
                    break
                if proc.sentinel in ready and not conn.poll():
                    status = None
                    break
            if status is None:
                raise WorkerError(f"pool process {proc.name} died (exit code {proc.exitcode})")
            idle.append(w)
            if status == "err":
                raise value
            yield value

    def close(self, force: bool = False, grace: float = 3.0) -> None:
        import time

        for conn in self.conns:
            try:
                if not force:
                    conn.send(None)
            except Exception:
                pass
        deadline = time.monotonic() + (0 if force else grace)
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(force=exc_type is not None)


def engine_command() -> tuple[list[str], dict]:
    """Command and environment that run `engine` from this very package in a subprocess,
    whatever the current folder holds (-P: the cwd is not put on sys.path)."""
    env = dict(os.environ)
    # the folder holding the engine package (this file is engine/runtime/procs.py)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    return [sys.executable, "-P", "-m", "engine"], env
