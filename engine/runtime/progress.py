"""Progress of training: percent, words/s, alpha, ETA. One updating line on a terminal,
plain log lines (every few seconds) otherwise."""
from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("engine")


def _fmt_secs(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, total_words: int, every_seconds: float = 5.0, stream=None,
                 enabled: bool = True):
        self.total = max(int(total_words), 1)
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = 0.5 if self.tty else every_seconds
        self.enabled = enabled
        self.start = time.perf_counter()
        self._last = self.start
        self.done = 0
        self.alpha = 0.0

    def update(self, done_words: int, alpha: float) -> None:
        self.done = done_words
        self.alpha = alpha
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self._emit(now)

    def line(self, now: float | None = None) -> str:
        now = now or time.perf_counter()
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        frac = self.done / self.total
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"{100 * frac:5.1f}%  {rate:,.0f} words/s  alpha {self.alpha:.5f}  "
                f"elapsed {_fmt_secs(elapsed)}  ETA {_fmt_secs(eta)}")

    def _emit(self, now: float) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + self.line(now) + "\x1b[K")
            self.stream.flush()
        else:
            log.info("training %s", self.line(now))

    def finish(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()
