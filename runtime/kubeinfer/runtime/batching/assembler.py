"""What one kind of batching contributes to the engine: the ``Assembler`` contract.

The engine (``engine.py``) owns everything the dynamic and the sequence batcher share:
futures, the instance threads, the wake-up timer, inline execution, failure isolation,
statistics and draining. A kind of batching adds a pure policy (``policy.py``,
``sequence_policy.py``) and an ``Assembler`` with two halves:

- on the event loop, ``poll`` turns the policy's decisions into ``Flight``s (the batches
  to dispatch now, the requests whose queue timeout expired, when to look again) and
  the optional ``completed`` settles a finished flight with the policy (and the kind's
  state) before its requests are answered;
- on an instance thread (or inline), ``feed`` builds the backend's inputs from a flight's
  ``work``, ``split`` cuts the outputs back into one result per request, and ``alone``
  gives one ``work`` per request so the engine can isolate a failing one.

``work`` is the kind's own description of a batch (the dynamic batcher's list of
``Pending``; the sequence batcher's rows, states and instance); the engine never looks
inside it. ``Flight.entries`` are the policy's entries of the batch's requests, in order:
each keeps its future as ``handle`` and its arrival time as ``enqueue_ns``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from kubeinfer.runtime.errors import BackendError, InferError
from kubeinfer.runtime.types import InferRequest

Outputs = dict[str, np.ndarray]
#: one per request of a batch: what ``split`` made of it, or its error
Result = Any


class Flight:
    """One dispatched batch, from dispatch to its results on the loop."""

    __slots__ = ("entries", "work", "dispatch_ns", "results", "timings", "inline")

    def __init__(self, entries: Sequence[Any], work: Any, dispatch_ns: int) -> None:
        self.entries = entries
        self.work = work
        self.dispatch_ns = dispatch_ns
        self.inline = False
        #: one per entry, set by the thread that executed the batch
        self.results: list[Result] | None = None
        #: (batch_size, compute_input_ns, compute_infer_ns, compute_output_ns) per execute
        self.timings: list[tuple[int, int, int, int]] = []


#: what ``Assembler.poll`` returns: (flights, expired, wake_at). ``flights``: the batches to
#: execute now, in dispatch order; ``expired``: entries whose queue timeout expired (the
#: engine fails them with DeadlineExceeded); ``wake_at``: poll again at this time even
#: without news (None: only on news). A plain tuple: one is made per poll.
Polled = tuple[list[Flight], Sequence[Any], int | None]


class Queue(Protocol):
    """The part of a policy the engine calls directly, once per request."""

    @property
    def pending(self) -> int: ...

    def push(self, entry: Any, now: int) -> None: ...

    def cancel(self, entry: Any) -> bool: ...


class Assembler(ABC):
    """A kind of batching, as the engine sees it; see the module docstring."""

    #: the names ``execute`` is asked for (the outputs clients get, plus any state)
    fetch: list[str]
    #: the policy entry for a request: ``entry(request, key, future)``; may raise
    #: ``InvalidInput`` (the engine reports it and re-raises)
    entry: Callable[[InferRequest, Any, Any], Any]
    #: the entry's shape key from the request's inputs (None: every key is None)
    key: Callable[[dict[str, np.ndarray]], Any] | None = None
    #: entries carry ``deadline_ns`` (queue timeouts): one that arrives while every
    #: instance is busy arms the timer for it
    deadlines = False
    #: the instance threads' name prefix
    thread_name = "kubeinfer-instance"
    #: settles a finished flight (results set, maybe errors) with the policy before its
    #: requests are answered, on the loop (None: nothing to settle)
    completed: Callable[[Flight], None] | None = None

    # -- event loop ------------------------------------------------------------------------

    @abstractmethod
    def poll(self, now: int, executing: int, closing: bool) -> Polled:
        """What to dispatch at ``now`` while ``executing`` batches run (``closing``: the
        engine drains, nothing will arrive any more)."""

    # -- instance thread -------------------------------------------------------------------

    @abstractmethod
    def feed(self, work: Any) -> tuple[dict[str, np.ndarray], int]:
        """The backend's inputs for one batch, and how many rows its requests hold (what
        the statistics count as the batch size; ``split`` gets it back)."""

    @abstractmethod
    def split(self, work: Any, size: int, outputs: Outputs) -> list[Result]:
        """One result per request from the backend's outputs; ``BackendError`` when the
        outputs cannot be split (a model bug: the whole batch fails)."""

    @abstractmethod
    def alone(self, work: Any) -> list[Any]:
        """One ``work`` per request of ``work``, in entry order (to isolate a failure)."""


def message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def as_backend_error(exc: BaseException) -> InferError:
    return exc if isinstance(exc, BackendError) else BackendError(message(exc))
