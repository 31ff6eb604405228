"""The operator on a real control plane when things go wrong, and at scale.

Same installation as ``test_operator.py`` (CRDs from ``crds/``, the chart's RBAC, the
operator as a process with the chart's ServiceAccount):

- bad inline configs end as ``Ready=False InvalidSpec`` naming the field, and the per-object
  resync keeps correcting drift of the other models (a deleted Service comes back);
- malformed quantities are refused at admission; the API server's own 500 for one (a
  Deployment applied as-is) is recognised as a spec error by the operator's API layer;
- an InferenceEnsemble named like an InferenceModel is a plain name clash that creates nothing;
- 200 models applied at once all end Ready with their Deployments 1/1 — with the resync
  switched off, so only the event-driven passes (and their ordering) can get them there.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from e2e.test_operator import REPO, condition, get, installed, ns, wait_for  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def model(name: str, ns: str, **spec) -> dict:
    spec.setdefault("model", {"uri": "s3://bucket/m", "format": "onnx"})
    return {"apiVersion": "kubeinfer.dev/v1alpha1", "kind": "InferenceModel",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def apply(cluster, *objs: dict, check: bool = True):
    return cluster.kubectl("apply", "-f", "-", check=check,
                           input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}), timeout=300)


def ready(cluster, ns: str, name: str, reason: str | None = None, kind: str = "inferencemodel") -> dict:
    def probe():
        obj = get(cluster, kind, name, "-n", ns)
        r = condition(obj, "Ready")
        ok = r.get("status") == "True" if reason is None else r.get("reason") == reason
        return obj if ok else None
    return wait_for(f"{kind} {ns}/{name} " + (reason or "Ready"), probe, timeout=120)


def test_bad_inline_configs_are_invalid_specs_and_drift_is_still_corrected(kube_cluster, installed, ns):
    c = kube_cluster
    log_start = len(installed.log.read_bytes()) if installed.log.exists() else 0
    bad = {
        "negative-delay": ({"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": -5}},
                           "spec.model.config.dynamic_batching.max_queue_delay_microseconds"),
        "huge-batch": ({"max_batch_size": 2 ** 40}, "spec.model.config.max_batch_size"),
    }
    apply(c, model("good", ns), *(model(n, ns, model={"uri": "s3://bucket/m", "format": "onnx", "config": cfg})
                                  for n, (cfg, _) in bad.items()))
    for name, (_, field) in bad.items():
        im = ready(c, ns, name, "InvalidSpec")
        assert condition(im, "Ready")["status"] == "False"
        assert field in condition(im, "Ready")["message"], condition(im, "Ready")
        assert im["status"]["observedGeneration"] == im["metadata"]["generation"]
        assert get(c, "deployment", name, "-n", ns) is None and get(c, "configmap", f"{name}-model-config",
                                                                      "-n", ns) is None
    ready(c, ns, "good")
    # drift of a good model is corrected by its resync timer (10 s here), bad models or not
    c.kubectl("delete", "service", "good", "-n", ns)
    c.kubectl("delete", "pdb", "good", "-n", ns)
    wait_for("Service and PDB of the good model restored",
             lambda: get(c, "service", "good", "-n", ns) and get(c, "pdb", "good", "-n", ns), timeout=60)
    log = installed.log.read_bytes()[log_start:].decode(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert "ParseError" not in log


@pytest.mark.parametrize("where, value, field", [
    ({"runtime": {"resources": {"requests": {"cpu": "two cores"}}}}, None, "spec.runtime.resources.requests.cpu"),
    ({"runtime": {"resources": {"limits": {"memory": "1.5 GB"}}}}, None, "spec.runtime.resources.limits.memory"),
    ({"model": {"uri": "s3://bucket/m", "storageSize": "ten-gigs"}}, None, "spec.model.storageSize"),
])
def test_malformed_quantities_are_refused_at_admission(kube_cluster, installed, ns, where, value, field):
    proc = apply(kube_cluster, model("q", ns, **where), check=False)
    assert proc.returncode != 0
    assert field in proc.stderr and "should match" in proc.stderr, proc.stderr
    assert get(kube_cluster, "im", "q", "-n", ns) is None


def test_api_servers_500_for_a_malformed_quantity_is_a_spec_error(kube_cluster, installed, ns):
    """What the operator's apply gets when a malformed quantity reaches a Deployment (an
    older CRD without the pattern, say): a 500 that it must not retry forever."""
    from kubeinfer.operator.k8s import KubeApi

    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "q", "namespace": ns},
           "spec": {"selector": {"matchLabels": {"a": "q"}}, "template": {
               "metadata": {"labels": {"a": "q"}},
               "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "two cores"}}}]}}}}

    async def attempt():
        api = KubeApi.connect("kubeinfer-e2e", kube_cluster.kubeconfig)
        try:
            await api.apply(dep)
        finally:
            await api.close()

    with pytest.raises(Exception) as info:
        asyncio.run(attempt())
    failure = info.value
    assert getattr(failure, "status", None) in (400, 422, 500), repr(failure)
    assert failure.malformed or failure.status == 422, failure.message
    assert failure.rejected, failure.message


def test_ensemble_named_like_a_model_is_a_name_clash(kube_cluster, installed, ns):
    c = kube_cluster
    apply(c, model("digits", ns))
    ready(c, ns, "digits")
    dep_before = get(c, "deployment", "digits", "-n", ns)
    ensemble = {"apiVersion": "kubeinfer.dev/v1alpha1", "kind": "InferenceEnsemble",
                "metadata": {"name": "digits", "namespace": ns},
                "spec": {"inputs": [{"name": "x", "datatype": "FP32", "dims": [64]}],
                         "outputs": [{"name": "y", "datatype": "FP32", "dims": [10]}],
                         "steps": [{"name": "classify", "modelRef": "digits", "inputMap": {"image": "x"},
                                    "outputMap": {"probabilities": "y"}}]}}
    apply(c, ensemble)
    ie = ready(c, ns, "digits", "NameClash", kind="inferenceensemble")
    msg = condition(ie, "Ready")["message"]
    assert "belongs to InferenceModel 'digits'" in msg and "another name" in msg, msg
    assert "immutable" not in msg
    owned = get(c, "configmaps", "-n", ns, "-l", "kubeinfer.dev/inferenceensemble=digits")
    assert owned["items"] == []
    dep = get(c, "deployment", "digits", "-n", ns)
    assert dep["metadata"]["ownerReferences"] == dep_before["metadata"]["ownerReferences"]
    assert dep["spec"]["selector"] == dep_before["spec"]["selector"]


COUNT = 200


def test_200_models_all_ready_with_no_stale_status(kube_cluster, installed, ns):
    """Without the resync (an hour), a status write that went backwards would stay wrong."""
    c = kube_cluster
    installed.stop()
    try:
        installed.start("--resync-seconds", "3600")
        start = time.monotonic()
        apply(c, *(model(f"m{i:03d}", ns) for i in range(COUNT)))

        seen: dict[str, int] = {}

        def all_ready():
            items = (get(c, "inferencemodels", "-n", ns) or {"items": []})["items"]
            seen.clear()
            for im in items:
                r = condition(im, "Ready")
                key = f"{r.get('status')}/{r.get('reason')}/{(im.get('status') or {}).get('readyReplicas')}"
                seen[key] = seen.get(key, 0) + 1
            return items if len(items) == COUNT and seen.get("True/Available/1") == COUNT else None

        try:
            items = wait_for(f"{COUNT} InferenceModels Ready", all_ready, timeout=240, interval=3)
        except BaseException:
            pods = get(c, "pods", "-n", ns) or {"items": []}
            phases: dict[str, int] = {}
            for p in pods["items"]:
                phases[p["status"].get("phase", "?")] = phases.get(p["status"].get("phase", "?"), 0) + 1
            print(f"\nmodels by Ready status/reason/readyReplicas: {seen}; pods by phase: {phases}")
            raise
        took = time.monotonic() - start
        deployments = {d["metadata"]["name"]: d for d in get(c, "deployments", "-n", ns)["items"]}
        assert len(deployments) == COUNT
        for im in items:
            name, st = im["metadata"]["name"], im["status"]
            dst = deployments[name]["status"]
            assert (dst.get("readyReplicas"), dst.get("availableReplicas")) == (1, 1), (name, dst)
            assert st["observedGeneration"] == im["metadata"]["generation"]
            assert condition(im, "Progressing").get("status") == "False", (name, st)
            assert st["replicas"] == dst["replicas"] == 1
        print(f"\n{COUNT} models Ready {took:.0f} s after the apply")
    finally:
        # leave nothing behind for the next tests' operator to resume
        c.kubectl("delete", "inferencemodels", "--all", "-n", ns, "--timeout=120s", check=False, timeout=180)
        installed.stop()
        installed.start()
