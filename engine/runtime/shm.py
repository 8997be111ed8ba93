"""Named shared-memory arrays: the parent creates and unlinks, children attach and close.

Before Python 3.13 attaching registers the segment with the resource tracker, which may
unlink it when that process exits (cpython gh-82300). Children therefore attach untracked
(`track=False` on 3.13+, a suppressed registration before), so a child exiting, crashing
or being killed never removes the parent's segment. The parent's own registration stays:
if the parent itself is killed, its resource tracker unlinks the segments it left.
"""
from __future__ import annotations

import glob
import math
import os
import re
import secrets
import shutil
import sys
from contextlib import contextmanager
from multiprocessing import resource_tracker, shared_memory

import numpy as np
import psutil

from ..errors import ResourceError

PREFIX = "engine_"


def _tag() -> str:
    """Segment names carry the creator's pid, so segments of a creator that was killed with
    its whole process group (resource tracker included) can be swept later."""
    return f"{os.getpid()}_{secrets.token_hex(4)}"


def sweep_temp_dirs(prefix: str) -> list[str]:
    """Remove temp folders PREFIX<pid>-* whose creating process is gone (a SIGKILL or an
    OOM kill leaves them); returns their paths."""
    import tempfile

    gone = []
    for path in glob.glob(os.path.join(tempfile.gettempdir(), glob.escape(prefix) + "*")):
        m = re.match(re.escape(prefix) + r"(\d+)-", os.path.basename(path))
        if m and not psutil.pid_exists(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(path)
    return gone


def sweep_orphans() -> list[str]:
    """Unlink segments whose creating process is gone; returns their names."""
    gone = []
    for path in glob.glob(f"/dev/shm/{PREFIX}*"):
        m = re.match(re.escape(PREFIX) + r"(\d+)_", os.path.basename(path))
        if not m:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue                              # alive (or not ours to judge)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            os.unlink(path)
            gone.append(os.path.basename(path))
        except OSError:
            pass
    return gone


@contextmanager
def _untracked():
    original = resource_tracker.register

    def skip(name, rtype):
        if rtype != "shared_memory":
            original(name, rtype)

    resource_tracker.register = skip
    try:
        yield
    finally:
        resource_tracker.register = original


def _attach_segment(name: str) -> shared_memory.SharedMemory:
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    with _untracked():
        return shared_memory.SharedMemory(name=name)


def check_room(nbytes: int, shm_dir: str = "/dev/shm") -> None:
    """Refuse up front what would not fit (a full /dev/shm kills with SIGBUS, no message)."""
    mb = 2 ** 20
    if os.path.isdir(shm_dir):
        free = shutil.disk_usage(shm_dir).free
        if nbytes > free:
            raise ResourceError(
                f"the weights and tables need {nbytes / mb:,.0f} MB of shared memory but "
                f"{shm_dir} has {free / mb:,.0f} MB free (a container: raise --shm-size; or "
                f"train with [engine] workers = 1, which needs none)")
    avail = psutil.virtual_memory().available
    if nbytes > 0.9 * avail:
        raise ResourceError(f"the weights and tables need {nbytes / mb:,.0f} MB but "
                            f"{avail / mb:,.0f} MB of memory are available")


class SharedArrays:
    """A set of named numpy arrays in shared memory, one segment each.

    `spec` (plain names, shapes, dtypes) is what a child needs to attach: nothing large is
    pickled. The creator must call `unlink()` (use it as a context manager)."""

    def __init__(self, spec: dict, segments: dict, owner: bool):
        self.spec = spec
        self._segments = segments
        self.owner = owner
        self.arrays = {
            key: np.ndarray(shape, dtype=np.dtype(dtype), buffer=segments[key].buf)
            for key, (name, shape, dtype) in spec.items()
        }

    @classmethod
    def create(cls, arrays: dict[str, np.ndarray]) -> "SharedArrays":
        """Shared copies of `arrays`."""
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        shared = cls.create_empty({k: (v.shape, v.dtype) for k, v in arrays.items()})
        for k, v in arrays.items():
            shared[k][...] = v
        return shared

    @classmethod
    def create_empty(cls, shapes: dict[str, tuple]) -> "SharedArrays":
        """Zero-filled arrays {key: (shape, dtype)} in shared memory (filled later in place,
        so nothing is held twice)."""
        check_room(sum(math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize
                       for shape, dtype in shapes.values()))
        spec, segments = {}, {}
        tag = _tag()
        try:
            for key, (shape, dtype) in shapes.items():
                nbytes = math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize
                seg = shared_memory.SharedMemory(name=f"{PREFIX}{tag}_{key}", create=True,
                                                 size=max(nbytes, 1))
                segments[key] = seg
                spec[key] = (seg.name, tuple(shape), np.dtype(dtype).str)
        except BaseException:
            for seg in segments.values():
                seg.close()
                seg.unlink()
            raise
        return cls(spec, segments, owner=True)

    @classmethod
    def attach(cls, spec: dict) -> "SharedArrays":
        segments = {}
        try:
            for key, (name, _shape, _dtype) in spec.items():
                segments[key] = _attach_segment(name)
        except BaseException:
            for seg in segments.values():
                seg.close()
            raise
        return cls(spec, segments, owner=False)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def close(self) -> None:
        self.arrays = {}
        for seg in self._segments.values():
            try:
                seg.close()
            except BufferError:      # a view is still alive somewhere; the OS frees on exit
                pass

    def unlink(self) -> None:
        self.close()
        if self.owner:
            for seg in self._segments.values():
                try:
                    seg.unlink()
                except FileNotFoundError:
                    pass
            self._segments = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.owner:
            self.unlink()
        else:
            self.close()
