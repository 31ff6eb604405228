"""BatchingEngine with a minimal kind of its own: the engine's contract with an Assembler.

The kind here is a plain FIFO (every queued request goes as one batch when an instance is
free) whose work is a list of numbers; backends are fake functions gated by events, so
threads are ordered by events and futures, never by sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from kubeinfer.runtime.batching import Assembler, BatchingEngine, Flight
from kubeinfer.runtime.errors import BackendError, InvalidInput, ModelNotReady
from kubeinfer.runtime.types import InferRequest
from tests.runtime.batching.conftest import RecordingStats

GUARD = 5.0
BAD = -1.0


class Entry:
    __slots__ = ("request", "handle", "enqueue_ns", "queued")

    def __init__(self, request: InferRequest, key: Any, handle: Any) -> None:
        if request.parameters.get("refuse"):
            raise InvalidInput("refused by the kind")
        self.request = request
        self.handle = handle
        self.enqueue_ns = 0
        self.queued = True


class Fifo:
    """The policy: a list; ``pending``, ``push``, ``cancel`` as the engine calls them."""

    def __init__(self) -> None:
        self.queue: list[Entry] = []

    @property
    def pending(self) -> int:
        return len(self.queue)

    def push(self, entry: Entry, now: int) -> None:
        entry.enqueue_ns = now
        self.queue.append(entry)

    def cancel(self, entry: Entry) -> bool:
        if entry.queued:
            entry.queued = False
            self.queue.remove(entry)
            return True
        return False


class ValueKind(Assembler):
    """Work is the batch's list of scalar values; the backend gets them as ``x`` [n, 1]."""

    def __init__(self, policy: Fifo, settle: bool = False) -> None:
        self.policy = policy
        self.entry = Entry
        self.fetch = ["y"]
        self.settled: list[list[Any]] = []
        if settle:
            self.completed = self._completed

    def poll(self, now: int, executing: int, closing: bool):
        if executing or not self.policy.queue:
            return [], (), None
        batch, self.policy.queue = self.policy.queue, []
        for e in batch:
            e.queued = False
        return [Flight(batch, [float(e.request.inputs["x"][0, 0]) for e in batch], now)], (), None

    def _completed(self, flight: Flight) -> None:
        assert flight.results is not None
        self.settled.append(list(flight.results))
        # the kind may rewrite what clients get
        flight.results[:] = [r if not isinstance(r, dict) else {"y": r["y"] + 1} for r in flight.results]

    def feed(self, work: list[float]):
        return {"x": np.array(work, np.float32)[:, None]}, len(work)

    def split(self, work: list[float], size: int, outputs):
        y = outputs["y"]
        if len(y) != size:
            raise BackendError(f"{len(y)} rows for {size}")
        return [{"y": y[i:i + 1]} for i in range(size)]

    def alone(self, work: list[float]):
        return [[v] for v in work]


class Backend:
    """y = 2x; records every execution's values; ``hold(v)`` blocks executions holding v."""

    def __init__(self, rows: int | None = None) -> None:
        self.calls: list[list[float]] = []
        self.holds: dict[float, tuple[threading.Event, threading.Event]] = {}
        self.rows = rows  # a buggy model: always this many rows

    def hold(self, value: float) -> tuple[threading.Event, threading.Event]:
        """(started, release) for executions whose inputs hold ``value``."""
        self.holds[value] = (threading.Event(), threading.Event())
        return self.holds[value]

    def __call__(self, inputs, names):
        x = inputs["x"]
        values = [float(v) for v in x[:, 0]]
        self.calls.append(values)
        for value, (started, release) in list(self.holds.items()):
            if value in values:
                started.set()
                assert release.wait(GUARD)
        if BAD in values:
            raise ValueError("bad value")
        return {"y": x * 2 if self.rows is None else np.zeros((self.rows, 1), np.float32)}


async def until(predicate) -> None:
    """Yield to the loop until ``predicate()`` holds (bounded by GUARD)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + GUARD
    while not predicate():
        assert loop.time() < end
        await asyncio.sleep(0)


async def started(event: threading.Event) -> None:
    assert await asyncio.wait_for(asyncio.to_thread(event.wait, GUARD), GUARD)


def req(value: float, **params) -> InferRequest:
    return InferRequest(inputs={"x": np.array([[value]], np.float32)}, parameters=params)


@pytest.fixture
async def engine_of():
    made: list[BatchingEngine] = []

    async def make(backend, settle=False, **kw) -> tuple[BatchingEngine, ValueKind, RecordingStats]:
        policy = Fifo()
        kind = ValueKind(policy, settle)
        stats = RecordingStats()
        engine = BatchingEngine(kind, policy, backend, stats=stats, **kw)
        await engine.start()
        made.append(engine)
        return engine, kind, stats

    yield make
    for e in made:
        await asyncio.wait_for(e.drain(), GUARD)


async def queue_behind_a_held_batch(engine, backend, values):
    """Hold a first batch in the backend, queue ``values`` (to run as one batch), release."""
    held, release = backend.hold(100.0)
    first = asyncio.ensure_future(engine.infer(req(100.0)))
    await started(held)
    tasks = [asyncio.ensure_future(engine.infer(req(v))) for v in values]
    await until(lambda: engine.pending_count() == len(values))
    release.set()
    return first, tasks


async def test_a_failing_batch_is_rerun_per_request_through_alone(engine_of):
    backend = Backend()
    engine, _, stats = await engine_of(backend)
    first, tasks = await queue_behind_a_held_batch(engine, backend, [1.0, BAD, 3.0])
    await asyncio.wait_for(first, GUARD)
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), GUARD)
    assert float(results[0]["y"][0, 0]) == 2.0 and float(results[2]["y"][0, 0]) == 6.0
    assert isinstance(results[1], BackendError) and results[1].message == "bad value"
    assert backend.calls == [[100.0], [1.0, BAD, 3.0], [1.0], [BAD], [3.0]]
    assert [r for _, r in stats.failed] == ["BACKEND"]
    assert sorted(stats.batches) == [1, 1, 1]  # the failed execution has no timings


async def test_outputs_the_kind_cannot_split_fail_the_whole_batch_without_a_rerun(engine_of):
    backend = Backend(rows=1)  # one row whatever the batch
    engine, _, stats = await engine_of(backend)
    first, tasks = await queue_behind_a_held_batch(engine, backend, [1.0, 2.0])
    await asyncio.wait_for(first, GUARD)  # alone, one row is right
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), GUARD)
    assert all(isinstance(r, BackendError) and r.message == "1 rows for 2" for r in results)
    assert backend.calls == [[100.0], [1.0, 2.0]]
    assert [r for _, r in stats.failed] == ["BACKEND", "BACKEND"]


async def test_completed_settles_before_the_requests_are_answered(engine_of):
    engine, kind, stats = await engine_of(Backend(), settle=True)
    out = await asyncio.wait_for(engine.infer(req(4.0)), GUARD)
    assert float(out["y"][0, 0]) == 9.0  # 2x by the backend, +1 by the kind's settlement
    assert len(kind.settled) == 1 and float(kind.settled[0][0]["y"][0, 0]) == 8.0
    with pytest.raises(BackendError):
        await asyncio.wait_for(engine.infer(req(BAD)), GUARD)
    assert isinstance(kind.settled[1][0], BackendError)  # failures are settled too
    assert len(stats.succeeded) == 1


async def test_the_kinds_entry_may_refuse_a_request(engine_of):
    engine, _, stats = await engine_of(Backend())
    with pytest.raises(InvalidInput, match="refused by the kind"):
        await engine.infer(req(1.0, refuse=True))
    assert engine.pending_count() == 0
    assert stats.failed == [(0, "OTHER")]


async def test_inline_execution_runs_on_the_loop_once_measured_fast(engine_of):
    threads: list[int] = []
    backend = Backend()

    def execute(inputs, names):
        threads.append(threading.get_ident())
        return backend(inputs, names)

    engine, _, _ = await engine_of(execute, inline_below_ns=10**12)
    await asyncio.wait_for(engine.infer(req(1.0)), GUARD)
    engine.warmed_up([1000])
    await asyncio.wait_for(engine.infer(req(2.0)), GUARD)
    assert threads[0] != threading.get_ident() and threads[1] == threading.get_ident()
    assert engine.inline is not None and engine.inline.inline_batches == 1


async def test_cancelled_requests_are_skipped_when_a_batch_is_isolated(engine_of):
    backend = Backend()
    engine, _, stats = await engine_of(backend)
    held, release = backend.hold(2.0)
    first, tasks = await queue_behind_a_held_batch(engine, backend, [1.0, 2.0, BAD])
    await asyncio.wait_for(first, GUARD)
    await started(held)  # the batch of three executes
    tasks[1].cancel()  # its isolated re-run is skipped
    await until(tasks[1].done)
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), GUARD)
    assert float(results[0]["y"][0, 0]) == 2.0 and isinstance(results[2], BackendError)
    assert isinstance(results[1], asyncio.CancelledError)
    assert backend.calls == [[100.0], [1.0, 2.0, BAD], [1.0], [BAD]]
    assert sorted(r for _, r in stats.failed) == ["BACKEND", "CANCELED"]


async def test_drain_waits_for_the_executing_batch_then_refuses(engine_of):
    backend = Backend()
    engine, _, _ = await engine_of(backend)
    held, release = backend.hold(1.0)
    task = asyncio.ensure_future(engine.infer(req(1.0)))
    await started(held)
    drain = asyncio.ensure_future(engine.drain())
    await asyncio.sleep(0)
    assert not drain.done()
    with pytest.raises(ModelNotReady, match="draining"):
        await engine.infer(req(2.0))
    release.set()
    await asyncio.wait_for(drain, GUARD)
    assert float((await task)["y"][0, 0]) == 2.0


def test_queue_full_defaults_to_never():
    policy = Fifo()
    engine = BatchingEngine(ValueKind(policy), policy, Backend(), stats=RecordingStats())
    assert engine.queue_full() is False
    full = BatchingEngine(
        ValueKind(policy), policy, Backend(), stats=RecordingStats(), queue_full=lambda: True
    )
    assert full.queue_full() is True
    with pytest.raises(ValueError, match="instances"):
        BatchingEngine(ValueKind(policy), policy, Backend(), stats=RecordingStats(), instances=0)
