"""Running one ensemble request through the step DAG.

Input: the request's tensors (already checked against the ensemble's inputs) and a
``CallContext`` (id, deadline, trace headers). Each step starts as soon as every tensor it
reads exists; steps that become runnable together run concurrently as asyncio tasks (a
lone runnable step with nothing else in flight is awaited inline: chains pay no task
overhead). The first failing step cancels the rest and its error is the request's error.
A deadline that passes cancels whatever runs and names those steps; so does a step that
takes longer than its own timeout (``Step.timeout``: a model that accepted the connection
and never answers cannot hold a request forever). Each call's outcome also goes to the
step health record (a step that cannot be reached is marked down at once, one that answers
is up). Output: every ensemble tensor produced, from which the servable picks the ensemble
outputs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np

from kubeinfer.router.client import CallContext
from kubeinfer.router.errors import StepFailed, StepRejected, StepTimedOut, StepUnavailable
from kubeinfer.router.health import StepHealth
from kubeinfer.router.stats import EnsembleStats, now_wall_ns
from kubeinfer.spec.ensemble import Graph, Step

#: calls one step: (step, feed, context, timeout_us) -> the step's outputs
StepCall = Callable[[Step, dict[str, np.ndarray], CallContext, int], Awaitable[dict[str, np.ndarray]]]


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, StepRejected):
        return "REJECTED"
    if isinstance(exc, StepUnavailable):
        return "UNAVAILABLE"
    if isinstance(exc, (StepTimedOut, asyncio.CancelledError)):
        return "TIMEOUT"
    return "FAILED"


class Executor:
    def __init__(self, graph: Graph, call: StepCall, stats: EnsembleStats, health: StepHealth | None = None) -> None:
        self.graph = graph
        self.call = call
        self.stats = stats
        self.health = health
        self._roots = [s.index for s in graph.steps if not s.deps]

    async def run(self, inputs: dict[str, np.ndarray], ctx: CallContext) -> dict[str, np.ndarray]:
        running: dict[asyncio.Task, Step] = {}
        inline: list[Step] = []  # the step awaited inline, if any
        try:
            if ctx.deadline is None:
                return await self._run(inputs, ctx, running, inline)
            try:
                async with asyncio.timeout_at(ctx.deadline):
                    return await self._run(inputs, ctx, running, inline)
            except TimeoutError:
                raise _timed_out([*inline, *running.values()] or [self.graph.steps[0]]) from None
        finally:
            if running:
                for t in running:
                    t.cancel()
                await asyncio.gather(*running, return_exceptions=True)

    async def _run(self, inputs, ctx, running, inline) -> dict[str, np.ndarray]:
        steps, dependents = self.graph.steps, self.graph.dependents
        tensors = dict(inputs)
        missing = [len(s.deps) for s in steps]
        ready = list(self._roots)
        while ready or running:
            if len(ready) == 1 and not running:
                step = steps[ready.pop()]
                inline.append(step)
                outs = await self._step(step, tensors, ctx)
                inline.clear()
                finished = [(step, outs)]
            else:
                for i in ready:
                    t = asyncio.ensure_future(self._step(steps[i], tensors, ctx))
                    running[t] = steps[i]
                ready.clear()
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                finished = []
                for t in done:
                    step = running.pop(t)
                    finished.append((step, t.result()))  # the first failure ends the request
            for step, outs in finished:
                for out, tensor in step.output_map.items():
                    tensors[tensor] = outs[out]
                for j in dependents[step.index]:
                    missing[j] -= 1
                    if missing[j] == 0:
                        ready.append(j)
        return tensors

    async def _step(self, step: Step, tensors: dict[str, np.ndarray], ctx: CallContext) -> dict[str, np.ndarray]:
        feed = {inp: tensors[t] for inp, t in step.input_map.items()}
        timeout_us = 0
        if ctx.deadline is not None:
            timeout_us = max(1, int((ctx.deadline - asyncio.get_running_loop().time()) * 1e6))
        stats = self.stats.steps[step.index]
        wall, t0 = now_wall_ns(), time.perf_counter_ns()
        try:
            try:
                async with asyncio.timeout(step.timeout):
                    outs = await self.call(step, feed, ctx, timeout_us)
            except TimeoutError:
                raise StepTimedOut(
                    step.name, step.model, None,
                    f"no answer from {step.url} within the step timeout of {step.timeout:g}s",
                ) from None
        except BaseException as exc:
            kind = _failure_kind(exc)
            if isinstance(exc, asyncio.CancelledError) and not _expired(ctx):
                kind = "CANCELLED"
            stats.record(wall, time.perf_counter_ns() - t0, kind)
            if self.health is not None and isinstance(exc, StepUnavailable) and exc.status is None:
                self.health.mark_down(step.index, exc.detail)
            if isinstance(exc, (asyncio.CancelledError, StepFailed, StepRejected, StepUnavailable, StepTimedOut)):
                raise
            raise StepFailed(step.name, step.model, None, f"{type(exc).__name__}: {exc}") from exc
        stats.record(wall, time.perf_counter_ns() - t0, None)
        if self.health is not None:
            self.health.mark_up(step.index)
        return outs


def _expired(ctx: CallContext) -> bool:
    return ctx.deadline is not None and asyncio.get_running_loop().time() >= ctx.deadline


def _timed_out(steps: list[Step]) -> StepTimedOut:
    names = ", ".join(f"'{s.name}'" for s in steps)
    return StepTimedOut(steps[0].name, steps[0].model, None, f"the request's timeout expired while step(s) {names} ran")
