"""Per-model statistics in Triton's format, fed by the scheduler, read by the stats
endpoint and the Prometheus collector. Plain integer counters: the scheduler updates them
from the event loop, readers take a consistent-enough snapshot."""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass, field

# request latency buckets in microseconds and batch-size buckets for the histograms
LATENCY_BUCKETS_US = (100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class Histogram:
    bounds: tuple[int, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1


@dataclass(slots=True)
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


class ModelStats:
    """Implements ``batching.interface.StatsSink``."""

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.failures: dict[str, int] = {}
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.batches: dict[int, BatchStats] = {}
        self.latency_us = Histogram(LATENCY_BUCKETS_US)
        self.batch_size = Histogram(BATCH_BUCKETS)

    # -- StatsSink -------------------------------------------------------------------
    def request_succeeded(self, request_ns: int, queue_ns: int) -> None:
        self.success.add(request_ns)
        self.queue.add(queue_ns)
        self.latency_us.observe(request_ns / 1000)

    def request_failed(self, request_ns: int, reason: str) -> None:
        self.fail.add(request_ns)
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def batch_executed(
        self, batch_size: int, compute_input_ns: int, compute_infer_ns: int, compute_output_ns: int
    ) -> None:
        self.inference_count += batch_size
        self.execution_count += 1
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.compute_input.add(compute_input_ns)
        self.compute_infer.add(compute_infer_ns)
        self.compute_output.add(compute_output_ns)
        b = self.batches.get(batch_size)
        if b is None:
            b = self.batches[batch_size] = BatchStats()
        b.compute_input.add(compute_input_ns)
        b.compute_infer.add(compute_infer_ns)
        b.compute_output.add(compute_output_ns)
        self.batch_size.observe(batch_size)

    # -- readers ---------------------------------------------------------------------
    def to_json(self) -> dict:
        """One entry of Triton's ``model_stats`` list."""
        empty = Duration().json()
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.json(),
                "fail": self.fail.json(),
                "queue": self.queue.json(),
                "compute_input": self.compute_input.json(),
                "compute_infer": self.compute_infer.json(),
                "compute_output": self.compute_output.json(),
                "cache_hit": empty,
                "cache_miss": empty,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": b.compute_input.json(),
                    "compute_infer": b.compute_infer.json(),
                    "compute_output": b.compute_output.json(),
                }
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
