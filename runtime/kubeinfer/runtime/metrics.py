"""Prometheus metrics under Triton's names, read from the model's statistics at scrape time.

Triton exposes its counters without the ``_total`` suffix that prometheus-client adds to
``Counter``; dashboards and HPA adapter rules written for Triton depend on the exact
names. So this is a custom collector building families by hand: ``# TYPE ... counter``
with sample names exactly Triton's. Nothing is done per request here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from kubeinfer.runtime.stats import ModelStats

FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


def _counter(name: str, doc: str, labels: dict[str, str], value: float) -> Metric:
    m = Metric(name, doc, "counter")
    m.add_sample(name, labels, value)
    return m


class TritonCollector:
    def __init__(self, stats: ModelStats, pending: Callable[[], int]) -> None:
        self.stats = stats
        self.pending = pending

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        s = self.stats
        labels = {"model": s.name, "version": s.version}
        yield _counter(
            "nv_inference_request_success",
            "Number of successful inference requests, all batch sizes",
            labels,
            s.success.count,
        )
        fail = Metric("nv_inference_request_failure", "Number of failed inference requests, all batch sizes", "counter")
        for reason in FAILURE_REASONS:
            fail.add_sample(
                "nv_inference_request_failure", {**labels, "reason": reason}, s.failures.get(reason, 0)
            )
        yield fail
        yield _counter("nv_inference_count", "Number of inferences performed (does not include cached requests)", labels, s.inference_count)
        yield _counter("nv_inference_exec_count", "Number of model executions performed (does not include cached requests)", labels, s.execution_count)
        us = 1000
        yield _counter("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds (includes cached requests)", labels, (s.success.ns + s.fail.ns) // us)
        yield _counter("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds (includes cached requests)", labels, s.queue.ns // us)
        yield _counter("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds (does not include cached requests)", labels, s.compute_input.ns // us)
        yield _counter("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds (does not include cached requests)", labels, s.compute_infer.ns // us)
        yield _counter("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds (does not include cached requests)", labels, s.compute_output.ns // us)
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution per-model.",
            labels=["model", "version"],
        )
        pending.add_metric([s.name, s.version], self.pending())
        yield pending
        yield _histogram(
            "kubeinfer_request_duration_seconds",
            "Latency of successful requests from arrival at the scheduler to result",
            s.name, s.version, s.latency_us.bounds, s.latency_us.counts, s.latency_us.total, 1e-6,
        )
        yield _histogram(
            "kubeinfer_batch_size",
            "Size of the batches executed by the backend (samples)",
            s.name, s.version, s.batch_size.bounds, s.batch_size.counts, s.batch_size.total, 1,
        )


def _histogram(name, doc, model, version, bounds, counts, total, scale) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, doc, labels=["model", "version"])
    buckets, acc = [], 0
    for bound, c in zip([*bounds, float("inf")], counts):
        acc += c
        buckets.append((str(bound * scale) if bound != float("inf") else "+Inf", acc))
    h.add_metric([model, version], buckets, total * scale)
    return h


def build_registry(stats: ModelStats, pending: Callable[[], int]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TritonCollector(stats, pending))
    return registry
