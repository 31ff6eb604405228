"""Two operators with leader election on the real API server: exactly one acts; the other
takes over within a bounded time after the leader is killed with SIGKILL.

The chart's RBAC (with ``leaderElection.enabled=true``: a Role on Leases) and ServiceAccount;
the operators are real processes (``kubeinfer operator --leader-election``) sharing one
Lease in the release namespace. The module's ordinary operator is stopped meanwhile.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from e2e.test_operator import REPO, SYSTEM_NS, Operator, _helm, condition, get, installed, ns, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
LEASE_SECONDS = 6


def holder(cluster) -> str | None:
    lease = get(cluster, "lease", "kubeinfer-operator", "-n", SYSTEM_NS)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def apply_model(cluster, ns: str, name: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "kubeinfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": name, "namespace": ns},
        "spec": {"model": {"uri": "s3://bucket/m", "format": "onnx"}}}))


def ready(cluster, ns: str, name: str, timeout: float) -> None:
    wait_for(f"{ns}/{name} Ready", lambda: condition(get(cluster, "im", name, "-n", ns), "Ready").get("status")
             == "True", timeout=timeout, interval=0.25)


def acted(op: Operator) -> bool:
    """kopf logs each handler it ran ("Handler 'model_changed' succeeded")."""
    return "Handler '" in (op.log.read_text(errors="replace") if op.log.exists() else "")


def test_one_operator_acts_and_the_other_takes_over(kube_cluster, installed, ns, tmp_path):
    c = kube_cluster
    rendered = subprocess.run(
        [_helm(), "template", "kubeinfer", str(REPO / "charts/kubeinfer"), "-n", SYSTEM_NS,
         "--set", "leaderElection.enabled=true", "--show-only", "templates/leader-election.yaml"],
        capture_output=True, text=True, check=True, timeout=120).stdout
    c.kubectl("apply", "-f", "-", input=rendered)
    c.kubectl("delete", "lease", "kubeinfer-operator", "-n", SYSTEM_NS, check=False)
    env = {"KUBEINFER_OPERATOR_LEASE_NAMESPACE": SYSTEM_NS, "KUBEINFER_OPERATOR_LEASE_SECONDS": str(LEASE_SECONDS)}
    ops = {name: Operator(c, installed.kubeconfig, tmp_path / f"{name}.log") for name in ("op-a", "op-b")}
    installed.stop()
    try:
        for name, op in ops.items():
            op.start("--leader-election", env={**env, "KUBEINFER_OPERATOR_IDENTITY": name})
        leader_name = wait_for("a leader", lambda: holder(c), timeout=60)
        leader = ops[leader_name]
        (standby_name,) = [n for n in ops if n != leader_name]
        standby = ops[standby_name]

        apply_model(c, ns, "first")
        ready(c, ns, "first", timeout=120)
        assert acted(leader), leader.tail()
        assert not acted(standby), standby.tail()  # never both
        assert holder(c) == leader_name

        leader.kill()
        killed = time.monotonic()
        wait_for("the standby leads", lambda: holder(c) == standby_name, timeout=LEASE_SECONDS * 4, interval=0.25)
        took = time.monotonic() - killed
        apply_model(c, ns, "second")
        ready(c, ns, "second", timeout=120)
        assert acted(standby), standby.tail()
        assert took <= LEASE_SECONDS * 2 + 2, f"failover took {took:.1f} s"
        print(f"\nfailover: the standby held the Lease {took:.1f} s after SIGKILL (lease {LEASE_SECONDS} s)")
    finally:
        for op in ops.values():
            op.stop()
        installed.start()
