"""What every render function shares: the target resource, options, names and labels.

Pure: no kopf, no API client. Input is a parsed :class:`Target`; output is plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeinfer.operator import __version__
from kubeinfer.operator.api.v1alpha1 import API_VERSION, KIND, InferenceModelSpec

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
MODEL_ROOT = "/models"
PVC_ROOT = "/mnt/pvc"
CONFIG_DIR = "/etc/kubeinfer/model-config"
RUNTIME_UID = 1000
MANAGED_BY = "kubeinfer-operator"
SELECTOR_LABEL = "kubeinfer.dev/inferencemodel"
CONFIG_HASH_ANNOTATION = "kubeinfer.dev/config-hash"


class InvalidSpec(ValueError):
    """The spec passed the CRD schema but cannot be rendered; the message says why."""


@dataclass(frozen=True)
class RenderOptions:
    """Operator-wide defaults the render functions need (derived from the settings)."""

    runtime_image: str = f"ghcr.io/kubeinfer/runtime:{__version__}"
    image_pull_policy: str = "IfNotPresent"
    cluster_domain: str = "cluster.local"


@dataclass(frozen=True)
class Target:
    """One InferenceModel to render: identity from its metadata, the parsed spec."""

    name: str
    namespace: str
    uid: str
    spec: InferenceModelSpec

    @property
    def model_name(self) -> str:
        return self.spec.model.name or self.name


def selector_labels(t: Target) -> dict[str, str]:
    return {SELECTOR_LABEL: t.name}


def labels(t: Target) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "kubeinfer-runtime",
        "app.kubernetes.io/instance": t.name,
        "app.kubernetes.io/component": "model",
        "app.kubernetes.io/part-of": "kubeinfer",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(t),
    }


def owner_reference(t: Target) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": t.name,
        "uid": t.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(t: Target, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or t.name,
        "namespace": t.namespace,
        "labels": {**labels(t), "app.kubernetes.io/version": __version__},
        "ownerReferences": [owner_reference(t)],
    }


def config_map_name(t: Target) -> str:
    return f"{t.name}-model-config"


def url(t: Target, options: RenderOptions) -> str:
    return f"http://{t.name}.{t.namespace}.svc.{options.cluster_domain}:{HTTP_PORT}"


def selector_string(t: Target) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(t).items())
