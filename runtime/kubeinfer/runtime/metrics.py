"""Prometheus metrics under Triton's names, read from the model's statistics at scrape time.

Triton exposes its counters without the ``_total`` suffix that prometheus-client adds to
counters (in the samples and in the ``# TYPE`` line); dashboards and HPA adapter rules
written for Triton depend on the exact names. So Triton's families are rendered here in
the Prometheus text format by hand, and prometheus-client renders the histograms.
Nothing is done per request here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from kubeinfer.runtime.stats import ModelStats

FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


_COUNTERS = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch sizes"),
    ("nv_inference_request_failure", "Number of failed inference requests, all batch sizes"),
    ("nv_inference_count", "Number of inferences performed (does not include cached requests)"),
    ("nv_inference_exec_count", "Number of model executions performed (does not include cached requests)"),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds (includes cached requests)"),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds (includes cached requests)"),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds (does not include cached requests)"),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds (does not include cached requests)"),
    ("nv_inference_compute_output_duration_us", "Cumulative inference compute output duration in microseconds (does not include cached requests)"),
)
_PENDING = ("nv_inference_pending_request_count", "Instantaneous number of pending requests awaiting execution per-model.")


def format_labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def format_value(v: float) -> str:
    return repr(float(v))


def render_triton(stats: ModelStats, pending: int) -> str:
    """Triton's families, exactly as Triton writes them (no ``_total``)."""
    s = stats
    labels = {"model": s.name, "version": s.version}
    us = 1000
    values = {
        "nv_inference_request_success": [(labels, s.success.count)],
        "nv_inference_request_failure": [
            ({**labels, "reason": r}, s.failures.get(r, 0)) for r in FAILURE_REASONS
        ],
        "nv_inference_count": [(labels, s.inference_count)],
        "nv_inference_exec_count": [(labels, s.execution_count)],
        "nv_inference_request_duration_us": [(labels, (s.success.ns + s.fail.ns) // us)],
        "nv_inference_queue_duration_us": [(labels, s.queue.ns // us)],
        "nv_inference_compute_input_duration_us": [(labels, s.compute_input.ns // us)],
        "nv_inference_compute_infer_duration_us": [(labels, s.compute_infer.ns // us)],
        "nv_inference_compute_output_duration_us": [(labels, s.compute_output.ns // us)],
    }
    lines = []
    for name, doc in _COUNTERS:
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} counter"]
        lines += [f"{name}{format_labels(lb)} {format_value(v)}" for lb, v in values[name]]
    name, doc = _PENDING
    lines += [f"# HELP {name} {doc}", f"# TYPE {name} gauge", f"{name}{format_labels(labels)} {format_value(pending)}"]
    return "\n".join(lines) + "\n"


class HistogramCollector:
    """Latency and batch-size histograms (kubeinfer's own, beyond Triton's families)."""

    def __init__(self, stats: ModelStats) -> None:
        self.stats = stats

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        s = self.stats
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


class MetricsRenderer:
    """The whole ``/metrics`` page for one model."""

    def __init__(
        self,
        stats: ModelStats,
        pending: Callable[[], int],
        extra: Callable[[], str] | None = None,
    ) -> None:
        self.stats = stats
        self.pending = pending
        #: more families in text format (the GPU gauges)
        self.extra = extra
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HistogramCollector(stats))

    def render(self) -> bytes:
        text = render_triton(self.stats, self.pending())
        if self.extra is not None:
            text += self.extra()
        return text.encode() + generate_latest(self.registry)
