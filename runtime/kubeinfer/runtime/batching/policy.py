"""Dynamic batching policy: which queued requests form the next batch, and when.

Pure: no asyncio, no threads, no clock of its own. The batcher (``batcher.py``) wraps each
validated ``InferRequest`` in a ``Pending`` and ``push``es it; whenever a model instance
is free (or a timer it armed fires) it calls ``poll(now, idle)`` and gets a ``Decision``:
a batch to execute now, the requests whose timeout expired (to fail with
``DeadlineExceeded``), and, when nothing is ready yet, the time to ask again. Times are
integer nanoseconds on whatever monotonic clock the caller uses.

Semantics (Triton's dynamic batcher, see PROTOCOL.md "Dynamic batcher semantics"):

- One FIFO per priority level; level 1 is served first. A request's priority outside
  ``1..priority_levels`` (or 0) means ``default_priority_level``; a default of 0 means
  the lowest level.
- A batch counts each request by its ``batch_size`` and never exceeds ``max_batch_size``,
  nor the largest preferred size when preferred sizes are given (the first request always
  fits). It stops at the first compatible request that does not fit (FIFO). It takes the shape key (input names, datatypes, non-batch dims) of the first queued
  request and only compatible requests; the others stay queued, in order.
- Sent at once when it reaches a preferred size (the largest reached), when it cannot grow
  beyond the largest preferred size / ``max_batch_size``, when ``idle`` (nothing is
  executing: waiting would only add latency), or when the delay is 0. Otherwise it waits
  until its oldest request has waited ``max_queue_delay_microseconds``, then everything
  collected goes (Triton sends the whole pending batch once the delay is exceeded).
- ``max_batch_size == 0`` (the model does not batch): one request per batch, no waiting.
- Timeouts: see ``timeout_ns``. An expired request is removed (REJECT) or moved behind the
  unexpired requests of its level (DELAY). Expiry is applied at every ``poll`` and the
  next deadline is part of the wake time, so a REJECT-expired request never executes and
  fails as soon as its deadline passes, not after the current execution.
- ``max_queue_size`` per level (0: unbounded): a full level rejects with ``QueueFull``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping
from itertools import count
from typing import Any, NamedTuple

import numpy as np

from kubeinfer.spec.config.model import DynamicBatching, QueuePolicy
from kubeinfer.runtime.errors import QueueFull
from kubeinfer.runtime.types import InferRequest

#: waiting in its level's main FIFO
QUEUED = 0
#: waiting in its level's delayed FIFO (timed out under the DELAY action)
DELAYED = 1
DISPATCHED = 2
CANCELLED = 3
EXPIRED = 4

#: dead references a level may hold before its deques are rebuilt
_COMPACT_AT = 64

#: (name, dtype, non-batch dims) of each input, flattened
ShapeKey = tuple[Any, ...]


def shape_key(inputs: Mapping[str, np.ndarray]) -> ShapeKey:
    """What two requests must share to be concatenated: names, dtypes, non-batch dims.

    Input order matters (the protocol layer keeps the client's order); two requests
    sending the same inputs in another order are simply not batched together.
    """
    key: ShapeKey = ()
    for name, a in inputs.items():
        key += (name, a.dtype, a.shape[1:])
    return key


class Pending:
    """One queued request and what the policy needs to know about it.

    ``handle`` is the caller's (the batcher keeps its future there); the policy never
    looks at it.
    """

    __slots__ = ("request", "handle", "key", "size", "state", "level", "enqueue_ns", "deadline_ns")

    def __init__(self, request: InferRequest, key: Any = None, handle: Any = None) -> None:
        self.request = request
        self.handle = handle
        self.key = key
        self.size = request.batch_size
        self.state = QUEUED
        # set by ``BatchPolicy.push``: level index, enqueue time, deadline (0: none)
        self.level = self.enqueue_ns = self.deadline_ns = 0


class Decision(NamedTuple):
    #: requests to execute now as one batch, in queue order; None: nothing to send yet
    batch: list[Pending] | None
    #: requests removed because their timeout expired (REJECT); fail them
    expired: list[Pending]
    #: when ``batch`` is None: call ``poll`` again at this time (None: only on news)
    wake_at: int | None


_NO_EXPIRED: list[Pending] = []


class _Level:
    __slots__ = ("main", "delayed", "count", "garbage", "max_size", "timeout_ns", "override",
                 "delay_action")

    def __init__(self, policy: QueuePolicy) -> None:
        self.main: deque[Pending] = deque()
        self.delayed: deque[Pending] = deque()
        #: live requests in this level
        self.count = 0
        #: dead references still held by ``main``/``delayed`` (dispatched, cancelled, moved)
        self.garbage = 0
        self.max_size = policy.max_queue_size
        self.timeout_ns = policy.default_timeout_microseconds * 1000
        self.override = policy.allow_timeout_override
        self.delay_action = policy.timeout_action == "DELAY"


class BatchPolicy:
    """The queue and the batching decision; see the module docstring for the rules."""

    def __init__(self, max_batch_size: int, config: DynamicBatching | None = None) -> None:
        config = config or DynamicBatching()
        self.max_batch_size = max_batch_size
        self._preferred = frozenset(p for p in config.preferred_batch_size if p <= max_batch_size)
        self._cap = max(self._preferred) if self._preferred else max_batch_size
        self._delay_ns = config.max_queue_delay_microseconds * 1000
        n = max(config.priority_levels, 1)
        self._levels = [
            _Level(config.priority_queue_policy.get(i + 1, config.default_queue_policy))
            for i in range(n)
        ]
        default = config.default_priority_level
        self._default_level = (default if 1 <= default <= n else n) - 1
        self._deadlines: list[tuple[int, int, Pending]] = []
        self._seq = count()
        self._count = 0
        #: with every level bounded, the queue is full for any request at this count
        self._capacity = sum(lvl.max_size for lvl in self._levels) if all(
            lvl.max_size for lvl in self._levels
        ) else 0

    # -- queue -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Live queued requests (not dispatched, cancelled or expired)."""
        return self._count

    def full(self) -> bool:
        """Every level is bounded and full: any request would get ``QueueFull`` now."""
        return 0 < self._capacity <= self._count

    def level_of(self, priority: int) -> int:
        """0-based level index for a request priority (Triton: 0 or out of range = default)."""
        if 0 < priority <= len(self._levels):
            return priority - 1
        return self._default_level

    def timeout_ns(self, level: int, request_timeout_us: int) -> int:
        """The request's queue timeout in ns (0: none).

        With a level default D and a request timeout R (0 = not set): R unset -> D; no
        default (D == 0) -> R, since there is nothing to override and a client that set a
        timeout expects it honoured (Triton's code ignores R in that case); D set -> R only
        when ``allow_timeout_override`` and only to shorten it, min(R, D) (Triton's rule:
        a request may not increase the timeout).
        """
        lvl = self._levels[level]
        if request_timeout_us <= 0:
            return lvl.timeout_ns
        requested = request_timeout_us * 1000
        if lvl.timeout_ns == 0:
            return requested
        if lvl.override:
            return min(requested, lvl.timeout_ns)
        return lvl.timeout_ns

    def push(self, entry: Pending, now: int) -> None:
        """Queue ``entry`` at ``now``; raises ``QueueFull`` when its level is full."""
        if entry.size > self.max_batch_size > 0:
            raise ValueError(
                f"request batch size {entry.size} exceeds max_batch_size {self.max_batch_size}"
                " (validation must reject it before the scheduler)"
            )
        req = entry.request
        li = self.level_of(req.priority) if req.priority else self._default_level
        lvl = self._levels[li]
        if lvl.max_size and lvl.count >= lvl.max_size:
            raise QueueFull(f"exceeds maximum queue size ({lvl.max_size})")
        entry.level = li
        entry.enqueue_ns = now
        lvl.main.append(entry)
        lvl.count += 1
        self._count += 1
        if lvl.timeout_ns or req.timeout_us:
            timeout = self.timeout_ns(li, req.timeout_us)
            if timeout:
                self._add_deadline(entry, now + timeout)

    def _add_deadline(self, entry: Pending, deadline: int) -> None:
        entry.deadline_ns = deadline
        heap = self._deadlines
        if len(heap) > 2 * self._count + _COMPACT_AT:  # drop entries no longer queued
            heap[:] = [t for t in heap if t[2].state == QUEUED]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, next(self._seq), entry))

    def cancel(self, entry: Pending) -> bool:
        """Remove a queued request (client gone). False if it was not queued any more."""
        if entry.state > DELAYED:
            return False
        entry.state = CANCELLED
        self._drop(entry)
        return True

    def expire(self, now: int) -> list[Pending]:
        """Apply timeouts due at ``now``: REJECT ones are removed and returned; DELAY ones
        move behind the unexpired requests of their level."""
        heap = self._deadlines
        if not heap or heap[0][0] > now:
            return _NO_EXPIRED
        expired: list[Pending] = []
        while heap and heap[0][0] <= now:
            e = heapq.heappop(heap)[2]
            if e.state != QUEUED:
                continue
            lvl = self._levels[e.level]
            if lvl.delay_action:
                e.state = DELAYED
                lvl.delayed.append(e)
                lvl.garbage += 1  # its reference in ``main`` is now dead
                self._clean(lvl)
            else:
                e.state = EXPIRED
                self._drop(e)
                expired.append(e)
        return expired

    def next_deadline(self) -> int | None:
        """The earliest pending timeout, if any (to arm a timer while instances are busy)."""
        heap = self._deadlines
        while heap and heap[0][2].state != QUEUED:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # -- decision --------------------------------------------------------------------------

    def poll(self, now: int, idle: bool) -> Decision:
        """Expire what is due, then decide. ``idle``: no batch is executing anywhere."""
        expired = self.expire(now) if self._deadlines else _NO_EXPIRED
        if not self._count:
            return Decision(None, expired, None)
        taken, oldest, mark, saturated = self._scan()
        delay = self._delay_ns
        delay_exceeded = delay != 0 and now - oldest >= delay
        if mark and not delay_exceeded:
            del taken[mark:]
        elif not (saturated or idle or delay_exceeded or delay == 0):
            wake = oldest + delay
            deadline = self.next_deadline()
            return Decision(None, expired, wake if deadline is None else min(wake, deadline))
        self._take(taken)
        return Decision(taken, expired, None)

    def _scan(self) -> tuple[list[Pending], int, int, bool]:
        """Collect the candidate batch: (entries, oldest enqueue time, mark, saturated).

        ``mark`` is how many entries make the largest preferred size reached (or, as
        Triton, the largest size before the batch would outgrow every preferred size);
        ``saturated``: the batch cannot grow.
        """
        taken: list[Pending] = []
        total = mark = 0
        oldest = -1
        cap = self._cap
        preferred = self._preferred
        unbatched = self.max_batch_size == 0
        key: Any = None
        for lvl in self._levels:
            if not lvl.count:
                continue
            for dq, live in ((lvl.main, QUEUED), (lvl.delayed, DELAYED)):
                for e in dq:
                    if e.state != live:
                        continue
                    if unbatched:
                        return [e], e.enqueue_ns, 0, True
                    if not taken:
                        key = e.key
                        oldest = e.enqueue_ns
                    elif e.key != key:
                        continue
                    elif e.enqueue_ns < oldest:
                        oldest = e.enqueue_ns
                    size = e.size
                    if taken and total + size > cap:
                        return taken, oldest, mark or len(taken), True
                    taken.append(e)
                    total += size
                    if total in preferred:
                        mark = len(taken)
                    if total >= cap:
                        return taken, oldest, mark, True
        return taken, oldest, mark, False

    def _take(self, batch: list[Pending]) -> None:
        levels = self._levels
        lvl = levels[batch[0].level]
        mixed = False
        for e in batch:
            e.state = DISPATCHED
            if levels[e.level] is not lvl:
                mixed = True
        self._count -= len(batch)
        if not mixed:
            lvl.count -= len(batch)
            lvl.garbage += len(batch)
            self._clean(lvl)
            return
        for e in batch:
            lvl = levels[e.level]
            lvl.count -= 1
            lvl.garbage += 1
        for lvl in levels:
            self._clean(lvl)

    def _drop(self, entry: Pending) -> None:
        lvl = self._levels[entry.level]
        lvl.count -= 1
        lvl.garbage += 1
        self._count -= 1
        self._clean(lvl)

    @staticmethod
    def _clean(lvl: _Level) -> None:
        """Pop dead references off the fronts; rebuild when dead ones pile up inside."""
        main, delayed = lvl.main, lvl.delayed
        while main and main[0].state != QUEUED:
            main.popleft()
            lvl.garbage -= 1
        while delayed and delayed[0].state != DELAYED:
            delayed.popleft()
            lvl.garbage -= 1
        if lvl.garbage > _COMPACT_AT and lvl.garbage > lvl.count:
            lvl.main = deque(e for e in main if e.state == QUEUED)
            lvl.delayed = deque(e for e in delayed if e.state == DELAYED)
            lvl.garbage = 0
