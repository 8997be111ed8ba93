"""Write files and folders under a temporary name, then rename: never a half-written result.

Everything written is fsynced before the rename, and the folder holding it after, so a crash
or power loss leaves either the old result or the new one. A folder that replaces an older
one is swapped in with one atomic exchange (Linux renameat2 RENAME_EXCHANGE) where the
system has it; elsewhere with two renames, and a crash between them leaves the old folder
beside it as `.NAME.*.tmp.old` (`leftover_dirs` finds it; loading a model names it).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import shutil
import tempfile
from contextlib import contextmanager


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()            # once, at import: reading it sets it for a moment


def _as_created(path: str, mode: int) -> None:
    """mkstemp/mkdtemp make private (0600/0700) files; results get the permissions an
    ordinary open() or mkdir() would give them (0666/0777 less the umask). A filesystem
    that refuses chmod (vfat, some network mounts) keeps what it gives."""
    try:
        os.chmod(path, mode & ~_UMASK)
    except OSError:
        pass


@contextmanager
def atomic_file(path: str, mode: str = "wb", **kwargs):
    """Open a temp file beside `path`; on success it replaces `path`, on error it is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        _as_created(tmp, 0o666)
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux 3.15+, glibc 2.28+); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                     _RENAME_EXCHANGE) == 0


def _fsync_tree(folder: str) -> None:
    for root, dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


@contextmanager
def atomic_dir(path: str):
    """Yield a temp folder beside `path`; on success it replaces `path` as a whole."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        _as_created(tmp, 0o777)
        yield tmp
        _fsync_tree(tmp)
        if os.path.isdir(path):
            if not _exchange(tmp, path):         # two renames: see the module's note
                os.replace(path, tmp + ".old")
                os.replace(tmp, path)
                os.replace(tmp + ".old", tmp)
            fsync_dir(parent)
            shutil.rmtree(tmp, ignore_errors=True)      # the old folder, now under tmp
        else:
            os.replace(tmp, path)
            fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def leftover_dirs(path: str) -> list[str]:
    """Older copies of folder `path` a crash during a save may have left beside it."""
    parent = os.path.dirname(os.path.abspath(path))
    return sorted(glob.glob(os.path.join(parent, f".{glob.escape(os.path.basename(path))}.*.tmp*")))
