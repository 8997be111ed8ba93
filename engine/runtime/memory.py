"""Peak memory of a job: all its processes together, shared memory counted once.

A background thread samples the proportional set size (PSS: shared pages split between
the processes mapping them) of this process and all its descendants, and keeps the max.
Where PSS is unavailable it falls back to RSS (shared pages then count once per process).
"""
from __future__ import annotations

import ctypes
import resource
import threading
import time

import psutil

# mallopt's parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory(mmap_threshold: int = 8 << 20, trim_threshold: int = 32 << 20,
                      top_pad: int = 4 << 20) -> bool:
    """Keep freed memory in this process (glibc's malloc; elsewhere nothing changes):
    blocks up to `mmap_threshold` come from the heap instead of fresh mappings, and the
    heap is given back to the system only past `trim_threshold` free at its top. A process
    that allocates and frees the same large buffers every round (a node's rows and
    messages at each exchange) then stops paying the kernel to zero fresh pages for them
    each time; what it holds is its largest round's buffers. Returns whether it took."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(k, v) == 1 for k, v in ((_M_MMAP_THRESHOLD, mmap_threshold),
                                               (_M_TRIM_THRESHOLD, trim_threshold),
                                               (_M_TOP_PAD, top_pad)))


def _pss_mb(proc: psutil.Process) -> float:
    try:                                   # cheap: one small file, no per-mapping walk
        with open(f"/proc/{proc.pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        info = proc.memory_full_info()
        return getattr(info, "pss", info.rss) / 2**20
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0
    except Exception:
        try:
            return proc.memory_info().rss / 2**20
        except psutil.Error:
            return 0.0


def tree_pss_mb(root: psutil.Process | None = None) -> float:
    """Current PSS of a process and all its descendants, in MB."""
    root = root or psutil.Process()
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        procs = [root]
    return sum(_pss_mb(p) for p in procs)


def self_peak_rss_mb() -> float:
    """The kernel's peak RSS of this process (ru_maxrss), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Context manager: samples tree PSS every `interval` seconds; `.peak_mb` after, and
    the peak of the current phase (see new_phase) in `.phase_peak_mb`."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval           # may be changed while running
        self.peak_mb = 0.0
        self.phase_peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-memory")
        self._root = psutil.Process()
        # a timeline: with `probe` set (a callable returning a dict), every `record_every`
        # seconds a sample {seconds, rss_mb, **probe()} is appended to `timeline`
        self.probe = None
        self.record_every = 5.0
        self.timeline: list[dict] = []
        self._t0 = self._last_record = time.perf_counter()

    def start_timeline(self, probe, every: float) -> None:
        self._t0 = self._last_record = time.perf_counter()
        self.record_every, self.timeline, self.probe = every, [], probe

    def sample(self) -> float:
        now = tree_pss_mb(self._root)
        self.peak_mb = max(self.peak_mb, now)
        self.phase_peak_mb = max(self.phase_peak_mb, now)
        probe = self.probe
        t = time.perf_counter()
        if probe is not None and t - self._last_record >= self.record_every:
            self._last_record = t
            try:
                row = probe()
            except Exception:                # a sampler never stops the job
                row = None
            if row is not None:
                self.timeline.append({"seconds": round(t - self._t0, 2),
                                      "rss_mb": round(now, 1), **row})
        return now

    def new_phase(self, interval: float | None = None) -> float:
        """Start a new phase (its own peak in `phase_peak_mb`); returns the peak of the
        phase that ended. Optionally change the sampling interval."""
        self.sample()
        ended = self.phase_peak_mb
        self.phase_peak_mb = 0.0
        if interval is not None:
            self.interval = interval
        return ended

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
