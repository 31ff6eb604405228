"""Status of an InferenceModel, computed from its Deployment (pure; time is passed in).

Conditions follow metav1.Condition: ``Ready`` (the model answers requests: the Deployment
is Available with at least one ready pod), ``Progressing`` (a rollout is under way),
``Degraded`` (the rollout is stuck or pods cannot be created, or the spec is invalid).
``lastTransitionTime`` only moves when a condition's status changes.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError

from kubeinfer.operator.api.v1alpha1 import Condition, InferenceEnsembleStatus, InferenceModelStatus
from kubeinfer.operator.render import RenderOptions, Target, url
from kubeinfer.operator.render.common import selector_string

Conditions = list[dict[str, Any]]
AnyStatus = TypeVar("AnyStatus", InferenceModelStatus, InferenceEnsembleStatus)


def condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message}


def merge_conditions(new: Conditions, old: Conditions, generation: int | None, now: str) -> Conditions:
    previous = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        prior = previous.get(c["type"])
        same = prior is not None and prior.get("status") == c["status"] and prior.get("lastTransitionTime")
        out.append({**c, "lastTransitionTime": prior["lastTransitionTime"] if same else now,
                    "observedGeneration": generation})
    return out


def deployment_conditions(deployment: dict[str, Any] | None) -> Conditions:
    if deployment is None:
        return [
            condition("Ready", False, "Pending", "waiting for the Deployment to be created"),
            condition("Progressing", True, "Creating", "creating the Deployment"),
            condition("Degraded", False, "AsExpected", ""),
        ]
    spec, st = deployment.get("spec") or {}, deployment.get("status") or {}
    want = spec.get("replicas", 1)
    updated, ready = st.get("updatedReplicas", 0), st.get("readyReplicas", 0)
    available, total = st.get("availableReplicas", 0), st.get("replicas", 0)
    dconds = {c.get("type"): c for c in st.get("conditions") or []}
    progressing = dconds.get("Progressing", {})
    failure = dconds.get("ReplicaFailure", {})
    deadline = progressing.get("reason") == "ProgressDeadlineExceeded"
    observed = st.get("observedGeneration", 0) >= (deployment.get("metadata") or {}).get("generation", 0)
    rolling = not observed or updated < want or total > updated or available < updated

    if deadline:
        prog = condition("Progressing", False, "ProgressDeadlineExceeded", progressing.get("message", ""))
    elif rolling:
        prog = condition("Progressing", True, "RollingOut", f"{updated} of {want} replicas updated, {available} available")
    else:
        prog = condition("Progressing", False, "RolloutComplete", f"{want} replicas up to date")

    if deadline:
        degraded = condition("Degraded", True, "ProgressDeadlineExceeded", progressing.get("message", ""))
    elif failure.get("status") == "True":
        degraded = condition("Degraded", True, "ReplicaFailure", failure.get("message", ""))
    else:
        degraded = condition("Degraded", False, "AsExpected", "")

    available_cond = dconds.get("Available", {}).get("status") == "True"
    if want == 0:
        ready_c = condition("Ready", False, "ScaledToZero", "replicas is 0")
    elif available_cond and ready >= 1:
        ready_c = condition("Ready", True, "Available", f"{ready}/{want} replicas ready")
    else:
        ready_c = condition("Ready", False, "ReplicasNotReady", f"{ready}/{want} replicas ready")
    return [ready_c, prog, degraded]


def status_for(
    t: Target,
    options: RenderOptions,
    deployment: dict[str, Any] | None,
    generation: int | None,
    old: dict[str, Any] | None,
    now: str,
    autoscaler: dict[str, Any] | None = None,
    autoscaler_conditions: Conditions = (),
) -> dict[str, Any]:
    """``autoscaler``/``autoscaler_conditions``: from :func:`.autoscaler.autoscaler_status`
    (``status.autoscaler`` is cleared, None, without autoscaling)."""
    st = (deployment or {}).get("status") or {}
    return {
        "observedGeneration": generation,
        "replicas": st.get("replicas", 0),
        "readyReplicas": st.get("readyReplicas", 0),
        "updatedReplicas": st.get("updatedReplicas", 0),
        "selector": selector_string(t),
        "url": url(t, options),
        "modelName": t.model_name,
        "autoscaler": autoscaler,
        "conditions": merge_conditions(
            deployment_conditions(deployment) + list(autoscaler_conditions),
            (old or {}).get("conditions") or [], generation, now,
        ),
    }


def failed_status(
    reason: str, message: str, generation: int | None, old: dict[str, Any] | None, now: str
) -> dict[str, Any]:
    """Status for a spec that cannot be reconciled (InvalidSpec, ApplyRejected)."""
    new = [
        condition("Ready", False, reason, message),
        condition("Progressing", False, reason, "fix the spec; nothing is retried until it changes"),
        condition("Degraded", True, reason, message),
    ]
    return {
        "observedGeneration": generation,
        "conditions": merge_conditions(new, (old or {}).get("conditions") or [], generation, now),
    }


def parse_status(body: dict[str, Any] | None, model: type[AnyStatus] = InferenceModelStatus) -> AnyStatus:  # type: ignore[assignment]
    """``body.status`` as the typed status model, parsed once; a status this operator did
    not write (or an older, unreadable one) counts as empty."""
    try:
        return model.model_validate((body or {}).get("status") or {})
    except ValidationError:
        return model()


def ready_condition(status: InferenceModelStatus | InferenceEnsembleStatus) -> Condition | None:
    return next((c for c in status.conditions if c.type == "Ready"), None)
