"""Starting helper processes so that Ctrl-C is the parent's business alone."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


@contextmanager
def sigint_ignored_in_children():
    """Start processes inside this block: they begin life with SIGINT ignored (an ignored
    signal survives exec), so a Ctrl-C sent to the whole process group reaches only the
    parent, which then stops them in order; no child dies mid-import with a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
