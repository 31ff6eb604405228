"""Serving processes per pod: spec.runtime.workers, its default from the CPU limit (or
request), one for a GPU model, and KUBEINFER_WORKERS in the runtime's env only above one."""

from __future__ import annotations

from decimal import Decimal

import kopf
import pytest
from tests.operator.fake_api import FakeKubeApi
from tests.operator.operator_helpers import assert_k8s_valid, make_target
from tests.operator.test_op_handlers import IM, handlers, model, ready

from kubeinfer.operator.api.v1alpha1 import InferenceModelSpec, RuntimeSpec
from kubeinfer.operator.render import render_all
from kubeinfer.operator.render.deployment import deployment
from kubeinfer.operator.render.workers import default_workers, quantity, serving_processes


@pytest.mark.parametrize("value, expected", [
    ("500m", Decimal("0.5")), ("2", Decimal(2)), ("1.5", Decimal("1.5")), (2, Decimal(2)), ("2500m", Decimal("2.5")),
    (".5", Decimal("0.5")), ("+3", Decimal(3)), ("1e3", Decimal(1000)), ("1E-3", Decimal("0.001")),
    ("1k", Decimal(1000)), ("1Ki", Decimal(1024)), ("100n", Decimal("1E-7")), ("0", Decimal(0)),
])
def test_quantity(value, expected):
    assert quantity(value) == expected


@pytest.mark.parametrize("value", ["two cores", "1.5 GB", "", "2x", "1e1.5", "-1"])
def test_quantity_refuses_what_is_not_one(value):
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity(value)


def runtime(**fields) -> RuntimeSpec:
    return RuntimeSpec.model_validate(fields)


@pytest.mark.parametrize("resources, expected", [
    ({}, 1),  # no CPU quantity
    ({"requests": {"memory": "1Gi"}}, 1),
    ({"requests": {"cpu": "500m"}}, 1),  # less than one CPU
    ({"requests": {"cpu": "2"}}, 2),  # no limit: the request
    ({"limits": {"cpu": "2"}}, 2),
    ({"requests": {"cpu": "1"}, "limits": {"cpu": "4"}}, 4),  # the limit wins
    ({"requests": {"cpu": "4"}, "limits": {"cpu": "1"}}, 1),
    ({"limits": {"cpu": "1.5"}}, 1),  # whole CPUs: floor
    ({"limits": {"cpu": "2500m"}}, 2),
    ({"limits": {"cpu": 3}}, 3),
    ({"limits": {"cpu": "16"}}, 8),  # at most 8
    ({"limits": {"cpu": "1e9"}}, 8),
])
def test_default_for_a_cpu_model_follows_its_cpus(resources, expected):
    rt = runtime(resources=resources)
    assert default_workers(rt) == serving_processes(rt) == expected


@pytest.mark.parametrize("fields", [
    {"gpus": 1, "resources": {"limits": {"cpu": "4"}}},
    {"resources": {"requests": {"cpu": "8"}, "limits": {"nvidia.com/gpu": 1}}},
    {"gpus": 2, "workers": 1, "resources": {"limits": {"cpu": "8"}}},
])
def test_a_gpu_model_runs_one_process(fields):
    assert serving_processes(runtime(**fields)) == 1


def test_workers_set_wins_over_the_default():
    assert serving_processes(runtime(workers=3, resources={"limits": {"cpu": "1"}})) == 3
    assert serving_processes(runtime(workers=1, resources={"limits": {"cpu": "4"}})) == 1
    assert serving_processes(runtime(workers=12)) == 12  # the cap of 8 is the default's only


@pytest.mark.parametrize("fields, words", [
    ({"gpus": 1, "workers": 2}, r"a GPU model runs one serving process \(2 would each load the model onto the GPU\)"),
    ({"resources": {"limits": {"nvidia.com/gpu": 1}}, "workers": 4}, "a GPU model runs one serving process"),
    ({"workers": 0}, "greater than or equal to 1"),
    ({"workers": 65}, "less than or equal to 64"),
])
def test_workers_the_spec_refuses(fields, words):
    with pytest.raises(ValueError, match=words):
        InferenceModelSpec.model_validate({"model": {"uri": "s3://b/m"}, "runtime": fields})


def env_of(t, options):
    return deployment(t, options)["spec"]["template"]["spec"]["containers"][0]["env"]


def test_env_set_above_one_process_only(options):
    d = deployment(make_target(runtime={"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}}), options)
    assert_k8s_valid(d)
    env = d["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KUBEINFER_WORKERS", "value": "2"} in env
    # one process: the env (and so the pod template) is what it was before the operator chose
    for runtime_fields in ({}, {"resources": {"requests": {"cpu": "500m"}}}, {"workers": 1},
                           {"gpus": 1, "resources": {"limits": {"cpu": "4"}}}):
        assert env_of(make_target(runtime=runtime_fields), options) == [
            {"name": "KUBEINFER_SHUTDOWN_DELAY_SECONDS", "value": "5"}
        ], runtime_fields


def test_explicit_workers_rendered(options):
    env = env_of(make_target(runtime={"workers": 3, "logLevel": "debug"}), options)
    assert [e["name"] for e in env] == ["KUBEINFER_SHUTDOWN_DELAY_SECONDS", "KUBEINFER_LOG_LEVEL", "KUBEINFER_WORKERS"]
    assert env[-1] == {"name": "KUBEINFER_WORKERS", "value": "3"}


@pytest.mark.parametrize("runtime_fields", [
    {"resources": {"limits": {"cpu": "4"}}},  # over the default
    {"workers": 4},  # over the field
    {},  # where the operator would set none
])
def test_the_users_env_wins(options, runtime_fields):
    runtime_fields = {**runtime_fields, "env": [{"name": "KUBEINFER_WORKERS", "value": "2"}]}
    env = env_of(make_target(runtime=runtime_fields), options)
    assert [e for e in env if e["name"] == "KUBEINFER_WORKERS"] == [{"name": "KUBEINFER_WORKERS", "value": "2"}]


def test_render_stays_pure(options):
    t = make_target(runtime={"resources": {"limits": {"cpu": "2"}}})
    assert render_all(t, options) == render_all(t, options)


async def test_operator_gives_a_two_cpu_model_two_processes():
    api = FakeKubeApi()
    h, _ = handlers(api)
    body = api.put(model("mlp", runtime={"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}}))
    await h.changed("InferenceModel", body)
    (runtime_container,) = api.obj("apps/v1", "Deployment", "mlp")["spec"]["template"]["spec"]["containers"]
    assert {"name": "KUBEINFER_WORKERS", "value": "2"} in runtime_container["env"]
    assert ready(api.obj(*IM, "mlp"))["status"] == "True"


async def test_operator_refuses_workers_on_a_gpu_model_with_a_status():
    api = FakeKubeApi()
    h, warn = handlers(api)
    body = api.put(model("gpu", runtime={"gpus": 1, "workers": 2}))
    with pytest.raises(kopf.PermanentError, match="spec.runtime.workers"):
        await h.changed("InferenceModel", body)
    r = ready(api.obj(*IM, "gpu"))
    assert (r["status"], r["reason"]) == ("False", "InvalidSpec")
    assert r["message"].startswith("spec.runtime.workers: a GPU model runs one serving process")
    assert warn.events[0][:2] == ("gpu", "InvalidSpec")
    assert api.obj("apps/v1", "Deployment", "gpu") is None
