"""Sequence batching policy: which sequence owns which slot, and which requests run next.

Pure: no asyncio, no threads, no clock of its own (times are integer nanoseconds on the
caller's monotonic clock). The sequence batcher (``sequence.py``) wraps each validated
request of a stateful model in a ``SeqRequest`` and ``push``es it; whenever a model
instance is free (or a timer it armed fires) it calls ``poll(now, free, idle)`` and gets
the batches to execute, the sequences released for idleness, and when to ask again; when
a batch finished it calls ``complete``.

Semantics (Triton's sequence batcher):

- A sequence is identified by its ``sequence_id`` (an unsigned integer or a string; ``1``
  and ``"1"`` are different sequences). Its first request sets ``sequence_start``, its
  last ``sequence_end``. A request for a sequence that is not live (never started, ended,
  or released for idleness) without START is refused, so is a START for a sequence that is
  live and not ended. A START after a queued END of the same id starts the next sequence.
- Every live sequence holds a slot or waits in the backlog for one (FIFO, at most
  ``backlog_limit`` sequences; beyond that ``QueueFull``). A slot is freed when the
  sequence's END request completes, or when the sequence had no request queued or
  executing for ``max_sequence_idle_microseconds``; the first backlogged sequence takes it.
- At most one request of a sequence executes at a time, in arrival order.
- ``direct``: each instance owns ``max(max_batch_size, 1)`` slots and a sequence is pinned
  to one. A batch is one row per slot of a free instance, up to the highest slot that has a
  request ready; rows of slots with nothing ready are ``None`` (the scheduler feeds zeros
  with READY false and discards their outputs). With ``minimum_slot_utilization`` > 0 a
  batch waits until that fraction of the instance's slots is ready or its oldest request
  has waited ``max_queue_delay_microseconds``.
- ``oldest``: ``max_candidate_sequences`` slots (default: one per batch row of every
  instance) not tied to an instance; a free instance takes the oldest ready requests of
  different sequences, as the dynamic batcher does: up to ``max_batch_size`` (or the
  largest preferred size), sent at once when full, at a preferred size, when nothing
  executes, when the delay is 0, or once the oldest has waited the delay.
- Requests whose inputs differ in names, datatypes or non-batch dims (``key``) are not
  put in one batch; the others wait for the next one.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

from kubeinfer.spec.config.model import SequenceBatching
from kubeinfer.runtime.errors import InvalidInput, QueueFull
from kubeinfer.runtime.types import InferRequest

QUEUED = 0
DISPATCHED = 1
CANCELLED = 2

SequenceId = int | str


class SeqRequest:
    """One queued request of a sequence. ``handle`` is the caller's (its future)."""

    __slots__ = ("request", "handle", "seq_id", "start", "end", "key", "seq", "state", "enqueue_ns")

    def __init__(
        self,
        request: InferRequest,
        seq_id: SequenceId,
        start: bool = False,
        end: bool = False,
        key: Any = None,
        handle: Any = None,
    ) -> None:
        self.request = request
        self.handle = handle
        self.seq_id = seq_id
        self.start = start
        self.end = end
        self.key = key
        self.seq: Sequence | None = None
        self.state = QUEUED
        self.enqueue_ns = 0


class Slot:
    __slots__ = ("instance", "index", "seq")

    def __init__(self, instance: int, index: int) -> None:
        #: the instance that executes this slot (-1: any, ``oldest``)
        self.instance = instance
        #: the row of this slot in its instance's batches (``direct``)
        self.index = index
        self.seq: Sequence | None = None


class Sequence:
    """A live sequence. ``state`` is the scheduler's (implicit state tensors)."""

    __slots__ = ("id", "slot", "queue", "open", "running", "ran", "last_end", "last_ns", "state")

    def __init__(self, seq_id: SequenceId, now: int) -> None:
        self.id = seq_id
        self.slot: Slot | None = None
        self.queue: deque[SeqRequest] = deque()
        #: a request without START may follow (the last one queued did not end it)
        self.open = True
        self.running = False
        #: a request of it has executed
        self.ran = False
        #: the last executed (or executing) request carried END
        self.last_end = False
        #: when it was last active: a request queued or completed
        self.last_ns = now
        self.state: Any = None


class Batch(NamedTuple):
    #: the instance to run on (``direct``: the slots' instance; ``oldest``: a free one)
    instance: int
    #: ``direct``: one entry per slot row, None where that slot has nothing ready;
    #: ``oldest``: the requests, all present
    rows: list[SeqRequest | None]


class SeqDecision(NamedTuple):
    batches: list[Batch]
    #: sequences released because they were idle too long
    released: list[Sequence]
    #: call ``poll`` again at this time even without news (None: only on news)
    wake_at: int | None


class SequencePolicy:
    """Slots, backlog and batch formation; see the module docstring for the rules."""

    def __init__(
        self,
        config: SequenceBatching,
        max_batch_size: int,
        instances: int = 1,
        *,
        backlog_limit: int = 1024,
        model: str = "",
    ) -> None:
        self.max_batch_size = max_batch_size
        self.instances = instances
        self.backlog_limit = backlog_limit
        self._model = model
        self._idle_ns = config.idle_ns
        rows = max(max_batch_size, 1)
        self.oldest = config.oldest is not None
        if config.oldest is not None:
            o = config.oldest
            for p in o.preferred_batch_size:
                if p < 1 or p > rows:
                    raise ValueError(
                        f"sequence_batching.oldest.preferred_batch_size {p} is outside "
                        f"1..max_batch_size ({max_batch_size})"
                    )
            n = o.max_candidate_sequences or rows * instances
            self.slots = [Slot(-1, i) for i in range(n)]
            self._preferred = sorted(set(o.preferred_batch_size))
            self._cap = self._preferred[-1] if self._preferred else rows
            self._delay_ns = o.max_queue_delay_microseconds * 1000
            self._min_util = 0.0
        else:
            d = config.direct
            self.slots = [Slot(i, j) for i in range(instances) for j in range(rows)]
            self._preferred = []
            self._cap = rows
            self._delay_ns = d.max_queue_delay_microseconds * 1000 if d else 0
            self._min_util = d.minimum_slot_utilization if d else 0.0
        self._rows = rows
        # new sequences spread over the instances first, then over the rows
        self._free: deque[Slot] = deque(sorted(self.slots, key=lambda s: (s.index, s.instance)))
        self._seqs: dict[SequenceId, Sequence] = {}
        self._backlog: deque[Sequence] = deque()
        self._count = 0

    # -- queue -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Requests queued, not executing (in slots and in the backlog)."""
        return self._count

    @property
    def live(self) -> int:
        """Live sequences (holding a slot or backlogged)."""
        return len(self._seqs)

    @property
    def backlogged(self) -> int:
        return len(self._backlog)

    def sequence(self, seq_id: SequenceId) -> Sequence | None:
        return self._seqs.get(seq_id)

    def push(self, entry: SeqRequest, now: int) -> None:
        """Queue ``entry``; raises ``InvalidInput`` (flags vs. the sequence's life) or
        ``QueueFull`` (no slot and the backlog is full)."""
        sid = entry.seq_id
        seq = self._seqs.get(sid)
        if seq is None:
            if not entry.start:
                raise InvalidInput(
                    f"inference request for sequence {sid!r} to model '{self._model}' must "
                    "specify the START flag on the first request of the sequence (the sequence "
                    "is unknown, has ended, or was released after being idle)"
                )
            seq = Sequence(sid, now)
            if self._free:
                self._assign(seq, self._free.popleft())
            elif len(self._backlog) < self.backlog_limit:
                self._backlog.append(seq)
            else:
                raise QueueFull(
                    f"all {len(self.slots)} sequence slots are in use and the backlog of "
                    f"{self.backlog_limit} waiting sequences is full"
                )
            self._seqs[sid] = seq
        elif entry.start and seq.open:
            raise InvalidInput(
                f"sequence {sid!r} to model '{self._model}' is already in progress: a START "
                "request needs the previous sequence with this id to have ended"
            )
        elif not entry.start and not seq.open:
            raise InvalidInput(
                f"inference request for sequence {sid!r} to model '{self._model}' follows its "
                "END request: start a new sequence with the START flag"
            )
        seq.open = not entry.end
        seq.last_ns = now
        entry.seq = seq
        entry.enqueue_ns = now
        seq.queue.append(entry)
        self._count += 1

    def cancel(self, entry: SeqRequest) -> bool:
        """Remove a queued request (client gone). False if it was not queued any more."""
        if entry.state != QUEUED:
            return False
        entry.state = CANCELLED
        seq = entry.seq
        assert seq is not None
        seq.queue.remove(entry)
        self._count -= 1
        if seq.queue:
            seq.open = not seq.queue[-1].end
        elif seq.running:
            seq.open = not seq.last_end
        elif not seq.ran or seq.last_end:
            # nothing of it ever ran, or it already ended: the sequence is gone
            self._release(seq)
        else:
            seq.open = True
        return True

    # -- decision --------------------------------------------------------------------------

    def poll(self, now: int, free: list[int], idle: bool) -> SeqDecision:
        """Release idle sequences, then form batches for the ``free`` instances.

        ``idle``: nothing executes anywhere (``oldest`` then sends without waiting).
        """
        released, wake = self._reap(now)
        batches: list[Batch] = []
        if self._count:
            if self.oldest:
                w = self._poll_oldest(now, free, idle, batches)
            else:
                w = self._poll_direct(now, free, batches)
            if w is not None and (wake is None or w < wake):
                wake = w
        return SeqDecision(batches, released, wake)

    def _poll_direct(self, now: int, free: list[int], batches: list[Batch]) -> int | None:
        rows = self._rows
        wake: int | None = None
        for inst in free:
            ready: list[SeqRequest] = []
            key: Any = None
            oldest = now
            for slot in self.slots[inst * rows:(inst + 1) * rows]:
                seq = slot.seq
                if seq is None or seq.running or not seq.queue:
                    continue
                head = seq.queue[0]
                if not ready:
                    key = head.key
                elif head.key != key:
                    continue
                ready.append(head)
                oldest = min(oldest, head.enqueue_ns)
            if not ready:
                continue
            if self._min_util and len(ready) < self._min_util * rows:
                due = oldest + self._delay_ns
                if now < due:
                    wake = due if wake is None else min(wake, due)
                    continue
            batch: list[SeqRequest | None] = [None] * (max(e.seq.slot.index for e in ready) + 1)  # type: ignore[union-attr]
            for e in ready:
                batch[e.seq.slot.index] = e  # type: ignore[union-attr]
                self._take(e)
            batches.append(Batch(inst, batch))
        return wake

    def _poll_oldest(
        self, now: int, free: list[int], idle: bool, batches: list[Batch]
    ) -> int | None:
        heads = [
            s.seq.queue[0]
            for s in self.slots
            if s.seq is not None and not s.seq.running and s.seq.queue
        ]
        heads.sort(key=lambda e: e.enqueue_ns)
        for inst in free:
            if not heads:
                return None
            key = heads[0].key
            taken = [e for e in heads if e.key == key][: self._cap]
            oldest = taken[0].enqueue_ns
            exceeded = self._delay_ns == 0 or now - oldest >= self._delay_ns
            if not (exceeded or idle or len(taken) >= self._cap):
                reached = [p for p in self._preferred if p <= len(taken)]
                if not reached:
                    return oldest + self._delay_ns
                del taken[reached[-1]:]
            for e in taken:
                self._take(e)
            chosen = set(map(id, taken))
            heads = [e for e in heads if id(e) not in chosen]
            batches.append(Batch(inst, list(taken)))
            idle = False
        return None

    def _take(self, entry: SeqRequest) -> None:
        seq = entry.seq
        assert seq is not None
        seq.queue.popleft()
        seq.running = True
        seq.last_end = entry.end
        entry.state = DISPATCHED
        self._count -= 1

    def complete(self, entries: list[SeqRequest], now: int) -> None:
        """The batch holding ``entries`` finished (whatever the outcome)."""
        for e in entries:
            seq = e.seq
            assert seq is not None
            seq.running = False
            seq.ran = True
            seq.last_ns = now
            if e.end and not seq.queue:
                self._release(seq)

    # -- slots -----------------------------------------------------------------------------

    def _reap(self, now: int) -> tuple[list[Sequence], int | None]:
        """Release sequences idle (nothing queued or running) for the idle limit."""
        limit = self._idle_ns
        released: list[Sequence] = []
        wake: int | None = None
        candidates = [s.seq for s in self.slots if s.seq is not None]
        candidates.extend(self._backlog)
        for seq in candidates:
            if seq.running or seq.queue:
                continue
            due = seq.last_ns + limit
            if now >= due:
                self._release(seq)
                released.append(seq)
            elif wake is None or due < wake:
                wake = due
        return released, wake

    def next_idle_deadline(self) -> int | None:
        """When the first idle sequence is due for release (to arm a timer while busy)."""
        return self._reap(-(1 << 62))[1]

    def _assign(self, seq: Sequence, slot: Slot) -> None:
        slot.seq = seq
        seq.slot = slot

    def _release(self, seq: Sequence) -> None:
        if self._seqs.get(seq.id) is seq:
            del self._seqs[seq.id]
        slot = seq.slot
        seq.slot = None
        seq.state = None
        if slot is None:
            try:
                self._backlog.remove(seq)
            except ValueError:
                pass
            return
        slot.seq = None
        if self._backlog:
            self._assign(self._backlog.popleft(), slot)
        else:
            self._free.append(slot)
