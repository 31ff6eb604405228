"""The autoscaler of a model: a KEDA ScaledObject or an autoscaling/v2 HPA (pure).

Both scale the model's **Deployment** (not the InferenceModel's scale subresource): the
autoscaler's output then never lands in the user's spec, so it does not bump the
resource's generation, trigger a reconcile per scaling step, or fight GitOps tools that
keep ``spec.replicas`` as committed. The operator leaves the Deployment's ``replicas`` out
of what it applies while autoscaling is set (see :mod:`.deployment`).

The metric is Triton's ``nv_inference_pending_request_count`` gauge (requests queued or
executing in a runtime), per replica:

- KEDA: a Prometheus trigger with ``metricType: AverageValue`` on the *sum* over the
  model's pods (:func:`pending_query`); the HPA KEDA creates divides it by the replicas.
  ``ignoreNullValues: "false"`` makes "no series" a read failure, so the ``fallback``
  applies instead of reading a missing metric as zero load.
- HPA: the Pods custom metric of the same name (prometheus-adapter's rule in the chart
  exposes the gauge per pod, labels ``namespace``/``pod``), target ``AverageValue``.

Both carry the spec's ``behavior`` (stabilization windows, policies) and optionally CPU
utilization as a second metric.
"""

from __future__ import annotations

from typing import Any

from kubeinfer.operator.api.autoscaling import Autoscaling, ScalingRules
from kubeinfer.operator.render.common import RenderOptions, Target, metadata

PENDING_METRIC = "nv_inference_pending_request_count"
KEDA_API_VERSION = "keda.sh/v1alpha1"
KEDA_TRIGGER_NAME = "pending-requests"


def keda_hpa_name(t: Target) -> str:
    """The HPA KEDA creates for the ScaledObject (KEDA's default name)."""
    return f"keda-hpa-{t.name}"


def hpa_name(t: Target) -> str | None:
    """The HPA that scales ``t`` (ours or KEDA's), None without autoscaling."""
    a = t.spec.autoscaling
    if a is None:
        return None
    return keda_hpa_name(t) if a.autoscaler == "keda" else t.name


def pending_query(t: Target) -> str:
    """PromQL: pending requests summed over the model's pods. Pods are matched by the
    Deployment's pod names (``<name>-<replicaset hash>-<suffix>``: exactly two more
    segments, so model ``m`` never matches the pods of ``m-large``) and the served name."""
    return (
        f'sum({PENDING_METRIC}{{namespace="{t.namespace}",pod=~"{t.name}-[a-z0-9]+-[a-z0-9]+",'
        f'model="{t.model_name}"}})'
    )


def _rules(r: ScalingRules) -> dict[str, Any]:
    return {
        "stabilizationWindowSeconds": r.stabilization_window_seconds,
        "selectPolicy": r.select_policy,
        "policies": [{"type": p.type, "value": p.value, "periodSeconds": p.period_seconds} for p in r.policies],
    }


def behavior(a: Autoscaling) -> dict[str, Any]:
    """autoscaling/v2 HorizontalPodAutoscalerBehavior from the spec (defaults written out)."""
    return {"scaleUp": _rules(a.behavior.scale_up), "scaleDown": _rules(a.behavior.scale_down)}


def _cpu_metric(a: Autoscaling) -> dict[str, Any]:
    return {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization}},
    }


def horizontal_pod_autoscaler(t: Target) -> dict[str, Any] | None:
    """The HPA of the ``hpa`` autoscaler (None otherwise)."""
    a = t.spec.autoscaling
    if a is None or a.autoscaler != "hpa":
        return None
    metrics: list[dict[str, Any]] = [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": PENDING_METRIC, "selector": {"matchLabels": {"model": t.model_name}}},
                "target": {"type": "AverageValue", "averageValue": str(a.target_pending_requests)},
            },
        }
    ]
    if a.target_cpu_utilization is not None:
        metrics.append(_cpu_metric(a))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(t),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": t.name},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": metrics,
            "behavior": behavior(a),
        },
    }


def scaled_object(t: Target, options: RenderOptions) -> dict[str, Any] | None:
    """The KEDA ScaledObject of the ``keda`` autoscaler (None otherwise)."""
    a = t.spec.autoscaling
    if a is None or a.autoscaler != "keda":
        return None
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "name": KEDA_TRIGGER_NAME,
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": a.prometheus_address or options.prometheus_address,
                "query": pending_query(t),
                "threshold": str(a.target_pending_requests),
                "activationThreshold": str(a.activation_pending_requests),
                "ignoreNullValues": "false",
            },
        }
    ]
    if a.target_cpu_utilization is not None:
        triggers.append({"type": "cpu", "metricType": "Utilization",
                         "metadata": {"value": str(a.target_cpu_utilization)}})
    fallback = a.fallback
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": metadata(t),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": t.name},
            "minReplicaCount": a.min_replicas,
            "maxReplicaCount": a.max_replicas,
            "pollingInterval": a.polling_interval_seconds,
            "fallback": {
                "failureThreshold": fallback.failure_threshold,
                "replicas": fallback.replicas if fallback.replicas is not None else a.min_replicas,
                "behavior": fallback.behavior,
            },
            "advanced": {
                "horizontalPodAutoscalerConfig": {"name": keda_hpa_name(t), "behavior": behavior(a)},
            },
            "triggers": triggers,
        },
    }
