"""DynamicBatcher on a real event loop with a fake numpy model in the instance threads.

Threads are coordinated with events and barriers, never with sleeps; every await that
could hang is guarded by ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from kubeinfer.runtime.batching import DynamicBatcher
from kubeinfer.spec.config.model import DynamicBatching, QueuePolicy
from kubeinfer.runtime.errors import BackendError, DeadlineExceeded, ModelNotReady, QueueFull

GUARD = 5.0
BAD = -1.0


class FakeModel:
    """y = x * 2; records every batch; fails any batch containing BAD; can hold a batch."""

    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.seen: list[np.ndarray] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.barrier = barrier
        self.lock = threading.Lock()

    def hold(self) -> None:
        """Make the next executions wait for ``release``."""
        self.gate.clear()
        self.started.clear()

    def release(self) -> None:
        self.gate.set()

    def __call__(self, inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> dict:
        x = inputs["x"]
        with self.lock:
            self.batches.append(x.copy())
            self.seen.append(x)
        self.started.set()
        if self.barrier is not None:
            self.barrier.wait(GUARD)
        assert self.gate.wait(GUARD)
        if (x == BAD).any():
            raise ValueError("bad value -1 in x")
        return {"y": x * 2}

    def values(self) -> list[float]:
        return [float(v) for b in self.batches for v in b[:, 0]]


async def started(model: FakeModel) -> None:
    assert await asyncio.wait_for(asyncio.to_thread(model.started.wait, GUARD), GUARD)


async def until(predicate, what: str) -> None:
    """Yield to the loop until ``predicate()`` holds (bounded by GUARD)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + GUARD
    while not predicate():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


@pytest.fixture
async def make_batcher(stats):
    made: list[DynamicBatcher] = []

    async def make(model, max_batch_size=64, config=None, instances=1, inline_below_ns=0) -> DynamicBatcher:
        # inline execution off by default here: these fakes block on gates in their thread
        b = DynamicBatcher(
            model, ["y"], max_batch_size, config, instances=instances, stats=stats,
            inline_below_ns=inline_below_ns,
        )
        await b.start()
        made.append(b)
        return b

    yield make
    for b in made:
        await asyncio.wait_for(b.drain(), GUARD)


async def infer(batcher, make_request, value: float, **kw):
    return await asyncio.wait_for(batcher.infer(make_request(value=value, **kw)), GUARD)


async def test_concurrent_requests_form_batches_with_their_own_slices(
    make_batcher, make_request, stats
):
    model = FakeModel()
    b = await make_batcher(model, config=DynamicBatching(max_queue_delay_microseconds=500))
    model.hold()
    first = asyncio.ensure_future(infer(b, make_request, 1000.0))
    await started(model)
    rest = [asyncio.ensure_future(infer(b, make_request, float(i))) for i in range(63)]
    await until(lambda: b.pending_count() == 63, "requests to queue")
    model.release()
    results = await asyncio.gather(first, *rest)
    assert float(results[0]["y"][0, 0]) == 2000.0
    for i, r in enumerate(results[1:]):
        assert r["y"].shape == (1, 4)
        assert np.all(r["y"] == 2.0 * i)
    assert max(len(x) for x in model.batches) > 1
    # outputs are views of the batch's output, not copies
    assert np.shares_memory(results[1]["y"], results[2]["y"].base)
    assert sorted(model.values()) == sorted([1000.0, *map(float, range(63))])
    assert len(stats.succeeded) == 64 and sum(stats.batches) == 64
    assert all(queue_ns <= request_ns for request_ns, queue_ns in stats.succeeded)


async def test_requests_with_their_own_batch_dimension(make_batcher, make_request):
    model = FakeModel()
    b = await make_batcher(model, max_batch_size=8)
    model.hold()
    first = asyncio.ensure_future(infer(b, make_request, 9.0))
    await started(model)
    multi = [asyncio.ensure_future(infer(b, make_request, float(i), batch=3)) for i in range(2)]
    await until(lambda: b.pending_count() == 2, "requests to queue")
    model.release()
    await first
    r0, r1 = await asyncio.gather(*multi)
    assert r0["y"].shape == (3, 4) and np.all(r0["y"] == 0) and np.all(r1["y"] == 2)
    assert [len(x) for x in model.batches] == [1, 6]


async def test_idle_dispatch_does_not_wait_for_the_delay(make_batcher, make_request):
    model = FakeModel()
    b = await make_batcher(model, config=DynamicBatching(max_queue_delay_microseconds=10_000_000))
    r = await asyncio.wait_for(b.infer(make_request(value=3.0)), 2.0)
    assert np.all(r["y"] == 6.0)


async def test_two_instances_execute_concurrently(make_batcher, make_request):
    model = FakeModel(barrier=threading.Barrier(2))
    b = await make_batcher(model, instances=2)
    first = asyncio.ensure_future(infer(b, make_request, 1.0))
    await started(model)  # now waiting at the barrier for a second batch
    r2 = await infer(b, make_request, 2.0)
    r1 = await first
    # both batches were inside execute at once, or the barrier would have broken
    assert not model.barrier.broken
    assert float(r1["y"][0, 0]) == 2.0 and float(r2["y"][0, 0]) == 4.0


async def test_cancelled_before_execution_never_executes(make_batcher, make_request, stats):
    model = FakeModel()
    b = await make_batcher(model)
    model.hold()
    first = asyncio.ensure_future(infer(b, make_request, 1.0))
    await started(model)
    doomed = asyncio.ensure_future(b.infer(make_request(value=7.0)))
    await until(lambda: b.pending_count() == 1, "request to queue")
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert b.pending_count() == 0
    model.release()
    await first
    await infer(b, make_request, 2.0)
    assert 7.0 not in model.values()
    assert (0, "CANCELED") in [(0, r) for _, r in stats.failed]


async def test_cancelled_while_executing_drops_the_result(make_batcher, make_request, stats):
    model = FakeModel()
    b = await make_batcher(model)
    model.hold()
    task = asyncio.ensure_future(b.infer(make_request(value=1.0)))
    await started(model)
    task.cancel()
    model.release()
    with pytest.raises(asyncio.CancelledError):
        await task
    r = await infer(b, make_request, 2.0)  # the batcher carries on
    assert float(r["y"][0, 0]) == 4.0
    assert [reason for _, reason in stats.failed] == ["CANCELED"]


async def test_bad_request_fails_alone(make_batcher, make_request, stats):
    model = FakeModel()
    b = await make_batcher(model)
    model.hold()
    first = asyncio.ensure_future(infer(b, make_request, 1.0))
    await started(model)
    values = [2.0, BAD, 3.0]
    tasks = [asyncio.ensure_future(infer(b, make_request, v)) for v in values]
    await until(lambda: b.pending_count() == 3, "requests to queue")
    model.release()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert isinstance(results[2], BackendError)
    assert "bad value -1" in results[2].message
    assert float(results[1]["y"][0, 0]) == 4.0 and float(results[3]["y"][0, 0]) == 6.0
    assert [len(x) for x in model.batches][:2] == [1, 3]  # the batch was tried first
    assert [reason for _, reason in stats.failed] == ["BACKEND"]


async def test_single_request_failure_is_a_backend_error(make_batcher, make_request):
    b = await make_batcher(FakeModel())
    with pytest.raises(BackendError, match="bad value -1"):
        await infer(b, make_request, BAD)


async def test_output_with_wrong_batch_dimension(make_batcher, make_request):
    b = await make_batcher(lambda inputs, names: {"y": np.zeros((5, 4))})
    with pytest.raises(BackendError, match="output 'y' has batch dimension 5, expected 1"):
        await infer(b, make_request, 1.0)


async def test_output_that_is_not_an_array(make_batcher, make_request):
    b = await make_batcher(lambda inputs, names: {"y": [1, 2]})
    with pytest.raises(BackendError, match="output 'y' is a list, not an array"):
        await infer(b, make_request, 1.0)


async def test_request_timeout_without_a_default(make_batcher, make_request, stats):
    model = FakeModel()
    b = await make_batcher(model)
    model.hold()
    first = asyncio.ensure_future(infer(b, make_request, 1.0))
    await started(model)
    with pytest.raises(DeadlineExceeded):
        await infer(b, make_request, 2.0, timeout_us=10_000)
    model.release()
    await first
    assert [reason for _, reason in stats.failed] == ["REJECTED"]
    assert 2.0 not in model.values()


async def test_unbatched_model_gets_the_request_arrays_untouched(make_batcher, make_request):
    model = FakeModel()
    b = await make_batcher(model, max_batch_size=0)
    req = make_request(value=4.0)
    r = await asyncio.wait_for(b.infer(req), GUARD)
    assert model.seen[0] is req.inputs["x"]
    assert float(r["y"][0, 0]) == 8.0


async def test_full_queue_rejects_at_once(make_batcher, make_request, stats):
    model = FakeModel()
    cfg = DynamicBatching(default_queue_policy=QueuePolicy(max_queue_size=1))
    b = await make_batcher(model, config=cfg)
    model.hold()
    first = asyncio.ensure_future(infer(b, make_request, 1.0))
    await started(model)
    queued = asyncio.ensure_future(infer(b, make_request, 2.0))
    await until(lambda: b.pending_count() == 1, "request to queue")
    with pytest.raises(QueueFull):
        await infer(b, make_request, 3.0)
    model.release()
    await asyncio.gather(first, queued)
    assert [reason for _, reason in stats.failed] == ["REJECTED"]


async def test_timeout_fires_during_an_execution_and_never_runs(make_batcher, make_request):
    model = FakeModel()
    cfg = DynamicBatching(default_queue_policy=QueuePolicy(default_timeout_microseconds=20_000))
    b = await make_batcher(model, config=cfg)
    model.hold()
    first = asyncio.ensure_future(infer(b, make_request, 1.0))
    await started(model)
    with pytest.raises(DeadlineExceeded):
        await infer(b, make_request, 2.0)
    assert not model.gate.is_set()  # failed while the first batch still executes
    model.release()
    await first
    assert 2.0 not in model.values()


async def test_drain_finishes_queued_work_then_rejects(make_batcher, make_request):
    model = FakeModel()
    b = await make_batcher(model, config=DynamicBatching(max_queue_delay_microseconds=10_000_000))
    model.hold()
    tasks = [asyncio.ensure_future(infer(b, make_request, float(i))) for i in range(5)]
    await started(model)
    drain = asyncio.ensure_future(b.drain())
    await asyncio.sleep(0)
    with pytest.raises(ModelNotReady):
        await infer(b, make_request, 9.0)
    assert not drain.done()
    model.release()
    await asyncio.wait_for(drain, GUARD)
    results = await asyncio.gather(*tasks)
    assert [float(r["y"][0, 0]) for r in results] == [2.0 * i for i in range(5)]
    assert b.pending_count() == 0


async def test_mismatched_shapes_are_not_mixed(make_batcher, make_request):
    model = FakeModel()
    b = await make_batcher(model)
    model.hold()
    first = asyncio.ensure_future(infer(b, make_request, 1.0))
    await started(model)
    dims = [(4,), (5,), (4,), (5,), (4,)]
    tasks = [
        asyncio.ensure_future(infer(b, make_request, float(i), dims=d)) for i, d in enumerate(dims)
    ]
    await until(lambda: b.pending_count() == 5, "requests to queue")
    model.release()
    results = await asyncio.gather(first, *tasks)
    assert [x.shape for x in model.batches] == [(1, 4), (3, 4), (2, 5)]
    for i, (d, r) in enumerate(zip(dims, results[1:])):
        assert r["y"].shape == (1, *d) and np.all(r["y"] == 2.0 * i)


async def test_bytes_inputs_are_concatenated(make_batcher):
    from kubeinfer.runtime.types import InferRequest

    def upper(inputs, names):
        return {"y": np.array([s.upper() for s in inputs["x"][:, 0]], dtype=object)[:, None]}

    b = await make_batcher(upper)
    reqs = [
        InferRequest(inputs={"x": np.array([[w]], dtype=object)}) for w in (b"a", b"bc", b"d")
    ]
    results = await asyncio.gather(*(b.infer(r) for r in reqs))
    assert [r["y"][0, 0] for r in results] == [b"A", b"BC", b"D"]


async def test_preserve_ordering_delivers_in_dispatch_order(make_batcher, make_request):
    slow_gate = threading.Event()

    def model(inputs, names):
        if inputs["x"][0, 0] == 1.0:
            assert slow_gate.wait(GUARD)
        return {"y": inputs["x"] * 2}

    b = await make_batcher(model, config=DynamicBatching(preserve_ordering=True), instances=2)
    slow = asyncio.ensure_future(infer(b, make_request, 1.0))
    await asyncio.sleep(0)
    fast = asyncio.ensure_future(infer(b, make_request, 2.0))
    await until(lambda: b.pending_count() == 0, "dispatch")
    await asyncio.sleep(0.05)  # the fast batch has long finished in its thread
    assert not fast.done()
    slow_gate.set()
    await asyncio.gather(slow, fast)


async def test_infer_before_start_is_not_ready(make_request, stats):
    b = DynamicBatcher(FakeModel(), ["y"], 8, stats=stats, inline_below_ns=0)
    with pytest.raises(ModelNotReady):
        await b.infer(make_request())


def recording_threads(model: FakeModel):
    """``model`` as an execute function, and the list of the threads it ran on."""
    threads: list[int] = []

    def execute(inputs, names):
        threads.append(threading.get_ident())
        return model(inputs, names)

    return execute, threads


async def test_fast_model_runs_inline_and_still_batches(make_batcher, make_request):
    model = FakeModel()
    loop_thread = threading.get_ident()
    execute, threads = recording_threads(model)
    b = await make_batcher(execute, config=DynamicBatching(), inline_below_ns=10**12)
    b.warmed_up([1000])  # warm-up measured it fast
    results = await asyncio.gather(*(infer(b, make_request, float(i)) for i in range(64)))
    assert [float(r["y"][0, 0]) for r in results] == [2.0 * i for i in range(64)]
    assert set(threads) == {loop_thread}
    assert b.inline is not None and b.inline.inline_batches == len(model.batches)
    # requests parsed before the scheduled inline execution joined one batch
    assert len(model.batches) < 64


@pytest.mark.parametrize("warm_up_ns", [[], [10**9]], ids=["unmeasured", "slow-warm-up"])
async def test_a_model_not_measured_fast_never_runs_inline(make_batcher, make_request, warm_up_ns):
    model = FakeModel()
    loop_thread = threading.get_ident()
    execute, threads = recording_threads(model)
    b = await make_batcher(execute, config=DynamicBatching(), inline_below_ns=1)
    b.warmed_up(warm_up_ns)
    for i in range(3):
        await infer(b, make_request, float(i))
    # every batch takes more than 1 ns, on the thread too: not even the first runs inline
    assert len(threads) == 3 and loop_thread not in threads
    assert b.inline is not None and b.inline.inline_batches == 0


async def test_a_model_that_turns_slow_on_the_loop_moves_to_the_thread(make_batcher, make_request):
    model = FakeModel()
    loop_thread = threading.get_ident()
    execute, threads = recording_threads(model)
    b = await make_batcher(execute, config=DynamicBatching(), inline_below_ns=1)
    b.warmed_up([0])  # fast at warm-up, slower than 10 ns (the eject bound) afterwards
    for i in range(3):
        await infer(b, make_request, float(i))
    assert threads[0] == loop_thread
    assert threads[1] != loop_thread and threads[2] != loop_thread


async def test_backend_taking_the_list_of_requests(make_batcher, make_request, stats):
    """Triton's Python backend style: no concatenation, one result (or error) per request."""
    model = FakeModel()
    calls: list[int] = []

    def execute_requests(requests, names):
        calls.append(len(requests))
        return [
            ValueError("bad value") if (r["x"] == BAD).any() else {"y": r["x"] * 3}
            for r in requests
        ]

    b = DynamicBatcher(
        model, ["y"], 64, DynamicBatching(), stats=stats, inline_below_ns=0,
        execute_requests=execute_requests,
    )
    await b.start()
    model.hold()
    first = asyncio.ensure_future(infer(b, make_request, 1.0))
    await started(model)  # the first request runs alone through execute
    rest = [asyncio.ensure_future(infer(b, make_request, v)) for v in (2.0, BAD, 4.0)]
    await until(lambda: b.pending_count() == 3, "requests to queue")
    model.release()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    await asyncio.wait_for(b.drain(), GUARD)
    assert float(results[0]["y"][0, 0]) == 2.0  # execute: x * 2
    assert float(results[1]["y"][0, 0]) == 6.0 and float(results[3]["y"][0, 0]) == 12.0
    assert isinstance(results[2], BackendError) and "bad value" in results[2].message
    assert calls == [3]


async def test_failing_inline_batch_is_answered(make_batcher, make_request):
    """A batch that fails on the event loop still resolves its requests (no timings)."""
    b = await make_batcher(FakeModel(), inline_below_ns=10**12)
    b.warmed_up([1000])
    with pytest.raises(BackendError, match="bad value"):
        await infer(b, make_request, BAD)
    assert float((await infer(b, make_request, 3.0))["y"][0, 0]) == 6.0


async def test_a_request_cancelled_as_its_queue_deadline_passes_is_counted_once(make_request, stats):
    """On a busy loop the cancellation of a waiting request (client gone, gRPC deadline)
    and the timer that expires it can meet: the timer's pass runs after the cancel but
    before the cancelled task resumes. The request fails once, not once per path."""
    now = [0]
    model = FakeModel()
    b = DynamicBatcher(model, ["y"], 8, DynamicBatching(), stats=stats, clock=lambda: now[0], inline_below_ns=0)
    await b.start()
    model.hold()
    first = asyncio.ensure_future(infer(b, make_request, 1.0))
    await started(model)
    late = asyncio.ensure_future(b.infer(make_request(value=2.0, timeout_us=60_000_000)))
    await until(lambda: b.pending_count() == 1, "the late request to queue")
    late.cancel()  # its future is cancelled now; the task resumes on the next loop turn
    now[0] += 61_000_000_000  # its deadline passed (the real timer is a minute away)
    b._pump()  # the expiry timer's pass, before the cancelled task runs
    with pytest.raises(asyncio.CancelledError):
        await late
    model.release()
    await first
    await asyncio.wait_for(b.drain(), GUARD)
    assert len(stats.failed) == 1, stats.failed
    assert 2.0 not in model.values()
