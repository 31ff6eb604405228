"""The operator at scale on the e2e control plane (kube-apiserver, etcd, controllers, kwok).

A benchmark, not a test: it prints figures (and writes them as JSON with ``--json``).

1. latency: ``--latency`` models created one after another; time from the create to the
   operator's Deployment existing (p50 / p99);
2. scale: ``--count`` InferenceModels created at once; time until all are Ready (after the
   last create), the operator's RSS and CPU during and after;
3. delete all: time until every owned Deployment, Service and PDB is gone;
4. chaos: ``--chaos`` models created while the operator is killed with SIGKILL half-way and
   restarted; all converge, and no model owns two of anything.

    PYTHONPATH=runtime:operator KUBEINFER_NODES=6 python bench/operator_scale.py \\
        [--count 500] [--latency 20] [--chaos 50] [--json out.json]

The cluster is ``KUBEINFER_CLUSTER_NAME`` (default kubeinfer-bench): started with
``e2e/cluster/cluster.sh up`` unless ``--kubeconfig`` names a running one, and deleted at
the end unless ``--keep``. kwok nodes hold 110 pods each: use KUBEINFER_NODES >= count/100.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION = "kubeinfer.dev", "v1alpha1"


def sh(*cmd: str, env: dict[str, str] | None = None, input: str | None = None) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, input=input, timeout=900).stdout


class OperatorProcess:
    """``kubeinfer operator`` as a child; RSS and CPU from /proc."""

    def __init__(self, kubeconfig: str, log: Path) -> None:
        self.kubeconfig, self.log = kubeconfig, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, KUBEINFER_LOG_LEVEL="WARNING",
                   PYTHONPATH=f"{REPO}/runtime:{REPO}/operator")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubeinfer.cli", "operator", "--kubeconfig", self.kubeconfig,
             "--runtime-image", "registry.local/kubeinfer/runtime:bench"],
            env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """RSS / CPU of the operator once a second until stopped."""

    def __init__(self, op: OperatorProcess) -> None:
        super().__init__(daemon=True)
        self.op, self.samples = op, []  # (t, rss MB, cpu s)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            try:
                self.samples.append((time.monotonic(), self.op.rss_mb(), self.op.cpu_seconds()))
            except (OSError, ValueError):
                pass


def model(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceModel", "metadata": {"name": name, "namespace": ns},
            "spec": {"model": {"uri": "s3://bucket/m", "format": "onnx"},
                     "runtime": {"resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ready(im: dict[str, Any]) -> bool:
    conds = (im.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--latency", type=int, default=20)
    p.add_argument("--chaos", type=int, default=50)
    p.add_argument("--kubeconfig", default=None, help="a running cluster (default: start one)")
    p.add_argument("--keep", action="store_true", help="leave the cluster running")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.generic_resource import create_namespaced_resource
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.apps_v1 import Deployment, ReplicaSet
    from lightkube.resources.core_v1 import Namespace, Service, ServiceAccount
    from lightkube.resources.policy_v1 import PodDisruptionBudget

    env = dict(os.environ)
    env.setdefault("KUBEINFER_CLUSTER_NAME", "kubeinfer-bench")
    started = args.kubeconfig is None
    kubeconfig = args.kubeconfig or sh("bash", str(REPO / "e2e/cluster/cluster.sh"), "up", env=env).strip().splitlines()[-1]
    kubectl = str(Path(sys.executable).parent / "kubectl")
    kenv = dict(env, KUBECONFIG=kubeconfig)
    sh(kubectl, "apply", "--server-side", "-f", str(REPO / "crds"), env=kenv)
    sh(kubectl, "wait", "--for=condition=Established", "crd/inferencemodels.kubeinfer.dev", "--timeout=60s", env=kenv)
    IM = create_namespaced_resource(GROUP, VERSION, "InferenceModel", "inferencemodels")
    client = Client(config=KubeConfig.from_file(kubeconfig), field_manager="bench", timeout=300)
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "operator-scale.log"
    op = OperatorProcess(kubeconfig, log)
    results: dict[str, Any] = {}
    try:
        op.start()
        time.sleep(3)
        results["rss_idle_mb"] = round(op.rss_mb(), 1)

        def namespace(name: str) -> str:
            client.create(Namespace(metadata=ObjectMeta(name=name)))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    client.get(ServiceAccount,
                               "default", namespace=name)
                    return name
                except Exception:  # noqa: BLE001 - not created yet
                    time.sleep(0.2)
            raise SystemExit(f"namespace {name}: no default ServiceAccount")

        def wait(what: str, probe, timeout: float = args.timeout, interval: float = 0.5):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                got = probe()
                if got:
                    return got
                time.sleep(interval)
            raise SystemExit(f"timed out waiting for {what}")

        # 1. latency: create -> Deployment exists
        ns = namespace("bench-latency")
        lat = []
        for i in range(args.latency):
            name = f"l{i:03d}"
            t0 = time.monotonic()
            client.create(IM.from_dict(model(name, ns)))
            wait(f"Deployment {name}", lambda: any(d.metadata.name == name for d in client.list(Deployment, namespace=ns)),
                 timeout=60, interval=0.02)
            lat.append(time.monotonic() - t0)
        results["create_to_deployment_p50_s"] = round(pct(lat, 0.5), 3)
        results["create_to_deployment_p99_s"] = round(pct(lat, 0.99), 3)

        # 2. scale: COUNT at once -> all Ready
        ns = namespace("bench-scale")
        sampler = Sampler(op)
        sampler.start()
        cpu0, t0 = op.cpu_seconds(), time.monotonic()
        for i in range(args.count):
            client.create(IM.from_dict(model(f"m{i:04d}", ns)))
        t_last = time.monotonic()
        wait(f"{args.count} Ready", lambda: sum(ready(im.to_dict())
                                                for im in client.list(IM, namespace=ns)) == args.count, interval=1)
        t_ready = time.monotonic()
        cpu1 = op.cpu_seconds()
        time.sleep(10)
        sampler.done.set()
        results.update({
            "count": args.count,
            "create_all_s": round(t_last - t0, 1),
            "ready_after_last_create_s": round(t_ready - t_last, 1),
            "rss_peak_mb": round(max(s[1] for s in sampler.samples), 1),
            "rss_after_mb": round(op.rss_mb(), 1),
            "cpu_s_during": round(cpu1 - cpu0, 1),
            "cpu_busy_during_pct": round(100 * (cpu1 - cpu0) / max(t_ready - t0, 1e-9), 0),
            "cpu_idle_after_pct": round(100 * (op.cpu_seconds() - cpu1 - 0) / max(time.monotonic() - t_ready, 1e-9), 1),
        })

        # 3. delete all -> owned objects gone (garbage collection)
        print(json.dumps(results), flush=True)  # what is measured so far
        t0 = time.monotonic()
        client.deletecollection(IM, namespace=ns)
        wait("owned objects gone", lambda: not any(
            list(client.list(kind, namespace=ns, labels={"app.kubernetes.io/managed-by": "kubeinfer-operator"}))
            for kind in (Deployment, Service, PodDisruptionBudget)), interval=1)
        results["delete_all_to_owned_gone_s"] = round(time.monotonic() - t0, 1)
        print(json.dumps(results), flush=True)

        # 4. chaos: SIGKILL half-way through creating CHAOS models
        ns = namespace("bench-chaos")
        for i in range(args.chaos):
            if i == args.chaos // 2:
                op.kill()
            client.create(IM.from_dict(model(f"c{i:03d}", ns)))
        t0 = time.monotonic()
        op.start()
        wait(f"{args.chaos} Ready after the restart",
             lambda: sum(ready(im.to_dict()) for im in client.list(IM, namespace=ns)) == args.chaos, interval=1)
        results["chaos_ready_after_restart_s"] = round(time.monotonic() - t0, 1)
        dups = 0
        for kind in (Deployment, Service, PodDisruptionBudget):
            names = [o.metadata.name for o in client.list(kind, namespace=ns)]
            dups += len(names) - len(set(names)) + abs(len(names) - args.chaos)
        per_dep: dict[str, int] = {}
        for rs in client.list(ReplicaSet, namespace=ns):
            owner = (rs.metadata.ownerReferences or [None])[0]
            per_dep[owner.name if owner else "?"] = per_dep.get(owner.name if owner else "?", 0) + 1
        results["chaos_duplicates"] = dups + sum(n - 1 for n in per_dep.values())
    finally:
        op.stop()
        if started and not args.keep:
            subprocess.run(["bash", str(REPO / "e2e/cluster/cluster.sh"), "down"], env=env, check=False,
                           capture_output=True, timeout=300)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
