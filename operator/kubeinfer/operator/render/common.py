"""What every render function shares: the target resource, options, names and labels.

Pure: no kopf, no API client. Input is a parsed :class:`Target`; output is plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeinfer.operator import __version__
from kubeinfer.operator.api.v1alpha1 import (
    API_VERSION,
    ENSEMBLE_KIND,
    KIND,
    InferenceEnsembleSpec,
    InferenceModelSpec,
)

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
MODEL_ROOT = "/models"
PVC_ROOT = "/mnt/pvc"
CONFIG_DIR = "/etc/kubeinfer/model-config"
RUNTIME_UID = 1000
MANAGED_BY = "kubeinfer-operator"
SELECTOR_LABEL = "kubeinfer.dev/inferencemodel"
ENSEMBLE_SELECTOR_LABEL = "kubeinfer.dev/inferenceensemble"
CONFIG_HASH_ANNOTATION = "kubeinfer.dev/config-hash"


class InvalidSpec(ValueError):
    """The spec passed the CRD schema but cannot be rendered; the message says why."""


@dataclass(frozen=True)
class RenderOptions:
    """Operator-wide defaults the render functions need (derived from the settings)."""

    runtime_image: str = f"ghcr.io/kubeinfer/runtime:{__version__}"
    image_pull_policy: str = "IfNotPresent"
    cluster_domain: str = "cluster.local"
    prometheus_address: str = "http://prometheus-operated.monitoring.svc:9090"
    """Prometheus that KEDA triggers query when a model names none."""
    service_monitors: bool = True
    """The operator may create ServiceMonitors (the chart's monitoring.perModelServiceMonitors)."""
    keda: bool = True
    """The operator may create KEDA ScaledObjects (the chart's autoscaling.keda)."""


@dataclass(frozen=True)
class Target:
    """One InferenceModel to render: identity from its metadata, the parsed spec."""

    name: str
    namespace: str
    uid: str
    spec: InferenceModelSpec

    kind = KIND
    component = "model"
    selector_label = SELECTOR_LABEL

    @property
    def model_name(self) -> str:
        return self.spec.model.name or self.name


@dataclass(frozen=True)
class ResolvedStep:
    """Where one ensemble step's model is served (the reconciler resolves modelRefs)."""

    name: str
    model_name: str
    url: str


@dataclass(frozen=True)
class EnsembleTarget:
    """One InferenceEnsemble to render, its steps resolved to endpoints (same order)."""

    name: str
    namespace: str
    uid: str
    spec: InferenceEnsembleSpec
    steps: tuple[ResolvedStep, ...]

    kind = ENSEMBLE_KIND
    component = "router"
    selector_label = ENSEMBLE_SELECTOR_LABEL

    @property
    def model_name(self) -> str:
        return self.spec.model_name or self.name


Owner = Target | EnsembleTarget


def selector_labels(t: Owner) -> dict[str, str]:
    return {t.selector_label: t.name}


def labels(t: Owner) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "kubeinfer-runtime",
        "app.kubernetes.io/instance": t.name,
        "app.kubernetes.io/component": t.component,
        "app.kubernetes.io/part-of": "kubeinfer",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(t),
    }


def owner_reference(t: Owner) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": t.kind,
        "name": t.name,
        "uid": t.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(t: Owner, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or t.name,
        "namespace": t.namespace,
        "labels": {**labels(t), "app.kubernetes.io/version": __version__},
        "ownerReferences": [owner_reference(t)],
    }


def config_map_name(t: Target) -> str:
    return f"{t.name}-model-config"


def service_url(name: str, namespace: str, options: RenderOptions) -> str:
    """In-cluster HTTP URL of the Service an InferenceModel (or InferenceEnsemble) owns."""
    return f"http://{name}.{namespace}.svc.{options.cluster_domain}:{HTTP_PORT}"


def url(t: Owner, options: RenderOptions) -> str:
    return service_url(t.name, t.namespace, options)


def selector_string(t: Owner) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(t).items())
