"""An in-memory stand-in for :class:`kubeinfer.operator.k8s.KubeApi` (the operator's only
seam to the API server), for fast tests of the reconcilers and handlers.

It keeps objects by (apiVersion, kind, namespace, name) with a resourceVersion that grows
on every write, honours a status write's resourceVersion precondition (409 otherwise),
and lets a test make chosen requests fail. The e2e tests check the real API server.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from kubeinfer.operator.k8s import ApiFailure

Key = tuple[str, str, str, str]
AVAILABLE = {
    "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
    "conditions": [{"type": "Available", "status": "True"}],
}


class FakeKubeApi:
    def __init__(self, deployment_status: dict[str, Any] | None = None) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name)
        self.deployment_status = AVAILABLE if deployment_status is None else deployment_status
        self._versions = itertools.count(1)
        self.fail: Callable[[str, str, str], ApiFailure | None] = lambda verb, kind, name: None
        self.closed = False
        # awaited at the start of every status write: lets a test run another pass "meanwhile"
        self.before_status: Callable[[str], Awaitable[None]] | None = None

    # --- test helpers
    def put(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store an object as a client would create it (uid, generation, resourceVersion)."""
        body = copy.deepcopy(body)
        meta = body.setdefault("metadata", {})
        meta.setdefault("namespace", "ns")
        meta.setdefault("uid", f"uid-{body['kind']}-{meta['name']}")
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[(body["apiVersion"], body["kind"], meta["namespace"], meta["name"])] = body
        return copy.deepcopy(body)

    def obj(self, api_version: str, kind: str, name: str, namespace: str = "ns") -> dict[str, Any] | None:
        return self.objects.get((api_version, kind, namespace, name))

    def _check(self, verb: str, kind: str, name: str) -> None:
        self.calls.append((verb, kind, name))
        failure = self.fail(verb, kind, name)
        if failure is not None:
            raise failure

    # --- the KubeApi surface
    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        self._check("apply", manifest["kind"], meta["name"])
        key = (manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        current = self.objects.get(key)
        out = copy.deepcopy(manifest)
        out["metadata"]["uid"] = (current or {}).get("metadata", {}).get("uid", f"uid-{manifest['kind']}-{meta['name']}")
        out["metadata"]["generation"] = 1
        out["metadata"]["resourceVersion"] = str(next(self._versions))
        if manifest["kind"] == "Deployment":
            out["status"] = copy.deepcopy(self.deployment_status)
        self.objects[key] = out
        return copy.deepcopy(out)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self._check("get", kind, name)
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def delete_owned(self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
        self._check("delete", kind, name)
        current = self.objects.get((api_version, kind, namespace, name))
        refs = (current or {}).get("metadata", {}).get("ownerReferences") or []
        if current is None or not any(r.get("uid") == owner_uid and r.get("controller") for r in refs):
            return False
        del self.objects[(api_version, kind, namespace, name)]
        return True

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any], kind: str = "InferenceModel",
                           resource_version: str | None = None) -> None:
        self._check("status", kind, name)
        if self.before_status is not None:
            hook, self.before_status = self.before_status, None
            await hook(name)
        current = self.objects.get(("kubeinfer.dev/v1alpha1", kind, namespace, name))
        if current is None:
            return
        if resource_version and resource_version != current["metadata"]["resourceVersion"]:
            raise ApiFailure(409, f"status of {kind} {namespace}/{name}: the object has been modified")
        current["status"] = {**(current.get("status") or {}), **copy.deepcopy(status)}
        current["metadata"]["resourceVersion"] = str(next(self._versions))

    async def _list(self, kind: str, namespaces: list[str]) -> list[dict[str, Any]]:
        self._check("list", kind, "")
        return [copy.deepcopy(o) for (_, k, ns, _), o in sorted(self.objects.items())
                if k == kind and (not namespaces or ns in namespaces)]

    async def list_inference_models(self, namespaces: list[str]) -> list[dict[str, Any]]:
        return await self._list("InferenceModel", namespaces)

    async def list_inference_ensembles(self, namespaces: list[str]) -> list[dict[str, Any]]:
        return await self._list("InferenceEnsemble", namespaces)

    async def close(self) -> None:
        self.closed = True
