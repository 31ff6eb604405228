"""An optional Prometheus Operator ServiceMonitor for one model's metrics port."""

from __future__ import annotations

from typing import Any

from kubeinfer.operator.render.common import Target, metadata, selector_labels


def service_monitor(t: Target) -> dict[str, Any] | None:
    if not t.spec.monitoring.service_monitor:
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(t),
        "spec": {
            "selector": {"matchLabels": selector_labels(t)},
            "namespaceSelector": {"matchNames": [t.namespace]},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }
