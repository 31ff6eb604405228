"""Per-request overhead of the dynamic batcher, with a trivial backend.

64 (``--concurrency``) client coroutines each send requests back to back through one
``DynamicBatcher`` whose ``execute`` returns its input; what is measured is the batcher
alone: enqueue, scheduling, the hop to the instance thread and back, concatenation, split,
futures and stats calls. Prints wall and CPU microseconds per request and the mean batch
size for asyncio's default loop and uvloop, next to a baseline: the same clients awaiting
a future the loop resolves at once (what any scheduler costs at least), so the batcher's
own share is the difference. "ModelStats" rows use the runtime's real statistics sink.

    PYTHONPATH=runtime python bench/batcher_overhead.py [--requests 200000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import numpy as np

from kubeinfer.runtime.batching import DynamicBatcher
from kubeinfer.spec.config.model import DynamicBatching
from kubeinfer.runtime.stats import ModelStats
from kubeinfer.runtime.types import InferRequest


class CountingStats:
    """A StatsSink that only counts batches."""

    def __init__(self) -> None:
        self.batches = 0
        self.rows = 0

    def request_succeeded(self, request_ns: int, queue_ns: int) -> None:
        pass

    def request_failed(self, request_ns: int, reason: str) -> None:
        pass

    def batch_executed(self, batch_size: int, c_in: int, c_infer: int, c_out: int) -> None:
        self.batches += 1
        self.rows += batch_size


class Immediate:
    """Baseline scheduler: resolves each request's future on the next loop iteration."""

    def __init__(self, stats: CountingStats) -> None:
        self.stats = stats

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def infer(self, request: InferRequest) -> dict:
        fut = self.loop.create_future()
        self.loop.call_soon(fut.set_result, {"y": request.inputs["x"]})
        self.stats.batch_executed(1, 0, 0, 0)
        return await fut

    async def drain(self) -> None:
        pass


def identity(inputs, output_names):
    return {"y": inputs["x"]}


def make_scheduler(variant: str):
    """(scheduler, a function returning (rows, batches) executed so far)."""
    if variant == "baseline":
        counting = CountingStats()
        return Immediate(counting), lambda: (counting.rows, counting.batches)
    if variant == "ModelStats":
        model_stats = ModelStats("bench", "1")
        b = DynamicBatcher(identity, ["y"], 64, None, stats=model_stats)
        return b, lambda: (model_stats.inference_count, model_stats.execution_count)
    counting = CountingStats()
    config = DynamicBatching(max_queue_delay_microseconds=100) if variant == "delay 100us" else None
    b = DynamicBatcher(identity, ["y"], 64, config, stats=counting)
    return b, lambda: (counting.rows, counting.batches)


async def run(requests: int, concurrency: int, variant: str) -> tuple[float, float, float]:
    scheduler, executed = make_scheduler(variant)
    await scheduler.start()
    per_client = requests // concurrency

    async def client(i: int) -> None:
        req = InferRequest(inputs={"x": np.full((1, 16), i, dtype=np.float32)})
        for _ in range(per_client):
            out = await scheduler.infer(req)
        assert out["y"][0, 0] == i

    await asyncio.gather(*(client(i) for i in range(concurrency // 4)))  # warm up
    rows0, batches0 = executed()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rows, batches = executed()
    await scheduler.drain()
    n = per_client * concurrency
    return wall / n * 1e6, cpu / n * 1e6, (rows - rows0) / max(batches - batches0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    loops: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = [
        ("asyncio", asyncio.new_event_loop)
    ]
    try:
        import uvloop

        loops.append(("uvloop", uvloop.new_event_loop))
    except ImportError:
        pass
    for loop_name, factory in loops:
        for variant in ("baseline", "no delay", "delay 100us", "ModelStats"):
            with asyncio.Runner(loop_factory=factory) as runner:
                wall, cpu, mean = runner.run(run(args.requests, args.concurrency, variant))
            print(
                f"{loop_name:8} {variant:12} concurrency {args.concurrency}: "
                f"{wall:6.2f} us/request wall, {cpu:6.2f} us/request CPU, "
                f"mean batch {mean:5.1f}"
            )


if __name__ == "__main__":
    main()
