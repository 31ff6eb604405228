"""``kubeinfer serve``'s composition root: one model, served by the generic lifecycle.

Load the model -> build its scheduler (``make_scheduler``), servable, metrics and HTTP app
-> ``lifecycle.run_servers`` (servers, warm-up, readiness, SIGTERM draining). With
``--workers N`` (N > 1) ``server.workers`` starts N processes that each run ``serve_worker``:
the same composition, with the servable wrapped as one worker of the pod (``server.pod``)
and every port shared.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from kubeinfer.runtime.backends.gpu_metrics import GpuMetrics
from kubeinfer.runtime.batching.batcher import DynamicBatcher
from kubeinfer.runtime.batching.interface import Scheduler
from kubeinfer.runtime.batching.sequence import SequenceBatcher
from kubeinfer.runtime.metrics import MetricsRenderer
from kubeinfer.runtime.model import ModelServable
from kubeinfer.runtime.repository import LoadedModel, load_model
from kubeinfer.runtime.server.app import create_app
from kubeinfer.runtime.server.lifecycle import metrics_endpoint, run_servers
from kubeinfer.runtime.server.pod import PodMetrics, PodServable, PodState
from kubeinfer.runtime.settings import RuntimeSettings
from kubeinfer.runtime.stats import ModelStats

log = logging.getLogger("kubeinfer.serve")


def make_scheduler(loaded: LoadedModel, stats: ModelStats) -> Scheduler:
    if loaded.config.sequence_batching is not None:
        return SequenceBatcher(
            execute=loaded.backend.execute,
            output_names=[o.name for o in loaded.config.output],
            max_batch_size=loaded.config.max_batch_size,
            config=loaded.config.sequence_batching,
            instances=loaded.config.instance_count,
            stats=stats,
            model=loaded.name,
            model_dir=loaded.path.parent.parent,
        )
    return DynamicBatcher(
        execute=loaded.backend.execute,
        output_names=[o.name for o in loaded.config.output],
        max_batch_size=loaded.config.max_batch_size,
        config=loaded.config.dynamic_batching,
        instances=loaded.config.instance_count,
        stats=stats,
        execute_requests=loaded.backend.execute_requests,
        model=loaded.name,
    )


def describe(loaded: LoadedModel, settings: RuntimeSettings) -> str:
    c = loaded.config
    db, sb = c.dynamic_batching, c.sequence_batching
    if sb is not None:
        strategy = "oldest" if sb.oldest is not None else "direct"
        batching = (
            f"sequence batching ({strategy}) max_batch_size={c.max_batch_size} "
            f"idle_us={sb.max_sequence_idle_microseconds or 1_000_000}"
        )
    elif db is not None:
        batching = (
            f"dynamic batching max_batch_size={c.max_batch_size} "
            f"preferred={db.preferred_batch_size or '-'} delay_us={db.max_queue_delay_microseconds} "
            f"max_queue_size={db.default_queue_policy.max_queue_size or 'unbounded'}"
        )
    else:
        batching = f"no batching delay, max_batch_size={c.max_batch_size}"
    return (
        f"model '{loaded.name}' version {loaded.version} backend {loaded.backend_kind} "
        f"({loaded.path}); {batching}; instances={c.instance_count}"
    )


async def _load(settings: RuntimeSettings) -> ModelServable:
    loaded = await asyncio.get_running_loop().run_in_executor(
        None, load_model, settings.model_repository, settings.model, settings.model_version
    )
    log.info("loaded %s", describe(loaded, settings))
    return ModelServable(loaded, make_scheduler)


def _gpu_render():
    gpu = GpuMetrics()  # empty without NVML or a GPU
    return gpu.render if gpu.available else None


async def serve(settings: RuntimeSettings) -> int:
    servable = await _load(settings)
    metrics = metrics_endpoint(MetricsRenderer(servable.stats, servable.pending_count, _gpu_render()))
    app = create_app(
        servable,
        metrics_route=metrics if settings.metrics_port == 0 else None,
        max_body_bytes=settings.max_body_bytes,
    )
    return await run_servers(servable, app, metrics, settings)


async def serve_worker(settings: RuntimeSettings, state: PodState, index: int) -> int:
    """Worker ``index`` of the pod: its own model, batcher and warm-up; the pod's
    readiness, statistics and metrics; SIGTERM from the parent (SIGINT is the parent's)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pod = PodServable(await _load(settings), state, index)
    await pod.open()
    try:
        metrics = PodMetrics(pod, _gpu_render()).endpoint
        app = create_app(
            pod,
            metrics_route=metrics if settings.metrics_port == 0 else None,
            max_body_bytes=settings.max_body_bytes,
        )
        return await run_servers(pod, app, metrics, settings, reuse_port=True, signals=(signal.SIGTERM,))
    finally:
        await pod.close()
