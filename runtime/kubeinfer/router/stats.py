"""Ensemble statistics: Triton's per-model stats for the ensemble as a whole, plus one
record per step (successes, failures by kind, cumulative duration, and the wall-clock
start/end of the step's most recent call, and its health). Fed by the executor, read by
the stats endpoint and the ``/metrics`` renderer; plain counters updated on the event loop.
"""

from __future__ import annotations

import time

from kubeinfer.runtime.metrics import MetricsRenderer, format_labels, format_value
from kubeinfer.runtime.stats import Duration, ModelStats
from kubeinfer.router.health import StepHealth
from kubeinfer.spec.ensemble import Graph, Step

#: step failure kinds (the ``reason`` label of the step failure counter)
STEP_FAILURES = ("REJECTED", "UNAVAILABLE", "TIMEOUT", "CANCELLED", "FAILED")


class StepStats:
    __slots__ = ("step", "model", "version", "success", "fail", "failures", "last_start_ns", "last_end_ns")

    def __init__(self, step: Step) -> None:
        self.step = step.name
        self.model = step.model
        self.version = step.version
        self.success = Duration()
        self.fail = Duration()
        self.failures = dict.fromkeys(STEP_FAILURES, 0)
        #: wall clock (time.time_ns) of the most recent call's start and end
        self.last_start_ns = 0
        self.last_end_ns = 0

    def record(self, start_wall_ns: int, duration_ns: int, failure: str | None) -> None:
        self.last_start_ns = start_wall_ns
        self.last_end_ns = start_wall_ns + duration_ns
        if failure is None:
            self.success.add(duration_ns)
        else:
            self.fail.add(duration_ns)
            self.failures[failure] += 1

    def to_json(self) -> dict:
        return {
            "name": self.step,
            "model_name": self.model,
            "model_version": self.version,
            "success": self.success.json(),
            "fail": self.fail.json(),
            "failures": dict(self.failures),
            "last_start_ns": self.last_start_ns,
            "last_end_ns": self.last_end_ns,
        }


class EnsembleStats(ModelStats):
    """Triton's stats entry for the ensemble; ``steps`` is kubeinfer's addition."""

    def __init__(self, graph: Graph, health: StepHealth | None = None) -> None:
        super().__init__(graph.name, graph.definition.version)
        self.steps = [StepStats(s) for s in graph.steps]
        self.health = health

    def to_json(self) -> dict:
        doc = super().to_json()
        doc["steps"] = [s.to_json() for s in self.steps]
        if self.health is not None:
            for i, step in enumerate(doc["steps"]):
                step.update(self.health.to_json(i))
        return doc


def now_wall_ns() -> int:
    return time.time_ns()


_STEP_FAMILIES = (
    ("kubeinfer_ensemble_step_request_success", "counter", "Successful calls of an ensemble step's model"),
    ("kubeinfer_ensemble_step_request_failure", "counter", "Failed calls of an ensemble step's model, by reason"),
    ("kubeinfer_ensemble_step_duration_us", "counter", "Cumulative duration of an ensemble step's calls in microseconds (success and failure)"),
    ("kubeinfer_ensemble_step_ready", "gauge", "1 while an ensemble step's model answers its readiness, else 0"),
)


def render_steps(stats: EnsembleStats) -> str:
    lines: list[str] = []
    ens = stats.name
    for name, kind, doc in _STEP_FAMILIES:
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
        for i, s in enumerate(stats.steps):
            lb = {"ensemble": ens, "step": s.step, "model": s.model}
            if name.endswith("_success"):
                lines.append(f"{name}{format_labels(lb)} {format_value(s.success.count)}")
            elif name.endswith("_failure"):
                for reason, n in s.failures.items():
                    lines.append(f"{name}{format_labels({**lb, 'reason': reason})} {format_value(n)}")
            elif name.endswith("_ready"):
                ready = stats.health is None or stats.health.ready[i]
                lines.append(f"{name}{format_labels(lb)} {format_value(int(ready))}")
            else:
                lines.append(f"{name}{format_labels(lb)} {format_value((s.success.ns + s.fail.ns) // 1000)}")
    return "\n".join(lines) + "\n"


class EnsembleMetrics(MetricsRenderer):
    """The runtime's page for the ensemble (Triton's families + histograms) plus step families."""

    def __init__(self, stats: EnsembleStats, pending) -> None:
        super().__init__(stats, pending)
        self.ensemble_stats = stats

    def render(self) -> bytes:
        return super().render() + render_steps(self.ensemble_stats).encode()
