"""Probes of the machine a bench runs on: CPU and memory capacity per process count, the
time a cache line takes between cores."""
from __future__ import annotations

import os
import time


def _spin(n: int) -> float:
    t0 = time.perf_counter()
    x = 1.0
    for _ in range(n):
        x = x * 1.0000001 + 1e-9
    return time.perf_counter() - t0


def cpu_capacity(p: int, n: int = 2_000_000) -> float:
    """How many cores' worth of pure arithmetic p processes get right now: p equal loops run
    at once, each timed against the same loop run alone. On a quiet machine with p free
    cores it reads about p; on a shared VM whose host is busy it reads less, and a row
    measured then is slower for reasons that are not ours (or the peer's)."""
    from multiprocessing import get_context

    if p < 2:
        return 1.0                                           # one loop against itself
    with get_context("spawn").Pool(p) as pool:
        pool.map(_spin, [1000] * p, chunksize=1)             # every worker up and warm
        solo = min(pool.apply(_spin, (n,)) for _ in range(2))
        together = pool.map(_spin, [n] * p, chunksize=1)
    return round(sum(solo / t for t in together), 2)


def _rows(n: int, seed: int = 0) -> float:
    """n read-modify-writes of 1024 random 400-byte rows of a 64 MB matrix: past every cache,
    as the kernels' accesses to the weights are."""
    import numpy as np

    rng = np.random.default_rng(seed + os.getpid())
    a = np.ones((160_000, 100), np.float32)
    idx = rng.integers(0, a.shape[0], size=(n, 1024))
    t0 = time.perf_counter()
    for rows in idx:
        a[rows] += np.float32(1e-7)
    return time.perf_counter() - t0


def memory_capacity(p: int, n: int = 400) -> float:
    """How many processes' worth of random row updates p processes get at once, against one
    alone (as cpu_capacity, for memory): a machine whose memory system is shared with busy
    neighbours reads well under p here while the CPU check reads p, and memory-bound work
    (ours: the weights are tens of MB read at random) then cannot scale."""
    from multiprocessing import get_context

    if p < 2:
        return 1.0
    with get_context("spawn").Pool(p) as pool:
        pool.map(_rows, [2] * p, chunksize=1)
        solo = min(pool.apply(_rows, (n,)) for _ in range(2))
        together = pool.map(_rows, [n] * p, chunksize=1)
    return round(sum(solo / t for t in together), 2)


def _pingpong(spec: dict, role: int, cpu, rounds: int) -> float:
    """One side of line_transfer_ns (in a spawned process): seconds for `rounds` turns."""
    from .._kernels import pingpong
    from ..runtime.shm import SharedArrays

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    with SharedArrays.attach(spec) as shared:
        line = shared["line"]
        warm = 2000
        if pingpong(line, role, warm, 1 << 31) < warm:
            return float("nan")
        t0 = time.perf_counter()
        done = pingpong(line[8:], role, rounds, 1 << 31)      # a fresh line, both warm
        secs = time.perf_counter() - t0
        del line
        return secs if done == rounds else float("nan")


def line_transfer_ns(rounds: int = 200_000) -> float:
    """Nanoseconds to move one written cache line from one core to another, right now: two
    processes, on two different CPUs where the affinity allows, take turns writing one line
    of shared memory. What rows shared by training processes cost per write that the other
    process reads next: tens of ns between cores that share a cache, a hundred and more
    between dies or sockets (or a VM whose host moved its vCPUs apart). NaN if one side
    stalled."""
    from multiprocessing import get_context

    import numpy as np

    from ..runtime.shm import SharedArrays

    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:                                   # not Linux: no pinning
        cpus = []
    pins = cpus[:2] if len(cpus) >= 2 else [None, None]
    with SharedArrays.create_empty({"line": ((16,), np.int64)}) as shared:
        with get_context("spawn").Pool(2) as pool:
            pool.map(_spin, [1000] * 2, chunksize=1)         # both workers up first
            secs = pool.starmap(_pingpong, [(shared.spec, role, pins[role], rounds)
                                            for role in (0, 1)], chunksize=1)
    return round(max(secs) / (2 * rounds) * 1e9, 1)


def machine_checks(p: int) -> tuple[float, float, float | None]:
    """(cpu_capacity, memory_capacity, line_transfer_ns) for p processes, right now (the
    line only for p >= 2: what a row written by one process costs the next)."""
    return cpu_capacity(p), memory_capacity(p), line_transfer_ns() if p >= 2 else None

