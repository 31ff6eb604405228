"""What an InferenceEnsemble owns: the router's definition (a ConfigMap), its Deployment
(``kubeinfer route``), Service and PodDisruptionBudget.

The definition is the router's own YAML form (``docs/router.md``), with every step's
``endpoint`` already resolved (the reconciler turns each ``modelRef`` into the model's
Service URL and served name). It is checked here with the router's own parser and graph
builder (:mod:`kubeinfer.spec.ensemble`), so a pipeline the router would refuse (unknown tensor, cycle, tensor produced
twice, ...) is an invalid spec before any pod starts. The Deployment has the model
Deployment's hardening, ports and probes; only the startup probe differs: a router is live
at once and stays not-ready until its step models are, which may take long.
"""

from __future__ import annotations

from typing import Any

import yaml

from kubeinfer.operator.render.common import (
    CONFIG_HASH_ANNOTATION,
    HTTP_PORT,
    GRPC_PORT,
    METRICS_PORT,
    EnsembleTarget,
    InvalidSpec,
    RenderOptions,
    labels,
    metadata,
    selector_labels,
)
from kubeinfer.operator.render.config import config_hash
from kubeinfer.operator.render.deployment import (
    PROBE_PERIOD,
    container_env,
    container_ports,
    container_security,
    pod_security,
    probe,
    scrape_annotations,
)
from kubeinfer.operator.render.network import pod_disruption_budget, service
from kubeinfer.spec.ensemble import EnsembleDef, build_graph
from kubeinfer.spec.errors import EnsembleError

DEFINITION_DIR = "/etc/kubeinfer/ensemble"
DEFINITION_FILE = "ensemble.yaml"
DEFAULT_REQUESTS = {"cpu": "100m", "memory": "128Mi"}


def definition_config_map_name(t: EnsembleTarget) -> str:
    return f"{t.name}-ensemble"


def definition(t: EnsembleTarget) -> dict[str, Any]:
    """The router's ensemble definition (docs/router.md), endpoints resolved."""
    s = t.spec
    steps = []
    for step, resolved in zip(s.steps, t.steps, strict=True):
        out: dict[str, Any] = {"name": step.name, "model_name": resolved.model_name}
        if step.model_version:
            out["model_version"] = step.model_version
        out["endpoint"] = resolved.url
        out["input_map"] = dict(step.input_map)
        out["output_map"] = dict(step.output_map)
        steps.append(out)
    d: dict[str, Any] = {
        "name": t.model_name,
        "max_batch_size": s.max_batch_size,
        "inputs": [{"name": x.name, "datatype": x.datatype, "dims": list(x.dims)} for x in s.inputs],
        "outputs": [{"name": x.name, "datatype": x.datatype, "dims": list(x.dims)} for x in s.outputs],
        "steps": steps,
    }
    if s.router.max_inflight:
        d["max_inflight"] = s.router.max_inflight
    return d


def definition_text(t: EnsembleTarget) -> str:
    """The definition as YAML, checked by the router's parser; raises :class:`InvalidSpec`."""
    d = definition(t)
    try:
        build_graph(EnsembleDef.model_validate(d))
    except EnsembleError as exc:
        raise InvalidSpec(str(exc)) from None
    except ValueError as exc:  # pydantic's ValidationError
        raise InvalidSpec(f"invalid ensemble definition: {exc}") from None
    return yaml.safe_dump(d, sort_keys=False)


def definition_config_map(t: EnsembleTarget, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(t, definition_config_map_name(t)),
        "data": {DEFINITION_FILE: text},
    }


def route_command() -> list[str]:
    return [
        "kubeinfer", "route", f"{DEFINITION_DIR}/{DEFINITION_FILE}",
        "--http-port", str(HTTP_PORT), "--grpc-port", str(GRPC_PORT), "--metrics-port", str(METRICS_PORT),
    ]


def router_container(t: EnsembleTarget, options: RenderOptions) -> dict[str, Any]:
    r = t.spec.router
    res: dict[str, Any] = {"requests": dict(r.resources.requests) or dict(DEFAULT_REQUESTS)}
    if r.resources.limits:
        res["limits"] = dict(r.resources.limits)
    return {
        "name": "router",
        "image": r.image or options.runtime_image,
        "imagePullPolicy": r.image_pull_policy or options.image_pull_policy,
        "command": route_command(),
        "env": container_env(r),
        "ports": container_ports(),
        # live at once; ready only once every step model is ready and type-checked
        "startupProbe": probe("/v2/health/live", PROBE_PERIOD, 12),
        "readinessProbe": probe("/v2/health/ready", PROBE_PERIOD, 2),
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "resources": res,
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "ensemble", "mountPath": DEFINITION_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def router_deployment(t: EnsembleTarget, options: RenderOptions, text: str) -> dict[str, Any]:
    r = t.spec.router
    pod: dict[str, Any] = {
        "securityContext": pod_security(),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": r.shutdown_delay_seconds + r.drain_seconds,
        "containers": [router_container(t, options)],
        "volumes": [
            {"name": "ensemble", "configMap": {"name": definition_config_map_name(t)}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if r.node_selector:
        pod["nodeSelector"] = dict(r.node_selector)
    if r.tolerations:
        pod["tolerations"] = [tol.model_dump(by_alias=True, exclude_none=True) for tol in r.tolerations]
    if r.affinity:
        pod["affinity"] = r.affinity
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(t),
        "spec": {
            "replicas": r.replicas,
            "selector": {"matchLabels": selector_labels(t)},
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 600,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": t.spec.rollout.max_surge,
                                  "maxUnavailable": t.spec.rollout.max_unavailable},
            },
            "template": {
                "metadata": {
                    "labels": labels(t),
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash(text), **scrape_annotations()},
                },
                "spec": pod,
            },
        },
    }


def render_ensemble(t: EnsembleTarget, options: RenderOptions) -> list[dict[str, Any]]:
    """Everything an InferenceEnsemble owns, in apply order. Raises :class:`InvalidSpec`."""
    text = definition_text(t)
    return [
        definition_config_map(t, text),
        router_deployment(t, options, text),
        service(t),
        pod_disruption_budget(t),
    ]
