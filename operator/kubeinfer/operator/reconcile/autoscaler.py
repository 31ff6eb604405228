"""The autoscaler's part of an InferenceModel's status (pure; the objects are passed in).

Read from the HPA that scales the Deployment (ours for ``hpa``, ``keda-hpa-<name>`` that
KEDA creates for ``keda``) and, for KEDA, the ScaledObject:

- ``status.autoscaler``: current/desired replicas, the pending-request metric as the HPA
  last read it (average per replica), the last scale time;
- condition ``AutoscalerMetricMissing``: True when the HPA says it cannot read a metric
  (``ScalingActive=False`` with a ``FailedGet...Metric`` reason, its message passed on), or
  when KEDA reports its fallback active (ScaledObject condition ``Fallback=True``).
  False otherwise; absent without autoscaling.
"""

from __future__ import annotations

from typing import Any

from kubeinfer.operator.reconcile.status import condition
from kubeinfer.operator.render import Target
from kubeinfer.operator.render.autoscaling import PENDING_METRIC, hpa_name, pending_query

METRIC_MISSING = "AutoscalerMetricMissing"
HANDOVER_MANAGER = "kubeinfer-replicas-handover"


def replicas_handover(t: Target, deployment: dict[str, Any] | None, manager: str) -> dict[str, Any] | None:
    """The apply that hands the Deployment's ``replicas`` over before the operator stops
    applying them, or None when there is nothing to hand over.

    Server-side apply removes a field its last manager stops applying: a Deployment that
    ran 5 replicas would fall back to 1 the moment autoscaling is turned on, until the HPA's
    next sync. Applying the current value as another field manager first (Kubernetes'
    documented hand-over to an HPA) keeps the field, and the value, for the autoscaler."""
    if t.spec.autoscaling is None or deployment is None:
        return None
    replicas = (deployment.get("spec") or {}).get("replicas")
    for entry in (deployment.get("metadata") or {}).get("managedFields") or []:
        owned = ((entry.get("fieldsV1") or {}).get("f:spec") or {})
        if entry.get("manager") == manager and entry.get("operation") == "Apply" and "f:replicas" in owned:
            if replicas is None:
                return None
            return {"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": t.name, "namespace": t.namespace}, "spec": {"replicas": replicas}}
    return None


def _conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def _pending_value(t: Target, hpa: dict[str, Any]) -> str | None:
    """The pending-request metric's current value from the HPA's currentMetrics."""
    for m in (hpa.get("status") or {}).get("currentMetrics") or []:
        if m.get("type") == "Pods" and (m.get("pods") or {}).get("metric", {}).get("name") == PENDING_METRIC:
            return (m["pods"].get("current") or {}).get("averageValue")
        if m.get("type") == "External":
            # KEDA names its external metrics s<index>-<trigger type>-...; ours is the
            # prometheus trigger, the first one
            name = (m.get("external") or {}).get("metric", {}).get("name", "")
            if name.startswith("s0-prometheus"):
                current = m["external"].get("current") or {}
                return current.get("averageValue") or current.get("value")
    return None


def autoscaler_status(
    t: Target, hpa: dict[str, Any] | None, scaled_object: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``(status.autoscaler, [AutoscalerMetricMissing])``; ``(None, [])`` without autoscaling."""
    a = t.spec.autoscaling
    name = hpa_name(t)
    if a is None or name is None:
        return None, []
    st = (hpa or {}).get("status") or {}
    out: dict[str, Any] = {
        "kind": a.autoscaler,
        "hpaName": name,
        "currentReplicas": st.get("currentReplicas"),
        "desiredReplicas": st.get("desiredReplicas"),
        "currentPendingRequests": _pending_value(t, hpa) if hpa else None,
        "lastScaleTime": st.get("lastScaleTime"),
    }
    if a.autoscaler == "keda":
        out["query"] = pending_query(t)

    hpa_conds = _conditions(hpa)
    active = hpa_conds.get("ScalingActive", {})
    fallback = _conditions(scaled_object).get("Fallback", {})
    if hpa is None:
        missing = condition(METRIC_MISSING, False, "NoAutoscaler",
                            f"HorizontalPodAutoscaler {name} not found (yet)")
    elif active.get("status") == "False" and str(active.get("reason", "")).startswith("FailedGet"):
        missing = condition(METRIC_MISSING, True, active["reason"], active.get("message", ""))
    elif fallback.get("status") == "True":
        missing = condition(METRIC_MISSING, True, "KedaFallback", fallback.get("message", ""))
    else:
        missing = condition(METRIC_MISSING, False, "MetricAvailable", "")
    return out, [missing]
