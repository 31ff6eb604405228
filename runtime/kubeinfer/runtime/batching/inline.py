"""Whether a batch runs on the event loop: a pure policy over measured execution times.

Handing a batch to an instance thread and back costs tens of microseconds of GIL
hand-offs, more than a small model's whole batch; but a batch on the event loop stops
HTTP, gRPC, health probes and disconnect detection for as long as it runs. So a batch runs
inline only while the model is *measured* fast:

- **Unknown is slow.** Nothing runs inline until a measurement says the model is fast.
  Warm-up (before the model takes requests, on a thread while the loop is idle) gives the
  first measurement: its fastest run, since a first run pays one-time costs.
- **Fast** means the median of the last few inline runs is below ``below_ns``. One run
  above ``eject_ns`` (or the median above ``below_ns``) sends the model to the instance
  thread at once, and the inline history is forgotten: coming back needs new evidence.
- **On the thread** the measured times include waits for the GIL, so they over-estimate
  the model and never under-estimate it. Every ``probe_every`` batches one batch runs
  inline to measure again, but only while the median of the recent thread runs is at most
  ``probe_ceiling_ns``: a probe stalls the loop no longer than the model has just shown it
  takes, and a model whose thread runs are clearly slow never runs on the loop.

The scheduler calls ``decide`` once per batch and reports each batch's execution times
with ``ran_inline`` or ``ran_threaded``; no clock is read here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

#: batches whose median inline time is below this run on the event loop
INLINE_BELOW_NS = 1_000_000
#: on the thread, every this many batches one may run inline to measure the model again
PROBE_EVERY = 64
#: how many recent runs the medians look at
RECENT = 8


class InlinePolicy:
    """Per model: ``decide`` whether the next batch runs inline, from recent timings."""

    __slots__ = (
        "below_ns",
        "eject_ns",
        "probe_ceiling_ns",
        "probe_every",
        "fast",
        "inline_batches",
        "_inline",
        "_thread",
        "_probe_ok",
        "_since_probe",
    )

    def __init__(
        self,
        below_ns: int = INLINE_BELOW_NS,
        *,
        eject_ns: int | None = None,
        probe_ceiling_ns: int | None = None,
        probe_every: int = PROBE_EVERY,
        recent: int = RECENT,
    ) -> None:
        self.below_ns = below_ns
        self.eject_ns = 10 * below_ns if eject_ns is None else eject_ns
        self.probe_ceiling_ns = 2 * below_ns if probe_ceiling_ns is None else probe_ceiling_ns
        self.probe_every = probe_every
        #: the model is measured fast: its batches run inline
        self.fast = False
        #: batches sent inline so far (probes included)
        self.inline_batches = 0
        self._inline: deque[int] = deque(maxlen=recent)
        self._thread: deque[int] = deque(maxlen=recent)
        self._probe_ok = False
        # the first probe may come as soon as thread timings allow it
        self._since_probe = probe_every

    def seed(self, warmup_ns: Sequence[int]) -> None:
        """Warm-up ran these executions (ns each, on a thread before any request, so
        without GIL contention): the fastest one counts as the first inline run."""
        if not warmup_ns:
            return
        self._inline.clear()
        self.ran_inline([min(warmup_ns)])
        self._since_probe = self.probe_every

    def decide(self) -> bool:
        """True: run the next batch on the event loop."""
        if self.fast:
            self.inline_batches += 1
            return True
        if self._probe_ok and self._since_probe >= self.probe_every:
            self._since_probe = 0
            self.inline_batches += 1
            return True
        self._since_probe += 1
        return False

    def ran_inline(self, infer_ns: Sequence[int]) -> None:
        """A batch ran inline; its executions took these times (none when it failed)."""
        if not infer_ns:
            return
        recent = self._inline
        if max(infer_ns) <= self.eject_ns:
            recent.extend(infer_ns)
            # the median of the last few runs: one run preempted by another process is no
            # reason to leave the loop
            if sorted(recent)[len(recent) // 2] < self.below_ns:
                self.fast = True
                return
        # slow: to the thread, where these runs are the history the next probe needs
        self.fast = False
        recent.clear()
        self._thread.clear()
        self._since_probe = 0
        self.ran_threaded(infer_ns)

    def ran_threaded(self, infer_ns: Sequence[int]) -> None:
        """A batch ran on an instance thread; these times include waits for the GIL."""
        if not infer_ns:
            return
        recent = self._thread
        recent.extend(infer_ns)
        self._probe_ok = sorted(recent)[len(recent) // 2] <= self.probe_ceiling_ns
