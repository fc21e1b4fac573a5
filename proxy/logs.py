"""Log lines a client or an outage can cause by the thousand: at most one per interval.

A flood of clients past a limit, a Redis outage or malformed requests must not turn the log
into the bottleneck (or the disk into the outage): each kind of line is written at most once
per interval, with the number of lines like it that were not.
"""

from __future__ import annotations

import logging
import threading
import time

INTERVAL_SECONDS = 10.0


class RateLimitedLog:
    """Warnings by kind, each kind at most once per `interval`, counting the rest."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL_SECONDS) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, message: str, *args: object, kind: str = "") -> None:
        """`message % args` now, unless a line of this `kind` went out less than `interval` ago."""
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -self.interval) < self.interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        self.logger.warning(
            message + " (%d more like it in the last %g s not logged)",
            *args,
            suppressed,
            self.interval,
        )
