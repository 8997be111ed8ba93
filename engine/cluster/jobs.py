"""What every kind of job on a worker shares: the guard that lets `close` wait for the
calls running on the job and refuse new ones (arguments are checked by engine.cluster.protocol)."""
from __future__ import annotations

import threading
from contextlib import contextmanager


class CallGuard:
    """Hold a job open for one call (`with job.call():`); `stop_calls()` refuses new calls
    and waits (up to a bound) for the running ones, so no call writes to memory or pipes
    already released."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.calls = 0
        self.closing = False
        self.calls_cv = threading.Condition()

    @contextmanager
    def call(self):
        with self.calls_cv:
            if self.closing:
                raise ValueError(f"job {self.job_id} is closing")
            self.calls += 1
        try:
            yield self
        finally:
            with self.calls_cv:
                self.calls -= 1
                self.calls_cv.notify_all()

    def refuse_calls(self) -> None:
        with self.calls_cv:
            self.closing = True

    def wait_calls(self, timeout: float = 30) -> None:
        with self.calls_cv:
            self.calls_cv.wait_for(lambda: self.calls == 0, timeout=timeout)
