"""CPU time of processes, for what a job spends where: this process's own (its threads,
not its children), and a set of others followed by pid (one that ends keeps its last
reading)."""
from __future__ import annotations

import os

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
