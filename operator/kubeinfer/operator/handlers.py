"""kopf wiring: the only module that imports kopf.

:class:`Handlers` holds what the handlers do, as plain methods (fast tests call them with a
fake API); :func:`build_registry` registers them with kopf explicitly (no import-time
registration). What triggers a reconcile pass of an InferenceModel:

- it is created, its spec changes, or the operator starts (kopf change handlers: resume);
- an owned Deployment changes (status for the CR; drift of the Deployment is corrected, and
  an unchanged Deployment is not re-applied, see :mod:`.reconcile.applied`);
- the resync, every ``resync_seconds`` (drift of the other owned objects): one loop per
  kind lists the objects and runs their passes one after another, spread evenly over the
  interval, each on a fresh read — not a kopf timer per object, which would make kopf put
  a finalizer on every object (a PATCH at creation, another at deletion, and deletion
  waiting for the operator) and fire the timers of all objects created together at once.

And of an InferenceEnsemble: the same three, plus any event of an InferenceModel it refers
to (kopf index ``ensembles_by_model``: referenced model -> ensembles), so the ensemble
follows its models.

Passes of one object never overlap (:class:`~kubeinfer.operator.reconcile.serial.Serial`:
the resync, the Deployment's events and the models' events run outside the object's own
kopf worker). A permanent :class:`~kubeinfer.operator.reconcile.Failure` (invalid spec,
object rejected by the API server, name clash) becomes a Warning Event and
``kopf.PermanentError`` — no retries until the spec changes; a temporary one is retried with
its delay. In the background paths (the resync, events of other objects) every error is caught
per object and logged: one bad object never stops the others.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import kopf

from kubeinfer.operator.api.v1alpha1 import API_VERSION, ENSEMBLE_KIND, ENSEMBLE_PLURAL, GROUP, KIND, PLURAL, VERSION
from kubeinfer.operator.k8s import ApiFailure, KubeApi
from kubeinfer.operator.k8s.lease import LeaseTimings
from kubeinfer.operator.reconcile import EnsembleReconciler, Failure, Reconciler, referenced_models
from kubeinfer.operator.reconcile.reconciler import already_failed
from kubeinfer.operator.reconcile.serial import Serial
from kubeinfer.operator.render.common import MANAGED_BY
from kubeinfer.operator.settings import OperatorSettings

log = logging.getLogger("kubeinfer.operator")
ANNOTATION_PREFIX = "kubeinfer.dev"
# an index lookup: (namespace, model) -> names of the ensembles that refer to it
EnsembleIndex = Mapping[tuple[str, str], Iterable[str]]
# an index lookup: (namespace, name) -> the InferenceModel as last watched (see index_models)
ModelIndex = Mapping[tuple[str, str], Iterable[Mapping[str, Any]]]


class MemoryDiffBase(kopf.DiffBaseStorage):
    """kopf's last handled state of each object (to tell a spec change from a status
    write), kept in this process instead of an annotation on the object: the annotation
    costs a PATCH, and one more watch event, per change of every object. Nothing is lost
    by forgetting it: after a restart every object gets a full pass, as on resume. One
    entry per live object, dropped when the object is deleted (:meth:`forget`)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, kopf.BodyEssence] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._seen.get(body.metadata.uid or "")

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._seen[body.metadata.uid or ""] = essence

    def forget(self, body: Mapping[str, Any]) -> None:
        self._seen.pop((body.get("metadata") or {}).get("uid") or "", None)


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    """kopf's progress in ``kubeinfer.dev/*`` annotations, without the ``kopf-managed``
    marker kopf adds on the first handler outcome of every object: a PATCH per new object
    that only brands the prefix for other kopf-based operators (ours is cleared from the
    diff by its prefix alone). Records are still written while a handler is retried."""

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        return None


def configure_kopf(kopf_settings: kopf.OperatorSettings, ours: OperatorSettings,
                   diffbase: kopf.DiffBaseStorage | None = None) -> None:
    """kopf settings that matter on a real API server (see docs/operator.md)."""
    kopf_settings.watching.server_timeout = ours.watch_server_timeout
    kopf_settings.watching.client_timeout = ours.watch_client_timeout
    kopf_settings.watching.connect_timeout = 30
    # progress (only while a handler is being retried) in annotations: nothing of kopf's
    # lands in .status; the diff-base in memory (see MemoryDiffBase)
    kopf_settings.persistence.progress_storage = ProgressAnnotations(prefix=ANNOTATION_PREFIX)
    kopf_settings.persistence.diffbase_storage = diffbase or MemoryDiffBase()
    kopf_settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    kopf_settings.posting.level = logging.WARNING  # only warnings become Events
    kopf_settings.networking.error_backoffs = [1, 2, 5, 10, 30]


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A kopf body (a live view) as a plain dict of its own."""
    return copy.deepcopy({k: body[k] for k in body})


def _ident(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def _live(body: Mapping[str, Any] | None) -> bool:
    """Worth a pass: exists, not being deleted, not already found unreconcilable."""
    return body is not None and not (body.get("metadata") or {}).get("deletionTimestamp") \
        and not already_failed(dict(body))


class Handlers:
    """What the kopf handlers do; kopf-free apart from the outcome exceptions."""

    def __init__(self, api: Any, models: Reconciler, ensembles: EnsembleReconciler,
                 warn: Callable[..., None] = kopf.warn, concurrency: int = 16,
                 namespaces: Iterable[str] = ()) -> None:
        self.api = api
        self.slots = asyncio.Semaphore(concurrency)  # passes at once, all objects together
        self.warn = warn  # a Warning Event (kopf's poster; tests pass a recorder)
        self.reconcilers: dict[str, Reconciler | EnsembleReconciler] = {KIND: models, ENSEMBLE_KIND: ensembles}
        self.serial = Serial()
        self.namespaces = list(namespaces)  # what the resync lists (empty: all)
        self.background: set[asyncio.Task[None]] = set()

    async def reconcile(self, kind: str, body: dict[str, Any], background: bool, light: bool = False,
                        deployment: dict[str, Any] | None = None) -> None:
        """One pass, after any other pass of the same object. ``background``: errors are
        logged, never raised (nothing would retry them but the next event or resync);
        ``light``, ``deployment``: see
        :meth:`~kubeinfer.operator.reconcile.reconciler.BaseReconciler.reconcile`."""
        namespace, name = _ident(body)
        async with self.serial((kind, namespace, name)), self.slots:
            try:
                await self.reconcilers[kind].reconcile(body, light=light, deployment=deployment)
            except Failure as failure:
                if failure.permanent:
                    self.warn(body, reason=failure.reason, message=failure.message)
                    if not background:
                        raise kopf.PermanentError(f"{failure.reason}: {failure.message}") from None
                elif not background:
                    raise kopf.TemporaryError(failure.message, delay=failure.delay) from None
                else:
                    log.warning("%s %s/%s: %s (will retry)", kind, namespace, name, failure.message)
            except Exception:
                if not background:
                    raise
                log.exception("%s %s/%s: reconcile failed; the next event or resync retries", kind, namespace, name)

    # --- kopf handlers -------------------------------------------------------------------

    async def changed(self, kind: str, body: Mapping[str, Any]) -> None:
        """Created, spec changed, operator (re)started: kopf retries what this raises."""
        await self.reconcile(kind, plain(body), background=False)

    async def resync(self, kind: str, body: Mapping[str, Any] | None) -> None:
        """The resync of one object: re-apply what it owns (drift), unless it cannot converge."""
        if _live(body):
            await self.reconcile(kind, plain(body), background=True)

    def _listing(self, kind: str) -> Callable[[list[str]], Awaitable[list[dict[str, Any]]]]:
        return self.api.list_inference_models if kind == KIND else self.api.list_inference_ensembles

    async def resync_round(self, kind: str, interval: float) -> int:
        """One round of the resync of ``kind``: every object, read afresh just before its
        pass, the passes started evenly over ``interval`` seconds and run one after another
        (a resync never crowds out the passes of events). Returns the passes run."""
        try:
            listed = await self._listing(kind)(self.namespaces)
        except ApiFailure as exc:
            log.warning("resync: cannot list %ss: %s", kind, exc)
            return 0
        loop = asyncio.get_running_loop()
        start, slot, ran = loop.time(), interval / max(len(listed), 1), 0
        for i, item in enumerate(listed):
            await asyncio.sleep(max(0.0, start + i * slot - loop.time()))
            namespace, name = _ident(item)
            try:
                body = await self.api.get(API_VERSION, kind, namespace, name)
            except ApiFailure as exc:
                log.warning("resync: cannot read %s %s/%s: %s", kind, namespace, name, exc)
                continue
            if _live(body):
                await self.reconcile(kind, plain(body), background=True)
                ran += 1
        return ran

    async def resync_forever(self, kind: str, interval: float) -> None:
        """A round every ``interval`` seconds, the first one ``interval`` after the start
        (the startup passes have just run)."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(interval)
        while True:
            start = loop.time()
            try:
                await self.resync_round(kind, interval)
            except Exception:  # noqa: BLE001 - the resync must outlive any one round
                log.exception("resync of %ss: the round failed; the next one runs in %ss", kind, interval)
            await asyncio.sleep(max(0.0, start + interval - loop.time()))

    def start_resync(self, interval: float) -> None:
        for kind in self.reconcilers:
            task = asyncio.ensure_future(self.resync_forever(kind, interval))
            self.background.add(task)

    async def stop_resync(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        self.background.clear()

    async def model_event(self, body: Mapping[str, Any], type: str | None, ensembles_by_model: EnsembleIndex) -> None:
        """Any event of an InferenceModel: re-run the ensembles that refer to it (existence,
        readiness and served name of their models are part of their status)."""
        if type is None:
            return  # the initial listing: the ensembles' own resume handlers cover it
        namespace, model = _ident(body)
        for name in sorted(set(ensembles_by_model.get((namespace, model), ()))):
            try:
                ensemble = await self.api.get(API_VERSION, ENSEMBLE_KIND, namespace, name)
            except ApiFailure as exc:
                log.warning("cannot read InferenceEnsemble %s/%s: %s", namespace, name, exc)
                continue
            if _live(ensemble) and model in referenced_models(ensemble):
                log.info("InferenceModel %s/%s changed: reconciling InferenceEnsemble %s", namespace, model, name)
                await self.reconcile(ENSEMBLE_KIND, ensemble, background=True)

    async def deployment_event(self, body: Mapping[str, Any], type: str | None,
                               models: ModelIndex | None = None) -> None:
        """A Deployment we manage changed: its owner's status follows (and drift is undone:
        a deleted Deployment comes back). The initial listing is skipped: the startup's
        passes of the owners cover it. An InferenceModel owner comes from ``models`` (the
        watch's view: no GET per event; a view older than the object only costs the
        status write's conflict and a re-read), other owners are read."""
        meta = body.get("metadata") or {}
        owner = next((r for r in meta.get("ownerReferences") or []
                      if r.get("kind") in self.reconcilers and r.get("controller")), None)
        if owner is None or type is None:
            return
        live: dict[str, Any] | None = plain(body)
        if type == "DELETED":
            self.reconcilers[owner["kind"]].applied.forget(meta["namespace"], meta["name"])
            live = None
        obj = None
        if owner["kind"] == KIND and models is not None:
            obj = next((copy.deepcopy(dict(m)) for m in models.get((meta["namespace"], owner["name"]), ())
                        if (m.get("metadata") or {}).get("uid") == owner["uid"]), None)
        try:
            if obj is None:
                obj = await self.api.get(API_VERSION, owner["kind"], meta["namespace"], owner["name"])
        except ApiFailure as exc:
            log.warning("cannot read the owner of Deployment %s/%s: %s", meta["namespace"], meta["name"], exc)
            return
        if _live(obj) and obj["metadata"]["uid"] == owner["uid"]:
            await self.reconcile(owner["kind"], obj, background=True, light=True, deployment=live)


def index_ensembles(namespace: str, name: str, body: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """The ``ensembles_by_model`` index entries of one InferenceEnsemble."""
    return {(namespace, model): name for model in referenced_models(dict(body))}


def index_models(namespace: str, name: str, body: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The ``models_by_name`` index entry of one InferenceModel: what a pass reads of it
    (no managedFields, no annotations: a few KB per model)."""
    meta = body.get("metadata") or {}
    slim = {k: meta[k] for k in ("name", "namespace", "uid", "generation", "resourceVersion", "labels",
                                 "deletionTimestamp") if meta.get(k) is not None}
    return {(namespace, name): copy.deepcopy({"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                                              "metadata": slim, "spec": body.get("spec") or {},
                                              "status": body.get("status") or {}})}


def build_registry(settings: OperatorSettings, handlers: Handlers,
                   diffbase: MemoryDiffBase | None = None) -> kopf.OperatorRegistry:
    """``diffbase``: the storage given to :func:`configure_kopf` (its entries of deleted
    objects are dropped here)."""
    registry = kopf.OperatorRegistry()
    models = (GROUP, VERSION, PLURAL)
    ensembles = (GROUP, VERSION, ENSEMBLE_PLURAL)

    def deleted(body: kopf.Body, type: str | None) -> None:
        if type == "DELETED" and diffbase is not None:
            diffbase.forget(body)

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        handlers.start_resync(settings.resync_seconds)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await handlers.stop_resync()
        await handlers.api.close()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    # the index functions are coroutines: kopf runs a plain function in its thread pool, a
    # hop to another thread (and its malloc arena) for every event of every object
    @kopf.index(*ensembles, id="ensembles_by_model", registry=registry)
    async def ensembles_by_model(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], str]:
        return index_ensembles(namespace, name, body)

    @kopf.index(*models, id="models_by_name", registry=registry)
    async def models_by_name(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
        return index_models(namespace, name, body)

    @kopf.on.resume(*models, id="model_changed", registry=registry)
    @kopf.on.create(*models, id="model_changed", registry=registry)
    @kopf.on.update(*models, id="model_changed", registry=registry)
    async def model_changed(body: kopf.Body, **_: Any) -> None:
        await handlers.changed(KIND, body)

    @kopf.on.resume(*ensembles, id="ensemble_changed", registry=registry)
    @kopf.on.create(*ensembles, id="ensemble_changed", registry=registry)
    @kopf.on.update(*ensembles, id="ensemble_changed", registry=registry)
    async def ensemble_changed(body: kopf.Body, **_: Any) -> None:
        await handlers.changed(ENSEMBLE_KIND, body)

    @kopf.on.event(*models, id="model_event", registry=registry)
    async def model_event(body: kopf.Body, type: str | None, ensembles_by_model: kopf.Index, **_: Any) -> None:
        deleted(body, type)
        await handlers.model_event(body, type, ensembles_by_model)

    @kopf.on.event(*ensembles, id="ensemble_event", registry=registry)
    async def ensemble_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        deleted(body, type)

    @kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGED_BY},
                   id="deployment_event", registry=registry)
    async def deployment_event(body: kopf.Body, type: str | None, models_by_name: kopf.Index, **_: Any) -> None:
        await handlers.deployment_event(body, type, models_by_name)

    return registry


class LeadershipLost(Exception):
    """The leader Lease could not be renewed: this process stopped acting."""


async def _standby_liveness(url: str | None) -> Any:
    """While waiting for the Lease, answer the liveness probe kopf answers once it runs."""
    if not url:
        return None
    from urllib.parse import urlparse

    from aiohttp import web

    where = urlparse(url)
    app = web.Application()
    app.router.add_get(where.path or "/", lambda request: web.json_response({"standby": True}))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, where.hostname, where.port).start()
    return runner


async def run_operator(settings: OperatorSettings, api: KubeApi, liveness: str | None = None) -> None:
    """Run the operator; with ``leader_election`` only while holding the Lease (raises
    :class:`LeadershipLost` when it is lost: the process must exit, not go on acting)."""
    handlers = Handlers(api, Reconciler(api, settings.render_options()),
                        EnsembleReconciler(api, settings.render_options()),
                        concurrency=settings.max_concurrent_reconciles, namespaces=settings.namespaces)
    kopf_settings = kopf.OperatorSettings()
    diffbase = MemoryDiffBase()
    configure_kopf(kopf_settings, settings, diffbase)

    def operator() -> Any:
        return kopf.operator(
            registry=build_registry(settings, handlers, diffbase),
            settings=kopf_settings,
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=liveness,
        )

    if not settings.leader_election:
        await operator()
        return
    lease = api.leader_lease(settings.lease_namespace, settings.lease_name, settings.identity,
                             LeaseTimings(settings.lease_seconds, settings.lease_seconds * 2 / 3,
                                          max(0.5, settings.lease_seconds / 7.5)))
    standby = await _standby_liveness(liveness)
    try:
        await lease.acquire()
    finally:
        if standby is not None:
            await standby.cleanup()
    running = asyncio.ensure_future(operator())
    holding = asyncio.ensure_future(lease.hold())
    done, _ = await asyncio.wait({running, holding}, return_when=asyncio.FIRST_COMPLETED)
    if holding in done:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        raise LeadershipLost(f"lease {settings.lease_namespace}/{settings.lease_name} lost")
    holding.cancel()
    await running
