"""InferenceEnsemble: generated CRD, example, pure renders (schema-valid), reconcile statuses."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml
from tests.operator.operator_helpers import REPO, assert_k8s_valid, ensemble_target_of, example_docs

from kubeinfer.operator.api.v1alpha1 import InferenceEnsembleSpec
from kubeinfer.operator.k8s import ApiFailure
from kubeinfer.operator.reconcile import EnsembleReconciler, Failure, referenced_models
from kubeinfer.operator.render import InvalidSpec, RenderOptions, render_ensemble
from kubeinfer.operator.render.deployment import deployment
from kubeinfer.operator.render.ensemble import DEFINITION_FILE
from kubeinfer.spec.ensemble import build_graph, load_definition

CRD_FILE = "kubeinfer.dev_inferenceensembles.yaml"
ENSEMBLES = example_docs("InferenceEnsemble")
PIPELINE = next(d for d in ENSEMBLES if d["metadata"]["name"] == "digits-pipeline")


def _version():
    crd = yaml.safe_load((REPO / "crds" / CRD_FILE).read_text())
    (version,) = crd["spec"]["versions"]
    return crd, version


def by_kind(objects):
    return {o["kind"]: o for o in objects}


# --- CRD ------------------------------------------------------------------------------


def test_crd_surface():
    crd, version = _version()
    assert crd["metadata"]["name"] == "inferenceensembles.kubeinfer.dev"
    assert crd["spec"]["names"]["kind"] == "InferenceEnsemble"
    assert crd["spec"]["names"]["shortNames"] == ["ie"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert {"Ready", "Steps", "URL", "Age"} <= set(columns)
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    steps = spec["properties"]["steps"]
    assert steps["x-kubernetes-list-type"] == "map" and steps["x-kubernetes-list-map-keys"] == ["name"]
    rules = [r["rule"] for r in steps["items"]["x-kubernetes-validations"]]
    assert "has(self.modelRef) != has(self.url)" in rules
    assert set(steps["items"]["required"]) >= {"name", "inputMap", "outputMap"}
    for key in ("inputs", "outputs"):
        assert spec["properties"][key]["x-kubernetes-list-type"] == "map"
    assert "FP32" in spec["properties"]["inputs"]["items"]["properties"]["datatype"]["enum"]


def test_examples_validate_against_crd_and_models():
    _, version = _version()
    assert ENSEMBLES
    for doc in ENSEMBLES:
        jsonschema.validate(doc, version["schema"]["openAPIV3Schema"])
        InferenceEnsembleSpec.model_validate(doc["spec"])
    # every modelRef of the example is an InferenceModel of the same file
    models = {d["metadata"]["name"] for d in example_docs() if d["metadata"]["name"]}
    assert referenced_models(PIPELINE) <= models


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda s: s["steps"][0].update(url="http://pre:8000"), "exactly one of modelRef and url"),
        (lambda s: s["steps"][0].pop("modelRef"), "exactly one of modelRef and url"),
        (lambda s: s["steps"][0].update(modelName="x"), "modelName is only for"),
        (lambda s: s["steps"][1].update(name="preprocess"), "duplicate name"),
        (lambda s: s["inputs"][0].update(datatype="FLOAT"), "datatype"),
        (lambda s: s.update(steps=[]), "steps"),
        (lambda s: s["steps"][0].update(modelRef="Not_A_Name"), "modelRef"),
    ],
)
def test_models_reject_what_the_crd_rejects(change, words):
    spec = copy.deepcopy(PIPELINE["spec"])
    change(spec)
    with pytest.raises(ValueError, match=words):
        InferenceEnsembleSpec.model_validate(spec)


# --- render ---------------------------------------------------------------------------


def test_example_renders_schema_valid(options):
    objects = render_ensemble(ensemble_target_of(PIPELINE), options)
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]
    for obj in objects:
        assert_k8s_valid(obj)
        meta = obj["metadata"]
        (ref,) = meta["ownerReferences"]
        assert ref["kind"] == "InferenceEnsemble" and ref["name"] == "digits-pipeline" and ref["controller"]
        assert meta["labels"]["kubeinfer.dev/inferenceensemble"] == "digits-pipeline"
        assert "kubeinfer.dev/inferencemodel" not in meta["labels"]


def test_definition_resolves_model_refs_and_the_router_accepts_it(options, tmp_path):
    cm, dep, svc, _ = render_ensemble(ensemble_target_of(PIPELINE), options)
    text = cm["data"][DEFINITION_FILE]
    path = tmp_path / DEFINITION_FILE
    path.write_text(text)
    graph = build_graph(load_definition(path))  # what `kubeinfer route` does at start-up
    assert graph.definition.name == "digits_pipeline"
    assert [(s.name, s.model, s.url) for s in graph.steps] == [
        ("preprocess", "preprocess", "http://preprocess.models.svc.cluster.local:8000"),
        ("classify", "digits", "http://digits.models.svc.cluster.local:8000"),
        ("top3", "postprocess", "http://postprocess.models.svc.cluster.local:8000"),
    ]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"][:3] == ["kubeinfer", "route", f"/etc/kubeinfer/ensemble/{DEFINITION_FILE}"]
    assert {"name": "ensemble", "configMap": {"name": "digits-pipeline-ensemble"}} in pod["volumes"]
    assert dep["spec"]["replicas"] == 2
    assert [p["port"] for p in svc["spec"]["ports"]] == [8000, 8001, 8002]
    assert svc["spec"]["selector"] == {"kubeinfer.dev/inferenceensemble": "digits-pipeline"}


def test_router_has_the_model_deployments_hardening(options):
    from tests.operator.operator_helpers import make_target

    router = render_ensemble(ensemble_target_of(PIPELINE), options)[1]["spec"]["template"]["spec"]
    model = deployment(make_target("m"), options)["spec"]["template"]["spec"]
    assert router["securityContext"] == model["securityContext"]
    assert router["automountServiceAccountToken"] is False and router["enableServiceLinks"] is False
    rc, mc = router["containers"][0], model["containers"][0]
    assert rc["securityContext"] == mc["securityContext"]
    assert rc["ports"] == mc["ports"]
    assert rc["readinessProbe"] == mc["readinessProbe"] and rc["livenessProbe"] == mc["livenessProbe"]
    assert rc["startupProbe"]["httpGet"]["path"] == "/v2/health/live"  # waits for models while live
    assert rc["image"] == "registry.local/kubeinfer/runtime:test"


def test_definition_change_rolls_the_router(options):
    a = render_ensemble(ensemble_target_of(PIPELINE), options)[1]
    doc = copy.deepcopy(PIPELINE)
    doc["spec"]["router"]["maxInflight"] = 8
    b = render_ensemble(ensemble_target_of(doc), options)[1]
    key = "kubeinfer.dev/config-hash"
    assert a["spec"]["template"]["metadata"]["annotations"][key] != b["spec"]["template"]["metadata"]["annotations"][key]


def test_external_url_step(options):
    doc = copy.deepcopy(PIPELINE)
    doc["spec"]["steps"][1] = {"name": "classify", "url": "http://triton.other:8000/", "modelName": "digits_trt",
                               "modelVersion": "2", "inputMap": {"image": "normalized"},
                               "outputMap": {"probabilities": "probabilities"}}
    target = ensemble_target_of(doc)
    assert target.steps[1].url.startswith("http://triton.other:8000")
    text = render_ensemble(target, options)[0]["data"][DEFINITION_FILE]
    step = yaml.safe_load(text)["steps"][1]
    assert (step["model_name"], step["model_version"]) == ("digits_trt", "2")


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda s: s["steps"][1].update(inputMap={"image": "nowhere"}), "nowhere"),
        (lambda s: s["steps"][2].update(outputMap={"scores": "normalized", "classes": "TOP_CLASSES"}),
         "produced twice"),
        (lambda s: s["steps"][0].update(inputMap={"raw": "probabilities"}), "cycle"),
    ],
)
def test_pipelines_the_router_refuses_are_invalid_specs(options, change, words):
    doc = copy.deepcopy(PIPELINE)
    change(doc["spec"])
    with pytest.raises(InvalidSpec, match=words):
        render_ensemble(ensemble_target_of(doc), options)


# --- reconcile ------------------------------------------------------------------------

AVAILABLE = {
    "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
    "conditions": [{"type": "Available", "status": "True"}],
}


def model(name, ready=True, served=None):
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}"},
            "spec": {"model": {"uri": "s3://b/m"}},
            "status": {"modelName": served or name,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "reason": "Available" if ready else "ReplicasNotReady",
                                       "message": "0/1 replicas ready" if not ready else "1/1"}]}}


class FakeApi:
    def __init__(self, models, deployment_status=None):
        self.models = models
        self.applied, self.statuses = [], []
        self.deployment_status = deployment_status if deployment_status is not None else AVAILABLE

    async def apply(self, manifest):
        self.applied.append(manifest)
        out = copy.deepcopy(manifest)
        if manifest["kind"] == "Deployment":
            out["metadata"]["generation"] = 1
            out["status"] = self.deployment_status
        return out

    async def get(self, api_version, kind, namespace, name):
        if kind == "Deployment":
            return None
        assert (api_version, kind, namespace) == ("kubeinfer.dev/v1alpha1", "InferenceModel", "ns")
        return self.models.get(name)

    async def patch_status(self, namespace, name, status, kind="InferenceModel", resource_version=None):
        assert kind == "InferenceEnsemble"
        self.statuses.append(status)


def ens_body(spec=None, status=None):
    return {"apiVersion": "kubeinfer.dev/v1alpha1", "kind": "InferenceEnsemble",
            "metadata": {"name": "digits-pipeline", "namespace": "ns", "uid": "u-e", "generation": 1},
            "spec": copy.deepcopy(spec or PIPELINE["spec"]), "status": status or {}}


def ready_of(status):
    return next(c for c in status["conditions"] if c["type"] == "Ready")


async def test_ready_when_every_model_and_the_router_are():
    api = FakeApi({n: model(n) for n in ("preprocess", "digits", "postprocess")})
    status = await EnsembleReconciler(api, RenderOptions(), clock=lambda: "T").reconcile(ens_body())
    assert ready_of(status)["status"] == "True"
    assert status["url"] == "http://digits-pipeline.ns.svc.cluster.local:8000"
    assert status["modelName"] == "digits_pipeline" and status["steps"] == "3/3"
    assert [m["kind"] for m in api.applied] == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"]
    assert api.statuses == [status]


async def test_missing_model_is_named():
    api = FakeApi({"preprocess": model("preprocess"), "postprocess": model("postprocess")})
    status = await EnsembleReconciler(api, RenderOptions(), clock=lambda: "T").reconcile(ens_body())
    ready = ready_of(status)
    assert (ready["status"], ready["reason"]) == ("False", "ModelNotFound")
    assert "'digits'" in ready["message"] and "classify" in ready["message"]
    assert status["steps"] == "2/3"
    assert any(m["kind"] == "Deployment" for m in api.applied)  # the router is deployed anyway


async def test_not_ready_model_is_named_with_its_reason():
    api = FakeApi({"preprocess": model("preprocess"), "digits": model("digits", ready=False),
                   "postprocess": model("postprocess")})
    status = await EnsembleReconciler(api, RenderOptions(), clock=lambda: "T").reconcile(ens_body())
    ready = ready_of(status)
    assert (ready["status"], ready["reason"]) == ("False", "ModelNotReady")
    assert "'digits'" in ready["message"] and "ReplicasNotReady" in ready["message"]


async def test_deleting_model_counts_as_missing():
    gone = model("digits")
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    api = FakeApi({"preprocess": model("preprocess"), "digits": gone, "postprocess": model("postprocess")})
    status = await EnsembleReconciler(api, RenderOptions(), clock=lambda: "T").reconcile(ens_body())
    assert ready_of(status)["reason"] == "ModelNotFound"


async def test_router_not_available():
    api = FakeApi({n: model(n) for n in ("preprocess", "digits", "postprocess")},
                  deployment_status={"replicas": 2, "readyReplicas": 0})
    status = await EnsembleReconciler(api, RenderOptions(), clock=lambda: "T").reconcile(ens_body())
    assert ready_of(status)["reason"] == "RouterNotReady"


async def test_served_name_of_the_model_is_used():
    models = {n: model(n) for n in ("preprocess", "postprocess")}
    models["digits"] = model("digits", served="digits_v2")
    api = FakeApi(models)
    await EnsembleReconciler(api, RenderOptions(), clock=lambda: "T").reconcile(ens_body())
    definition = yaml.safe_load(api.applied[0]["data"][DEFINITION_FILE])
    assert definition["steps"][1]["model_name"] == "digits_v2"


async def test_invalid_pipeline_is_permanent_and_reported():
    spec = copy.deepcopy(PIPELINE["spec"])
    spec["steps"][1]["inputMap"] = {"image": "nowhere"}
    api = FakeApi({n: model(n) for n in ("preprocess", "digits", "postprocess")})
    with pytest.raises(Failure) as info:
        await EnsembleReconciler(api, RenderOptions(), clock=lambda: "T").reconcile(ens_body(spec))
    assert info.value.permanent and info.value.reason == "InvalidSpec"
    assert ready_of(api.statuses[-1])["reason"] == "InvalidSpec" and not api.applied


async def test_api_outage_is_retried():
    class Down(FakeApi):
        async def get(self, *args):
            raise ApiFailure(0, "connection refused")

    with pytest.raises(Failure) as info:
        await EnsembleReconciler(Down({}), RenderOptions()).reconcile(ens_body())
    assert not info.value.permanent


async def test_status_written_only_when_it_changes():
    api = FakeApi({n: model(n) for n in ("preprocess", "digits", "postprocess")})
    r = EnsembleReconciler(api, RenderOptions(), clock=lambda: "T")
    status = await r.reconcile(ens_body())
    await r.reconcile(ens_body(status=status))
    assert len(api.statuses) == 1
