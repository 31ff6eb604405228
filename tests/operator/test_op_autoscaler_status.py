"""status.autoscaler and AutoscalerMetricMissing, from the HPA's (and KEDA's) own status."""

from __future__ import annotations

import asyncio

from tests.operator.operator_helpers import make_target
from tests.operator.test_op_reconcile import AVAILABLE, FakeApi, body

from kubeinfer.operator.reconcile import Reconciler
from kubeinfer.operator.reconcile.autoscaler import (
    HANDOVER_MANAGER,
    METRIC_MISSING,
    autoscaler_status,
    replicas_handover,
)
from kubeinfer.operator.render import RenderOptions

KEDA_HPA = {
    "status": {
        "currentReplicas": 2, "desiredReplicas": 3, "lastScaleTime": "2026-01-01T00:00:00Z",
        "currentMetrics": [{"type": "External", "external": {
            "metric": {"name": "s0-prometheus", "selector": {"matchLabels": {"scaledobject.keda.sh/name": "m"}}},
            "current": {"averageValue": "2500m"}}}],
        "conditions": [{"type": "AbleToScale", "status": "True", "reason": "SucceededRescale"},
                       {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"}],
    }
}
MISSING_HPA = {
    "status": {
        "currentReplicas": 2, "desiredReplicas": 2,
        "conditions": [{"type": "ScalingActive", "status": "False", "reason": "FailedGetPodsMetric",
                        "message": "unable to get metric nv_inference_pending_request_count: no metrics returned"}],
    }
}


def keda_target():
    return make_target("m", autoscaling={"maxReplicas": 4})


def test_keda_status_reads_keda_hpa():
    status, (missing,) = autoscaler_status(keda_target(), KEDA_HPA, {"status": {"conditions": []}})
    assert status["kind"] == "keda" and status["hpaName"] == "keda-hpa-m"
    assert (status["currentReplicas"], status["desiredReplicas"]) == (2, 3)
    assert status["currentPendingRequests"] == "2500m"
    assert status["lastScaleTime"] == "2026-01-01T00:00:00Z"
    assert (missing["type"], missing["status"], missing["reason"]) == (METRIC_MISSING, "False", "MetricAvailable")


def test_hpa_metric_missing_passes_the_hpa_reason_on():
    t = make_target("m", autoscaling={"autoscaler": "hpa", "maxReplicas": 4})
    status, (missing,) = autoscaler_status(t, MISSING_HPA, None)
    assert status["hpaName"] == "m" and status["currentPendingRequests"] is None
    assert missing["status"] == "True" and missing["reason"] == "FailedGetPodsMetric"
    assert "no metrics returned" in missing["message"]


def test_keda_fallback_is_metric_missing():
    so = {"status": {"conditions": [{"type": "Fallback", "status": "True", "reason": "FallbackExists",
                                     "message": "At least one trigger is falling back on this scaled object"}]}}
    _, (missing,) = autoscaler_status(keda_target(), KEDA_HPA, so)
    assert (missing["status"], missing["reason"]) == ("True", "KedaFallback")


def test_no_hpa_yet_and_no_autoscaling():
    _, (missing,) = autoscaler_status(keda_target(), None, None)
    assert (missing["status"], missing["reason"]) == ("False", "NoAutoscaler")
    assert autoscaler_status(make_target("m"), None, None) == (None, [])


def test_reconcile_writes_autoscaler_status_and_never_replicas():
    spec = {"model": {"uri": "https://h/d.tar.gz"}, "replicas": 2, "autoscaling": {"maxReplicas": 4}}
    api = FakeApi(AVAILABLE, objects={("HorizontalPodAutoscaler", "keda-hpa-digits"): KEDA_HPA})
    status = asyncio.run(Reconciler(api, RenderOptions(), clock=lambda: "t0").reconcile(
        body(spec, generation=2, status={"observedGeneration": 1})))
    assert status["autoscaler"]["desiredReplicas"] == 3
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Progressing", "Degraded", METRIC_MISSING}
    (deployment,) = [m for m in api.applied if m["kind"] == "Deployment"]
    assert "replicas" not in deployment["spec"]
    assert [m["kind"] for m in api.applied if m["kind"] == "ScaledObject"] == ["ScaledObject"]
    assert ("ScaledObject", "digits") not in api.deleted and ("HorizontalPodAutoscaler", "digits") in api.deleted


def test_removing_autoscaling_clears_its_status():
    api = FakeApi(AVAILABLE)
    old = {"observedGeneration": 1, "autoscaler": {"kind": "keda"},
           "conditions": [{"type": METRIC_MISSING, "status": "False"}]}
    status = asyncio.run(Reconciler(api, RenderOptions(), clock=lambda: "t0").reconcile(body(generation=2, status=old)))
    assert status["autoscaler"] is None
    assert METRIC_MISSING not in {c["type"] for c in status["conditions"]}
    assert ("ScaledObject", "digits") in api.deleted


def live_deployment(manager="kubeinfer-operator", replicas=5):
    owner = {"apiVersion": "kubeinfer.dev/v1alpha1", "kind": "InferenceModel", "name": "digits", "uid": "u-1",
             "controller": True}
    return {"metadata": {"ownerReferences": [owner], "managedFields": [
        {"manager": manager, "operation": "Apply",
         "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}},
        {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "fieldsV1": {}},
    ]}, "spec": {"replicas": replicas}}


def test_turning_autoscaling_on_hands_the_replicas_over():
    """Without the hand-over, server-side apply would drop replicas (5 -> 1) when the
    operator stops applying them."""
    t = keda_target()
    handover = replicas_handover(t, live_deployment(), "kubeinfer-operator")
    assert handover == {"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "m", "namespace": "ns"}, "spec": {"replicas": 5}}
    # nothing to hand over: someone else owns the field, no autoscaling, no Deployment yet
    assert replicas_handover(t, live_deployment(manager=HANDOVER_MANAGER), "kubeinfer-operator") is None
    assert replicas_handover(make_target("m"), live_deployment(), "kubeinfer-operator") is None
    assert replicas_handover(t, None, "kubeinfer-operator") is None


def test_reconcile_hands_over_once_then_applies_without_replicas():
    spec = {"model": {"uri": "https://h/d.tar.gz"}, "replicas": 5, "autoscaling": {"maxReplicas": 8}}
    api = FakeApi(AVAILABLE, objects={("Deployment", "digits"): live_deployment()})
    asyncio.run(Reconciler(api, RenderOptions(), clock=lambda: "t0").reconcile(body(spec)))
    ((manager, manifest),) = api.handovers
    assert manager == HANDOVER_MANAGER and manifest["spec"] == {"replicas": 5}
    (deployment,) = [m for m in api.applied if m["kind"] == "Deployment"]
    assert "replicas" not in deployment["spec"]
