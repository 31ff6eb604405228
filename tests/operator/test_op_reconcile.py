"""Reconcile against a recording fake API: idempotent, prunes, statuses, failures."""

from __future__ import annotations

import pytest

from kubeinfer.operator.k8s import ApiFailure
from kubeinfer.operator.reconcile import Failure, Reconciler
from kubeinfer.operator.reconcile.reconciler import already_failed
from kubeinfer.operator.reconcile.status import deployment_conditions


class FakeApi:
    field_manager = "kubeinfer-operator"

    def __init__(self, deployment_status=None, reject=None, objects=None):
        self.objects = objects or {}  # (kind, name) -> what get returns
        self.applied = []
        self.handovers = []
        self.deleted = []
        self.statuses = []
        self.deployment_status = deployment_status or {}
        self.reject = reject

    async def apply(self, manifest, field_manager=None):
        if field_manager is not None:
            self.handovers.append((field_manager, manifest))
            return manifest
        if self.reject and manifest["kind"] == self.reject.get("kind"):
            raise ApiFailure(self.reject["status"], "Deployment.apps is invalid: bad quantity")
        self.applied.append(manifest)
        out = dict(manifest)
        if manifest["kind"] == "Deployment":
            out["metadata"] = {**manifest["metadata"], "generation": 1}
            out["status"] = self.deployment_status
        return out

    async def delete_owned(self, api_version, kind, namespace, name, owner_uid):
        self.deleted.append((kind, name))
        return kind == "HorizontalPodAutoscaler"

    async def get(self, api_version, kind, namespace, name):
        return None

    async def patch_status(self, namespace, name, status, kind="InferenceModel", resource_version=None):
        self.statuses.append(status)

    async def get(self, api_version, kind, namespace, name):
        return self.objects.get((kind, name))


def body(spec=None, generation=1, status=None):
    return {
        "apiVersion": "kubeinfer.dev/v1alpha1",
        "kind": "InferenceModel",
        "metadata": {"name": "digits", "namespace": "ns", "uid": "u-1", "generation": generation},
        "spec": spec or {"model": {"uri": "https://h/d.tar.gz"}, "replicas": 2},
        "status": status or {},
    }


AVAILABLE = {
    "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
    "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True",
                                                             "reason": "NewReplicaSetAvailable"}],
}


@pytest.fixture
def options():
    from kubeinfer.operator.render import RenderOptions

    return RenderOptions()


async def test_a_pass_after_a_status_sweeps_what_is_not_rendered(options):
    api = FakeApi(AVAILABLE)
    await Reconciler(api, options, clock=lambda: "T0").reconcile(body(generation=2, status={"observedGeneration": 1}))
    # what is not rendered is swept, each kind under the name it is rendered with
    assert ("HorizontalPodAutoscaler", "digits") in api.deleted and ("ConfigMap", "digits-model-config") in api.deleted


async def test_reconcile_applies_and_reports_ready(options):
    api = FakeApi(AVAILABLE)
    status = await Reconciler(api, options, clock=lambda: "T0").reconcile(body())
    assert [m["kind"] for m in api.applied] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert api.deleted == []  # the first pass: nothing of another spec can exist yet
    assert status["observedGeneration"] == 1
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert status["url"] == "http://digits.ns.svc.cluster.local:8000"
    assert status["selector"] == "kubeinfer.dev/inferencemodel=digits"
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "Available"
    assert conds["Progressing"]["status"] == "False" and conds["Degraded"]["status"] == "False"
    assert api.statuses == [status]


async def test_second_pass_is_a_no_op_for_status(options):
    api = FakeApi(AVAILABLE)
    first = await Reconciler(api, options, clock=lambda: "T0").reconcile(body())
    api.statuses.clear()
    second = await Reconciler(api, options, clock=lambda: "T1").reconcile(body(status=first))
    assert second == first  # lastTransitionTime kept: nothing changed
    assert api.statuses == []


async def test_invalid_spec_is_permanent_with_status(options):
    api = FakeApi()
    bad = {"model": {"uri": "s3://b/m", "config": {"max_batch_size": 2, "dynamic_batching": {"preferred_batch_size": [9]}}}}
    with pytest.raises(Failure) as info:
        await Reconciler(api, options, clock=lambda: "T0").reconcile(body(bad, generation=3))
    assert info.value.permanent and info.value.reason == "InvalidSpec"
    assert "preferred_batch_size" in info.value.message
    assert api.applied == []
    (status,) = api.statuses
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], status["observedGeneration"]) == ("False", "InvalidSpec", 3)
    assert already_failed(body(bad, generation=3, status=status))
    assert not already_failed(body(bad, generation=4, status=status))


async def test_rejected_apply_is_permanent_transient_is_not(options):
    with pytest.raises(Failure) as info:
        await Reconciler(FakeApi(reject={"kind": "Deployment", "status": 422}), options).reconcile(body())
    assert info.value.permanent and info.value.reason == "ApplyRejected"
    with pytest.raises(Failure) as info:
        await Reconciler(FakeApi(reject={"kind": "Deployment", "status": 503}), options).reconcile(body())
    assert not info.value.permanent


def test_conditions_during_rollout_and_when_stuck():
    rolling = {"metadata": {"generation": 2}, "spec": {"replicas": 3},
               "status": {"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "readyReplicas": 3,
                          "availableReplicas": 3, "conditions": [{"type": "Available", "status": "True"}]}}
    c = {x["type"]: x for x in deployment_conditions(rolling)}
    assert c["Progressing"]["status"] == "True" and c["Ready"]["status"] == "True"
    stuck = {"metadata": {"generation": 2}, "spec": {"replicas": 1},
             "status": {"observedGeneration": 2, "conditions": [
                 {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "slow"},
                 {"type": "Available", "status": "False"}]}}
    c = {x["type"]: x for x in deployment_conditions(stuck)}
    assert (c["Degraded"]["status"], c["Degraded"]["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert c["Ready"]["status"] == "False"
    c = {x["type"]: x for x in deployment_conditions(None)}
    assert c["Ready"]["reason"] == "Pending"


def test_operator_cli_parses():
    import argparse

    from kubeinfer.operator.cli import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["-n", "a", "-n", "b", "--resync-seconds", "5"])
    assert args.namespaces == ["a", "b"] and args.resync_seconds == 5


def test_settings_from_env(monkeypatch):
    from kubeinfer.operator.settings import OperatorSettings

    monkeypatch.setenv("KUBEINFER_OPERATOR_NAMESPACES", '["models"]')
    monkeypatch.setenv("KUBEINFER_OPERATOR_RESYNC_SECONDS", "42")
    s = OperatorSettings()
    assert s.namespaces == ["models"] and s.resync_seconds == 42
    assert s.runtime_image == "ghcr.io/kubeinfer/runtime:0.1.0"
