"""Progress logging for downloads: bytes so far, total when known, rate; at most every 2 s."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("kubeinfer.fetch")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class Progress:
    def __init__(self, what: str, interval: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.last = self.started
        self.bytes = 0
        self.files = 0
        self.total: int | None = None

    def start_file(self, name: str, size: int | None) -> None:
        self.files += 1
        log.info("downloading %s%s", name, f" ({_mb(size)})" if size else "")
        if size:
            self.total = (self.total or 0) + size

    def add(self, n: int) -> None:
        self.bytes += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            pct = f" of {_mb(self.total)} ({100 * self.bytes / self.total:.0f}%)" if self.total else ""
            rate = self.bytes / max(now - self.started, 1e-9)
            log.info("%s: %s%s at %s/s", self.what, _mb(self.bytes), pct, _mb(int(rate)))

    def done(self) -> None:
        took = self.clock() - self.started
        log.info("fetched %s: %d file(s), %s in %.1fs", self.what, self.files, _mb(self.bytes), took)
