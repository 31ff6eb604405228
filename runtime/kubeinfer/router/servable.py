"""An ensemble as a servable: the same server layer that serves a local model serves this.

Startup (``start``): ask every step model for its v2 metadata and config (retrying with
backoff until each answers), check the ensemble against them (``signatures``), and only
then serve; while a check fails the problem is logged, repeated to clients as the
not-ready message, and retried. Then a poller keeps the step health fresh (``health``).
Two readinesses: ``serving`` (checked, not draining: the router's server readiness, what
a Kubernetes probe asks) and ``is_ready`` (serving and every step model ready: the
ensemble model's readiness). Requests (``infer``): check the inputs against the
ensemble's declared inputs (the runtime's ``protocol.signature``, as a local model does), admit at most ``max_inflight`` at once (beyond: ``QueueFull``),
run the DAG (``executor``) with the request's id, deadline and trace headers, and answer
with the ensemble outputs. A step that is down is still called: it may be back, and if
not the request fails fast with 503 naming it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from kubeinfer.runtime.errors import InferError, ModelNotReady, QueueFull
from kubeinfer.runtime.protocol.signature import InputSpec, Signature
from kubeinfer.runtime.types import InferRequest, InferResponse
from kubeinfer.router import forwarding
from kubeinfer.router.client import CallContext, ClientSettings, StepClient
from kubeinfer.router.errors import StepError
from kubeinfer.router.executor import Executor
from kubeinfer.router.health import StepHealth
from kubeinfer.router.signatures import check_signatures
from kubeinfer.router.stats import EnsembleStats
from kubeinfer.spec.ensemble import Graph

log = logging.getLogger(__name__)


class EnsembleServable:
    def __init__(
        self,
        graph: Graph,
        client_settings: ClientSettings = ClientSettings(),
        *,
        max_inflight: int | None = None,
        retry_max_seconds: float = 5.0,
        health_interval: float = 2.0,
    ) -> None:
        d = graph.definition
        self.graph = graph
        self.name = d.name
        self.version = d.version
        self.labels: dict[str, list[str]] = {}
        self.max_batch_size = d.max_batch_size
        self.batched = d.max_batch_size > 0
        self.max_inflight = max_inflight or d.max_inflight
        self.health = StepHealth(graph, interval=health_interval)
        self.stats = EnsembleStats(graph, self.health)
        self._health_task: asyncio.Task | None = None
        self.client_settings = client_settings
        self.client: StepClient | None = None
        self.executor: Executor | None = None
        self.retry_max_seconds = retry_max_seconds
        self._ready = False
        self._accepting = False
        self._why_not_ready = "checking the step models"
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._output_names = [t.name for t in d.outputs]
        self.signature = Signature(
            "ensemble", self.name, [InputSpec(t.name, t.datatype, tuple(t.dims)) for t in d.inputs],
            self._output_names, d.max_batch_size,
        )

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self.client = StepClient(self.client_settings)
        self.health.probe = self.client.check_ready
        self.executor = Executor(self.graph, self.client.infer, self.stats, self.health)
        steps = self.graph.steps
        delay, last = 0.05, None
        while True:
            try:
                found = await asyncio.gather(
                    *(self.client.metadata(s) for s in steps), *(self.client.max_batch_size(s) for s in steps)
                )
                metadata = {s.index: m for s, m in zip(steps, found)}
                batch_sizes = {s.index: b for s, b in zip(steps, found[len(steps):])}
                problems = check_signatures(self.graph, metadata, batch_sizes)
                if not problems:
                    break
                why = f"ensemble '{self.name}' does not fit its step models: " + "; ".join(problems)
            except InferError as exc:  # a step model is not reachable or not ready yet
                why = f"waiting for step models: {exc.message}"
            if why != last:
                log.error("%s (retrying)", why) if "does not fit" in why else log.warning("%s (retrying)", why)
                last = why
            self._why_not_ready = why
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_seconds)
        for s in self.graph.steps:
            log.info("step '%s': model '%s' at %s (timeout %gs)", s.name, s.model, s.url, s.timeout)
        self._health_task = asyncio.create_task(self.health.run())
        self._ready = self._accepting = True

    def mark_unready(self) -> None:
        self._ready = False

    async def drain(self) -> None:
        self._ready = self._accepting = False
        await self._idle.wait()
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()

    def serving(self) -> bool:
        """The router's server readiness: started, checked and not draining."""
        return self._ready

    def is_ready(self) -> bool:
        """The ensemble model's readiness: serving, and every step model ready."""
        return self._ready and self.health.all_ready()

    def pending_count(self) -> int:
        return self._inflight

    # -- data plane --------------------------------------------------------------------
    def validate(self, request: InferRequest) -> int:
        """Check the request against the ensemble's declared inputs; its batch size."""
        return self.signature.check(request)

    async def infer(self, request: InferRequest) -> InferResponse:
        if not self._accepting:
            raise ModelNotReady(f"ensemble '{self.name}' is not ready: {self._why_not_ready}")
        t0 = time.perf_counter_ns()
        try:
            if self._inflight >= self.max_inflight:
                raise QueueFull(f"ensemble '{self.name}' has {self._inflight} requests in flight (max_inflight)")
            batch = self.validate(request)
        except InferError as exc:
            self.stats.request_failed(0, exc.reason)
            raise
        self._inflight += 1
        self._idle.clear()
        try:
            deadline = None
            if request.timeout_us:
                deadline = asyncio.get_running_loop().time() + request.timeout_us / 1e6
            ctx = CallContext(request.id, deadline, forwarding.current())
            tensors = await self.executor.run(request.inputs, ctx)
        except InferError as exc:
            self.stats.request_failed(time.perf_counter_ns() - t0, exc.reason)
            if isinstance(exc, StepError):
                log.debug("request %s: %s", request.id, exc.message)
            raise
        except asyncio.CancelledError:
            self.stats.request_failed(time.perf_counter_ns() - t0, "CANCELED")
            raise
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
        ns = time.perf_counter_ns() - t0
        self.stats.request_succeeded(ns, 0)
        self.stats.batch_executed(batch, 0, ns, 0)
        return InferResponse(self.name, self.version, {n: tensors[n] for n in self._output_names}, request.id)

    # -- metadata ----------------------------------------------------------------------
    def metadata(self) -> dict:
        lead = [-1] if self.batched else []
        d = self.graph.definition
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "ensemble",
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": lead + t.dims} for t in d.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": lead + t.dims} for t in d.outputs],
            "parameters": self._health_parameters(),
        }

    def _health_parameters(self) -> dict:
        """``steps_ready`` and, per step, ``step:<name>``: "ready" or "not ready: <why>"."""
        h = self.health
        params: dict = {"steps_ready": h.all_ready()}
        for s in self.graph.steps:
            params[f"step:{s.name}"] = "ready" if h.ready[s.index] else f"not ready: {h.reason[s.index]}"
        return params

    def config_json(self) -> dict:
        """Triton's JSON model config of an ensemble (``ensemble_scheduling.step``)."""
        d = self.graph.definition

        def tensor(t):
            return {"name": t.name, "data_type": "TYPE_STRING" if t.datatype == "BYTES" else "TYPE_" + t.datatype, "dims": t.dims}

        return {
            "name": self.name,
            "platform": "ensemble",
            "max_batch_size": self.max_batch_size,
            "input": [tensor(t) for t in d.inputs],
            "output": [tensor(t) for t in d.outputs],
            "ensemble_scheduling": {
                "step": [
                    {
                        "model_name": s.model,
                        "model_version": int(s.version) if s.version.isdigit() else -1,
                        "input_map": s.input_map,
                        "output_map": s.output_map,
                    }
                    for s in self.graph.steps
                ]
            },
            "parameters": {f"endpoint:{s.name}": {"string_value": s.url} for s in self.graph.steps},
        }

    def statistics(self) -> dict:
        return self.stats.to_json()
