"""CPU time of processes, for what a job spends where: this process's own (its threads,
not its children), one of its threads (ThreadCpu), and a set of others followed by pid (one
that ends keeps its last reading)."""
from __future__ import annotations

import os
import threading
import time

import psutil


def own_cpu_seconds() -> float:
    t = os.times()                     # this process's own (its threads), one system call
    return t.user + t.system


class CpuTally:
    """CPU seconds (user + system) of the processes read so far, summed."""

    def __init__(self):
        self.last: dict[int, float] = {}
        self.procs: dict[int, psutil.Process] = {}     # made once: each is a /proc read

    def read(self, pids) -> float:
        for pid in pids:
            try:
                proc = self.procs.get(pid)
                if proc is None:
                    proc = self.procs[pid] = psutil.Process(pid)
                t = proc.cpu_times()
            except psutil.Error:
                continue                       # gone: its last reading stays
            self.last[pid] = t.user + t.system
        return sum(self.last.values())


class ThreadCpu:
    """The CPU seconds of one thread, readable from any thread: the thread calls `begin()`
    first and `end()` last (its total is kept); `read()` before `begin` is 0."""

    def __init__(self):
        self.ident: int | None = None
        self.start = 0.0
        self.total: float | None = None
        self.lock = threading.Lock()

    def begin(self) -> None:
        with self.lock:
            self.ident, self.start, self.total = threading.get_ident(), time.thread_time(), None

    def end(self) -> None:
        with self.lock:
            if self.ident == threading.get_ident():
                self.total = time.thread_time() - self.start

    def read(self) -> float:
        with self.lock:                  # the thread cannot end() (and exit) meanwhile
            if self.total is not None or self.ident is None:
                return self.total or 0.0
            try:
                clock = time.pthread_getcpuclockid(self.ident)
                return max(0.0, time.clock_gettime(clock) - self.start)
            except OSError:              # gone without end(): nothing better to say
                return 0.0
