"""What the dynamic and the sequence batcher share: the wake-up timer and draining.

Both keep ``_policy`` (with ``pending``), ``_executing``, ``_closed``, ``_loop``, ``_timer``,
``_pool`` and ``_pump``; this mixin arms one timer for the next deadline (a batching delay
or a timeout) and turns those into ``drain``: stop taking requests, let everything queued
or executing finish, then stop the timer and the instance threads.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class DrainingScheduler:
    _policy: Any
    _executing: int
    _closed: bool
    _loop: asyncio.AbstractEventLoop | None
    _timer: asyncio.TimerHandle | None
    _timer_at: int
    _pool: ThreadPoolExecutor | None
    _drained: asyncio.Future[None] | None

    def _pump(self, now: int = 0) -> None:
        raise NotImplementedError

    def _arm(self, wake_at: int, now: int) -> None:
        """Wake ``_pump`` at ``wake_at`` (monotonic ns) unless an earlier wake-up is armed."""
        timer = self._timer
        if timer is not None:
            if self._timer_at <= wake_at:
                return
            timer.cancel()
        self._timer_at = wake_at
        assert self._loop is not None
        self._timer = self._loop.call_later(max(wake_at - now, 0) / 1e9, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        # event loops round timers to their resolution: treat the target as reached
        self._pump(self._timer_at)

    async def drain(self) -> None:
        """New requests get ModelNotReady; queued ones still run, then the pool stops."""
        self._closed = True
        if self._loop is None:
            return
        if self._policy.pending or self._executing:
            if self._drained is None:
                self._drained = self._loop.create_future()
            self._pump()
            await asyncio.shield(self._drained)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _check_drained(self) -> None:
        drained = self._drained
        if (
            drained is not None
            and not drained.done()
            and not self._policy.pending
            and not self._executing
        ):
            drained.set_result(None)
