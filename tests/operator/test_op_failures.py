"""Specs the schema lets through but nothing can serve: each ends as one Ready=False status
naming the field (no retry loop), and a name taken by another owner creates nothing."""

from __future__ import annotations

import pytest

from kubeinfer.operator.k8s import ApiFailure
from kubeinfer.operator.reconcile import EnsembleReconciler, Failure, Reconciler
from kubeinfer.operator.render import InvalidSpec, RenderOptions, render_all
from tests.operator.fake_api import FakeKubeApi
from tests.operator.operator_helpers import make_target
from tests.operator.test_op_handlers import IE, IM, ensemble, model, ready


@pytest.mark.parametrize("config, where", [
    ({"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": -5}},
     "spec.model.config.dynamic_batching.max_queue_delay_microseconds: Value out of range: -5"),
    ({"max_batch_size": 2 ** 40}, "spec.model.config.max_batch_size: Value out of range"),
    ({"max_batch_size": 8, "instance_group": [{"count": 1}, {"count": 2 ** 33}]},
     "spec.model.config.instance_group[1].count: Value out of range"),
])
def test_values_protobuf_refuses_are_invalid_specs_naming_the_field(config, where):
    t = make_target(model={"uri": "s3://b/m", "format": "onnx", "config": config})
    with pytest.raises(InvalidSpec) as info:
        render_all(t, RenderOptions())
    assert str(info.value).startswith(where)


async def test_malformed_value_answered_with_500_is_invalid_spec():
    api = FakeKubeApi()
    body = api.put(model("m"))
    msg = ('apply Deployment ns/m: failed to create typed patch object (ns/m; apps/v1, Kind=Deployment): '
           '.spec.template.spec.containers[name="runtime"].resources.requests.cpu: quantities must match '
           "the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    api.fail = lambda verb, kind, name: ApiFailure(500, msg) if (verb, kind) == ("apply", "Deployment") else None
    with pytest.raises(Failure) as info:
        await Reconciler(api, RenderOptions()).reconcile(body)
    assert info.value.permanent and info.value.reason == "InvalidSpec"
    r = ready(api.obj(*IM, "m"))
    assert (r["status"], r["reason"]) == ("False", "InvalidSpec") and "requests.cpu" in r["message"]
    # a plain 500 is still an outage, retried
    api.fail = lambda verb, kind, name: ApiFailure(500, "etcdserver: request timed out") if verb == "apply" else None
    with pytest.raises(Failure) as info:
        await Reconciler(api, RenderOptions()).reconcile(api.obj(*IM, "m"))
    assert not info.value.permanent


async def test_ensemble_named_like_a_model_is_a_name_clash_and_creates_nothing():
    api = FakeKubeApi()
    await Reconciler(api, RenderOptions()).reconcile(api.put(model("digits")))
    before = set(api.objects)
    ie = api.put(ensemble("digits", "digits"))
    with pytest.raises(Failure) as info:
        await EnsembleReconciler(api, RenderOptions()).reconcile(ie)
    assert info.value.permanent and info.value.reason == "NameClash"
    assert "belongs to InferenceModel 'digits'" in info.value.message
    assert set(api.objects) - before == {(*IE, "ns", "digits")}  # no ConfigMap, nothing
    r = ready(api.obj(*IE, "digits"))
    assert (r["status"], r["reason"]) == ("False", "NameClash")
    # and the other way round
    api2 = FakeKubeApi()
    await EnsembleReconciler(api2, RenderOptions()).reconcile(api2.put(ensemble("x", "y")))
    with pytest.raises(Failure, match="belongs to InferenceEnsemble 'x'"):
        await Reconciler(api2, RenderOptions()).reconcile(api2.put(model("x")))


async def test_deployment_of_a_deleted_predecessor_is_waited_for_not_a_clash():
    api = FakeKubeApi()
    await Reconciler(api, RenderOptions()).reconcile(api.put(model("m")))
    del api.objects[(*IM, "ns", "m")]
    again = api.put({**model("m"), "metadata": {"name": "m", "namespace": "ns", "uid": "uid-new"}})
    with pytest.raises(Failure) as info:
        await Reconciler(api, RenderOptions()).reconcile(again)
    assert not info.value.permanent and info.value.delay <= 5
