"""The contract between the server layer, the scheduler and the backend.

A scheduler takes validated ``InferRequest``s (inputs already checked against the model
signature, ``batch_size`` set) and resolves each with that request's own outputs. It calls
an ``ExecuteFn`` (a backend's ``execute``) with concatenated inputs from one of its
instance threads, and reports timings to a ``StatsSink``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from kubeinfer.runtime.types import InferRequest

ExecuteFn = Callable[[Mapping[str, np.ndarray], Sequence[str]], dict[str, np.ndarray]]
#: a backend that takes a batch as the list of its requests (Triton's Python backend):
#: one result per request, each its outputs or the exception that fails only it
ExecuteRequestsFn = Callable[
    [Sequence[Mapping[str, np.ndarray]], Sequence[str]], list["dict[str, np.ndarray] | Exception"]
]


class StatsSink(Protocol):
    """Where the scheduler reports what happened (Triton's statistics; all times in ns)."""

    def request_succeeded(self, request_ns: int, queue_ns: int) -> None: ...

    def request_failed(self, request_ns: int, reason: str) -> None: ...

    def batch_executed(
        self, batch_size: int, compute_input_ns: int, compute_infer_ns: int, compute_output_ns: int
    ) -> None: ...


class Scheduler(Protocol):
    async def start(self) -> None: ...

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        """The request's outputs (batch dimension as the request sent it), or raises one of
        ``kubeinfer.runtime.errors``: QueueFull, DeadlineExceeded, Cancelled, BackendError."""
        ...

    def pending_count(self) -> int:
        """Requests queued and not yet executing (the autoscaling signal)."""
        ...

    def warmed_up(self, execute_ns: Sequence[int]) -> None:
        """Warm-up ran the backend's ``execute`` this long each (ns, on a thread, before
        the first request; empty when it could not run): the first measurement of the model."""
        ...

    async def drain(self) -> None:
        """Stop taking requests; return once everything queued or executing finished."""
        ...
