"""Named shared-memory arrays: the parent creates and unlinks, children attach and close.

Before Python 3.13 attaching registers the segment with the resource tracker, which may
unlink it when that process exits (cpython gh-82300). Children therefore attach untracked
(`track=False` on 3.13+, a suppressed registration before), so a child exiting, crashing
or being killed never removes the parent's segment. The parent's own registration stays:
if the parent itself is killed, its resource tracker unlinks the segments it left.

Each array is a numpy view of its own mapping of the segment (where the system has
/dev/shm), so an array may outlive the SharedArrays that made it: the model's weights are
the segments while processes train on them and stay the model's memory afterwards, without
a copy. A segment's name goes when its creator unlinks it (or the creator is collected, or
exits); its memory when the last view of it goes.
"""
from __future__ import annotations

import glob
import math
import mmap
import os
import re
import secrets
import shutil
import sys
import weakref
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


SHM_DIR = "/dev/shm"


def _own_view(seg: shared_memory.SharedMemory, shape, dtype) -> tuple[np.ndarray, bool]:
    """An array on a mapping of the segment of its own (whose memory stays while the array
    lives, whatever becomes of `seg`), and True; or, without /dev/shm, a view of seg's
    buffer and False (seg must then stay open while the array is used)."""
    dtype = np.dtype(dtype)
    count = math.prod(int(n) for n in shape)
    path = os.path.join(SHM_DIR, seg.name.lstrip("/"))
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return np.ndarray(shape, dtype=dtype, buffer=seg.buf), False
    try:
        mapping = mmap.mmap(fd, max(seg.size, 1))
    finally:
        os.close(fd)
    return np.frombuffer(mapping, dtype=dtype, count=count).reshape(shape), True


def _unlink_names(names: list[str]) -> None:
    """Unlink segments by name (what SharedMemory.unlink does, without an open segment)."""
    for name in names:
        try:
            seg = _attach_segment(name)
        except FileNotFoundError:
            continue
        try:
            seg.close()
            seg.unlink()          # also drops the creator's resource-tracker registration
        except FileNotFoundError:
            pass


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
    check_memory(nbytes, "the weights and tables")


def check_memory(nbytes: int, what: str = "the weights") -> None:
    """Refuse up front what would not fit in the memory available (an allocation past it
    ends in the kernel's OOM killer, no message)."""
    mb = 2 ** 20
    avail = psutil.virtual_memory().available
    if nbytes > 0.9 * avail:
        raise ResourceError(f"{what} need {nbytes / mb:,.0f} MB but "
                            f"{avail / mb:,.0f} MB of memory are available")


class SharedArrays:
    """A set of named numpy arrays in shared memory, one segment each.

    `spec` (plain names, shapes, dtypes) is what a child needs to attach: nothing large is
    pickled. The creator unlinks the names with `unlink()` (or as a context manager); if it
    does not, they are unlinked when the SharedArrays is collected or the process exits.
    `SharedArrays.joined` lends several sets' arrays under one spec, unlinking none."""

    def __init__(self, spec: dict, segments: dict, owner: bool):
        self.spec = spec
        self.owner = owner
        self.arrays = {}
        self._segments = {}               # the segments whose buffers the arrays view
        for key, (name, shape, dtype) in spec.items():
            self.arrays[key], own = _own_view(segments[key], shape, dtype)
            if own:
                segments[key].close()     # the array has its own mapping
            else:
                self._segments[key] = segments[key]
        self._unlinker = (weakref.finalize(self, _unlink_names,
                                           [name for name, _, _ in spec.values()])
                          if owner else None)

    @classmethod
    def joined(cls, *parts: "SharedArrays") -> "SharedArrays":
        """The arrays and specs of `parts` together, as one set to attach; unlinking it
        unlinks nothing (each part's owner does)."""
        out = cls.__new__(cls)
        out.spec, out.arrays, out.owner, out._segments, out._unlinker = {}, {}, False, {}, None
        for part in parts:
            out.spec.update(part.spec)
            out.arrays.update(part.arrays)
        return out

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
        """Drop this object's arrays (each array's memory goes with its last view)."""
        self.arrays = {}
        for seg in self._segments.values():
            try:
                seg.close()
            except BufferError:      # a view is still alive somewhere; the OS frees on exit
                pass
        self._segments = {}

    def unlink(self) -> None:
        """Close, and (the creator) remove the segments' names: nothing can attach since."""
        self.close()
        if self._unlinker is not None:
            self._unlinker()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.owner:
            self.unlink()
        else:
            self.close()
