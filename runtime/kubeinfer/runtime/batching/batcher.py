"""The dynamic batcher: an asyncio ``Scheduler`` over ``BatchPolicy`` and instance threads.

Requests come from the server layer (``infer``, one coroutine per request, inputs already
validated) and wait on a future. Scheduling runs on the event loop, event-driven: an
enqueue, a finished batch or one armed timer (``loop.call_later``: batching delay or the
next request timeout) triggers ``_pump``, which asks the policy for batches while an
instance is free. A batch goes to a ``ThreadPoolExecutor`` with one thread per instance,
where inputs are concatenated along axis 0, the backend's ``execute`` runs once, and
outputs are split back per request as views. The results return to the loop with one
``call_soon_threadsafe`` per batch, which resolves the futures and reports to ``StatsSink``.

Failure handling:

- A backend exception for a batch of several requests re-runs each request alone in the
  same thread, so only the bad one fails with ``BackendError`` and the others succeed
  (inference is expected to be free of side effects; a batch that fails costs one extra
  execution per request). A single request's exception is its ``BackendError``.
- An output whose first dimension is not the batch size fails the whole batch with a
  ``BackendError`` naming the output (a model bug, not a bad request).
- A cancelled ``infer`` (client gone) leaves the queue and never executes; if its batch is
  already executing, its result is dropped. The awaiting task sees ``CancelledError``.

Models measured fast run inline: with one instance, a batch executes on the event loop
itself when ``InlinePolicy`` (``inline.py``) says so, scheduled with ``call_soon`` so that
requests already parsed join the queue first. Handing a 50 µs batch to a thread and back
costs more than the batch (GIL hand-offs). The policy starts from the warm-up's timings
(``warmed_up``); an unmeasured or slow model keeps the thread, so the loop is never
blocked for long.

Timers: the event loop wakes with millisecond resolution, so when nothing else happens a
batching delay below 1 ms is served at about 1 ms; arrivals and completions re-check the
delay exactly.

Every failure the scheduler raises (QueueFull, DeadlineExceeded, BackendError, ModelNotReady
while draining, cancellation) is reported to ``StatsSink.request_failed`` here, with the
error class's ``reason``; the caller must not report it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from kubeinfer.runtime.batching.inline import INLINE_BELOW_NS, InlinePolicy
from kubeinfer.runtime.batching.interface import ExecuteFn, ExecuteRequestsFn, StatsSink
from kubeinfer.runtime.batching.lifecycle import DrainingScheduler
from kubeinfer.runtime.batching.policy import BatchPolicy, Pending, shape_key
from kubeinfer.spec.config.model import DynamicBatching
from kubeinfer.runtime.errors import (
    BackendError,
    Cancelled,
    DeadlineExceeded,
    InferError,
    ModelNotReady,
    QueueFull,
)
from kubeinfer.runtime.types import InferRequest

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]
#: one per request of a batch: its outputs or its error
Result = Outputs | InferError


class _Flight:
    """One dispatched batch, from dispatch to its results on the loop."""

    __slots__ = ("batch", "dispatch_ns", "results", "timings", "inline")

    def __init__(self, batch: list[Pending], dispatch_ns: int) -> None:
        self.inline = False
        self.batch = batch
        self.dispatch_ns = dispatch_ns
        self.results: list[Result] | None = None
        #: (batch_size, compute_input_ns, compute_infer_ns, compute_output_ns) per execute
        self.timings: list[tuple[int, int, int, int]] = []


class DynamicBatcher(DrainingScheduler):
    """Triton's dynamic batcher (plus idle dispatch) as a ``Scheduler``.

    ``max_batch_size == 0``: the model does not batch; each request executes alone with its
    arrays untouched. ``config is None``: no batching delay and no preferred sizes, i.e.
    whatever is queued when an instance frees up goes as one batch (up to
    ``max_batch_size``). ``instances`` batches may execute concurrently.
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
        if instances < 1:
            raise ValueError("instances must be >= 1")
        self._execute = execute
        self._execute_requests = execute_requests
        self._output_names = list(output_names)
        self._batching = max_batch_size > 0
        self._policy = BatchPolicy(max_batch_size, config)
        self._ordered = bool(config and config.preserve_ordering)
        self._instances = instances
        self._stats = stats
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._executing = 0
        self._kicked = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0
        self._inflight: deque[_Flight] = deque()
        self._closed = False
        self._drained: asyncio.Future[None] | None = None
        self._model = model
        #: None: never inline (several instances, or turned off)
        self.inline = InlinePolicy(inline_below_ns) if instances == 1 and inline_below_ns else None

    # -- Scheduler -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pool = ThreadPoolExecutor(self._instances, thread_name_prefix="kubeinfer-instance")

    def pending_count(self) -> int:
        return self._policy.pending

    def queue_full(self) -> bool:
        """Whether any request would be rejected now (cheap: before it is decoded)."""
        return self._policy.full()

    def warmed_up(self, execute_ns: Sequence[int]) -> None:
        inline = self.inline
        if inline is None:
            return
        inline.seed(execute_ns)
        log.info(
            "model '%s': warm-up took %s; batches run %s",
            self._model,
            f"{min(execute_ns) / 1e6:.3f} ms" if execute_ns else "no measurement",
            "on the event loop" if inline.fast else "on the instance thread",
        )

    async def infer(self, request: InferRequest) -> Outputs:
        loop = self._loop
        if self._closed or loop is None:
            self._stats.request_failed(0, ModelNotReady.reason)
            raise ModelNotReady("model is not ready" if loop is None else "model is draining")
        fut = loop.create_future()
        entry = Pending(request, shape_key(request.inputs) if self._batching else None, fut)
        now = self._clock()
        try:
            self._policy.push(entry, now)
        except QueueFull:
            self._stats.request_failed(0, QueueFull.reason)
            raise
        if not self._kicked and self._executing < self._instances:
            self._kicked = True
            loop.call_soon(self._pump)
        elif entry.deadline_ns:  # instances busy: its timeout must still fire on time
            self._arm(entry.deadline_ns, now)
        try:
            return await fut
        except asyncio.CancelledError:
            self._policy.cancel(entry)
            if fut.cancelled():  # else it was resolved (and reported) just before
                self._stats.request_failed(self._clock() - entry.enqueue_ns, Cancelled.reason)
            if self._closed:
                self._check_drained()
            raise

    # -- scheduling (event loop) -----------------------------------------------------------

    def _pump(self, now: int = 0) -> None:
        self._kicked = False
        policy = self._policy
        now = max(now, self._clock())
        wake_at: int | None = None
        while self._executing < self._instances:
            batch, expired, wake_at = policy.poll(now, self._executing == 0 or self._closed)
            if expired:
                self._fail_expired(expired, now)
            if batch is None:
                break
            self._dispatch(batch, now)
        else:
            expired = policy.expire(now)
            if expired:
                self._fail_expired(expired, now)
            wake_at = policy.next_deadline()
        if wake_at is not None:
            self._arm(wake_at, now)
        if self._closed:
            self._check_drained()

    def _dispatch(self, batch: list[Pending], now: int) -> None:
        self._executing += 1
        flight = _Flight(batch, now)
        if self._ordered:
            self._inflight.append(flight)
        inline = self.inline
        if inline is not None and inline.decide():
            flight.inline = True
            assert self._loop is not None
            self._loop.call_soon(self._run_inline, flight)
            return
        assert self._pool is not None
        self._pool.submit(self._run, flight)

    def _run_inline(self, flight: _Flight) -> None:
        try:
            flight.results = self._run_batch(flight)
        except BaseException as exc:  # noqa: BLE001 - every request must be resolved
            flight.results = [BackendError(_message(exc))] * len(flight.batch)
        self._complete(flight)

    def _fail_expired(self, expired: list[Pending], now: int) -> None:
        failed = self._stats.request_failed
        for e in expired:
            fut = e.handle
            if not fut.done():
                fut.set_exception(DeadlineExceeded("request timed out in the queue"))
            failed(now - e.enqueue_ns, DeadlineExceeded.reason)

    def _complete(self, flight: _Flight) -> None:
        self._executing -= 1
        inline = self.inline
        if inline is not None:
            infer_ns = [t[2] for t in flight.timings]  # none when the batch failed
            if flight.inline:
                was_fast = inline.fast
                inline.ran_inline(infer_ns)
                if was_fast and not inline.fast:
                    log.info(
                        "model '%s': a batch took %.3f ms on the event loop; batches run on "
                        "the instance thread", self._model, max(infer_ns) / 1e6,
                    )
            else:
                inline.ran_threaded(infer_ns)
        if self._ordered:
            inflight = self._inflight
            while inflight and inflight[0].results is not None:
                self._deliver(inflight.popleft())
        else:
            self._deliver(flight)
        self._pump()

    def _deliver(self, flight: _Flight) -> None:
        stats = self._stats
        for size, c_in, c_infer, c_out in flight.timings:
            stats.batch_executed(size, c_in, c_infer, c_out)
        now = self._clock()
        dispatch_ns = flight.dispatch_ns
        results = flight.results
        assert results is not None
        for e, result in zip(flight.batch, results):
            fut = e.handle
            if fut.done():  # cancelled while executing: reported by infer()
                continue
            if type(result) is dict:
                fut.set_result(result)
                stats.request_succeeded(now - e.enqueue_ns, dispatch_ns - e.enqueue_ns)
            else:
                fut.set_exception(result)
                stats.request_failed(now - e.enqueue_ns, result.reason)

    # -- execution (instance threads) ------------------------------------------------------

    def _run(self, flight: _Flight) -> None:
        try:
            flight.results = self._run_batch(flight)
        except BaseException as exc:  # noqa: BLE001 - every request must be resolved
            err = BackendError(_message(exc))
            flight.results = [err] * len(flight.batch)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._complete, flight)

    def _run_batch(self, flight: _Flight) -> list[Result]:
        batch = flight.batch
        if self._execute_requests is not None and len(batch) > 1:
            return self._run_requests(flight)
        clock = self._clock
        t0 = clock()
        try:
            if len(batch) == 1:
                inputs = batch[0].request.inputs
            else:
                first = batch[0].request.inputs
                inputs = {
                    name: np.concatenate([e.request.inputs[name] for e in batch])
                    for name in first
                }
            t1 = clock()
            outputs = self._execute(inputs, self._output_names)
        except Exception as exc:
            if len(batch) == 1:
                return [BackendError(_message(exc))]
            return self._isolate(flight)
        t2 = clock()
        try:
            results = self._split(batch, outputs)
        except BackendError as err:
            return [err] * len(batch)
        flight.timings.append((sum(e.size for e in batch), t1 - t0, t2 - t1, clock() - t2))
        return results

    def _run_requests(self, flight: _Flight) -> list[Result]:
        """A backend that takes the list of requests: one result each, no concatenation."""
        batch = flight.batch
        clock = self._clock
        t0 = clock()
        assert self._execute_requests is not None
        try:
            results = self._execute_requests([e.request.inputs for e in batch], self._output_names)
        except Exception as exc:
            return [BackendError(_message(exc))] * len(batch)
        t1 = clock()
        if len(results) != len(batch):
            err = BackendError(f"backend returned {len(results)} responses for {len(batch)} requests")
            return [err] * len(batch)
        out: list[Result] = []
        for r in results:
            if isinstance(r, dict):
                out.append(r)
            elif isinstance(r, BackendError):
                out.append(r)
            else:
                out.append(BackendError(_message(r)))
        flight.timings.append((sum(e.size for e in batch), 0, t1 - t0, 0))
        return out

    def _split(self, batch: list[Pending], outputs: Outputs) -> list[Result]:
        if not self._batching:
            return [outputs]
        total = batch[0].size if len(batch) == 1 else sum(e.size for e in batch)
        for name, arr in outputs.items():
            if not isinstance(arr, np.ndarray):
                raise BackendError(f"output '{name}' is a {type(arr).__name__}, not an array")
            if arr.ndim == 0 or arr.shape[0] != total:
                got = arr.shape[0] if arr.ndim else "none"
                raise BackendError(
                    f"output '{name}' has batch dimension {got}, expected {total}"
                )
        if len(batch) == 1:
            return [outputs]
        if total == len(batch):  # one row each: let numpy make the (1, ...) views
            if len(outputs) == 1:
                for name, arr in outputs.items():
                    return [{name: row} for row in arr[:, None]]
            names = list(outputs)
            rows = [arr[:, None] for arr in outputs.values()]
            return [dict(zip(names, views)) for views in zip(*rows)]
        results: list[Result] = []
        items = outputs.items()
        start = 0
        for e in batch:
            end = start + e.size
            results.append({name: arr[start:end] for name, arr in items})
            start = end
        return results

    def _isolate(self, flight: _Flight) -> list[Result]:
        """Re-run each request of a failed batch alone so only the bad one fails."""
        clock = self._clock
        results: list[Result] = []
        for e in flight.batch:
            if e.handle.cancelled():
                results.append(Cancelled("request was cancelled"))
                continue
            t0 = clock()
            try:
                outputs = self._execute(e.request.inputs, self._output_names)
                t1 = clock()
                results.extend(self._split([e], outputs))
                flight.timings.append((e.size, 0, t1 - t0, clock() - t1))
            except BackendError as err:
                results.append(err)
            except Exception as exc:
                results.append(BackendError(_message(exc)))
        return results


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
