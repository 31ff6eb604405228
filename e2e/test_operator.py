"""The operator on a real control plane (kube-apiserver, etcd, controllers, kwok nodes).

Installed as a user would: the CRD from ``crds/``, the chart's ServiceAccount and RBAC from
``helm template``; the operator runs as a real process (``kubeinfer operator``) with that
ServiceAccount's token, so the chart's least-privilege RBAC is what it gets.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
SYSTEM_NS = "kubeinfer-system"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def get(cluster, *args: str) -> dict | None:
    proc = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def condition(obj: dict | None, type_: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def _helm() -> str:
    return subprocess.run([str(REPO / "charts/tools/get-helm.sh")], capture_output=True, text=True,
                          check=True, timeout=300).stdout.strip()


def _sa_kubeconfig(cluster, path: Path, account: str = "kubeinfer", namespace: str = SYSTEM_NS) -> Path:
    """A kubeconfig that authenticates as ServiceAccount ``namespace/account`` (a token)."""
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration", "2h").stdout.strip()
    ctx = admin["contexts"][0]["context"]
    clusters = {c["name"]: c["cluster"] for c in admin["clusters"]}
    cl = dict(clusters[ctx["cluster"]])
    if "certificate-authority" in cl:  # inline it: the operator may run with another cwd
        cl["certificate-authority-data"] = base64.b64encode(Path(cl.pop("certificate-authority")).read_bytes()).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "op",
        "clusters": [{"name": "c", "cluster": cl}],
        "users": [{"name": "op", "user": {"token": token}}],
        "contexts": [{"name": "op", "context": {"cluster": "c", "user": "op"}}],
    }))
    return path


class Operator:
    """``kubeinfer operator`` as a child process; start, kill -9, start again."""

    def __init__(self, cluster, kubeconfig: Path, log: Path) -> None:
        self.cluster, self.kubeconfig, self.log = cluster, kubeconfig, log
        self.proc: subprocess.Popen | None = None

    def start(self, *extra: str, env: dict[str, str] | None = None) -> None:
        """Start the operator; ``extra`` flags come last (so they win), ``env`` adds variables."""
        environ = dict(self.cluster.env)
        environ["PYTHONPATH"] = f"{REPO}/runtime:{REPO}/operator"
        environ["KUBECONFIG"] = str(self.kubeconfig)
        environ.update(env or {})
        out = open(self.log, "ab")
        self.proc = self.cluster.popen(
            [sys.executable, "-m", "kubeinfer.cli", "operator", "--kubeconfig", str(self.kubeconfig),
             "--resync-seconds", "10", "--runtime-image", "registry.local/kubeinfer/runtime:e2e", *extra],
            env=environ, stdout=out, stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def installed(kube_cluster, tmp_path_factory) -> Iterator[Operator]:
    c = kube_cluster
    c.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    c.kubectl("wait", "--for=condition=Established", "crd/inferencemodels.kubeinfer.dev", "--timeout=60s")
    c.kubectl("create", "namespace", SYSTEM_NS, check=False)
    rendered = subprocess.run(
        [_helm(), "template", "kubeinfer", str(REPO / "charts/kubeinfer"), "-n", SYSTEM_NS,
         "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    c.kubectl("apply", "-f", "-", input=rendered)
    tmp = tmp_path_factory.mktemp("operator")
    op = Operator(c, _sa_kubeconfig(c, tmp / "kubeconfig"), tmp / "operator.log")
    op.start()
    yield op
    op.stop()
    print("---- operator log (tail)\n" + op.tail())


@pytest.fixture
def ns(kube_cluster, installed) -> Iterator[str]:
    name = f"op-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", name)
    wait_for("default ServiceAccount",
             lambda: kube_cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply_example(cluster, ns: str, name: str = "digits.yaml") -> dict:
    doc = yaml.safe_load((REPO / "examples/manifests" / name).read_text())
    cluster.kubectl("apply", "-n", ns, "-f", str(REPO / "examples/manifests" / name))
    return doc


def wait_ready(cluster, ns: str, name: str, replicas: int, generation: int | None = None,
               timeout: float = 180) -> dict:
    def probe():
        im = get(cluster, "inferencemodel", name, "-n", ns)
        st = (im or {}).get("status") or {}
        ok = condition(im, "Ready").get("status") == "True" and st.get("readyReplicas") == replicas
        ok = ok and condition(im, "Progressing").get("status") == "False"
        if generation is not None:
            ok = ok and st.get("observedGeneration") == generation
        return im if ok else None
    return wait_for(f"InferenceModel {ns}/{name} Ready with {replicas} replicas", probe, timeout=timeout)


def running_pods(cluster, ns: str, name: str) -> list[dict]:
    pods = get(cluster, "pods", "-n", ns, "-l", f"kubeinfer.dev/inferencemodel={name}") or {"items": []}
    return [p for p in pods["items"] if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


def test_example_becomes_ready_on_kwok_nodes(kube_cluster, installed, ns):
    c = kube_cluster
    apply_example(c, ns)
    im = wait_ready(c, ns, "digits", 2)
    assert im["status"]["url"] == f"http://digits.{ns}.svc.cluster.local:8000"
    assert im["status"]["observedGeneration"] == im["metadata"]["generation"]
    dep = get(c, "deployment", "digits", "-n", ns)
    assert dep["metadata"]["ownerReferences"][0]["uid"] == im["metadata"]["uid"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["command"][:2] == ["kubeinfer", "fetch"]
    assert pod["containers"][0]["image"] == "registry.local/kubeinfer/runtime:e2e"
    assert len(running_pods(c, ns, "digits")) == 2
    svc = get(c, "service", "digits", "-n", ns)
    assert [p["port"] for p in svc["spec"]["ports"]] == [8000, 8001, 8002]
    assert get(c, "pdb", "digits", "-n", ns) is not None
    full = get(c, "deployment", "digits", "-n", ns, "--show-managed-fields")
    managers = {(m["manager"], m["operation"]) for m in full["metadata"]["managedFields"]}
    assert ("kubeinfer-operator", "Apply") in managers
    # printer columns
    table = c.kubectl("get", "im", "digits", "-n", ns).stdout
    assert "READY" in table and "URL" in table and "True" in table
    explained = c.kubectl("explain", "inferencemodel.spec.model").stdout
    assert "uri" in explained and "pvc://" in explained


def test_spec_change_rolls_out_and_generation_follows(kube_cluster, installed, ns):
    c = kube_cluster
    apply_example(c, ns)
    im = wait_ready(c, ns, "digits", 2)
    dep_gen = get(c, "deployment", "digits", "-n", ns)["metadata"]["generation"]
    c.kubectl("patch", "im", "digits", "-n", ns, "--type", "merge",
              "-p", json.dumps({"spec": {"runtime": {"env": [{"name": "KUBEINFER_LOG_LEVEL", "value": "debug"}]}}}))
    gen = im["metadata"]["generation"] + 1
    wait_ready(c, ns, "digits", 2, generation=gen)
    dep = get(c, "deployment", "digits", "-n", ns)
    assert dep["metadata"]["generation"] > dep_gen
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBEINFER_LOG_LEVEL"] == "debug"
    wait_for("old pods gone", lambda: len(running_pods(c, ns, "digits")) == 2 and all(
        any(e.get("name") == "KUBEINFER_LOG_LEVEL" for e in p["spec"]["containers"][0].get("env", []))
        for p in running_pods(c, ns, "digits")))


def test_kubectl_scale(kube_cluster, installed, ns):
    c = kube_cluster
    apply_example(c, ns)
    wait_ready(c, ns, "digits", 2)
    c.kubectl("scale", "im/digits", "-n", ns, "--replicas", "3")
    im = wait_ready(c, ns, "digits", 3)
    assert im["spec"]["replicas"] == 3 and im["status"]["replicas"] == 3
    assert get(c, "deployment", "digits", "-n", ns)["spec"]["replicas"] == 3
    scale = json.loads(c.kubectl("get", "--raw",
                                 f"/apis/kubeinfer.dev/v1alpha1/namespaces/{ns}/inferencemodels/digits/scale").stdout)
    assert scale["status"]["selector"] == "kubeinfer.dev/inferencemodel=digits"


@pytest.mark.parametrize("spec, words", [
    ({"model": {"uri": "ftp://host/m"}}, "model.uri must start with"),
    ({"model": {"uri": "pvc://claim"}}, "pvc://<claim>/<path>"),
    ({"model": {"uri": "s3://b/m"}, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
     "minReplicas must be less than or equal to"),
    ({"model": {"uri": "s3://b/m"}, "replicas": -1}, "spec.replicas"),
    ({"model": {"uri": "s3://b/m"}, "runtime": {"gpus": 1, "resources": {"limits": {"nvidia.com/gpu": 1}}}},
     "not both"),
    ({"model": {"uri": "s3://b/m"}, "runtime": {"gpus": 1, "workers": 2}}, "a GPU model runs one serving process"),
])
def test_api_server_rejects_invalid_specs(kube_cluster, installed, ns, spec, words):
    doc = {"apiVersion": "kubeinfer.dev/v1alpha1", "kind": "InferenceModel",
           "metadata": {"name": "bad", "namespace": ns}, "spec": spec}
    proc = kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(doc), check=False)
    assert proc.returncode != 0
    assert words in proc.stderr, proc.stderr
    assert get(kube_cluster, "im", "bad", "-n", ns) is None


def test_spec_past_the_schema_is_invalid_spec_once(kube_cluster, installed, ns):
    c = kube_cluster
    doc = {"apiVersion": "kubeinfer.dev/v1alpha1", "kind": "InferenceModel",
           "metadata": {"name": "badcfg", "namespace": ns},
           "spec": {"model": {"uri": "s3://b/m", "config": {"max_batch_size": 2,
                                                            "dynamic_batching": {"preferred_batch_size": [64]}}}}}
    c.kubectl("apply", "-f", "-", input=json.dumps(doc))
    im = wait_for("Ready=False InvalidSpec", lambda: (lambda o: o if condition(o, "Ready").get("reason") == "InvalidSpec"
                                                       else None)(get(c, "im", "badcfg", "-n", ns)))
    assert condition(im, "Ready")["status"] == "False"
    assert "preferred_batch_size" in condition(im, "Ready")["message"]
    assert get(c, "deployment", "badcfg", "-n", ns) is None

    def events():
        evs = get(c, "events", "-n", ns, "--field-selector", "involvedObject.name=badcfg") or {"items": []}
        return [e for e in evs["items"] if e.get("reason") == "InvalidSpec"]
    first = wait_for("InvalidSpec event", events)
    time.sleep(12)  # longer than the resync interval: no retry storm
    again = events()
    assert sum(e.get("count", 1) for e in again) <= sum(e.get("count", 1) for e in first) + 1
    # fixing the spec recovers
    c.kubectl("patch", "im", "badcfg", "-n", ns, "--type", "merge",
              "-p", json.dumps({"spec": {"model": {"config": {"max_batch_size": 64}}}}))
    wait_ready(c, ns, "badcfg", 1)


def test_delete_garbage_collects(kube_cluster, installed, ns):
    c = kube_cluster
    apply_example(c, ns)
    wait_ready(c, ns, "digits", 2)
    c.kubectl("delete", "im", "digits", "-n", ns, "--timeout=60s")
    for kind in ("deployment", "service", "pdb"):
        wait_for(f"{kind} collected", lambda k=kind: get(c, k, "digits", "-n", ns) is None, timeout=90)
    wait_for("pods gone", lambda: not running_pods(c, ns, "digits"), timeout=90)


def test_operator_restart_converges_without_duplicates(kube_cluster, installed, ns):
    c = kube_cluster
    apply_example(c, ns)
    im = wait_ready(c, ns, "digits", 2)
    installed.kill()
    try:
        c.kubectl("scale", "im/digits", "-n", ns, "--replicas", "1")
        # drift while the operator is down: someone edits the Service
        c.kubectl("patch", "service", "digits", "-n", ns, "--type", "merge",
                  "-p", json.dumps({"spec": {"selector": {"kubeinfer.dev/inferencemodel": "hijacked"}}}))
    finally:
        installed.start()
    wait_ready(c, ns, "digits", 1, generation=im["metadata"]["generation"] + 1)
    wait_for("Service selector restored", lambda: get(c, "service", "digits", "-n", ns)["spec"]["selector"]
             == {"kubeinfer.dev/inferencemodel": "digits"}, timeout=60)
    sel = "-l", "kubeinfer.dev/inferencemodel=digits"
    assert len(get(c, "deployments", "-n", ns, *sel)["items"]) == 1
    assert len(get(c, "services", "-n", ns, *sel)["items"]) == 1
    assert len(get(c, "replicasets", "-n", ns, *sel)["items"]) >= 1
    wait_for("one running pod", lambda: len(running_pods(c, ns, "digits")) == 1, timeout=90)
