"""One reconcile pass for one InferenceEnsemble.

parse the body (a bad spec -> ``InvalidSpec``, permanent) -> read every referenced
InferenceModel (its Service URL and served model name; whether it is Ready) -> render the
router's ConfigMap, Deployment, Service and PDB -> server-side apply them -> status.

``Ready`` is True only when every referenced InferenceModel is Ready and the router
Deployment is available. A missing model gives ``Ready=False`` with reason
``ModelNotFound``, a model that is not Ready ``ModelNotReady``; the message names the
model(s) and step(s). The router is deployed in any case (it waits for its models and
becomes ready on its own); the handlers re-run this pass whenever a referenced model
changes, so the ensemble follows its models without manual action.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kubeinfer.operator.api.v1alpha1 import API_VERSION, ENSEMBLE_KIND, KIND, InferenceEnsembleSpec
from kubeinfer.operator.k8s import ApiFailure
from kubeinfer.operator.reconcile.reconciler import (
    BaseReconciler,
    Failure,
    check_names,
    spec_problems,
    status_changed,
    write_status,
)
from kubeinfer.operator.reconcile.status import (
    condition,
    deployment_conditions,
    merge_conditions,
    parse_status,
    ready_condition,
)
from kubeinfer.operator.render import (
    EnsembleTarget,
    InvalidSpec,
    RenderOptions,
    ResolvedStep,
    render_ensemble,
    service_url,
    url,
)

log = logging.getLogger("kubeinfer.operator")


@dataclass(frozen=True)
class ModelState:
    """What the ensemble needs to know about one referenced InferenceModel."""

    name: str
    found: bool
    ready: bool
    model_name: str
    why: str = ""


def parse_ensemble(body: dict[str, Any]) -> tuple[str, str, str, InferenceEnsembleSpec]:
    meta = body.get("metadata") or {}
    try:
        spec = InferenceEnsembleSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        raise InvalidSpec(spec_problems(exc)) from None
    return meta["name"], meta["namespace"], meta["uid"], spec


def referenced_models(body: dict[str, Any]) -> set[str]:
    """Names of the InferenceModels an ensemble body refers to (no parsing; never raises)."""
    steps = (body.get("spec") or {}).get("steps") or []
    return {s["modelRef"] for s in steps if isinstance(s, dict) and s.get("modelRef")}


def model_state(name: str, im: dict[str, Any] | None) -> ModelState:
    if im is None or (im.get("metadata") or {}).get("deletionTimestamp"):
        return ModelState(name, found=False, ready=False, model_name=name)
    status = parse_status(im)
    served = status.model_name or ((im.get("spec") or {}).get("model") or {}).get("name") or name
    ready = ready_condition(status)
    ok = ready is not None and ready.status == "True"
    why = ": ".join(x for x in (ready.reason, ready.message) if x) if ready else "no status yet"
    return ModelState(name, found=True, ready=ok, model_name=served, why=why)


def models_condition(spec: InferenceEnsembleSpec, states: dict[str, ModelState], namespace: str) -> dict[str, Any] | None:
    """The Ready=False condition the models impose, or None when all are Ready."""
    missing = [(s.name, s.model_ref) for s in spec.steps if s.model_ref and not states[s.model_ref].found]
    if missing:
        names = ", ".join(f"'{m}' (step '{step}')" for step, m in missing)
        noun = "InferenceModel" if len(missing) == 1 else "InferenceModels"
        return condition("Ready", False, "ModelNotFound", f"{noun} {names} not found in namespace '{namespace}'")
    waiting = [(s.name, states[s.model_ref]) for s in spec.steps if s.model_ref and not states[s.model_ref].ready]
    if waiting:
        parts = "; ".join(f"InferenceModel '{st.name}' (step '{step}') is not Ready ({st.why})" for step, st in waiting)
        return condition("Ready", False, "ModelNotReady", parts)
    return None


class EnsembleReconciler(BaseReconciler):
    kind = ENSEMBLE_KIND

    async def _models(self, namespace: str, spec: InferenceEnsembleSpec) -> dict[str, ModelState]:
        states = {}
        for ref in dict.fromkeys(s.model_ref for s in spec.steps if s.model_ref):
            states[ref] = model_state(ref, await self.api.get(API_VERSION, KIND, namespace, ref))
        return states

    async def run_pass(self, body: dict[str, Any], light: bool = False,
                       live: dict[str, Any] | None = None) -> dict[str, Any]:
        """One pass for one InferenceEnsemble; returns the status written. Raises :class:`Failure`."""
        meta = body["metadata"]
        try:
            name, namespace, uid, spec = parse_ensemble(body)
        except InvalidSpec as exc:
            raise await self.fail(body, "InvalidSpec", str(exc)) from None
        try:
            states = await self._models(namespace, spec)
        except ApiFailure as exc:
            raise Failure("ApiUnavailable", exc.message, permanent=False) from None
        resolved = tuple(
            ResolvedStep(s.name, states[s.model_ref].model_name, service_url(s.model_ref, namespace, self.options))
            if s.model_ref
            else ResolvedStep(s.name, s.model_name or s.name, (s.url or "").rstrip("/"))
            for s in spec.steps
        )
        target = EnsembleTarget(name=name, namespace=namespace, uid=uid, spec=spec, steps=resolved)
        try:
            objects = render_ensemble(target, self.options)
        except InvalidSpec as exc:
            raise await self.fail(body, "InvalidSpec", str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a bug must not become a retry loop
            raise await self.render_failed(body, exc) from None

        try:
            if light:
                deployment = await self.apply_deployment(objects, live)
            else:
                clash = await check_names(self.api, objects, uid, ENSEMBLE_KIND)
                if clash:
                    raise await self.fail(body, "NameClash", clash)
                deployment = await self.apply_objects(objects)
        except ApiFailure as exc:
            raise await self.apply_failed(body, exc) from None

        status = ensemble_status(target, self.options, states, deployment, meta.get("generation"),
                                 body.get("status"), self.clock())
        if status_changed(body.get("status") or {}, status):
            await write_status(self.api, body, status, ENSEMBLE_KIND)
            ready = status["conditions"][0]
            log.info("InferenceEnsemble %s/%s: Ready=%s %s %s", namespace, name, ready["status"],
                     ready["reason"], ready["message"])
        return status


def ensemble_status(
    t: EnsembleTarget,
    options: RenderOptions,
    states: dict[str, ModelState],
    deployment: dict[str, Any] | None,
    generation: int | None,
    old: dict[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """Status of an ensemble (pure): its models' readiness, then its router's."""
    router_ready, progressing, degraded = deployment_conditions(deployment)
    blocked = models_condition(t.spec, states, t.namespace)
    if blocked is not None:
        ready = blocked
    elif router_ready["status"] != "True":
        ready = condition("Ready", False, "RouterNotReady", f"router: {router_ready['message']}")
    else:
        ready = condition("Ready", True, "Available",
                      f"{len(t.spec.steps)} steps ready; router: {router_ready['message']}")
    ok_steps = sum(1 for s in t.spec.steps if not s.model_ref or states[s.model_ref].ready)
    st = (deployment or {}).get("status") or {}
    return {
        "observedGeneration": generation,
        "url": url(t, options),
        "modelName": t.model_name,
        "steps": f"{ok_steps}/{len(t.spec.steps)}",
        "replicas": st.get("replicas", 0),
        "readyReplicas": st.get("readyReplicas", 0),
        "conditions": merge_conditions([ready, progressing, degraded], (old or {}).get("conditions") or [],
                                       generation, now),
    }
