"""The autoscaling/v2 HPA: pending requests per pod (Triton's gauge), optionally CPU.

``nv_inference_pending_request_count`` reaches the HPA as a Pods metric through a
custom-metrics adapter (the chart ships prometheus-adapter rules for it). The HPA scales
the Deployment; the operator then leaves the Deployment's ``replicas`` to it.
"""

from __future__ import annotations

from typing import Any

from kubeinfer.operator.render.common import Target, metadata

PENDING_METRIC = "nv_inference_pending_request_count"


def horizontal_pod_autoscaler(t: Target) -> dict[str, Any] | None:
    a = t.spec.autoscaling
    if a is None:
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
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization},
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(t),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": t.name},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": metrics,
        },
    }
