"""One reconcile pass for one InferenceModel: the steps, in order.

parse the body (a bad spec -> status ``InvalidSpec`` + :class:`Failure` permanent) ->
render everything it owns -> server-side apply each object -> delete owned kinds no longer
rendered (an HPA after autoscaling was removed, ...) -> status from the applied Deployment.
Idempotent: run it as often as you like; it converges and corrects drift. The API is
injected (:class:`kubeinfer.operator.k8s.KubeApi` or a fake with the same methods).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from kubeinfer.operator.api.v1alpha1 import InferenceModelSpec
from kubeinfer.operator.k8s import ApiFailure
from kubeinfer.operator.reconcile.autoscaler import HANDOVER_MANAGER, autoscaler_status, replicas_handover
from kubeinfer.operator.reconcile.status import failed_status, status_for
from kubeinfer.operator.render import OWNED_KINDS, InvalidSpec, RenderOptions, Target, render_all
from kubeinfer.operator.render.common import config_map_name
from kubeinfer.operator.render.autoscaling import KEDA_API_VERSION, hpa_name

log = logging.getLogger("kubeinfer.operator")
FAILED_REASONS = ("InvalidSpec", "ApplyRejected")


class Api(Protocol):
    field_manager: str

    async def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]: ...
    async def delete_owned(self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str) -> bool: ...
    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...


class Failure(Exception):
    """A reconcile pass that did not converge. ``permanent``: retrying the same spec cannot
    help (wait for a change); otherwise retry after ``delay`` seconds."""

    def __init__(self, reason: str, message: str, permanent: bool, delay: float = 30.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent
        self.delay = delay


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse(body: dict[str, Any]) -> Target:
    """A typed target from a resource body; :class:`InvalidSpec` names every bad field."""
    meta = body.get("metadata") or {}
    try:
        spec = InferenceModelSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = "spec." + ".".join(str(p) for p in err["loc"]) if err["loc"] else "spec"
            problems.append(f"{where}: {err['msg']}")
        raise InvalidSpec("; ".join(problems)) from None
    return Target(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], spec=spec)


def already_failed(body: dict[str, Any]) -> bool:
    """The current generation was already found unreconcilable (and said so)."""
    status = body.get("status") or {}
    if status.get("observedGeneration") != (body.get("metadata") or {}).get("generation"):
        return False
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return ready.get("reason") in FAILED_REASONS


class Reconciler:
    def __init__(self, api: Api, options: RenderOptions, clock: Callable[[], str] = utcnow) -> None:
        self.api = api
        self.options = options
        self.clock = clock

    async def _fail(self, body: dict[str, Any], reason: str, message: str) -> Failure:
        meta = body["metadata"]
        status = failed_status(reason, message, meta.get("generation"), body.get("status"), self.clock())
        await self.api.patch_status(meta["namespace"], meta["name"], status)
        return Failure(reason, message, permanent=True)

    async def reconcile(self, body: dict[str, Any]) -> dict[str, Any]:
        """Converge one InferenceModel; returns the status written. Raises :class:`Failure`."""
        meta = body["metadata"]
        try:
            target = parse(body)
            objects = render_all(target, self.options)
        except InvalidSpec as exc:
            raise await self._fail(body, "InvalidSpec", str(exc)) from None

        try:
            await self._hand_over_replicas(target)
            deployment = await apply_objects(self.api, objects)
            rendered = {(o["apiVersion"], o["kind"]) for o in objects}
            for api_version, kind in OWNED_KINDS:
                if (api_version, kind) not in rendered:
                    name = config_map_name(target) if kind == "ConfigMap" else target.name
                    if await self.api.delete_owned(api_version, kind, target.namespace, name, target.uid):
                        log.info("deleted %s %s/%s (no longer wanted)", kind, target.namespace, name)
        except ApiFailure as exc:
            if exc.rejected:
                raise await self._fail(body, "ApplyRejected", exc.message) from None
            raise Failure("ApiUnavailable", exc.message, permanent=False) from None

        scaler, scaler_conditions = await self._autoscaler(target)
        status = status_for(target, self.options, deployment, meta.get("generation"), body.get("status"), self.clock(),
                            scaler, scaler_conditions)
        if status_changed(body.get("status") or {}, status):
            await self.api.patch_status(target.namespace, target.name, status)
        return status

    async def _hand_over_replicas(self, t: Target) -> None:
        """Autoscaling was just turned on: keep the Deployment's replicas (see
        :func:`.autoscaler.replicas_handover`). One extra read per pass while autoscaling."""
        if t.spec.autoscaling is None:
            return
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


async def apply_objects(api: Any, objects: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Server-side apply each rendered object in order; the applied Deployment, for status."""
    deployment = None
    for manifest in objects:
        applied = await api.apply(manifest)
        if manifest["kind"] == "Deployment":
            deployment = applied
    return deployment


def status_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return any(old.get(k) != v for k, v in new.items())
