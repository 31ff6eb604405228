"""The DAG executor with fake step calls: scheduling order, parallel branches, the first
failure cancelling the rest, deadlines. No network, no sleeps on the happy path."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kubeinfer.router.client import CallContext
from kubeinfer.router.errors import StepFailed, StepRejected, StepTimedOut, StepUnavailable
from kubeinfer.router.executor import Executor
from kubeinfer.spec.ensemble import EnsembleDef, build_graph
from kubeinfer.router.health import StepHealth
from kubeinfer.router.stats import EnsembleStats


def make_graph(steps, **extra):
    d = EnsembleDef.model_validate({
        "name": "e", "inputs": [{"name": "x", "datatype": "FP32", "dims": [2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "dims": [2]}],
        "steps": [{"model_name": m, "input_map": i, "output_map": o} for m, i, o in steps],
        "endpoints": {m: "http://h:1" for m, _, _ in steps}, **extra,
    })
    return build_graph(d)


FAN = [("l", {"I": "x"}, {"O": "a"}), ("r", {"I": "x"}, {"O": "b"}), ("j", {"A": "a", "B": "b"}, {"O": "y"})]
X = {"x": np.array([1.0, 2.0], dtype=np.float32)}


class Fake:
    """Step calls that log start/end and compute something checkable."""

    def __init__(self, behaviours=None):
        self.log: list[str] = []
        self.behaviours = behaviours or {}
        self.seen: list[CallContext] = []

    async def __call__(self, step, feed, ctx, timeout_us):
        self.log.append(f"start {step.name}")
        self.seen.append((ctx, timeout_us))
        b = self.behaviours.get(step.name)
        if b is not None:
            await b(step)
        self.log.append(f"end {step.name}")
        return {o: sum(feed.values()) + len(step.name) for o in step.output_map}


async def test_chain_runs_in_order_and_passes_tensors():
    g = make_graph([("c", {"I": "t2"}, {"O": "y"}), ("a", {"I": "x"}, {"O": "t1"}), ("bb", {"I": "t1"}, {"O": "t2"})])
    fake = Fake()
    ex = Executor(g, fake, EnsembleStats(g))
    out = await ex.run(X, CallContext("id-1"))
    assert fake.log == ["start a", "end a", "start bb", "end bb", "start c", "end c"]
    np.testing.assert_array_equal(out["y"], X["x"] + 1 + 2 + 1)
    assert all(ctx.request_id == "id-1" and t == 0 for ctx, t in fake.seen)


async def test_branches_run_concurrently():
    both_started = asyncio.Event()
    started = set()

    async def barrier(step):
        started.add(step.name)
        if len(started) == 2:
            both_started.set()
        await both_started.wait()  # deadlocks unless the other branch runs at the same time

    g = make_graph(FAN)
    fake = Fake({"l": barrier, "r": barrier})
    stats = EnsembleStats(g)
    out = await asyncio.wait_for(Executor(g, fake, stats).run(X, CallContext()), 5)
    assert fake.log[:2] == ["start l", "start r"] and fake.log[-2:] == ["start j", "end j"]
    np.testing.assert_array_equal(out["y"], (X["x"] + 1) * 2 + 1)
    assert [s.success.count for s in stats.steps] == [1, 1, 1]
    left, right, join = stats.steps
    assert join.last_start_ns >= max(left.last_end_ns, right.last_end_ns)


async def test_first_failure_cancels_the_other_branch():
    cancelled = asyncio.Event()

    async def forever(step):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def reject(step):
        raise StepRejected(step.name, step.model, 400, "bad input")

    g = make_graph(FAN)
    stats = EnsembleStats(g)
    fake = Fake({"l": forever, "r": reject})
    with pytest.raises(StepRejected, match="step 'r' \\(model 'r'\\) failed: bad input"):
        await asyncio.wait_for(Executor(g, fake, stats).run(X, CallContext()), 5)
    assert cancelled.is_set()
    assert "start j" not in fake.log
    assert stats.steps[1].failures["REJECTED"] == 1
    assert stats.steps[0].failures["CANCELLED"] == 1


async def test_unexpected_exception_becomes_step_failed():
    async def boom(step):
        raise KeyError("oops")

    g = make_graph(FAN)
    with pytest.raises(StepFailed, match="step 'j' \\(model 'j'\\) failed: KeyError"):
        await Executor(g, Fake({"j": boom}), EnsembleStats(g)).run(X, CallContext())


async def test_deadline_names_the_running_steps_and_passes_time_left():
    async def forever(step):
        await asyncio.Event().wait()

    g = make_graph(FAN)
    fake = Fake({"l": forever, "r": forever})
    stats = EnsembleStats(g)
    deadline = asyncio.get_running_loop().time() + 0.05
    with pytest.raises(StepTimedOut) as err:
        await Executor(g, fake, stats).run(X, CallContext(deadline=deadline))
    assert "timeout expired while step(s) 'l', 'r' ran" in err.value.message
    assert all(0 < t <= 50_000 for _, t in fake.seen)
    assert stats.steps[0].failures["TIMEOUT"] == 1


async def test_step_timeout_without_a_request_deadline_names_the_step():
    async def forever(step):
        await asyncio.Event().wait()

    g = make_graph(FAN, step_timeout_seconds=0.05)
    stats = EnsembleStats(g)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(StepTimedOut) as err:
        await asyncio.wait_for(Executor(g, Fake({"r": forever}), stats).run(X, CallContext()), 5)
    assert loop.time() - t0 < 1
    assert err.value.message == (
        "ensemble step 'r' (model 'r') failed: no answer from http://h:1 within the step timeout of 0.05s")
    assert stats.steps[1].failures["TIMEOUT"] == 1
    # a request deadline shorter than the step timeout still wins, with its own message
    g = make_graph(FAN, step_timeout_seconds=30)
    with pytest.raises(StepTimedOut, match="the request's timeout expired while step"):
        await Executor(g, Fake({"r": forever}), EnsembleStats(g)).run(X, CallContext(deadline=loop.time() + 0.05))


async def test_calls_feed_step_health():
    async def refused(step):
        raise StepUnavailable(step.name, step.model, None, "cannot connect to http://h:1: Connection refused")

    async def busy(step):
        raise StepUnavailable(step.name, step.model, 503, "queue full (HTTP 503 from http://h:1)")

    g = make_graph(FAN)
    health = StepHealth(g)
    with pytest.raises(StepUnavailable):
        await Executor(g, Fake({"r": refused}), EnsembleStats(g), health).run(X, CallContext())
    assert health.ready == [True, False, True]
    assert health.down() == ["step 'r' (model 'r'): cannot connect to http://h:1: Connection refused"]
    # a 503 answer (the model is busy) does not mark 'l' down; 'r' answering marks it up again
    with pytest.raises(StepUnavailable):
        await Executor(g, Fake({"l": busy}), EnsembleStats(g), health).run(X, CallContext())
    assert health.ready == [True, True, True]


async def test_concurrent_requests_do_not_share_state():
    g = make_graph(FAN)
    ex = Executor(g, Fake(), EnsembleStats(g))
    xs = [{"x": np.full(2, i, dtype=np.float32)} for i in range(20)]
    outs = await asyncio.gather(*(ex.run(x, CallContext()) for x in xs))
    for x, out in zip(xs, outs):
        np.testing.assert_array_equal(out["y"], (x["x"] + 1) * 2 + 1)
