"""kopf wiring: the only module that imports kopf.

Built explicitly by :func:`build_registry` (no import-time registration) with the
reconciler and API injected. What triggers a reconcile pass:

- an InferenceModel is created, its spec changes, or the operator starts (resume);
- an owned Deployment changes (status for the CR; drift of the Deployment is corrected);
- every ``resync_seconds``, each InferenceModel (drift of the other owned objects).

And an InferenceEnsemble is reconciled when it is created, its spec changes or the operator
starts; when its router Deployment changes; when an InferenceModel it refers to appears,
disappears or changes readiness or served name (event-driven, so the ensemble follows its
models); and every ``resync_seconds`` as a backstop.

A permanent :class:`~kubeinfer.operator.reconcile.Failure` (invalid spec, object rejected
by the API server) becomes a Warning Event and ``kopf.PermanentError``: no retries until
the spec changes. Anything else is retried with a delay.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kubeinfer.operator.api.v1alpha1 import API_VERSION, ENSEMBLE_KIND, ENSEMBLE_PLURAL, GROUP, KIND, PLURAL, VERSION
from kubeinfer.operator.k8s import ApiFailure, KubeApi
from kubeinfer.operator.reconcile import EnsembleReconciler, Failure, Reconciler, referenced_models
from kubeinfer.operator.reconcile.reconciler import already_failed
from kubeinfer.operator.render.common import MANAGED_BY
from kubeinfer.operator.settings import OperatorSettings

log = logging.getLogger("kubeinfer.operator")
ANNOTATION_PREFIX = "kubeinfer.dev"


def configure_kopf(kopf_settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    """kopf settings that matter on a real API server (see docs/operator.md)."""
    kopf_settings.watching.server_timeout = ours.watch_server_timeout
    kopf_settings.watching.client_timeout = ours.watch_client_timeout
    kopf_settings.watching.connect_timeout = 30
    # progress and diff-base in annotations: nothing of kopf's lands in .status
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    kopf_settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    kopf_settings.posting.level = logging.WARNING  # only warnings become Events
    kopf_settings.networking.error_backoffs = [1, 2, 5, 10, 30]


def _plain(body: Any) -> dict[str, Any]:
    import copy

    return copy.deepcopy({k: body[k] for k in body})


async def _reconcile(reconciler: Any, body: dict[str, Any], raise_errors: bool) -> None:
    try:
        await reconciler.reconcile(body)
    except Failure as failure:
        if failure.permanent:
            kopf.warn(body, reason=failure.reason, message=failure.message)
            if raise_errors:
                raise kopf.PermanentError(f"{failure.reason}: {failure.message}") from None
            return
        if raise_errors:
            raise kopf.TemporaryError(failure.message, delay=failure.delay) from None
        log.warning("%s/%s: %s (will retry)", body["metadata"]["namespace"], body["metadata"]["name"], failure.message)


def _model_key(body: dict[str, Any] | None) -> tuple[bool, str | None, str | None] | None:
    """What ensembles care about in an InferenceModel: exists, Ready, served name."""
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return None
    status = body.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return True, ready.get("status"), status.get("modelName")


def build_registry(
    settings: OperatorSettings,
    api: KubeApi,
    reconciler: Reconciler,
    ensembles: EnsembleReconciler | None = None,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)
    ensemble_resource = (GROUP, VERSION, ENSEMBLE_PLURAL)
    ensembles = ensembles or EnsembleReconciler(api, reconciler.options)
    tasks: list[asyncio.Task[None]] = []
    # (namespace, name) -> _model_key of the last event seen for that InferenceModel
    seen_models: dict[tuple[str, str], Any] = {}
    # one pass at a time per ensemble: passes triggered by different events (its spec, its
    # Deployment, a model) would otherwise race, and an older view of the models could
    # overwrite a newer status
    ensemble_locks: dict[tuple[str, str], asyncio.Lock] = {}

    class _Serialized:
        async def reconcile(self, body: dict[str, Any]) -> dict[str, Any]:
            meta = body["metadata"]
            lock = ensemble_locks.setdefault((meta["namespace"], meta["name"]), asyncio.Lock())
            async with lock:
                return await ensembles.reconcile(body)

    serialized = _Serialized()
    reconcilers: dict[str, Any] = {KIND: reconciler, ENSEMBLE_KIND: serialized}

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        tasks.append(asyncio.create_task(resync_forever(), name="kubeinfer-resync"))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await api.close()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.resume(*resource, registry=registry)
    @kopf.on.create(*resource, registry=registry)
    @kopf.on.update(*resource, registry=registry)
    async def reconcile_model(body: kopf.Body, **_: Any) -> None:
        await _reconcile(reconciler, _plain(body), raise_errors=True)

    @kopf.on.resume(*ensemble_resource, registry=registry)
    @kopf.on.create(*ensemble_resource, registry=registry)
    @kopf.on.update(*ensemble_resource, registry=registry)
    async def reconcile_ensemble(body: kopf.Body, **_: Any) -> None:
        await _reconcile(serialized, _plain(body), raise_errors=True)

    @kopf.on.event(*resource, registry=registry)
    async def model_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
        """Re-run the ensembles that refer to a model whose existence, readiness or served
        name changed (the model's own reconcile is the handlers above)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        state = None if type == "DELETED" else _model_key(_plain(body))
        if key in seen_models and seen_models[key] == state:
            return
        first = key not in seen_models
        seen_models[key] = state
        if state is None:
            seen_models.pop(key, None)
        if first and type is None:
            return  # the initial listing: the ensembles' own resume handlers cover it
        await reconcile_referencing(key[0], key[1])

    async def reconcile_referencing(namespace: str, model: str) -> None:
        try:
            bodies = await api.list_inference_ensembles([namespace])
        except ApiFailure as exc:
            log.warning("cannot list the InferenceEnsembles of %s: %s", namespace, exc)
            return
        for ens in bodies:
            if model in referenced_models(ens) and not ens["metadata"].get("deletionTimestamp"):
                if not already_failed(ens):
                    log.info("InferenceModel %s/%s changed: reconciling InferenceEnsemble %s", namespace, model,
                             ens["metadata"]["name"])
                    await _reconcile(serialized, ens, raise_errors=False)

    @kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY}, registry=registry)
    async def deployment_changed(body: kopf.Body, **_: Any) -> None:
        meta = body.get("metadata") or {}
        owner = next(
            (r for r in meta.get("ownerReferences") or [] if r.get("kind") in reconcilers and r.get("controller")),
            None,
        )
        if owner is None:
            return
        try:
            obj = await api.get(API_VERSION, owner["kind"], meta["namespace"], owner["name"])
        except ApiFailure as exc:
            log.warning("cannot read the owner of Deployment %s/%s: %s", meta["namespace"], meta["name"], exc)
            return
        if obj is None or obj["metadata"].get("deletionTimestamp") or obj["metadata"]["uid"] != owner["uid"]:
            return
        if not already_failed(obj):
            await _reconcile(reconcilers[owner["kind"]], obj, raise_errors=False)

    async def resync_forever() -> None:
        while True:
            await asyncio.sleep(settings.resync_seconds)
            try:
                models = await api.list_inference_models(settings.namespaces)
            except ApiFailure as exc:
                log.warning("resync: %s", exc)
                continue
            for model in models:
                if not model["metadata"].get("deletionTimestamp") and not already_failed(model):
                    await _reconcile(reconciler, model, raise_errors=False)
            try:
                bodies = await api.list_inference_ensembles(settings.namespaces)
            except ApiFailure as exc:
                log.warning("resync: %s", exc)
                continue
            for ens in bodies:
                if not ens["metadata"].get("deletionTimestamp") and not already_failed(ens):
                    await _reconcile(serialized, ens, raise_errors=False)

    return registry


async def run_operator(settings: OperatorSettings, api: KubeApi, liveness: str | None = None) -> None:
    reconciler = Reconciler(api, settings.render_options())
    registry = build_registry(settings, api, reconciler, EnsembleReconciler(api, settings.render_options()))
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(kopf_settings, settings)
    await kopf.operator(
        registry=registry,
        settings=kopf_settings,
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
    )
