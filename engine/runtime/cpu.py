"""CPU time of processes, for what a job spends where: this process's own (its threads,
not its children), and a set of others followed by pid (one that ends keeps its last
reading)."""
from __future__ import annotations

import psutil


def own_cpu_seconds() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


class CpuTally:
    """CPU seconds (user + system) of the processes read so far, summed."""

    def __init__(self):
        self.last: dict[int, float] = {}

    def read(self, pids) -> float:
        for pid in pids:
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue                       # gone: its last reading stays
            self.last[pid] = t.user + t.system
        return sum(self.last.values())
