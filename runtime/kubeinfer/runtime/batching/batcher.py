"""The dynamic batcher: ``BatchPolicy`` and a concatenating assembler over the engine.

``BatchingEngine`` (``engine.py``) does the scheduling, instances, inline execution,
failure isolation, statistics and draining; this module adds what is particular to
Triton's dynamic batcher:

- ``DynamicAssembler.poll`` asks ``BatchPolicy`` (pure, ``policy.py``) for one batch per
  free instance, and for the requests whose queue timeout expired (failed with
  ``DeadlineExceeded``; while every instance is busy the next timeout still arms the timer).
- ``feed`` concatenates the batch's inputs along axis 0 (a single request's arrays go
  untouched), ``split`` cuts the outputs back per request as views. An output whose first
  dimension is not the batch size fails the whole batch with a ``BackendError`` naming the
  output (a model bug, not a bad request).
- ``preserve_ordering`` answers batches in dispatch order; a backend with
  ``execute_requests`` gets the list of requests instead of concatenated inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from kubeinfer.runtime.batching.assembler import Assembler, Flight, Outputs, Polled, Result
from kubeinfer.runtime.batching.engine import BatchingEngine
from kubeinfer.runtime.batching.inline import INLINE_BELOW_NS
from kubeinfer.runtime.batching.interface import ExecuteFn, ExecuteRequestsFn, StatsSink
from kubeinfer.runtime.batching.policy import BatchPolicy, Pending, shape_key
from kubeinfer.spec.config.model import DynamicBatching
from kubeinfer.runtime.errors import BackendError

_NO_EXPIRED: list[Pending] = []


class DynamicAssembler(Assembler):
    """Batches of ``Pending`` (``work`` is the list itself): concatenate and split."""

    deadlines = True
    entry = Pending

    def __init__(self, policy: BatchPolicy, output_names: Sequence[str], instances: int) -> None:
        self._policy = policy
        self._instances = instances
        self._batching = policy.max_batch_size > 0
        self.fetch = list(output_names)
        self.key = shape_key if self._batching else None

    def poll(self, now: int, executing: int, closing: bool) -> Polled:
        policy = self._policy
        flights: list[Flight] = []
        expired: list[Pending] = _NO_EXPIRED
        wake_at: int | None = None
        while executing < self._instances:
            batch, gone, wake_at = policy.poll(now, executing == 0 or closing)
            if gone:
                expired = gone if not expired else expired + gone
            if batch is None:
                break
            flights.append(Flight(batch, batch, now))
            executing += 1
        else:
            gone = policy.expire(now)
            if gone:
                expired = gone if not expired else expired + gone
            wake_at = policy.next_deadline()
        return flights, expired, wake_at

    def feed(self, work: list[Pending]) -> tuple[dict[str, np.ndarray], int]:
        if len(work) == 1:
            e = work[0]
            return e.request.inputs, e.size
        first = work[0].request.inputs
        inputs = {name: np.concatenate([e.request.inputs[name] for e in work]) for name in first}
        return inputs, sum(e.size for e in work)

    def split(self, work: list[Pending], size: int, outputs: Outputs) -> list[Result]:
        if not self._batching:
            return [outputs]
        for name, arr in outputs.items():
            if not isinstance(arr, np.ndarray):
                raise BackendError(f"output '{name}' is a {type(arr).__name__}, not an array")
            if arr.ndim == 0 or arr.shape[0] != size:
                got = arr.shape[0] if arr.ndim else "none"
                raise BackendError(f"output '{name}' has batch dimension {got}, expected {size}")
        if len(work) == 1:
            return [outputs]
        if size == len(work):  # one row each: let numpy make the (1, ...) views
            if len(outputs) == 1:
                for name, arr in outputs.items():
                    return [{name: row} for row in arr[:, None]]
            names = list(outputs)
            rows = [arr[:, None] for arr in outputs.values()]
            return [dict(zip(names, views)) for views in zip(*rows)]
        results: list[Result] = []
        items = outputs.items()
        start = 0
        for e in work:
            end = start + e.size
            results.append({name: arr[start:end] for name, arr in items})
            start = end
        return results

    def alone(self, work: list[Pending]) -> list[Any]:
        return [[e] for e in work]


class DynamicBatcher(BatchingEngine):
    """Triton's dynamic batcher (plus idle dispatch) as a ``Scheduler``.

    ``max_batch_size == 0``: the model does not batch; each request executes alone with its
    arrays untouched. ``config is None``: no batching delay and no preferred sizes, i.e.
    whatever is queued when an instance frees up goes as one batch (up to
    ``max_batch_size``). ``instances`` batches may execute concurrently; with one, batches
    of a model measured fast run inline (``inline_below_ns``, 0: never).
    """

    def __init__(
        self,
        execute: ExecuteFn,
        output_names: Sequence[str],
        max_batch_size: int,
        config: DynamicBatching | None = None,
        *,
        instances: int = 1,
        stats: StatsSink,
        clock: Callable[[], int] = time.monotonic_ns,
        inline_below_ns: int = INLINE_BELOW_NS,
        execute_requests: ExecuteRequestsFn | None = None,
        model: str = "",
    ) -> None:
        policy = BatchPolicy(max_batch_size, config)
        super().__init__(
            DynamicAssembler(policy, output_names, instances),
            policy,
            execute,
            instances=instances,
            stats=stats,
            clock=clock,
            inline_below_ns=inline_below_ns,
            ordered=bool(config and config.preserve_ordering),
            execute_requests=execute_requests,
            queue_full=policy.full,
            model=model,
        )
