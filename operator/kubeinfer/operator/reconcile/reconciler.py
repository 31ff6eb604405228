"""One reconcile pass for one InferenceModel: the steps, in order.

parse the body (a bad spec -> status ``InvalidSpec`` + :class:`Failure` permanent) ->
render everything it owns -> check no other owner holds its names (``NameClash``) ->
server-side apply each object -> delete owned kinds no longer rendered (an HPA after
autoscaling was removed, ...) -> status from the applied Deployment.

Idempotent: run it as often as you like; it converges and corrects drift. The API is
injected (:class:`kubeinfer.operator.k8s.KubeApi` or a fake with the same methods).

A status write never goes backwards: it carries the resourceVersion of the body it was
computed from, so a pass that worked from an older view of the object gets a conflict
instead of overwriting a newer status; it then re-reads the object and runs again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from kubeinfer.operator.api.v1alpha1 import API_VERSION, KIND, InferenceModelSpec
from kubeinfer.operator.k8s import ApiFailure
from kubeinfer.operator.reconcile.applied import Applied
from kubeinfer.operator.reconcile.autoscaler import HANDOVER_MANAGER, autoscaler_status, replicas_handover
from kubeinfer.operator.reconcile.status import failed_status, parse_status, ready_condition, status_for
from kubeinfer.operator.render import OWNED_KINDS, InvalidSpec, RenderOptions, Target, render_all
from kubeinfer.operator.render.common import config_map_name
from kubeinfer.operator.render.autoscaling import KEDA_API_VERSION, hpa_name

log = logging.getLogger("kubeinfer.operator")
FAILED_REASONS = ("InvalidSpec", "ApplyRejected", "NameClash", "RenderFailed")
CONFLICT_ATTEMPTS = 5


class Api(Protocol):
    field_manager: str

    async def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]: ...
    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def delete_owned(self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str) -> bool: ...
    async def patch_status(self, namespace: str, name: str, status: dict[str, Any], kind: str = KIND,
                           resource_version: str | None = None) -> None: ...


class Failure(Exception):
    """A reconcile pass that did not converge. ``permanent``: retrying the same spec cannot
    help (wait for a change); otherwise retry after ``delay`` seconds."""

    def __init__(self, reason: str, message: str, permanent: bool, delay: float = 30.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent
        self.delay = delay


class StaleView(Exception):
    """The object changed after the pass read it: its status write was refused."""


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def spec_problems(exc: ValidationError) -> str:
    """pydantic's errors as ``spec.<field>: <message>``, one per bad field."""
    problems = []
    for err in exc.errors():
        where = "spec." + ".".join(str(p) for p in err["loc"]) if err["loc"] else "spec"
        problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems)


def parse(body: dict[str, Any]) -> Target:
    """A typed target from a resource body; :class:`InvalidSpec` names every bad field."""
    meta = body.get("metadata") or {}
    try:
        spec = InferenceModelSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        raise InvalidSpec(spec_problems(exc)) from None
    return Target(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], spec=spec)


def already_failed(body: dict[str, Any]) -> bool:
    """The current generation was already found unreconcilable (and said so)."""
    status = parse_status(body)
    if status.observed_generation != (body.get("metadata") or {}).get("generation"):
        return False
    ready = ready_condition(status)
    return ready is not None and ready.reason in FAILED_REASONS


async def write_status(api: Any, body: dict[str, Any], status: dict[str, Any], kind: str) -> None:
    """Patch the status computed from ``body``, only onto that version of the object."""
    meta = body["metadata"]
    try:
        await api.patch_status(meta["namespace"], meta["name"], status, kind=kind,
                               resource_version=meta.get("resourceVersion"))
    except ApiFailure as exc:
        if exc.conflict:
            raise StaleView(exc.message) from None
        raise Failure("ApiUnavailable", f"cannot write the status: {exc.message}", permanent=False, delay=5) from None


async def check_names(api: Any, objects: list[dict[str, Any]], owner_uid: str, kind: str) -> str | None:
    """Why ``objects`` cannot be ours: their Deployment's name is held by another owner (an
    InferenceModel and an InferenceEnsemble of the same name, a hand-made Deployment).
    Raises a temporary :class:`Failure` while a predecessor of the same name (deleted, then
    created again) still has its Deployment waiting for garbage collection."""
    dep = next((o for o in objects if o["kind"] == "Deployment"), None)
    if dep is None:
        return None
    meta = dep["metadata"]
    current = await api.get("apps/v1", "Deployment", meta["namespace"], meta["name"])
    if current is None:
        return None
    cmeta = current.get("metadata") or {}
    controller = next((r for r in cmeta.get("ownerReferences") or [] if r.get("controller")), None)
    if controller is not None and controller.get("uid") == owner_uid:
        return None
    if cmeta.get("deletionTimestamp") or (
        controller is not None and (controller.get("kind"), controller.get("name")) == (kind, meta["name"])
    ):
        raise Failure("Pending", f"Deployment '{meta['name']}' of a previous {kind} of this name is being "
                      "garbage-collected", permanent=False, delay=2)
    holder = f"{controller['kind']} '{controller['name']}'" if controller else "no controller (made by hand?)"
    return (f"the name '{meta['name']}' is taken: Deployment '{meta['name']}' in namespace '{meta['namespace']}' "
            f"belongs to {holder}; give this {kind} another name")


def swept(body: dict[str, Any]) -> bool:
    """Whether a full pass looks for owned objects no longer rendered: only once an earlier
    pass has written a status. Before that no pass rendered another spec (a pass that
    stopped before its status rendered this same generation), so there is nothing to
    delete, and a burst of new objects saves a read per owned kind that is not rendered."""
    return (body.get("status") or {}).get("observedGeneration") is not None


def status_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return any(old.get(k) != v for k, v in new.items())


class BaseReconciler:
    """What both kinds share: the conflict loop, failure statuses, apply errors."""

    kind = KIND

    def __init__(self, api: Api, options: RenderOptions, clock: Callable[[], str] = utcnow) -> None:
        self.api = api
        self.options = options
        self.clock = clock
        self.applied = Applied()  # the Deployments' last applies (see reconcile.applied)

    async def reconcile(self, body: dict[str, Any], light: bool = False,
                        deployment: dict[str, Any] | None = None) -> dict[str, Any]:
        """Converge one object; returns the status written (``{}`` when it is gone).
        ``light``: after an event of the object's own Deployment (``deployment``, as the
        event showed it; None when it was deleted) — re-apply the Deployment only when it
        drifted or its render changed, and refresh the status from it; the full pass (every
        owned object, the sweep of kinds no longer wanted, the name check) runs on spec
        changes and the resync. Raises :class:`Failure`."""
        for _ in range(CONFLICT_ATTEMPTS):
            try:
                return await self.run_pass(body, light, deployment)
            except StaleView:
                meta = body["metadata"]
                try:
                    fresh = await self.api.get(API_VERSION, self.kind, meta["namespace"], meta["name"])
                except ApiFailure as exc:
                    raise Failure("ApiUnavailable", exc.message, permanent=False, delay=5) from None
                if fresh is None or fresh["metadata"].get("uid") != meta.get("uid") \
                        or fresh["metadata"].get("deletionTimestamp"):
                    return {}
                body = fresh
        raise Failure("StatusConflict", "the object kept changing while its status was written",
                      permanent=False, delay=1)

    async def run_pass(self, body: dict[str, Any], light: bool = False,
                       live: dict[str, Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError

    async def apply_objects(self, objects: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Server-side apply each rendered object in order; the applied Deployment, for status."""
        deployment = None
        for manifest in objects:
            applied = await self.api.apply(manifest)
            if manifest["kind"] == "Deployment":
                deployment = applied
                self.applied.record(manifest, applied)
        return deployment

    async def apply_deployment(self, objects: list[dict[str, Any]], live: dict[str, Any] | None) -> dict[str, Any] | None:
        """The light pass's apply: the Deployment, unless ``live`` is what our last apply of
        the same manifest left (then ``live`` itself, for status)."""
        manifest = next((o for o in objects if o["kind"] == "Deployment"), None)
        if manifest is not None and self.applied.unchanged(manifest, live):
            return live
        return await self.apply_objects([manifest] if manifest is not None else [])

    async def fail(self, body: dict[str, Any], reason: str, message: str) -> Failure:
        """Write a failed status (Ready=False with ``reason``); the permanent failure to raise."""
        status = failed_status(reason, message, body["metadata"].get("generation"), body.get("status"), self.clock())
        await write_status(self.api, body, status, self.kind)
        return Failure(reason, message, permanent=True)

    async def apply_failed(self, body: dict[str, Any], exc: ApiFailure) -> Failure:
        if exc.malformed:
            return await self.fail(body, "InvalidSpec", exc.message)
        if exc.rejected:
            return await self.fail(body, "ApplyRejected", exc.message)
        return Failure("ApiUnavailable", exc.message, permanent=False, delay=5)

    async def render_failed(self, body: dict[str, Any], exc: Exception) -> Failure:
        """An error the render layer did not foresee: said in the status once, not retried."""
        meta = body["metadata"]
        log.error("%s %s/%s cannot be rendered", self.kind, meta["namespace"], meta["name"], exc_info=exc)
        return await self.fail(body, "RenderFailed", f"cannot render the objects: {type(exc).__name__}: {exc}")


class Reconciler(BaseReconciler):
    async def run_pass(self, body: dict[str, Any], light: bool = False,
                       live: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            target = parse(body)
            objects = render_all(target, self.options)
        except InvalidSpec as exc:
            raise await self.fail(body, "InvalidSpec", str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a bug must not become a retry loop
            raise await self.render_failed(body, exc) from None

        try:
            if light:
                await self._hand_over_replicas(target, live)
                deployment = await self.apply_deployment(objects, live)
                return await self._status(body, target, deployment)
            clash = await check_names(self.api, objects, target.uid, KIND)
            if clash:
                raise await self.fail(body, "NameClash", clash)
            await self._hand_over_replicas(target)
            deployment = await self.apply_objects(objects)
            rendered = {(o["apiVersion"], o["kind"]) for o in objects}
            for api_version, kind in OWNED_KINDS if swept(body) else ():
                if (api_version, kind) not in rendered:
                    name = config_map_name(target) if kind == "ConfigMap" else target.name
                    if await self.api.delete_owned(api_version, kind, target.namespace, name, target.uid):
                        log.info("deleted %s %s/%s (no longer wanted)", kind, target.namespace, name)
        except ApiFailure as exc:
            raise await self.apply_failed(body, exc) from None
        return await self._status(body, target, deployment)

    async def _status(self, body: dict[str, Any], target: Target, deployment: dict[str, Any] | None) -> dict[str, Any]:
        meta = body["metadata"]
        scaler, scaler_conditions = await self._autoscaler(target)
        status = status_for(target, self.options, deployment, meta.get("generation"), body.get("status"), self.clock(),
                            scaler, scaler_conditions)
        if status_changed(body.get("status") or {}, status):
            await write_status(self.api, body, status, KIND)
        return status

    async def _hand_over_replicas(self, t: Target, live: dict[str, Any] | None = None) -> None:
        """Autoscaling was just turned on: keep the Deployment's replicas (see
        :func:`.autoscaler.replicas_handover`). One extra read per full pass while
        autoscaling (a light pass has the Deployment from its event: ``live``)."""
        if t.spec.autoscaling is None:
            return
        if live is None:
            live = await self.api.get("apps/v1", "Deployment", t.namespace, t.name)
        handover = replicas_handover(t, live, self.api.field_manager)
        if handover is not None:
            await self.api.apply(handover, field_manager=HANDOVER_MANAGER)
            log.info("%s/%s: handed replicas=%s over to the autoscaler", t.namespace, t.name,
                     handover["spec"]["replicas"])

    async def _autoscaler(self, t: Target) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """Read the HPA (and the ScaledObject) behind ``t`` for its status; a failed read
        only leaves that part of the status empty."""
        name = hpa_name(t)
        if name is None:
            return autoscaler_status(t, None, None)
        hpa = scaled = None
        try:
            hpa = await self.api.get("autoscaling/v2", "HorizontalPodAutoscaler", t.namespace, name)
            if t.spec.autoscaling is not None and t.spec.autoscaling.autoscaler == "keda":
                scaled = await self.api.get(KEDA_API_VERSION, "ScaledObject", t.namespace, t.name)
        except ApiFailure as exc:
            log.warning("%s/%s: cannot read the autoscaler: %s", t.namespace, t.name, exc)
        return autoscaler_status(t, hpa, scaled)
