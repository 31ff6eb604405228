"""Kubernetes API access for the operator: server-side apply, reads, status, deletes.

Everything else in the operator works on plain manifest dicts; this module turns them into
requests (lightkube's async client) and turns failures into :class:`ApiFailure` with the
HTTP status, so callers can tell a rejected object (4xx) from a transient problem.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.generic_client import ALL_NS
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Service
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from kubeinfer.operator.k8s.lease import LeaderLease, LeaseTimings

from kubeinfer.operator.api.v1alpha1 import ENSEMBLE_KIND, ENSEMBLE_PLURAL, GROUP, KIND, PLURAL, VERSION

InferenceModel = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)
InferenceEnsemble = create_namespaced_resource(GROUP, VERSION, ENSEMBLE_KIND, ENSEMBLE_PLURAL)
ServiceMonitor = create_namespaced_resource("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors")
ScaledObject = create_namespaced_resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
InferenceModelStatus = InferenceModel.Status
_STATUS = {KIND: InferenceModel.Status, ENSEMBLE_KIND: InferenceEnsemble.Status}

_KINDS: dict[tuple[str, str], Any] = {
    ("v1", "ConfigMap"): ConfigMap,
    ("v1", "Service"): Service,
    ("apps/v1", "Deployment"): Deployment,
    ("policy/v1", "PodDisruptionBudget"): PodDisruptionBudget,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): HorizontalPodAutoscaler,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ServiceMonitor,
    ("keda.sh/v1alpha1", "ScaledObject"): ScaledObject,
    (f"{GROUP}/{VERSION}", KIND): InferenceModel,
    (f"{GROUP}/{VERSION}", ENSEMBLE_KIND): InferenceEnsemble,
}


# what the API server answers (with a 500) when a server-side apply patch cannot even be
# typed: a field value of the wrong form, e.g. a resource quantity "two cores"
_MALFORMED = ("quantities must match the regular expression", "failed to create typed patch object")


class ApiFailure(Exception):
    """A request failed; ``status`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def malformed(self) -> bool:
        """The object carries a value of the wrong form: the spec it came from is at fault."""
        return self.status in (400, 500) and any(m in self.message for m in _MALFORMED)

    @property
    def rejected(self) -> bool:
        """The server refused the object itself: retrying the same request cannot help."""
        return self.status in (400, 403, 404, 422) or self.malformed

    @property
    def conflict(self) -> bool:
        """A precondition (resourceVersion) no longer held: the object changed meanwhile."""
        return self.status == 409


def _failure(exc: Exception, what: str) -> ApiFailure:
    if isinstance(exc, ApiError):
        return ApiFailure(exc.status.code or 0, f"{what}: {exc.status.message}")
    if isinstance(exc, httpx2.HTTPStatusError):
        # not a Status body: e.g. "404 page not found" for a kind the server does not serve
        # (KEDA or the Prometheus Operator not installed)
        return ApiFailure(exc.response.status_code, f"{what}: {exc}")
    return ApiFailure(0, f"{what}: {type(exc).__name__} {exc}".rstrip())


def _as_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


class KubeApi:
    """The operator's view of the API; one per process, built by the CLI."""

    def __init__(self, client: AsyncClient, field_manager: str) -> None:
        self._client = client
        self._field_manager = field_manager

    @classmethod
    def connect(cls, field_manager: str, kubeconfig: str | None = None, timeout: float = 30.0) -> KubeApi:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else None
        return cls(AsyncClient(config=config, timeout=httpx2.Timeout(timeout)), field_manager)

    @property
    def field_manager(self) -> str:
        return self._field_manager

    async def close(self) -> None:
        await self._client.close()

    def leader_lease(self, namespace: str, name: str, identity: str, timings: LeaseTimings | None = None) -> LeaderLease:
        """A candidate for the operator's leader Lease, on this connection."""
        return LeaderLease(self._client, namespace, name, identity, timings or LeaseTimings())

    async def apply(self, manifest: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        """Server-side apply as the operator's field manager (or ``field_manager``), taking
        over conflicting fields."""
        res = _KINDS[(manifest["apiVersion"], manifest["kind"])]
        meta = manifest["metadata"]
        what = f"apply {manifest['kind']} {meta['namespace']}/{meta['name']}"
        try:
            obj = await self._client.patch(
                res,
                meta["name"],
                manifest,
                namespace=meta["namespace"],
                patch_type=PatchType.APPLY,
                field_manager=field_manager or self._field_manager,
                force=True,
            )
        except (ApiError, httpx2.HTTPError, asyncio.TimeoutError) as exc:
            raise _failure(exc, what) from None
        return _as_dict(obj)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _as_dict(await self._client.get(_KINDS[(api_version, kind)], name, namespace=namespace))
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise _failure(exc, f"get {kind} {namespace}/{name}") from None
        except (httpx2.HTTPError, asyncio.TimeoutError) as exc:
            failure = _failure(exc, f"get {kind} {namespace}/{name}")
            if failure.status == 404:
                return None  # the kind is not served here: no such object either
            raise failure from None

    async def delete_owned(self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
        """Delete an object only when ``owner_uid`` controls it; absent kinds/objects are fine."""
        try:
            current = await self.get(api_version, kind, namespace, name)
        except ApiFailure as exc:
            # the kind is not served (no ServiceMonitor CRD) or not granted to us (RBAC):
            # then we cannot have created one either
            if exc.status in (403, 404):
                return False
            raise
        if current is None:
            return False
        refs = (current.get("metadata") or {}).get("ownerReferences") or []
        if not any(r.get("uid") == owner_uid and r.get("controller") for r in refs):
            return False
        try:
            await self._client.delete(_KINDS[(api_version, kind)], name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise _failure(exc, f"delete {kind} {namespace}/{name}") from None
        return True

    async def _list(self, res: Any, what: str, namespaces: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            for ns in namespaces or [ALL_NS]:
                async for obj in self._client.list(res, namespace=ns):
                    out.append(_as_dict(obj))
        except (ApiError, httpx2.HTTPError, asyncio.TimeoutError) as exc:
            raise _failure(exc, f"list {what}") from None
        return out

    async def list_inference_models(self, namespaces: list[str]) -> list[dict[str, Any]]:
        return await self._list(InferenceModel, "InferenceModels", namespaces)

    async def list_inference_ensembles(self, namespaces: list[str]) -> list[dict[str, Any]]:
        """InferenceEnsembles in ``namespaces`` (all namespaces when empty)."""
        return await self._list(InferenceEnsemble, "InferenceEnsembles", namespaces)

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], kind: str = KIND, resource_version: str | None = None
    ) -> None:
        """Merge-patch the status subresource (conditions are replaced as one list) of an
        InferenceModel, or of an InferenceEnsemble with ``kind``. With ``resource_version``
        the write only lands on that version of the object (else 409: :attr:`ApiFailure.conflict`)."""
        patch: dict[str, Any] = {"status": status}
        if resource_version:
            patch["metadata"] = {"resourceVersion": resource_version}
        try:
            await self._client.patch(
                _STATUS[kind],
                name,
                patch,
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            if exc.status.code == 404:
                return  # deleted meanwhile
            raise _failure(exc, f"status of {kind} {namespace}/{name}") from None
        except (httpx2.HTTPError, asyncio.TimeoutError) as exc:
            raise _failure(exc, f"status of {kind} {namespace}/{name}") from None
