"""Step health: which step models answer, kept fresh while the router serves.

Where it comes from: a poller that asks every step model for its readiness
(``GET /v2/models/<m>/ready``) every ``interval`` seconds, and the step calls themselves
(the executor marks a step down the moment it cannot be reached, and up when it answers).
Where it goes: the ensemble model's readiness (ready only while every step is), the
``parameters`` of its metadata, the ``steps`` of its statistics and a gauge on
``/metrics``. The router's own server readiness does not follow it (``docs/router.md``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from kubeinfer.runtime.errors import InferError
from kubeinfer.spec.ensemble import Graph, Step

log = logging.getLogger(__name__)

#: asks one step model whether it is ready; raises ``InferError`` when it is not
Probe = Callable[[Step, float], Awaitable[None]]


class StepHealth:
    def __init__(self, graph: Graph, probe: Probe | None = None, interval: float = 2.0) -> None:
        self.graph = graph
        self.probe = probe
        self.interval = interval
        n = len(graph.steps)
        #: per step: ready?, why not, and since when (wall clock, seconds)
        self.ready = [True] * n
        self.reason = [""] * n
        self.since = [time.time()] * n

    def all_ready(self) -> bool:
        return all(self.ready)

    def down(self) -> list[str]:
        """``"step 'b' (model 'b'): <reason>"`` for each step that is down."""
        return [
            f"step '{s.name}' (model '{s.model}'): {self.reason[s.index]}"
            for s in self.graph.steps if not self.ready[s.index]
        ]

    def mark_up(self, index: int) -> None:
        if not self.ready[index]:
            s = self.graph.steps[index]
            log.warning("step '%s' (model '%s' at %s) is ready again", s.name, s.model, s.url)
            self.ready[index], self.reason[index], self.since[index] = True, "", time.time()

    def mark_down(self, index: int, reason: str) -> None:
        if self.ready[index]:
            s = self.graph.steps[index]
            log.warning("step '%s' (model '%s' at %s) is not ready: %s", s.name, s.model, s.url, reason)
            self.since[index] = time.time()
        self.ready[index], self.reason[index] = False, reason

    async def check_all(self) -> None:
        """Probe every step once, concurrently; each probe is bounded by the interval."""
        timeout = max(self.interval, 1.0)

        async def one(step: Step) -> None:
            try:
                async with asyncio.timeout(timeout):
                    await self.probe(step, timeout)
            except InferError as exc:
                self.mark_down(step.index, getattr(exc, "detail", exc.message))
            except TimeoutError:
                self.mark_down(step.index, f"its readiness did not answer within {timeout:g}s")
            else:
                self.mark_up(step.index)

        await asyncio.gather(*(one(s) for s in self.graph.steps))

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            await self.check_all()

    def to_json(self, index: int) -> dict:
        return {"ready": self.ready[index], "reason": self.reason[index], "since": self.since[index]}
