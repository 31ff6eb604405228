"""InferenceEnsemble on a real control plane: the ensemble follows its models.

Same installation as ``test_operator.py`` (CRDs from ``crds/``, the chart's RBAC, the
operator as a process with the chart's ServiceAccount); kwok makes the model and router
pods Running and ready about a second after they are created, so ``Ready`` here is the
operator's logic end to end: models Ready -> ensemble Ready; a model deleted -> ensemble
``Ready=False`` naming it; the model restored -> Ready again, with no manual action.
"""

from __future__ import annotations

import json

import pytest
import yaml

from e2e.test_operator import REPO, condition, get, installed, ns, wait_for  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

EXAMPLE = REPO / "examples/manifests/digits-pipeline.yaml"
MODELS = ("preprocess", "digits", "postprocess")
WAIT = 90  # seconds; event-driven reactions take ~1 s, the operator's resync is 10 s


def docs() -> tuple[list[dict], dict]:
    all_docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    models = [d for d in all_docs if d["kind"] == "InferenceModel"]
    (ensemble,) = [d for d in all_docs if d["kind"] == "InferenceEnsemble"]
    return models, ensemble


def apply(cluster, ns: str, *objs: dict) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                      "items": list(objs)}))


def ensemble_ready(cluster, ns: str, status: str, reason: str | None = None, words: str = "",
                   timeout: float = WAIT) -> dict:
    def probe():
        ie = get(cluster, "inferenceensemble", "digits-pipeline", "-n", ns)
        ready = condition(ie, "Ready")
        ok = ready.get("status") == status and (reason is None or ready.get("reason") == reason)
        return ie if ok and words in ready.get("message", "") else None
    what = f"InferenceEnsemble {ns}/digits-pipeline Ready={status}" + (f" reason={reason}" if reason else "")
    return wait_for(what, probe, timeout=timeout)


def model_ready(cluster, ns: str, name: str) -> dict:
    return wait_for(f"InferenceModel {ns}/{name} Ready", lambda: (
        lambda im: im if condition(im, "Ready").get("status") == "True" else None)(
            get(cluster, "inferencemodel", name, "-n", ns)), timeout=WAIT)


@pytest.fixture
def crd(kube_cluster, installed):  # noqa: F811
    kube_cluster.kubectl("wait", "--for=condition=Established", "crd/inferenceensembles.kubeinfer.dev",
                         "--timeout=60s")
    return installed


def test_ensemble_follows_its_models(kube_cluster, crd, ns):  # noqa: F811
    c = kube_cluster
    models, ensemble = docs()

    # the ensemble first: its router is deployed, but it is not Ready without its models
    apply(c, ns, ensemble)
    ie = ensemble_ready(c, ns, "False", "ModelNotFound", "'preprocess'")
    assert "'digits'" in condition(ie, "Ready")["message"]
    assert ie["status"]["steps"] == "0/3"
    assert ie["status"]["url"] == f"http://digits-pipeline.{ns}.svc.cluster.local:8000"
    dep = get(c, "deployment", "digits-pipeline", "-n", ns)
    assert dep["metadata"]["ownerReferences"][0]["uid"] == ie["metadata"]["uid"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["kubeinfer", "route"]
    definition = yaml.safe_load(get(c, "configmap", "digits-pipeline-ensemble", "-n", ns)["data"]["ensemble.yaml"])
    assert [s["endpoint"] for s in definition["steps"]] == [
        f"http://{m}.{ns}.svc.cluster.local:8000" for m in MODELS]
    svc = get(c, "service", "digits-pipeline", "-n", ns)
    assert [p["port"] for p in svc["spec"]["ports"]] == [8000, 8001, 8002]
    assert get(c, "pdb", "digits-pipeline", "-n", ns) is not None

    # the models arrive: the ensemble becomes Ready after them, without being touched
    apply(c, ns, *models)
    ready_times = [condition(model_ready(c, ns, m), "Ready")["lastTransitionTime"] for m in MODELS]
    ie = ensemble_ready(c, ns, "True", "Available")
    assert condition(ie, "Ready")["lastTransitionTime"] >= max(ready_times)
    assert ie["status"]["steps"] == "3/3" and ie["status"]["modelName"] == "digits_pipeline"
    table = c.kubectl("get", "ie", "digits-pipeline", "-n", ns).stdout
    assert "STEPS" in table and "3/3" in table and "True" in table

    # a model disappears: Ready=False naming it
    c.kubectl("delete", "inferencemodel", "digits", "-n", ns, "--timeout=60s")
    ie = ensemble_ready(c, ns, "False", "ModelNotFound", "'digits'")
    assert "classify" in condition(ie, "Ready")["message"]
    assert ie["status"]["steps"] == "2/3"

    # restored: Ready again
    apply(c, ns, next(m for m in models if m["metadata"]["name"] == "digits"))
    ensemble_ready(c, ns, "True", "Available")
    # and it was the InferenceModel watch that re-ran the ensemble, not only the resync
    assert f"InferenceModel {ns}/digits changed: reconciling InferenceEnsemble digits-pipeline" in crd.log.read_text(errors="replace")


@pytest.mark.parametrize("change, words", [
    (lambda s: s["steps"][0].update(url="http://pre:8000"), "exactly one of modelRef and url"),
    (lambda s: s["steps"][1].update(name="preprocess"), "Duplicate value"),
    (lambda s: s["steps"][0].update(modelName="x"), "modelName is only for"),
])
def test_api_server_rejects_invalid_ensembles(kube_cluster, crd, ns, change, words):  # noqa: F811
    _, ensemble = docs()
    change(ensemble["spec"])
    proc = kube_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(ensemble), check=False)
    assert proc.returncode != 0
    assert words in proc.stderr, proc.stderr
