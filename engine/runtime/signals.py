"""Ctrl-C and SIGTERM as one Interrupted error in the main thread, so that the blocks that
stop processes and release shared memory always run."""
from __future__ import annotations

import signal
import threading

from ..errors import Interrupted


class _StopRequested(BaseException):
    pass


class signals_as_interrupt:
    """Within the block, Ctrl-C and SIGTERM raise Interrupted in the main thread (so the
    finally-blocks that stop processes and unlink shared memory always run)."""

    def __enter__(self):
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise _StopRequested(signum)

    def __exit__(self, exc_type, exc, tb):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        if exc_type is KeyboardInterrupt:
            raise Interrupted("interrupted (Ctrl-C); training processes stopped, shared "
                              "memory released") from None
        if exc_type is _StopRequested:
            raise Interrupted("terminated (SIGTERM); training processes stopped, shared "
                              "memory released", exit_code=143) from None
        return False


