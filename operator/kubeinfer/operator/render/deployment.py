"""The Deployment: an init container fetches the model, the runtime container serves it.

``kubeinfer fetch <uri> /models/<model>`` fills an emptyDir shared with the runtime, which
runs ``kubeinfer serve /models --model <model>``. Both run non-root with a read-only root
filesystem; /tmp is an emptyDir. Probes use the v2 health endpoints: a generous startup
probe on readiness (loading and warm-up can take minutes), then readiness on
``/v2/health/ready`` and liveness on ``/v2/health/live``.
"""

from __future__ import annotations

from typing import Any

from kubeinfer.operator.api.v1alpha1 import GPU_RESOURCE
from kubeinfer.operator.render.common import (
    CONFIG_DIR,
    CONFIG_HASH_ANNOTATION,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    MODEL_ROOT,
    PVC_ROOT,
    RUNTIME_UID,
    RenderOptions,
    Target,
    config_map_name,
    labels,
    metadata,
    selector_labels,
)
from kubeinfer.operator.render.config import CONFIG_FILE, config_hash
from kubeinfer.operator.render.workers import WORKERS_ENV, serving_processes

PROBE_PERIOD = 5


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "fsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def pvc_claim(uri: str) -> str | None:
    if not uri.startswith("pvc://"):
        return None
    return uri.removeprefix("pvc://").split("/", 1)[0]


def fetch_command(t: Target, with_config: bool) -> list[str]:
    source = t.spec.model
    cmd = ["kubeinfer", "fetch", source.uri, f"{MODEL_ROOT}/{t.model_name}"]
    cmd += ["--file-version", str(source.version or 1)]
    if pvc_claim(source.uri):
        cmd += ["--pvc-root", PVC_ROOT]
    if with_config:
        cmd += ["--config", f"{CONFIG_DIR}/{CONFIG_FILE}"]
    return cmd


def serve_command(t: Target) -> list[str]:
    cmd = ["kubeinfer", "serve", MODEL_ROOT, "--model", t.model_name]
    if t.spec.model.version:
        cmd += ["--model-version", str(t.spec.model.version)]
    cmd += ["--http-port", str(HTTP_PORT), "--grpc-port", str(GRPC_PORT), "--metrics-port", str(METRICS_PORT)]
    return cmd


def runtime_env(t: Target) -> list[dict[str, Any]]:
    """The runtime's env; ``KUBEINFER_WORKERS`` only for more than one serving process, so
    that a one-process pod's template stays what it was before the operator chose."""
    n = serving_processes(t.spec.runtime)
    return container_env(t.spec.runtime, [{"name": WORKERS_ENV, "value": str(n)}] if n > 1 else [])


def container_env(rt: Any, extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Shutdown delay, log level, ``extra``, then the user's env (which wins); ``rt`` is a
    RuntimeSpec or a RouterSpec."""
    env: list[dict[str, Any]] = [
        {"name": "KUBEINFER_SHUTDOWN_DELAY_SECONDS", "value": str(rt.shutdown_delay_seconds)},
    ]
    if rt.log_level:
        env.append({"name": "KUBEINFER_LOG_LEVEL", "value": rt.log_level})
    env += extra or []
    ours = {e["name"] for e in env}
    for var in rt.env:
        if var.name in ours:
            env = [e for e in env if e["name"] != var.name]
        env.append(var.model_dump(by_alias=True, exclude_none=True))
    return env


def resources(t: Target) -> dict[str, Any]:
    rt = t.spec.runtime
    out: dict[str, Any] = {}
    if rt.resources.requests:
        out["requests"] = dict(rt.resources.requests)
    limits = dict(rt.resources.limits)
    if rt.gpus:
        limits[GPU_RESOURCE] = rt.gpus
    if limits:
        out["limits"] = limits
    return out


def wants_gpu(t: Target) -> bool:
    return t.spec.runtime.uses_gpus


def tolerations(t: Target) -> list[dict[str, Any]]:
    out = [tol.model_dump(by_alias=True, exclude_none=True) for tol in t.spec.runtime.tolerations]
    if wants_gpu(t) and not any(tol.get("key") == GPU_RESOURCE for tol in out):
        out.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return out


def _volumes(t: Target, config_text: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, fetch container mounts)."""
    model_dir: dict[str, Any] = {}
    if t.spec.model.storage_size is not None:
        model_dir["sizeLimit"] = t.spec.model.storage_size
    volumes: list[dict[str, Any]] = [
        {"name": "models", "emptyDir": model_dir},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [{"name": "models", "mountPath": MODEL_ROOT}, {"name": "tmp", "mountPath": "/tmp"}]
    if config_text is not None:
        volumes.append({"name": "model-config", "configMap": {"name": config_map_name(t)}})
        mounts.append({"name": "model-config", "mountPath": CONFIG_DIR, "readOnly": True})
    claim = pvc_claim(t.spec.model.uri)
    if claim:
        volumes.append({"name": "model-source", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "model-source", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True})
    return volumes, mounts


def fetch_container(t: Target, image: str, pull: str, config_text: str | None, mounts: list) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": "fetch",
        "image": image,
        "imagePullPolicy": pull,
        "command": fetch_command(t, config_text is not None),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }
    if t.spec.model.credentials_secret:
        c["envFrom"] = [{"secretRef": {"name": t.spec.model.credentials_secret}}]
    return c


def container_ports() -> list[dict[str, Any]]:
    return [
        {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
    ]


def scrape_annotations() -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT), "prometheus.io/path": "/metrics"}


def runtime_container(t: Target, image: str, pull: str) -> dict[str, Any]:
    rt = t.spec.runtime
    return {
        "name": "runtime",
        "image": image,
        "imagePullPolicy": pull,
        "command": serve_command(t),
        "env": runtime_env(t),
        "ports": container_ports(),
        "startupProbe": probe("/v2/health/ready", PROBE_PERIOD, max(1, rt.startup_timeout_seconds // PROBE_PERIOD)),
        "readinessProbe": probe("/v2/health/ready", PROBE_PERIOD, 2),
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "resources": resources(t),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODEL_ROOT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def deployment(t: Target, options: RenderOptions, config_text: str | None = None) -> dict[str, Any]:
    rt = t.spec.runtime
    image = rt.image or options.runtime_image
    pull = rt.image_pull_policy or options.image_pull_policy
    volumes, fetch_mounts = _volumes(t, config_text)
    pod: dict[str, Any] = {
        "securityContext": pod_security(),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": rt.shutdown_delay_seconds + rt.drain_seconds,
        "initContainers": [fetch_container(t, image, pull, config_text, fetch_mounts)],
        "containers": [runtime_container(t, image, pull)],
        "volumes": volumes,
    }
    if rt.service_account_name:
        pod["serviceAccountName"] = rt.service_account_name
    if rt.node_selector:
        pod["nodeSelector"] = dict(rt.node_selector)
    if tols := tolerations(t):
        pod["tolerations"] = tols
    if rt.affinity:
        pod["affinity"] = rt.affinity
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(t)},
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": rt.startup_timeout_seconds + 120,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": t.spec.rollout.max_surge, "maxUnavailable": t.spec.rollout.max_unavailable},
        },
        "template": {
            "metadata": {
                "labels": labels(t),
                "annotations": {CONFIG_HASH_ANNOTATION: config_hash(config_text), **scrape_annotations()},
            },
            "spec": pod,
        },
    }
    if t.spec.autoscaling is None:
        spec["replicas"] = t.spec.replicas  # with autoscaling the HPA owns the field
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(t), "spec": spec}
