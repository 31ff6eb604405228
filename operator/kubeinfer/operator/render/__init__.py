"""Pure render functions: a parsed InferenceModel -> the Kubernetes objects it owns.

No kopf, no API client: every function takes a :class:`Target` (and options) and returns
plain manifest dicts, checked against the Kubernetes schemas in the fast tests.
:func:`render_all` is what the reconciler applies.
"""

from __future__ import annotations

from typing import Any

from kubeinfer.operator.render.autoscaling import horizontal_pod_autoscaler, scaled_object
from kubeinfer.operator.render.common import (
    EnsembleTarget,
    InvalidSpec,
    RenderOptions,
    ResolvedStep,
    Target,
    service_url,
    url,
)
from kubeinfer.operator.render.config import config_map, config_text
from kubeinfer.operator.render.deployment import deployment
from kubeinfer.operator.render.ensemble import render_ensemble
from kubeinfer.operator.render.monitoring import service_monitor
from kubeinfer.operator.render.network import pod_disruption_budget, service

# what an InferenceEnsemble owns (always all of them)
ENSEMBLE_OWNED_KINDS = (
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
)

# every kind the operator may own, in apply order (the deletion sweep walks them too)
OWNED_KINDS = (
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
)


def render_all(t: Target, options: RenderOptions) -> list[dict[str, Any]]:
    """Everything ``t`` owns, in apply order. Raises :class:`InvalidSpec`."""
    text = config_text(t)
    if t.spec.monitoring.service_monitor and not options.service_monitors:
        raise InvalidSpec("spec.monitoring.serviceMonitor: this operator creates no ServiceMonitors (installed "
                          "with the chart value monitoring.perModelServiceMonitors=false)")
    if t.spec.autoscaling is not None and t.spec.autoscaling.autoscaler == "keda" and not options.keda:
        raise InvalidSpec("spec.autoscaling.autoscaler: keda: this operator creates no KEDA ScaledObjects "
                          "(installed with the chart value autoscaling.keda=false); use autoscaler: hpa")
    objects: list[dict[str, Any] | None] = [
        config_map(t, text) if text is not None else None,
        deployment(t, options, text),
        service(t),
        pod_disruption_budget(t),
        horizontal_pod_autoscaler(t),
        scaled_object(t, options),
        service_monitor(t),
    ]
    return [o for o in objects if o is not None]


__all__ = [
    "ENSEMBLE_OWNED_KINDS",
    "OWNED_KINDS",
    "EnsembleTarget",
    "InvalidSpec",
    "RenderOptions",
    "ResolvedStep",
    "Target",
    "render_all",
    "render_ensemble",
    "service_url",
    "url",
]
