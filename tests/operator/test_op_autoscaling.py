"""Autoscaling renders: the KEDA ScaledObject (against KEDA's own CRD schema) and the HPA
(against the Kubernetes schema), behavior defaults and overrides, and the replicas the
operator leaves to the autoscaler."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from tests.operator.operator_helpers import assert_k8s_valid, make_target

from kubeinfer.operator.api.v1alpha1 import InferenceModelSpec
from kubeinfer.operator.render import render_all
from kubeinfer.operator.render.autoscaling import hpa_name, pending_query

# KEDA v2.21.0's config/crd/bases/keda.sh_scaledobjects.yaml (Apache-2.0), unchanged
KEDA_CRD = Path(__file__).parent / "data" / "keda.sh_scaledobjects.yaml"


@functools.cache
def keda_schema() -> dict:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


def assert_keda_valid(obj: dict) -> None:
    jsonschema.validate(obj, keda_schema())


def by_kind(objects):
    return {o["kind"]: o for o in objects}


def test_keda_is_the_default_and_renders_a_valid_scaled_object(options):
    t = make_target("mlp", autoscaling={"minReplicas": 2, "maxReplicas": 6, "targetPendingRequests": 4})
    objs = by_kind(render_all(t, options))
    assert "HorizontalPodAutoscaler" not in objs
    so = objs["ScaledObject"]
    assert_keda_valid(so)
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mlp"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 6)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert meta["serverAddress"] == options.prometheus_address
    assert meta["threshold"] == "4" and meta["activationThreshold"] == "0"
    assert meta["ignoreNullValues"] == "false"  # no series = a failed read -> fallback
    assert meta["query"] == pending_query(t)
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 2, "behavior": "currentReplicasIfHigher"}
    hpa_config = spec["advanced"]["horizontalPodAutoscalerConfig"]
    assert hpa_config["name"] == hpa_name(t) == "keda-hpa-mlp"
    assert hpa_config["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert "replicas" not in objs["Deployment"]["spec"]  # the autoscaler owns it


def test_pending_query_selects_only_this_models_pods():
    q = pending_query(make_target("m", model={"uri": "s3://b/m", "name": "served"}))
    assert q == ('sum(nv_inference_pending_request_count{namespace="ns",'
                 'pod=~"m-[a-z0-9]+-[a-z0-9]+",model="served"})')
    pod_re = re.compile("^" + q.split('pod=~"')[1].split('"')[0] + "$")
    assert pod_re.match("m-7d9f8b6c4-x2k9p")
    assert not pod_re.match("m-large-7d9f8b6c4-x2k9p")  # another model's pods
    assert not pod_re.match("m-7d9f8b6c4")


def test_keda_with_cpu_override_address_activation_and_fallback(options):
    t = make_target("m", autoscaling={
        "maxReplicas": 4, "targetCpuUtilization": 70, "activationPendingRequests": 2,
        "prometheusAddress": "http://prom.mon:9090", "pollingIntervalSeconds": 5,
        "fallback": {"failureThreshold": 2, "replicas": 3, "behavior": "static"},
    })
    so = by_kind(render_all(t, options))["ScaledObject"]
    assert_keda_valid(so)
    prom, cpu = so["spec"]["triggers"]
    assert prom["metadata"]["serverAddress"] == "http://prom.mon:9090"
    assert prom["metadata"]["activationThreshold"] == "2"
    assert cpu == {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}
    assert so["spec"]["pollingInterval"] == 5
    assert so["spec"]["fallback"] == {"failureThreshold": 2, "replicas": 3, "behavior": "static"}


def test_hpa_path_with_behavior_and_cpu(options):
    t = make_target("mlp", replicas=5, autoscaling={
        "autoscaler": "hpa", "minReplicas": 2, "maxReplicas": 6, "targetPendingRequests": 4,
        "targetCpuUtilization": 70,
        "behavior": {"scaleUp": {"stabilizationWindowSeconds": 30,
                                 "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}},
    })
    objs = by_kind(render_all(t, options))
    assert "ScaledObject" not in objs
    hpa = objs["HorizontalPodAutoscaler"]
    assert_k8s_valid(hpa)
    assert hpa["metadata"]["name"] == hpa_name(t) == "mlp"
    pods, cpu = hpa["spec"]["metrics"]
    assert pods["pods"]["metric"] == {"name": "nv_inference_pending_request_count",
                                      "selector": {"matchLabels": {"model": "mlp"}}}
    assert pods["pods"]["target"] == {"type": "AverageValue", "averageValue": "4"}
    assert cpu["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleUp"] == {"stabilizationWindowSeconds": 30, "selectPolicy": "Max",
                                   "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300  # default kept
    assert "replicas" not in objs["Deployment"]["spec"]


def test_behavior_defaults_are_the_kubernetes_defaults(options):
    hpa = by_kind(render_all(make_target(autoscaling={"autoscaler": "hpa", "maxReplicas": 3}), options))[
        "HorizontalPodAutoscaler"]
    assert hpa["spec"]["behavior"] == {
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15},
                                 {"type": "Pods", "value": 4, "periodSeconds": 15}]},
        "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
                      "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]},
    }


def test_no_autoscaling_no_autoscaler_and_replicas_set(options):
    objs = by_kind(render_all(make_target(replicas=3), options))
    assert not {"ScaledObject", "HorizontalPodAutoscaler"} & set(objs)
    assert objs["Deployment"]["spec"]["replicas"] == 3
    assert hpa_name(make_target()) is None


@pytest.mark.parametrize("bad, words", [
    ({"autoscaler": "custom", "maxReplicas": 2}, "autoscaler"),
    ({"maxReplicas": 2, "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "policies": []}}}, "policies"),
    ({"maxReplicas": 2, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 4000,
                                                   "policies": [{"type": "Pods", "value": 1, "periodSeconds": 1}]}}},
     "stabilizationWindowSeconds"),
    ({"maxReplicas": 2, "prometheusAddress": "prom:9090"}, "prometheusAddress"),
])
def test_bad_autoscaling_is_refused(bad, words):
    with pytest.raises(ValueError, match=words):
        InferenceModelSpec.model_validate({"model": {"uri": "s3://b"}, "autoscaling": bad})
