"""The CRD is generated from the pydantic models: no drift, structural, examples validate."""

from __future__ import annotations

import operator as stdlib_operator
from pathlib import Path

import jsonschema
import pytest
import yaml

from kubeinfer.operator.api import crdgen
from kubeinfer.operator.api.v1alpha1 import InferenceModelSpec
from tests.operator.operator_helpers import REPO, example_docs

CRD_FILE = "kubeinfer.dev_inferencemodels.yaml"


def test_stdlib_operator_is_not_shadowed():
    assert hasattr(stdlib_operator, "itemgetter")


@pytest.mark.parametrize("where", ["crds", "charts/kubeinfer/crds"])
def test_no_drift(where):
    stale = crdgen.drift(REPO / where)
    assert not stale, f"{where}/{stale} out of date: PYTHONPATH=runtime:operator python -m " \
                      "kubeinfer.operator.api.crdgen --out crds --out charts/kubeinfer/crds"


def test_chart_crds_identical_to_top_level():
    top = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (REPO / "charts/kubeinfer/crds").glob("*.yaml"))
    assert top == chart
    for name in top:
        assert (REPO / "crds" / name).read_bytes() == (REPO / "charts/kubeinfer/crds" / name).read_bytes()


def test_check_mode_fails_on_drift(tmp_path: Path, capsys):
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / CRD_FILE).write_text((tmp_path / CRD_FILE).read_text() + "# edited\n")
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1


def _schema():
    crd = yaml.safe_load((REPO / "crds" / CRD_FILE).read_text())
    (version,) = crd["spec"]["versions"]
    return crd, version


def _walk(node, path="$"):
    yield path, node
    for k, v in node.get("properties", {}).items():
        yield from _walk(v, f"{path}.{k}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural():
    _, version = _schema()
    for path, node in _walk(version["schema"]["openAPIV3Schema"]):
        free = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        assert "type" in node or free, f"{path} has no type"
        assert not {"$ref", "anyOf", "title", "const"} & set(node) or node.get("x-kubernetes-int-or-string"), path
        if "properties" in node:
            assert "additionalProperties" not in node, path


def test_crd_surface():
    crd, version = _schema()
    assert crd["spec"]["group"] == "kubeinfer.dev"
    assert crd["spec"]["names"]["shortNames"] == ["im"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Replicas", "URL", "Age"} <= columns
    root = version["schema"]["openAPIV3Schema"]
    assert root["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True
    spec = root["properties"]["spec"]
    assert any("minReplicas" in r["rule"] for r in spec["x-kubernetes-validations"])
    assert any("pvc://" in r["rule"] for r in spec["properties"]["model"]["x-kubernetes-validations"])
    assert spec["properties"]["model"]["properties"]["uri"]["description"]  # kubectl explain
    runtime = spec["properties"]["runtime"]
    assert any("self.workers" in r["rule"] and r["fieldPath"] == ".workers" for r in runtime["x-kubernetes-validations"])
    assert {k: runtime["properties"]["workers"][k] for k in ("type", "minimum", "maximum")} == {
        "type": "integer", "minimum": 1, "maximum": 64}
    assert "default" not in runtime["properties"]["workers"]  # unset: the operator chooses


@pytest.mark.parametrize("doc", example_docs(), ids=lambda d: d["metadata"]["name"])
def test_examples_validate_against_crd_and_models(doc):
    _, version = _schema()
    jsonschema.validate(doc, version["schema"]["openAPIV3Schema"])
    InferenceModelSpec.model_validate(doc["spec"])
    assert doc["apiVersion"] == "kubeinfer.dev/v1alpha1" and doc["kind"] == "InferenceModel"


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"model": {"uri": "ftp://x/y"}}, "uri must be"),
        ({"model": {"uri": "pvc://Bad_Claim/x"}}, "uri must be"),
        ({"model": {"uri": "s3://b"}, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas"),
        ({"model": {"uri": "s3://b"}, "replicas": -1}, "replicas"),
        ({"model": {"uri": "s3://b"}, "bogus": 1}, "bogus"),
        ({"model": {"uri": "s3://b"}, "runtime": {"gpus": 1, "workers": 2}}, "a GPU model runs one serving process"),
    ],
)
def test_models_reject_what_cel_rejects(spec, words):
    with pytest.raises(ValueError, match=words):
        InferenceModelSpec.model_validate(spec)


def _fields(node, path="$"):
    """Every named field (a property) of a schema, with its path."""
    for k, v in node.get("properties", {}).items():
        yield f"{path}.{k}", v
        yield from _fields(v, f"{path}.{k}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(node.get(key), dict):
            yield from _fields(node[key], f"{path}{suffix}")


@pytest.mark.parametrize("crd_file", ["kubeinfer.dev_inferencemodels.yaml", "kubeinfer.dev_inferenceensembles.yaml"])
def test_every_field_has_a_description(crd_file):
    """kubectl explain is never silent: spec, status, copied Kubernetes types, metadata."""
    (version,) = yaml.safe_load((REPO / "crds" / crd_file).read_text())["spec"]["versions"]
    root = version["schema"]["openAPIV3Schema"]
    fields = dict(_fields(root))
    assert len(fields) > 40
    # metadata: the API server forbids a schema there; kubectl explain shows ObjectMeta's docs
    missing = [path for path, node in fields.items()
               if path != "$.metadata" and not (node.get("description") or "").strip()]
    assert not missing, f"{crd_file}: fields without a description: {missing}"


@pytest.mark.parametrize("where, value, ok", [
    (("runtime", "resources", "requests", "cpu"), "500m", True),
    (("runtime", "resources", "requests", "cpu"), 2, True),
    (("runtime", "resources", "limits", "memory"), "1.5Gi", True),
    (("runtime", "resources", "requests", "cpu"), "two cores", False),
    (("runtime", "resources", "limits", "memory"), "1.5 GB", False),
    (("model", "storageSize"), "ten-gigs", False),
    (("model", "storageSize"), "10Gi", True),
    (("rollout", "maxSurge"), "25%", True),
    (("rollout", "maxSurge"), "a quarter", False),
])
def test_quantities_are_checked_by_the_crd_and_the_model_alike(where, value, ok):
    spec = {"model": {"uri": "s3://b/m"}}
    node = spec
    for key in where[:-1]:
        node = node.setdefault(key, {})
    node[where[-1]] = value
    doc = {"apiVersion": "kubeinfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": "m"}, "spec": spec}
    _, version = _schema()
    schema = version["schema"]["openAPIV3Schema"]
    if ok:
        jsonschema.validate(doc, schema)
        InferenceModelSpec.model_validate(spec)
    else:
        with pytest.raises(jsonschema.ValidationError, match="does not match"):
            jsonschema.validate(doc, schema)
        with pytest.raises(ValueError, match=f"{where[-1]}"):
            InferenceModelSpec.model_validate(spec)
