"""The Service in front of the runtime (or router) pods and the PodDisruptionBudget guarding them."""

from __future__ import annotations

from typing import Any

from kubeinfer.operator.render.common import GRPC_PORT, HTTP_PORT, METRICS_PORT, Owner, metadata, selector_labels


def service(t: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(t),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(t),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def pod_disruption_budget(t: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(t),
        "spec": {
            "maxUnavailable": t.spec.rollout.pdb_max_unavailable,
            "selector": {"matchLabels": selector_labels(t)},
        },
    }
