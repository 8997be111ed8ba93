"""What every kind of job on a worker shares: argument checks, and the guard that lets
`close` wait for the calls running on the job and refuse new ones."""
from __future__ import annotations

import threading
from contextlib import contextmanager


def check_int(value, lo, hi, what):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{what}: expected an integer in [{lo}, {hi}], got {value!r}")
    return value


def check_num(value, lo, hi, what):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{what}: expected a number in [{lo}, {hi}], got {value!r}")
    return float(value)


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
