"""The kopf handlers' logic against an in-memory API: what each trigger reconciles, that a
bad object never stops the others, that passes of one object never overlap, and that a
status computed from an older view never overwrites a newer one."""

from __future__ import annotations

import asyncio
import copy

import kopf
import pytest

from kubeinfer.operator.handlers import Handlers, index_ensembles
from kubeinfer.operator.k8s import ApiFailure
from kubeinfer.operator.reconcile import EnsembleReconciler, Failure, Reconciler
from kubeinfer.operator.reconcile.serial import Serial
from kubeinfer.operator.render import RenderOptions
from tests.operator.fake_api import AVAILABLE, FakeKubeApi

IM = ("kubeinfer.dev/v1alpha1", "InferenceModel")
IE = ("kubeinfer.dev/v1alpha1", "InferenceEnsemble")


def model(name, **spec):
    spec.setdefault("model", {"uri": "s3://b/m"})
    return {"apiVersion": IM[0], "kind": IM[1], "metadata": {"name": name, "namespace": "ns"}, "spec": spec}


def ensemble(name, *refs):
    steps = [{"name": f"s{i}", "modelRef": r, "inputMap": {"x": "in"}, "outputMap": {"y": f"t{i}"}}
             for i, r in enumerate(refs)]
    return {"apiVersion": IE[0], "kind": IE[1], "metadata": {"name": name, "namespace": "ns"},
            "spec": {"inputs": [{"name": "in", "datatype": "FP32", "dims": [1]}],
                     "outputs": [{"name": f"t{len(refs) - 1}", "datatype": "FP32", "dims": [1]}], "steps": steps}}


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, body, reason, message):
        self.events.append((body["metadata"]["name"], reason, message))


def handlers(api):
    opts = RenderOptions()
    warn = Recorder()
    return Handlers(api, Reconciler(api, opts, clock=lambda: "T"), EnsembleReconciler(api, opts, clock=lambda: "T"),
                    warn=warn), warn


def ready(obj):
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})


async def test_change_handler_reconciles_and_reports_ready():
    api = FakeKubeApi()
    h, _ = handlers(api)
    body = api.put(model("digits"))
    await h.changed("InferenceModel", body)
    assert api.obj("apps/v1", "Deployment", "digits") is not None
    assert ready(api.obj(*IM, "digits"))["status"] == "True"


async def test_change_handler_outcomes_are_kopf_errors():
    api = FakeKubeApi()
    h, warn = handlers(api)
    bad = api.put(model("bad", model={"uri": "s3://b/m", "config": {"max_batch_size": 2 ** 40}}))
    with pytest.raises(kopf.PermanentError, match="max_batch_size"):
        await h.changed("InferenceModel", bad)
    assert warn.events and warn.events[0][:2] == ("bad", "InvalidSpec")
    api.fail = lambda verb, kind, name: ApiFailure(503, "unavailable") if verb == "apply" else None
    good = api.put(model("good"))
    with pytest.raises(kopf.TemporaryError):
        await h.changed("InferenceModel", good)


async def test_resync_survives_a_bad_object_and_a_failing_status_write(caplog):
    api = FakeKubeApi()
    h, _ = handlers(api)
    good = api.put(model("good"))
    await h.changed("InferenceModel", good)
    # drift: the Service is deleted; the status write of another model fails with a 500
    del api.objects[("v1", "Service", "ns", "good")]
    broken = api.put(model("broken"))
    api.fail = lambda verb, kind, name: ApiFailure(500, "etcd timeout") if (verb, name) == ("status", "broken") else None
    await h.resync("InferenceModel", broken)  # logged, not raised
    # and a bug (not a Failure) in one object's pass is logged, not raised
    api.fail = lambda verb, kind, name: RuntimeError("boom") if name == "broken" else None  # type: ignore[return-value]
    await h.resync("InferenceModel", broken)
    assert "boom" in caplog.text
    api.fail = lambda verb, kind, name: None
    await h.resync("InferenceModel", api.obj(*IM, "good"))
    assert api.obj("v1", "Service", "good") is not None


async def test_resync_skips_what_already_failed():
    api = FakeKubeApi()
    h, _ = handlers(api)
    bad = api.put(model("bad", model={"uri": "s3://b/m", "config": {"dynamic_batching": {
        "max_queue_delay_microseconds": -5}, "max_batch_size": 4}}))
    with pytest.raises(kopf.PermanentError):
        await h.changed("InferenceModel", bad)
    calls = len(api.calls)
    await h.resync("InferenceModel", api.obj(*IM, "bad"))
    assert len(api.calls) == calls
    assert "dynamic_batching.max_queue_delay_microseconds" in ready(api.obj(*IM, "bad"))["message"]


async def test_model_event_reruns_only_the_ensembles_that_refer_to_it():
    api = FakeKubeApi()
    h, _ = handlers(api)
    for n in ("a", "b"):
        await h.changed("InferenceModel", api.put(model(n)))
    uses_a, uses_b = api.put(ensemble("uses-a", "a")), api.put(ensemble("uses-b", "b"))
    index = {}
    for ie in (uses_a, uses_b):
        for key, name in index_ensembles("ns", ie["metadata"]["name"], ie).items():
            index.setdefault(key, []).append(name)
    await h.model_event(api.obj(*IM, "a"), "MODIFIED", index)
    assert ready(api.obj(*IE, "uses-a"))["status"] == "True"
    assert api.obj(*IE, "uses-b").get("status") is None
    # the model disappears: the ensemble says so
    del api.objects[(*IM, "ns", "a")]
    await h.model_event(model("a"), "DELETED", index)
    assert ready(api.obj(*IE, "uses-a"))["reason"] == "ModelNotFound"
    # the initial listing is left to the ensembles' own resume handlers
    calls = len(api.calls)
    await h.model_event(api.obj(*IM, "b"), None, index)
    assert len(api.calls) == calls


async def test_deployment_event_updates_its_owner_only():
    api = FakeKubeApi(deployment_status={})
    h, _ = handlers(api)
    await h.changed("InferenceModel", api.put(model("m")))
    assert ready(api.obj(*IM, "m"))["reason"] == "ReplicasNotReady"
    # the Deployment's controller writes its status: the event carries it, the owner's
    # status follows without the Deployment being applied again
    api.obj("apps/v1", "Deployment", "m")["status"] = copy.deepcopy(AVAILABLE)
    calls = len(api.calls)
    await h.deployment_event(api.obj("apps/v1", "Deployment", "m"), "MODIFIED")
    assert ready(api.obj(*IM, "m"))["status"] == "True"
    assert [c for c in api.calls[calls:] if c[0] != "get"] == [("status", "InferenceModel", "m")]
    # a Deployment whose owner is gone (or another one of the same name) is left alone
    stray = copy.deepcopy(api.obj("apps/v1", "Deployment", "m"))
    stray["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    calls = len(api.calls)
    await h.deployment_event(stray, "MODIFIED")
    assert [c for c in api.calls[calls:] if c[0] != "get"] == []
    # the initial listing is left to the owners' own resume handlers
    await h.deployment_event(api.obj("apps/v1", "Deployment", "m"), None)
    assert len(api.calls) == calls + 1


async def test_stale_status_is_never_written_over_a_newer_one():
    """Pass A computes 0/1 from its apply; before it writes, pass B sees the Deployment 1/1
    and writes Ready. A's write carries the version A read: refused, A re-reads and runs
    again instead of putting the stale 0/1 back."""
    api = FakeKubeApi(deployment_status={})
    body = api.put(model("m"))
    a, b = Reconciler(api, RenderOptions(), clock=lambda: "T"), Reconciler(api, RenderOptions(), clock=lambda: "T")

    async def meanwhile(name):
        api.deployment_status = AVAILABLE
        await b.reconcile(api.obj(*IM, "m"))
        assert ready(api.obj(*IM, "m"))["status"] == "True"

    api.before_status = meanwhile
    await a.reconcile(body)
    assert ready(api.obj(*IM, "m"))["status"] == "True"
    assert api.obj(*IM, "m")["status"]["readyReplicas"] == 1


async def test_passes_of_one_object_do_not_overlap():
    api = FakeKubeApi()
    h, _ = handlers(api)
    running, overlap = set(), []

    class Slow(Reconciler):
        async def reconcile(self, body, light=False, deployment=None):
            key = body["metadata"]["name"]
            overlap.append(key in running)
            running.add(key)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            running.discard(key)
            return {}

    h.reconcilers["InferenceModel"] = Slow(api, RenderOptions())
    body = api.put(model("m"))
    await asyncio.gather(*(h.resync("InferenceModel", body) for _ in range(5)),
                         h.deployment_event({"metadata": {}}, "MODIFIED"))
    assert overlap == [False] * 5
    assert len(h.serial) == 0  # nothing left behind


async def test_serial_queues_per_key_and_forgets_idle_keys():
    serial = Serial()
    order = []
    gate = asyncio.Event()

    async def job(key, tag, wait=False):
        async with serial(key):
            order.append(f"{tag}+")
            if wait:
                await gate.wait()
            order.append(f"{tag}-")

    first = asyncio.create_task(job("a", "a1", wait=True))
    await asyncio.sleep(0)
    second = asyncio.create_task(job("a", "a2"))
    other = asyncio.create_task(job("b", "b1"))
    await other
    assert order == ["a1+", "b1+", "b1-"] and len(serial) == 1
    gate.set()
    await asyncio.gather(first, second)
    assert order[3:] == ["a1-", "a2+", "a2-"] and len(serial) == 0


async def test_failure_outcomes_of_reconciler_stay_failures():
    """A transient status-write failure is a temporary Failure, not a raw API error."""
    api = FakeKubeApi()
    body = api.put(model("m", model={"uri": "s3://b/m", "config": {"max_batch_size": -1}}))
    api.fail = lambda verb, kind, name: ApiFailure(503, "unavailable") if verb == "status" else None
    with pytest.raises(Failure) as info:
        await Reconciler(api, RenderOptions()).reconcile(body)
    assert not info.value.permanent


async def test_deployment_event_pass_is_light_the_resync_full():
    """A Deployment event re-applies only the Deployment, and only when it drifted (its
    generation moved: someone changed its spec) or was deleted; the resync brings back
    everything else."""
    api = FakeKubeApi()
    h, _ = handlers(api)
    await h.changed("InferenceModel", api.put(model("m")))
    del api.objects[("v1", "Service", "ns", "m")]
    applies = lambda since: [c for c in api.calls[since:] if c[0] == "apply"]  # noqa: E731
    calls = len(api.calls)
    await h.deployment_event(api.obj("apps/v1", "Deployment", "m"), "MODIFIED")
    assert applies(calls) == []  # what our last apply left: nothing to correct
    edited = api.obj("apps/v1", "Deployment", "m")
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else"
    edited["metadata"]["generation"] += 1
    await h.deployment_event(edited, "MODIFIED")
    assert applies(calls) == [("apply", "Deployment", "m")]
    assert api.obj("apps/v1", "Deployment", "m")["spec"]["template"]["spec"]["containers"][0]["image"] != "someone/else"
    gone = api.objects.pop(("apps/v1", "Deployment", "ns", "m"))
    await h.deployment_event(gone, "DELETED")
    assert applies(calls) == [("apply", "Deployment", "m")] * 2 and api.obj("apps/v1", "Deployment", "m")
    assert api.obj("v1", "Service", "m") is None
    await h.resync("InferenceModel", api.obj(*IM, "m"))
    assert api.obj("v1", "Service", "m") is not None


async def test_a_changed_render_is_applied_on_the_next_deployment_event():
    """The record of the last apply is per manifest: an operator whose render of the
    Deployment changed (another default image, say) applies it at the next event."""
    api = FakeKubeApi()
    h, _ = handlers(api)
    await h.changed("InferenceModel", api.put(model("m")))
    h.reconcilers["InferenceModel"].options = RenderOptions(runtime_image="other/runtime:2")
    await h.deployment_event(api.obj("apps/v1", "Deployment", "m"), "MODIFIED")
    assert api.obj("apps/v1", "Deployment", "m")["spec"]["template"]["spec"]["containers"][0]["image"] \
        == "other/runtime:2"


async def test_resync_round_reads_each_object_afresh_and_survives_a_bad_one(caplog):
    """The resync lists the objects, then runs their passes one after another on a fresh
    read each: a drifted object is corrected, one whose read fails is skipped and logged,
    one already failed is left alone."""
    api = FakeKubeApi()
    h, _ = handlers(api)
    for name in ("a", "b", "c"):
        await h.changed("InferenceModel", api.put(model(name)))
    with pytest.raises(kopf.PermanentError):
        await h.changed("InferenceModel", api.put(model("bad", model={"uri": "s3://b/m",
                                                                   "config": {"max_batch_size": 2 ** 40}})))
    for name in ("a", "c"):
        del api.objects[("v1", "Service", "ns", name)]
    api.fail = lambda verb, kind, name: ApiFailure(503, "unavailable") if (verb, name) == ("get", "b") else None
    calls = len(api.calls)
    assert await h.resync_round("InferenceModel", interval=0.01) == 2
    assert api.obj("v1", "Service", "a") and api.obj("v1", "Service", "c")
    assert ("apply", "Deployment", "bad") not in api.calls[calls:]
    assert "cannot read InferenceModel ns/b" in caplog.text
    api.fail = lambda verb, kind, name: ApiFailure(503, "unavailable") if verb == "list" else None
    assert await h.resync_round("InferenceModel", interval=0.01) == 0


async def test_resync_runs_until_stopped():
    api = FakeKubeApi()
    h, _ = handlers(api)
    await h.changed("InferenceModel", api.put(model("a")))
    del api.objects[("v1", "Service", "ns", "a")]
    h.start_resync(0.01)
    for _ in range(200):
        if api.obj("v1", "Service", "a"):
            break
        await asyncio.sleep(0.01)
    assert api.obj("v1", "Service", "a")
    await h.stop_resync()
    assert not h.background


def test_kopf_diff_base_is_kept_in_memory_and_forgotten_with_the_object():
    """kopf's last handled state lives in the process (no annotation PATCH per change);
    a deleted object's entry goes with it."""
    from kubeinfer.operator.handlers import MemoryDiffBase

    store = MemoryDiffBase()
    body = kopf.Body({"metadata": {"name": "m", "namespace": "ns", "uid": "u1", "annotations": {"a": "b"}},
                      "spec": {"x": 1}, "status": {"y": 2}})
    assert store.fetch(body=body) is None  # after a start: every object gets its pass
    patch = kopf.Patch()
    essence = store.build(body=body)
    store.store(body=body, patch=patch, essence=essence)
    assert not patch  # nothing to write to the object
    assert store.fetch(body=body) == {"spec": {"x": 1}, "metadata": {"annotations": {"a": "b"}}}
    store.forget({"metadata": {"uid": "u1"}})
    assert store.fetch(body=body) is None and len(store) == 0


def test_a_handler_that_succeeds_at_once_leaves_kopf_nothing_to_patch():
    """kopf's progress storage writes a handler's record and purges it when the handler is
    done, and adds no marker annotation: no PATCH of the object at all."""
    from kubeinfer.operator.handlers import ProgressAnnotations

    storage = ProgressAnnotations(prefix="kubeinfer.dev")
    body = kopf.Body({"metadata": {"name": "m", "namespace": "ns", "uid": "u1"}})
    patch = kopf.Patch()
    storage.store(key="model_changed", record={"success": True, "retries": 1}, body=body, patch=patch)
    assert list(patch["metadata"]["annotations"]) == ["kubeinfer.dev/model_changed"]
    storage.purge(key="model_changed", body=body, patch=patch)
    assert not patch, dict(patch)


async def test_deployment_event_takes_its_model_from_the_index_and_survives_a_stale_one():
    """The owner of a Deployment event comes from the watch's index, not a GET; an index
    entry older than the object makes the status write conflict, then the pass re-reads."""
    from kubeinfer.operator.handlers import index_models

    api = FakeKubeApi(deployment_status={})
    h, _ = handlers(api)
    await h.changed("InferenceModel", api.put(model("m")))
    index = {("ns", "m"): [index_models("ns", "m", api.obj(*IM, "m"))["ns", "m"]]}
    api.obj("apps/v1", "Deployment", "m")["status"] = copy.deepcopy(AVAILABLE)
    calls = len(api.calls)
    await h.deployment_event(api.obj("apps/v1", "Deployment", "m"), "MODIFIED", index)
    assert api.calls[calls:] == [("status", "InferenceModel", "m")]
    assert ready(api.obj(*IM, "m"))["status"] == "True"
    # the index still shows the version before that write: refused, re-read, nothing to write
    api.obj("apps/v1", "Deployment", "m")["status"]["readyReplicas"] = 2
    calls = len(api.calls)
    await h.deployment_event(api.obj("apps/v1", "Deployment", "m"), "MODIFIED", index)
    assert api.calls[calls:] == [("status", "InferenceModel", "m"), ("get", "InferenceModel", "m"),
                                 ("status", "InferenceModel", "m")]
    assert api.obj(*IM, "m")["status"]["readyReplicas"] == 2
    # an entry of another object of that name (deleted, created again) is not used
    index = {("ns", "m"): [{**index["ns", "m"][0], "metadata": {"name": "m", "namespace": "ns", "uid": "old"}}]}
    calls = len(api.calls)
    await h.deployment_event(api.obj("apps/v1", "Deployment", "m"), "MODIFIED", index)
    assert api.calls[calls] == ("get", "InferenceModel", "m")
