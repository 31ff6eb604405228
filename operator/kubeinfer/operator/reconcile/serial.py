"""One reconcile pass at a time per object.

kopf already runs the change handlers of one object one after another, but an object is
also reconciled from elsewhere: the resync (a task of its own), an event of the
Deployment it owns (that Deployment's worker), a change of a model an ensemble refers to
(the model's worker). Passes of one object that overlap could each compute a status from
their own view and land in any order; :class:`Serial` queues them instead. Entries live only
while a pass runs or waits, so the table never grows with objects that came and went.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class Serial:
    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        """Objects with a pass running or waiting."""
        return len(self._locks)

    @asynccontextmanager
    async def __call__(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
