"""Render functions: every manifest is schema-valid, and carries what the issue promises."""

from __future__ import annotations

import pytest
from tests.operator.operator_helpers import assert_k8s_valid, example_docs, make_target, target_of

from kubeinfer.operator.render import InvalidSpec, render_all, url
from kubeinfer.operator.render.common import CONFIG_HASH_ANNOTATION
from kubeinfer.operator.render.deployment import deployment

EXAMPLES = example_docs()


def by_kind(objects):
    return {o["kind"]: o for o in objects}


@pytest.mark.parametrize("doc", EXAMPLES, ids=[d["metadata"]["name"] for d in EXAMPLES])
def test_examples_render_schema_valid(doc, options):
    objects = render_all(target_of(doc), options)
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= set(by_kind(objects))
    for obj in objects:
        if obj["kind"] in ("ServiceMonitor", "ScaledObject"):
            continue  # not core kinds; checked in test_service_monitor, test_op_autoscaling
        assert_k8s_valid(obj)


def test_everything_is_owned_and_labelled(options):
    t = make_target("digits", autoscaling={"maxReplicas": 3}, monitoring={"serviceMonitor": True},
                    model={"uri": "s3://b/p", "config": {"max_batch_size": 4}})
    for obj in render_all(t, options):
        meta = obj["metadata"]
        assert meta["namespace"] == "ns"
        (ref,) = meta["ownerReferences"]
        assert ref == {
            "apiVersion": "kubeinfer.dev/v1alpha1",
            "kind": "InferenceModel",
            "name": "digits",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "kubeinfer-operator"
        assert meta["labels"]["kubeinfer.dev/inferencemodel"] == "digits"


def test_deployment_runs_fetch_then_serve(options):
    t = make_target("digits", model={"uri": "https://h/digits.tar.gz", "version": 2}, replicas=3)
    d = deployment(t, options)
    pod = d["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    (rt,) = pod["containers"]
    assert fetch["command"] == ["kubeinfer", "fetch", "https://h/digits.tar.gz", "/models/digits", "--file-version", "2"]
    assert rt["command"][:5] == ["kubeinfer", "serve", "/models", "--model", "digits"]
    assert rt["command"][5:7] == ["--model-version", "2"]
    assert fetch["image"] == rt["image"] == "registry.local/kubeinfer/runtime:test"
    assert d["spec"]["replicas"] == 3
    assert {p["name"]: p["containerPort"] for p in rt["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert rt["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert rt["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = rt["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert d["spec"]["selector"]["matchLabels"] == {"kubeinfer.dev/inferencemodel": "digits"}


def test_pods_are_locked_down(options):
    d = deployment(make_target(), options)
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    for c in pod["initContainers"] + pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    runtime_mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert runtime_mounts["models"]["readOnly"] is True
    assert {v["name"] for v in pod["volumes"]} == {"models", "tmp"}


def test_shutdown_delay_and_grace_period(options):
    d = deployment(make_target(runtime={"shutdownDelaySeconds": 7, "drainSeconds": 20}), options)
    pod = d["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["KUBEINFER_SHUTDOWN_DELAY_SECONDS"] == "7"
    assert pod["terminationGracePeriodSeconds"] == 27


def test_user_env_overrides_ours(options):
    t = make_target(runtime={"env": [{"name": "KUBEINFER_SHUTDOWN_DELAY_SECONDS", "value": "1"},
                                     {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]})
    env = deployment(t, options)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == "KUBEINFER_SHUTDOWN_DELAY_SECONDS"] == [
        {"name": "KUBEINFER_SHUTDOWN_DELAY_SECONDS", "value": "1"}
    ]
    assert {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env


def test_gpu_limits_and_toleration(options):
    t = make_target(runtime={"gpus": 2, "nodeSelector": {"gpu": "a100"}})
    d = deployment(t, options)
    assert_k8s_valid(d)
    pod = d["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    cpu = deployment(make_target(), options)["spec"]["template"]["spec"]
    assert "tolerations" not in cpu and "limits" not in cpu["containers"][0]["resources"]


def test_pvc_source_is_mounted_read_only_for_fetch(options):
    d = deployment(make_target(model={"uri": "pvc://store/models/digits"}), options)
    pod = d["spec"]["template"]["spec"]
    assert {"name": "model-source", "persistentVolumeClaim": {"claimName": "store", "readOnly": True}} in pod["volumes"]
    fetch = pod["initContainers"][0]
    assert {"name": "model-source", "mountPath": "/mnt/pvc/store", "readOnly": True} in fetch["volumeMounts"]
    assert fetch["command"][-2:] == ["--pvc-root", "/mnt/pvc"]
    assert all(m["name"] != "model-source" for m in pod["containers"][0]["volumeMounts"])


def test_credentials_secret_feeds_fetch_only(options):
    pod = deployment(make_target(model={"uri": "s3://b/m", "credentialsSecret": "s3"}), options)["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert "envFrom" not in pod["containers"][0]


def test_inline_config_becomes_configmap_and_rolls_pods(options):
    cfg = {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 100}}
    t = make_target("mlp", model={"uri": "s3://b/mlp", "format": "onnx", "config": cfg})
    objs = by_kind(render_all(t, options))
    text = objs["ConfigMap"]["data"]["config.pbtxt"]
    assert 'name: "mlp"' in text and 'backend: "onnxruntime"' in text and "max_batch_size: 8" in text
    pod = objs["Deployment"]["spec"]["template"]
    fetch = pod["spec"]["initContainers"][0]
    assert fetch["command"][-2:] == ["--config", "/etc/kubeinfer/model-config/config.pbtxt"]
    cfg2 = {**cfg, "max_batch_size": 16}
    t2 = make_target("mlp", model={"uri": "s3://b/mlp", "format": "onnx", "config": cfg2})
    pod2 = by_kind(render_all(t2, options))["Deployment"]["spec"]["template"]
    assert pod["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] != pod2["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]


def test_no_inline_config_no_configmap(options):
    assert "ConfigMap" not in by_kind(render_all(make_target(), options))


@pytest.mark.parametrize(
    "config, words",
    [
        ({"max_batch_size": 4, "dynamic_batching": {"preferred_batch_size": [8]}}, "preferred_batch_size"),
        ({"input": [{"name": "x", "data_type": "TYPE_NOPE"}]}, "data_type"),
        ({"bogus_field": 1}, "bogus_field"),
        ({"name": "other"}, "differs"),
    ],
)
def test_bad_inline_config_is_invalid_spec(options, config, words):
    with pytest.raises(InvalidSpec, match=words):
        render_all(make_target(model={"uri": "s3://b/m", "config": config}), options)


def test_service_ports(options):
    svc = by_kind(render_all(make_target("digits"), options))["Service"]
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8000), ("grpc", 8001), ("metrics", 8002)]
    assert svc["spec"]["selector"] == {"kubeinfer.dev/inferencemodel": "digits"}
    assert url(make_target("digits"), options) == "http://digits.ns.svc.cluster.local:8000"


def test_pdb(options):
    pdb = by_kind(render_all(make_target("m", rollout={"pdbMaxUnavailable": "50%"}), options))["PodDisruptionBudget"]
    assert pdb["spec"] == {"maxUnavailable": "50%", "selector": {"matchLabels": {"kubeinfer.dev/inferencemodel": "m"}}}


def test_service_monitor(options):
    objs = by_kind(render_all(make_target("m", monitoring={"serviceMonitor": True}), options))
    sm = objs["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert sm["spec"]["selector"]["matchLabels"] == {"kubeinfer.dev/inferencemodel": "m"}
    assert "ServiceMonitor" not in by_kind(render_all(make_target(), options))


def test_render_is_pure_and_deterministic(options):
    t = make_target("m", model={"uri": "s3://b/m", "config": {"max_batch_size": 2}})
    assert render_all(t, options) == render_all(t, options)
