"""``spec.autoscaling`` of an InferenceModel: which autoscaler, on what, how fast.

Both autoscalers scale the model's Deployment on the runtime's pending-request gauge
(``nv_inference_pending_request_count``, per replica), optionally also on CPU:

- ``keda`` (the default): a KEDA ScaledObject with a Prometheus trigger; KEDA creates and
  feeds the HPA (``keda-hpa-<name>``) through its external metrics API server;
- ``hpa``: an autoscaling/v2 HPA on the Pods custom metric, served by prometheus-adapter
  with the rules the chart ships.

The scale-up / scale-down behaviour is the HPA's ``behavior`` in both cases (KEDA passes it
through ``advanced.horizontalPodAutoscalerConfig``). Rendered by
:mod:`kubeinfer.operator.render.autoscaling`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubeinfer.operator.api.base import ApiModel


class ScalingPolicy(ApiModel):
    """At most ``value`` pods (type Pods) or percent of the current replicas (type Percent)
    may be added or removed within ``periodSeconds`` (autoscaling/v2 HPAScalingPolicy)."""

    type: Literal["Pods", "Percent"]
    """Pods: ``value`` is a number of pods; Percent: a percentage of the current replicas."""
    value: int = Field(ge=1)
    """How many pods (or percent) may change within ``periodSeconds``."""
    period_seconds: int = Field(ge=1, le=1800)
    """The window the policy holds over, in seconds (1-1800)."""


class ScalingRules(ApiModel):
    """One direction of the HPA's behavior (autoscaling/v2 HPAScalingRules)."""

    stabilization_window_seconds: int = Field(ge=0, le=3600)
    """The autoscaler acts on the highest (scale-down) or lowest (scale-up) recommendation of
    this many past seconds, so that a short dip or spike does not move replicas."""
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"
    """Which policy wins when several allow different changes; Disabled: never scale this way."""
    policies: list[ScalingPolicy] = Field(min_length=1, max_length=8)
    """How fast replicas may change (autoscaling/v2 HPAScalingPolicy): at most this many pods
    or percent per period."""


def _scale_up_default() -> ScalingRules:
    # the Kubernetes HPA's own default: react at once, double or add 4 pods per 15 s
    return ScalingRules(
        stabilization_window_seconds=0,
        policies=[ScalingPolicy(type="Percent", value=100, period_seconds=15),
                  ScalingPolicy(type="Pods", value=4, period_seconds=15)],
    )


def _scale_down_default() -> ScalingRules:
    # the Kubernetes HPA's own default: wait 5 minutes of lower load, then drop at once;
    # a model pod is expensive to bring back (fetch, load, warm-up)
    return ScalingRules(
        stabilization_window_seconds=300,
        policies=[ScalingPolicy(type="Percent", value=100, period_seconds=15)],
    )


class ScalingBehavior(ApiModel):
    """How fast replicas follow the metric (autoscaling/v2 HorizontalPodAutoscalerBehavior).
    Defaults: the Kubernetes HPA's defaults, written out."""

    scale_up: ScalingRules = Field(default_factory=_scale_up_default)
    """Default: no stabilization; per 15 s at most +100 % or +4 pods, whichever is more."""
    scale_down: ScalingRules = Field(default_factory=_scale_down_default)
    """Default: 300 s stabilization; then down to the recommendation at once."""


class Fallback(ApiModel):
    """KEDA only: what happens when the metric cannot be read (Prometheus unreachable, or
    the query finds no series: the runtimes are not scraped)."""

    failure_threshold: int = Field(default=3, ge=1, le=100)
    """Consecutive failed reads (one per KEDA polling interval) before the fallback applies."""
    replicas: int | None = Field(default=None, ge=1)
    """Replicas to run while the metric is missing (default: minReplicas)."""
    behavior: Literal["static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower"] = (
        "currentReplicasIfHigher"
    )
    """KEDA's fallback behavior. The default keeps the current replicas and only rises to
    ``replicas`` when below it: a broken metrics pipeline never scales a busy model down."""


class Autoscaling(ApiModel):
    """Horizontal autoscaling on the runtime's pending-request gauge (and optionally CPU).
    While set, the autoscaler owns the Deployment's replicas: the operator never writes
    them and ``spec.replicas`` cannot be changed (``kubectl scale`` is refused)."""

    autoscaler: Literal["keda", "hpa"] = "keda"
    """keda: a KEDA ScaledObject with a Prometheus trigger (needs KEDA and Prometheus).
    hpa: an autoscaling/v2 HPA on the Pods custom metric (needs prometheus-adapter with the
    chart's rules)."""
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(ge=1)
    target_pending_requests: int = Field(default=8, ge=1)
    """Average nv_inference_pending_request_count per replica the autoscaler aims for:
    desired replicas = ceil(sum of pending requests over the model's pods / this)."""
    activation_pending_requests: int = Field(default=0, ge=0)
    """KEDA only: the ScaledObject is active (scales by the metric) only while the summed
    pending requests exceed this (KEDA's activationThreshold)."""
    target_cpu_utilization: int | None = Field(default=None, ge=1, le=100)
    """Also scale on average CPU utilization (percent of the CPU request) when set; the
    runtime then needs a CPU request."""
    prometheus_address: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^/\s]+(/\S*)?$")
    """KEDA only: Prometheus base URL the trigger queries (default: the operator's
    KUBEINFER_OPERATOR_PROMETHEUS_ADDRESS)."""
    polling_interval_seconds: int = Field(default=15, ge=1, le=3600)
    """KEDA only: how often KEDA reads the metric for activation and the fallback count."""
    fallback: Fallback = Field(default_factory=Fallback)
    behavior: ScalingBehavior = Field(default_factory=ScalingBehavior)

