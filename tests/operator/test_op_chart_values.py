"""Every value in charts/kubeinfer/values.yaml reaches what it claims to configure.

Each case renders the chart with one value set (``helm template``) and checks its effect:
on the rendered objects, and — for what the operator process reads — on the settings the
operator builds from exactly the container's command and environment (its own parser and
settings code, as ``kubeinfer operator`` runs them). A value added to values.yaml without a
case here fails :func:`test_every_value_has_a_case`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from kubeinfer.operator import cli
from kubeinfer.operator.render import InvalidSpec, render_all
from kubeinfer.operator.settings import OperatorSettings
from tests.operator.operator_helpers import make_target
from tests.operator.test_op_chart import CHART, helm, template  # noqa: F401  (fixture)

Docs = list[dict[str, Any]]


def deployment(docs: Docs) -> dict[str, Any]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    return dep


def pod(docs: Docs) -> dict[str, Any]:
    return deployment(docs)["spec"]["template"]["spec"]


def container(docs: Docs) -> dict[str, Any]:
    return pod(docs)["containers"][0]


def operator_settings(docs: Docs, monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    """What ``kubeinfer operator`` would run with in this container."""
    c = container(docs)
    assert c["command"][:2] == ["kubeinfer", "operator"]
    for e in c.get("env", []):
        monkeypatch.setenv(e["name"], e["value"])
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    settings = cli.settings_from(parser.parse_args(c["command"][2:]))
    assert settings is not None
    return settings


def kinds(docs: Docs, kind: str) -> Docs:
    return [d for d in docs if d["kind"] == kind]


def _log_level(docs: Docs, mp: pytest.MonkeyPatch) -> None:
    settings = operator_settings(docs, mp)
    assert settings.log_level == "WARNING"
    cli.configure_logging(settings.log_level)
    try:
        assert not logging.getLogger("kubeinfer.operator").isEnabledFor(logging.INFO)
        assert logging.getLogger("kubeinfer.operator").isEnabledFor(logging.WARNING)
    finally:
        cli.configure_logging("INFO")


def _per_model_service_monitors(docs: Docs, mp: pytest.MonkeyPatch) -> None:
    # on: RBAC for ServiceMonitors and the operator renders them
    rules = [r for d in kinds(docs, "ClusterRole") for r in d["rules"]]
    assert any("monitoring.coreos.com" in r["apiGroups"] for r in rules)
    options = operator_settings(docs, mp).render_options()
    t = make_target(monitoring={"serviceMonitor": True})
    assert any(o["kind"] == "ServiceMonitor" for o in render_all(t, options))


def _no_per_model_service_monitors(docs: Docs, mp: pytest.MonkeyPatch) -> None:
    rules = [r for d in kinds(docs, "ClusterRole") for r in d["rules"]]
    assert not any("monitoring.coreos.com" in r["apiGroups"] for r in rules)
    options = operator_settings(docs, mp).render_options()
    with pytest.raises(InvalidSpec, match="spec.monitoring.serviceMonitor"):
        render_all(make_target(monitoring={"serviceMonitor": True}), options)


def _service_monitor(docs: Docs, mp: pytest.MonkeyPatch) -> None:
    (sm,) = kinds(docs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["interval"] == "30s"
    assert sm["metadata"]["labels"]["release"] == "prom"


def _leader_election(docs: Docs, mp: pytest.MonkeyPatch) -> None:
    mp.setenv("POD_NAMESPACE", "kubeinfer-system")  # what the fieldRefs give in the pod
    mp.setenv("POD_NAME", "kubeinfer-abc")
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    c = container(docs)
    c["env"] = [e for e in c["env"] if "value" in e]
    settings = operator_settings(docs, mp)
    assert settings.leader_election and settings.lease_seconds == 20
    assert (settings.lease_namespace, settings.identity) == ("kubeinfer-system", "kubeinfer-abc")
    (role,) = [r for r in kinds(docs, "Role") if r["metadata"]["name"].endswith("leader-election")]
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "verbs": ["get", "create", "update"]}]
    assert deployment(docs)["spec"]["strategy"]["type"] == "RollingUpdate"


def _keda_rules(docs: Docs) -> list[dict[str, Any]]:
    return [r for d in kinds(docs, "ClusterRole") for r in d["rules"] if "keda.sh" in r["apiGroups"]]


def _keda(docs: Docs, mp: pytest.MonkeyPatch) -> None:
    # the default: the operator may manage the ScaledObjects it renders for autoscaler: keda
    assert [r["resources"] for r in _keda_rules(docs)] == [["scaledobjects"]]
    options = operator_settings(docs, mp).render_options()
    t = make_target(autoscaling={"maxReplicas": 3})
    assert any(o["kind"] == "ScaledObject" for o in render_all(t, options))


def _no_keda(docs: Docs, mp: pytest.MonkeyPatch) -> None:
    # off: no RBAC for ScaledObjects, and the operator says so in the model's status
    # instead of failing its apply on the missing permission; HPAs still render
    assert _keda_rules(docs) == []
    options = operator_settings(docs, mp).render_options()
    with pytest.raises(InvalidSpec, match="spec.autoscaling.autoscaler"):
        render_all(make_target(autoscaling={"maxReplicas": 3}), options)
    hpa = make_target(autoscaling={"autoscaler": "hpa", "maxReplicas": 3})
    assert any(o["kind"] == "HorizontalPodAutoscaler" for o in render_all(hpa, options))


# value path -> (--set arguments, check of the rendered chart)
CASES: dict[str, tuple[list[str], Callable[[Docs, pytest.MonkeyPatch], None]]] = {
    "image.repository": (["image.repository=reg.example/op"],
                         lambda d, mp: container(d)["image"].startswith("reg.example/op:")),
    "image.tag": (["image.tag=9.9.9"], lambda d, mp: container(d)["image"].endswith(":9.9.9")),
    "image.pullPolicy": (["image.pullPolicy=Always"], lambda d, mp: container(d)["imagePullPolicy"] == "Always"),
    "imagePullSecrets": (["imagePullSecrets[0].name=regcred"],
                         lambda d, mp: pod(d)["imagePullSecrets"] == [{"name": "regcred"}]),
    "runtimeImage": (["runtimeImage=reg.example/rt:2"],
                     lambda d, mp: operator_settings(d, mp).render_options().runtime_image == "reg.example/rt:2"),
    "watchNamespaces": (["watchNamespaces={models,staging}"],
                        lambda d, mp: operator_settings(d, mp).namespaces == ["models", "staging"]
                        and {r["metadata"]["namespace"] for r in kinds(d, "Role")} == {"models", "staging"}),
    "resyncSeconds": (["resyncSeconds=42"], lambda d, mp: operator_settings(d, mp).resync_seconds == 42),
    "logLevel": (["logLevel=WARNING"], _log_level),
    "replicas": (["replicas=2", "leaderElection.enabled=true"], lambda d, mp: deployment(d)["spec"]["replicas"] == 2),
    "leaderElection.enabled": (["leaderElection.enabled=true", "leaderElection.leaseSeconds=20"], _leader_election),
    "leaderElection.leaseSeconds": (["leaderElection.enabled=true", "leaderElection.leaseSeconds=20"],
                                    _leader_election),
    "serviceAccount.create": (["serviceAccount.create=false", "serviceAccount.name=mine"],
                              lambda d, mp: not kinds(d, "ServiceAccount")
                              and pod(d)["serviceAccountName"] == "mine"),
    "serviceAccount.name": (["serviceAccount.name=op-sa"],
                            lambda d, mp: kinds(d, "ServiceAccount")[0]["metadata"]["name"] == "op-sa"
                            and pod(d)["serviceAccountName"] == "op-sa"
                            and all(s["name"] == "op-sa" for b in kinds(d, "ClusterRoleBinding")
                                    for s in b["subjects"])),
    "serviceAccount.annotations": (["serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:x"],
                                   lambda d, mp: kinds(d, "ServiceAccount")[0]["metadata"]["annotations"]
                                   == {"eks.amazonaws.com/role-arn": "arn:x"}),
    "resources": (["resources.limits.memory=300Mi"],
                  lambda d, mp: container(d)["resources"]["limits"]["memory"] == "300Mi"),
    "nodeSelector": (["nodeSelector.pool=ops"], lambda d, mp: pod(d)["nodeSelector"] == {"pool": "ops"}),
    "tolerations": (["tolerations[0].key=ops", "tolerations[0].operator=Exists"],
                    lambda d, mp: pod(d)["tolerations"] == [{"key": "ops", "operator": "Exists"}]),
    "affinity": (["affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=1",
                  "affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference."
                  "matchExpressions[0].key=pool",
                  "affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference."
                  "matchExpressions[0].operator=Exists"],
                 lambda d, mp: pod(d)["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
                 [0]["weight"] == 1),
    "podAnnotations": (["podAnnotations.team=ml"],
                       lambda d, mp: deployment(d)["spec"]["template"]["metadata"]["annotations"] == {"team": "ml"}),
    "monitoring.perModelServiceMonitors": (["monitoring.perModelServiceMonitors=true"], _per_model_service_monitors),
    "monitoring.perModelServiceMonitors=false": ([], _no_per_model_service_monitors),
    "monitoring.serviceMonitor.enabled": (["monitoring.serviceMonitor.enabled=true"],
                                          lambda d, mp: len(kinds(d, "ServiceMonitor")) == 1),
    "monitoring.serviceMonitor.interval": (["monitoring.serviceMonitor.enabled=true",
                                            "monitoring.serviceMonitor.interval=30s",
                                            "monitoring.serviceMonitor.labels.release=prom"], _service_monitor),
    "monitoring.serviceMonitor.labels": (["monitoring.serviceMonitor.enabled=true",
                                          "monitoring.serviceMonitor.interval=30s",
                                          "monitoring.serviceMonitor.labels.release=prom"], _service_monitor),
    "autoscaling.keda": (["autoscaling.keda=false"], _no_keda),
    "autoscaling.keda=true": ([], _keda),
    "autoscaling.prometheusAddress": (["autoscaling.prometheusAddress=http://prom.obs:9090"],
                                      lambda d, mp: operator_settings(d, mp).render_options().prometheus_address
                                      == "http://prom.obs:9090"),
    "monitoring.prometheusAdapterRules.enabled": (
        ["monitoring.prometheusAdapterRules.enabled=true"],
        lambda d, mp: any("nv_inference_pending_request_count" in yaml.safe_dump(c) for c in kinds(d, "ConfigMap"))),
}


def _leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node and prefix not in ("resources", "nodeSelector", "affinity", "podAnnotations",
                                                          "serviceAccount.annotations",
                                                          "monitoring.serviceMonitor.labels"):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def test_every_value_has_a_case():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [v for v in _leaves(values) if v not in CASES]
    assert not missing, f"values without a test case: {missing}"


@pytest.mark.parametrize("value", sorted(CASES))
def test_value_reaches_what_it_configures(helm, value, monkeypatch):  # noqa: F811
    sets, check = CASES[value]
    args = [a for s in sets for a in ("--set", s)]
    docs = template(helm, *args)
    result = check(docs, monkeypatch)
    assert result is None or result is True, f"{value}: {sets} did not reach what it configures"


def test_defaults_are_what_the_operator_runs_with(helm, monkeypatch):  # noqa: F811
    """No value set: the operator's settings are the documented defaults of values.yaml."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    settings = operator_settings(template(helm), monkeypatch)
    assert settings.log_level == values["logLevel"]
    assert settings.resync_seconds == values["resyncSeconds"]
    assert settings.namespaces == values["watchNamespaces"]
    assert settings.service_monitors is values["monitoring"]["perModelServiceMonitors"]
    assert settings.keda is values["autoscaling"]["keda"]
    assert settings.leader_election is values["leaderElection"]["enabled"]


def test_more_replicas_without_leader_election_is_refused(helm):  # noqa: F811
    import subprocess

    out = subprocess.run([helm, "template", "x", str(CHART), "--set", "replicas=2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "leaderElection.enabled=true" in out.stderr
    default = deployment(template(helm))
    assert default["spec"]["replicas"] == 1 and default["spec"]["strategy"]["type"] == "Recreate"
    assert not operator_settings_default_leader(default)


def operator_settings_default_leader(dep: dict[str, Any]) -> bool:
    return any(e["name"] == "KUBEINFER_OPERATOR_LEADER_ELECTION" for e in dep["spec"]["template"]["spec"]
               ["containers"][0]["env"])


def test_invalid_log_level_from_the_environment_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("KUBEINFER_LOG_LEVEL", "chatty")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.settings_from(parser.parse_args([])) is None
    assert "chatty" in capsys.readouterr().err
    assert cli.settings_from(parser.parse_args(["--log-level", "debug"])).log_level == "DEBUG"  # the flag wins
