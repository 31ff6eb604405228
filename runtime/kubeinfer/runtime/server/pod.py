"""One worker of a pod that runs several serving processes (``kubeinfer serve --workers N``).

Clients, probes and Prometheus talk to the pod, whichever worker the kernel hands their
connection to, so three things are the pod's rather than the worker's:

* **readiness**: ``PodState`` is a small array shared by the parent and its workers
  (inherited at spawn): one state per worker (starting, ready, draining, stopped) and the
  parent's "stopping" flag. A worker answers ready only when every worker is ready and the
  pod is not stopping; the parent raises the flag before it forwards SIGTERM, so all
  workers turn unready at once.
* **statistics and metrics**: each worker answers its raw statistics (``raw_stats``: the
  Triton counters, histogram buckets, pending requests) on a unix socket in the pod's
  directory; the worker that answers a stats or ``/metrics`` request gathers the others'
  and sums them (``merge_stats``). A worker that has exited is left out.
* **the final count**: each worker stores its succeeded/failed totals after draining, for
  the parent's last log line.

``PodServable`` wraps the worker's own servable: the data plane (``infer``, the capacity
check) goes straight to it; readiness and ``pod_statistics`` are the pod's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import orjson
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response

from kubeinfer.runtime.metrics import MetricsRenderer
from kubeinfer.runtime.model import ModelServable
from kubeinfer.runtime.stats import BatchStats, Duration, ModelStats

log = logging.getLogger(__name__)

STARTING, READY, DRAINING, STOPPED = 0, 1, 2, 3
_FIELDS = 3  # per worker: state, succeeded, failed
#: how long a worker waits for another's statistics before leaving them out
GATHER_TIMEOUT_SECONDS = 5.0


class PodState:
    """Shared by the parent and the workers: build it in the parent with the spawn context,
    pass it to each worker process as an argument."""

    def __init__(self, ctx, workers: int, directory: str) -> None:
        self.workers = workers
        self.directory = directory
        self._a = ctx.RawArray("q", 1 + _FIELDS * workers)

    def stopping(self) -> bool:
        return self._a[0] != 0

    def set_stopping(self) -> None:
        self._a[0] = 1

    def state(self, index: int) -> int:
        return self._a[1 + _FIELDS * index]

    def set_state(self, index: int, state: int) -> None:
        self._a[1 + _FIELDS * index] = state

    def ready(self) -> bool:
        a = self._a
        return a[0] == 0 and all(a[1 + _FIELDS * i] == READY for i in range(self.workers))

    def set_final(self, index: int, succeeded: int, failed: int) -> None:
        self._a[2 + _FIELDS * index] = succeeded
        self._a[3 + _FIELDS * index] = failed

    def final(self, index: int) -> tuple[int, int]:
        return self._a[2 + _FIELDS * index], self._a[3 + _FIELDS * index]

    def socket_path(self, index: int) -> str:
        return os.path.join(self.directory, f"worker-{index}.sock")


# -- statistics ------------------------------------------------------------------------
def raw_stats(stats: ModelStats, pending: int) -> dict:
    """Everything ``merge_stats`` needs to rebuild a worker's statistics."""
    return {
        "stats": stats.to_json(),
        "failures": stats.failures,
        "latency_us": [stats.latency_us.counts, stats.latency_us.total, stats.latency_us.n],
        "batch_size": [stats.batch_size.counts, stats.batch_size.total, stats.batch_size.n],
        "pending": pending,
    }


def _add(d: Duration, j: dict) -> None:
    d.add(j["ns"], j["count"])


def merge_stats(name: str, version: str, raws: list[dict]) -> tuple[ModelStats, int]:
    """The sum of the workers' statistics and of their pending requests."""
    total = ModelStats(name, version)
    pending = 0
    for raw in raws:
        s = raw["stats"]
        i = s["inference_stats"]
        for attr in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
            _add(getattr(total, attr), i[attr])
        for reason, n in raw["failures"].items():
            total.failures[reason] = total.failures.get(reason, 0) + n
        total.inference_count += s["inference_count"]
        total.execution_count += s["execution_count"]
        total.last_inference_ms = max(total.last_inference_ms, s["last_inference"])
        for b in s["batch_stats"]:
            mine = total.batches.get(b["batch_size"])
            if mine is None:
                mine = total.batches[b["batch_size"]] = BatchStats()
            _add(mine.compute_input, b["compute_input"])
            _add(mine.compute_infer, b["compute_infer"])
            _add(mine.compute_output, b["compute_output"])
        for attr in ("latency_us", "batch_size"):
            h = getattr(total, attr)
            counts, h_total, n = raw[attr]
            h.counts = [a + b for a, b in zip(h.counts, counts)]
            h.total += h_total
            h.n += n
        pending += raw["pending"]
    return total, pending



async def _fetch(path: str) -> dict | None:
    try:
        reader, writer = await asyncio.open_unix_connection(path)
    except (FileNotFoundError, ConnectionRefusedError):
        return None  # not started yet, or gone
    try:
        return orjson.loads(await asyncio.wait_for(reader.read(), GATHER_TIMEOUT_SECONDS))
    except (TimeoutError, OSError, orjson.JSONDecodeError) as exc:
        log.warning("statistics of %s left out: %r", path, exc)
        return None
    finally:
        writer.close()


# -- the worker's servable ---------------------------------------------------------------
class PodServable:
    """A worker's ``ModelServable`` as part of the pod (see the module docstring)."""

    def __init__(self, servable: ModelServable, state: PodState, index: int) -> None:
        self.servable = servable
        self.state = state
        self.index = index
        self.name = servable.name
        self.version = servable.version
        self.labels = servable.labels
        self.batched = servable.batched
        self.stats = servable.stats
        # the data plane, bound once: no indirection per request
        self.infer = servable.infer
        self.queue_full = servable.queue_full
        self.check_capacity = servable.check_capacity
        self.pending_count = servable.pending_count
        self.metadata = servable.metadata
        self.config_json = servable.config_json
        self.statistics = servable.statistics  # this worker's (its final log line)
        self._server: asyncio.AbstractServer | None = None

    async def open(self) -> None:
        """Answer this worker's raw statistics on its unix socket."""
        path = self.state.socket_path(self.index)
        Path(path).unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._answer, path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            Path(self.state.socket_path(self.index)).unlink(missing_ok=True)

    async def _answer(self, _reader, writer) -> None:
        try:
            writer.write(orjson.dumps(raw_stats(self.stats, self.pending_count())))
            await writer.drain()
        finally:
            writer.close()

    # -- the pod's answers -------------------------------------------------------------
    def is_ready(self) -> bool:
        return self.servable.is_ready() and self.state.ready()

    async def pod_stats(self) -> tuple[ModelStats, int]:
        """The pod's statistics and pending requests: this worker's and the others'."""
        others = [i for i in range(self.state.workers) if i != self.index]
        fetched = await asyncio.gather(*(_fetch(self.state.socket_path(i)) for i in others))
        raws = [raw_stats(self.stats, self.pending_count()), *(r for r in fetched if r is not None)]
        return merge_stats(self.name, self.version, raws)

    async def pod_statistics(self) -> dict:
        return (await self.pod_stats())[0].to_json()

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self.servable.start()
        self.state.set_state(self.index, READY)

    def mark_unready(self) -> None:
        self.state.set_state(self.index, DRAINING)
        self.servable.mark_unready()

    async def drain(self) -> None:
        await self.servable.drain()
        s = self.stats
        self.state.set_final(self.index, s.success.count, s.fail.count)
        self.state.set_state(self.index, STOPPED)


class PodMetrics:
    """``GET /metrics`` for the pod: the workers' statistics summed, then rendered."""

    def __init__(self, pod: PodServable, extra=None) -> None:
        self.pod = pod
        self.extra = extra

    async def endpoint(self, _request) -> Response:
        stats, pending = await self.pod.pod_stats()
        body = MetricsRenderer(stats, lambda: pending, self.extra).render()
        return Response(body, media_type=CONTENT_TYPE_LATEST)
