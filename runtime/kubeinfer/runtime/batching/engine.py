"""The batching engine: one asyncio ``Scheduler`` for dynamic and sequence batching.

Requests come from the server layer (``infer``, one coroutine per request, inputs already
validated) and wait on a future. What is batched how is the kind's: a pure policy (the
queue: ``push``, ``cancel``, ``pending``) and an ``Assembler`` (``assembler.py``: batch
formation from the policy, inputs and outputs of one backend call). Everything else is
here, the same for every kind:

- **Scheduling** runs on the event loop, event-driven: an enqueue, a finished batch or one
  armed timer (``loop.call_later``: a batching delay, a request timeout, an idle sequence)
  triggers ``_pump``, which asks the assembler for the batches to dispatch now.
- **Instances**: a ``ThreadPoolExecutor`` with one thread per instance runs a batch:
  ``feed``, the backend's ``execute`` once, ``split``. The results return to the loop with
  one ``call_soon_threadsafe`` per batch, which resolves the futures and reports to the
  ``StatsSink``.
- **Inline**: with one instance, a batch executes on the event loop itself when
  ``InlinePolicy`` (``inline.py``) says the model is measured fast, scheduled with
  ``call_soon`` so that requests already parsed join the queue first. Handing a 50 µs
  batch to a thread and back costs more than the batch (GIL hand-offs). The policy starts
  from the warm-up's timings (``warmed_up``); an unmeasured or slow model keeps the thread.
- **Failure isolation**: a backend exception for a batch of several requests re-runs each
  request alone (``Assembler.alone``) in the same thread, so only the bad one fails with
  ``BackendError`` and the others succeed (inference is expected to be free of side
  effects; a failing batch costs one extra execution per request). A single request's
  exception is its ``BackendError``. Outputs that ``split`` rejects (a model bug, e.g. a
  wrong batch dimension) fail the whole batch. A backend that takes the list of requests
  (``execute_requests``, Triton's Python backend) answers each request on its own.
- **Cancellation**: a cancelled ``infer`` (client gone) leaves the queue and never
  executes; if its batch is already executing, its result is dropped. The awaiting task
  sees ``CancelledError``.
- **Statistics**: every failure raised here (QueueFull, DeadlineExceeded, BackendError,
  InvalidInput from the policy, ModelNotReady while draining, cancellation) is reported to
  ``StatsSink.request_failed`` with the error class's ``reason``; the caller must not
  report it again. Each execution is one ``batch_executed``.
- **Draining**: ``drain`` stops taking requests, lets everything queued or executing
  finish, then stops the timer and the instance threads.

Timers: the event loop wakes with millisecond resolution, so when nothing else happens a
batching delay below 1 ms is served at about 1 ms; arrivals and completions re-check the
delay exactly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from kubeinfer.runtime.batching.assembler import (
    Assembler,
    Flight,
    Outputs,
    Queue,
    Result,
    as_backend_error,
    message,
)
from kubeinfer.runtime.batching.inline import InlinePolicy
from kubeinfer.runtime.batching.interface import ExecuteFn, ExecuteRequestsFn, StatsSink
from kubeinfer.runtime.errors import (
    BackendError,
    Cancelled,
    DeadlineExceeded,
    InvalidInput,
    ModelNotReady,
    QueueFull,
)
from kubeinfer.runtime.types import InferRequest

log = logging.getLogger(__name__)


def _never() -> bool:
    return False


class BatchingEngine:
    """A ``Scheduler`` over one policy and its assembler; ``instances`` batches may execute
    concurrently. ``inline_below_ns`` 0: never inline; ``ordered``: answer batches in
    dispatch order (``preserve_ordering``); ``queue_full``: the policy's cheap check."""

    def __init__(
        self,
        assembler: Assembler,
        policy: Queue,
        execute: ExecuteFn,
        *,
        instances: int = 1,
        stats: StatsSink,
        clock: Callable[[], int] = time.monotonic_ns,
        inline_below_ns: int = 0,
        ordered: bool = False,
        execute_requests: ExecuteRequestsFn | None = None,
        queue_full: Callable[[], bool] | None = None,
        model: str = "",
    ) -> None:
        if instances < 1:
            raise ValueError("instances must be >= 1")
        self._assembler = assembler
        self._poll = assembler.poll
        self._completed = assembler.completed
        self._entry = assembler.entry
        self._key = assembler.key
        self._deadlines = assembler.deadlines
        self._fetch = assembler.fetch
        self._policy = policy
        self._execute = execute
        self._execute_requests = execute_requests
        self._ordered = ordered
        self._instances = instances
        self._stats = stats
        self._clock = clock
        self._model = model
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._executing = 0
        self._kicked = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0
        self._inflight: deque[Flight] = deque()
        self._closed = False
        self._drained: asyncio.Future[None] | None = None
        #: None: never inline (several instances, or turned off)
        self.inline = InlinePolicy(inline_below_ns) if instances == 1 and inline_below_ns else None
        #: whether any request would be rejected now (cheap: before it is decoded)
        self.queue_full: Callable[[], bool] = queue_full or _never

    # -- Scheduler -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pool = ThreadPoolExecutor(
            self._instances, thread_name_prefix=self._assembler.thread_name
        )

    def pending_count(self) -> int:
        return self._policy.pending

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
        key = self._key
        now = self._clock()
        try:
            entry = self._entry(request, None if key is None else key(request.inputs), fut)
            self._policy.push(entry, now)
        except (InvalidInput, QueueFull) as exc:
            self._stats.request_failed(0, exc.reason)
            raise
        if not self._kicked and self._executing < self._instances:
            self._kicked = True
            loop.call_soon(self._pump)
        elif self._deadlines and entry.deadline_ns:  # busy: its timeout must fire on time
            self._arm(entry.deadline_ns, now)
        try:
            return await fut
        except asyncio.CancelledError:
            if self._policy.cancel(entry):
                self._kick()  # it may have held back others (a slot, a batch's shape)
            if fut.cancelled():  # else it was resolved (and reported) just before
                self._stats.request_failed(self._clock() - entry.enqueue_ns, Cancelled.reason)
            if self._closed:
                self._check_drained()
            raise

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

    # -- scheduling (event loop) -----------------------------------------------------------

    def _kick(self) -> None:
        if not self._kicked and self._loop is not None:
            self._kicked = True
            self._loop.call_soon(self._pump)

    def _pump(self, now: int = 0) -> None:
        self._kicked = False
        now = max(now, self._clock())
        flights, expired, wake_at = self._poll(now, self._executing, self._closed)
        if expired:
            self._fail_expired(expired, now)
        for flight in flights:
            self._dispatch(flight)
        if wake_at is not None:
            self._arm(wake_at, now)
        if self._closed:
            self._check_drained()

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

    def _check_drained(self) -> None:
        drained = self._drained
        if (
            drained is not None
            and not drained.done()
            and not self._policy.pending
            and not self._executing
        ):
            drained.set_result(None)

    def _dispatch(self, flight: Flight) -> None:
        self._executing += 1
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

    def _fail_expired(self, expired: Sequence, now: int) -> None:
        failed = self._stats.request_failed
        for e in expired:
            fut = e.handle
            if not fut.done():  # else cancelled just before: infer() reports it
                fut.set_exception(DeadlineExceeded("request timed out in the queue"))
                failed(now - e.enqueue_ns, DeadlineExceeded.reason)

    def _complete(self, flight: Flight) -> None:
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
        if self._completed is not None:
            self._completed(flight)
        if self._ordered:
            inflight = self._inflight
            while inflight and inflight[0].results is not None:
                self._deliver(inflight.popleft())
        else:
            self._deliver(flight)
        self._pump()

    def _deliver(self, flight: Flight) -> None:
        stats = self._stats
        for size, c_in, c_infer, c_out in flight.timings:
            stats.batch_executed(size, c_in, c_infer, c_out)
        now = self._clock()
        dispatch_ns = flight.dispatch_ns
        results = flight.results
        assert results is not None
        for e, result in zip(flight.entries, results):
            fut = e.handle
            if fut.done():  # cancelled while executing: reported by infer()
                continue
            if type(result) is dict:
                fut.set_result(result)
                stats.request_succeeded(now - e.enqueue_ns, dispatch_ns - e.enqueue_ns)
            else:
                fut.set_exception(result)
                stats.request_failed(now - e.enqueue_ns, result.reason)

    # -- execution (instance threads, or the loop when inline) -----------------------------

    def _run_flight(self, flight: Flight) -> None:
        try:
            if self._execute_requests is not None and len(flight.entries) > 1:
                flight.results = self._run_requests(flight)
            else:
                flight.results = self._run_work(flight, flight.work)
        except BaseException as exc:  # noqa: BLE001 - every request must be resolved
            flight.results = [BackendError(message(exc))] * len(flight.entries)

    def _run_inline(self, flight: Flight) -> None:
        self._run_flight(flight)
        self._complete(flight)

    def _run(self, flight: Flight) -> None:
        self._run_flight(flight)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._complete, flight)

    def _run_work(self, flight: Flight, work: object, alone: bool = False) -> list[Result]:
        """Execute ``work`` (the flight's, or one request of it ``alone``) once; isolate a
        failure of several requests."""
        assembler = self._assembler
        clock = self._clock
        t0 = clock()
        try:
            inputs, size = assembler.feed(work)
            t1 = clock()
            outputs = self._execute(inputs, self._fetch)
        except Exception as exc:
            if alone or len(flight.entries) == 1:
                return [as_backend_error(exc)]
            return self._isolate(flight)
        t2 = clock()
        try:
            results = assembler.split(work, size, outputs)
        except BackendError as err:
            return [err] if alone else [err] * len(flight.entries)
        flight.timings.append((size, t1 - t0, t2 - t1, clock() - t2))
        return results

    def _isolate(self, flight: Flight) -> list[Result]:
        """Re-run each request of a failed batch alone so only the bad one fails."""
        results: list[Result] = []
        for e, work in zip(flight.entries, self._assembler.alone(flight.work)):
            if e.handle.cancelled():
                results.append(Cancelled("request was cancelled"))
                continue
            results.extend(self._run_work(flight, work, True))
        return results

    def _run_requests(self, flight: Flight) -> list[Result]:
        """A backend that takes the list of requests: one result each, no concatenation."""
        entries = flight.entries
        clock = self._clock
        t0 = clock()
        assert self._execute_requests is not None
        try:
            results = self._execute_requests(
                [e.request.inputs for e in entries], self._fetch
            )
        except Exception as exc:
            return [BackendError(message(exc))] * len(entries)
        t1 = clock()
        if len(results) != len(entries):
            err = BackendError(
                f"backend returned {len(results)} responses for {len(entries)} requests"
            )
            return [err] * len(entries)
        out: list[Result] = [
            r if isinstance(r, (dict, BackendError)) else BackendError(message(r))
            for r in results
        ]
        flight.timings.append((sum(e.request.batch_size for e in entries), 0, t1 - t0, 0))
        return out
