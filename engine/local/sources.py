"""Where a session's work comes from: a fixed task list (ListSource), or tasks fed while it
runs (FeedSource, the cluster node's)."""
from __future__ import annotations

import os
import threading
from collections import deque

from ..word2vec.idstream import IdStream
from ..word2vec.schedule import Task


def plan_tasks(stream: IdStream, epochs: int, alpha: float, min_alpha: float, seed: int,
               first_epoch: int = 0, total_epochs: int | None = None) -> list[Task]:
    """Every chunk of the id stream for `epochs` epochs (see schedule.plan_tasks)."""
    from ..word2vec.schedule import plan_tasks as plan

    return plan(stream.chunks, stream.raw_words, epochs, alpha, min_alpha, seed,
                first_epoch, total_epochs)


class ListSource:
    """A fixed list of tasks: the run ends when all are done."""

    def __init__(self, tasks):
        self.pending = deque(tasks)
        self.wake_fd = None

    def take(self):
        return self.pending.popleft() if self.pending else None

    def give_back(self, tasks) -> None:
        self.pending.extendleft(reversed(list(tasks)))

    def exhausted(self) -> bool:
        return not self.pending


class FeedSource:
    """Tasks that arrive while the session runs (a cluster node's queue): thread-safe; the
    run ends when `close()` was called and everything fed is done. `feed` wakes the run."""

    def __init__(self, gate=None):
        self.pending: deque = deque()
        self.gate = gate                # while gate() is false, take() hands out nothing
        self._lock = threading.Lock()
        self._closed = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self.wake_fd = self._rfd

    def wake(self) -> None:
        """The run looks at the source again (new tasks, or the gate may have opened)."""
        try:
            os.write(self._wfd, b"x")
        except (BlockingIOError, OSError):
            pass

    def feed(self, tasks) -> None:
        with self._lock:
            self.pending.extend(tasks)
        self.wake()

    def take(self):
        if self.gate is not None and not self.gate():
            return None
        with self._lock:
            return self.pending.popleft() if self.pending else None

    def give_back(self, tasks) -> None:
        with self._lock:
            self.pending.extendleft(reversed(list(tasks)))

    def drain_wake(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def queued(self) -> int:
        with self._lock:
            return len(self.pending)

    def close(self) -> None:
        self._closed = True
        self.wake()

    def exhausted(self) -> bool:
        with self._lock:
            return self._closed and not self.pending

    def release(self) -> None:
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass

