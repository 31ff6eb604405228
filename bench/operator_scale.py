"""The operator at scale on the e2e control plane (kube-apiserver, etcd, controllers, kwok).

A benchmark, not a test: it prints figures (and writes them as JSON with ``--json``).

1. latency: ``--latency`` models created one after another; time from the create to the
   operator's Deployment existing (p50 / p99);
2. scale: ``--count`` InferenceModels created at once (``--create-threads`` clients in
   parallel); time until all are Ready after the last create (and, before, until all
   their Deployments are Available: the control plane's share), the operator's RSS and
   CPU during and after;
3. delete all: one delete collection; time until every owned Deployment, Service and PDB
   is gone (garbage collection; the operator holds no finalizers);
4. chaos: ``--chaos`` models created while the operator is killed with SIGKILL half-way
   and restarted; all converge, and no model owns two of anything (duplicates counted).

Each phase also reports the machine's load average (1 min, mean and max over the phase:
the figures of a shared machine are only comparable at similar load) and the API server's
requests by verb and resource during the phase (``apiserver_request_total`` from its
/metrics, every client together: the operator's requests are the PATCH/APPLY/GET of
inferencemodels, deployments, services, poddisruptionbudgets and the sweep's kinds; the
control plane's own are mostly PUT/POST of replicasets, pods, endpointslices, events).
``--py-spy FILE`` records the operator's stacks during phase 2 (py-spy, raw format);
``KUBEINFER_BENCH_PYTHONPATH`` runs the operator from another checkout (before/after
comparisons: e.g. ``git archive <commit> operator runtime | tar -x -C /tmp/base``).

    PYTHONPATH=runtime:operator KUBEINFER_NODES=6 python bench/operator_scale.py \\
        [--count 500] [--latency 20] [--chaos 50] [--json out.json] [--skip latency,chaos]

The cluster is ``KUBEINFER_CLUSTER_NAME`` (default kubeinfer-bench): started with
``e2e/cluster/cluster.sh up`` unless ``--kubeconfig`` names a running one, and deleted at
the end unless ``--keep``. kwok nodes hold 110 pods each: use KUBEINFER_NODES >= count/100.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION = "kubeinfer.dev", "v1alpha1"
MANAGED = {"app.kubernetes.io/managed-by": "kubeinfer-operator"}


def sh(*cmd: str, env: dict[str, str] | None = None, input: str | None = None) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, input=input, timeout=900).stdout


class OperatorProcess:
    """``kubeinfer operator`` as a child; RSS and CPU from /proc."""

    def __init__(self, kubeconfig: str, log: Path, extra: list[str]) -> None:
        self.kubeconfig, self.log, self.extra = kubeconfig, log, extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, KUBEINFER_LOG_LEVEL="WARNING",
                   PYTHONPATH=os.environ.get("KUBEINFER_BENCH_PYTHONPATH", f"{REPO}/runtime:{REPO}/operator"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubeinfer.cli", "operator", "--kubeconfig", self.kubeconfig,
             "--runtime-image", "registry.local/kubeinfer/runtime:bench", *self.extra],
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
    """RSS / CPU of the operator and the load average once a second until stopped."""

    def __init__(self, op: OperatorProcess) -> None:
        super().__init__(daemon=True)
        self.op, self.samples = op, []  # (t, rss MB, cpu s, load1)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            try:
                self.samples.append((time.monotonic(), self.op.rss_mb(), self.op.cpu_seconds(), os.getloadavg()[0]))
            except (OSError, ValueError, AssertionError):
                pass

    def between(self, t0: float, t1: float) -> list[tuple[float, float, float, float]]:
        return [s for s in self.samples if t0 <= s[0] <= t1]


def load_figures(samples: list[tuple[float, float, float, float]]) -> dict[str, float]:
    loads = [s[3] for s in samples] or [os.getloadavg()[0]]
    return {"load1_mean": round(sum(loads) / len(loads), 1), "load1_max": round(max(loads), 1)}


_SAMPLE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def api_requests(kubectl: str, env: dict[str, str]) -> Counter:
    """The API server's request counter by (verb, resource[/subresource])."""
    out: Counter = Counter()
    for line in sh(kubectl, "get", "--raw", "/metrics", env=env).splitlines():
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m["labels"]))
        resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        if resource:
            out[f"{labels.get('verb', '')} {resource}"] += int(float(m["value"]))
    return out


def request_delta(before: Counter, after: Counter, per: int) -> dict[str, Any]:
    """Requests during a phase, total and per model, the largest first (tiny ones dropped)."""
    delta = {k: after[k] - before.get(k, 0) for k in after}
    delta = {k: v for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v >= max(1, per // 10)}
    return {"total": sum(delta.values()), "per_model": {k: round(v / per, 2) for k, v in delta.items()}}


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
    p.add_argument("--create-threads", type=int, default=8, help="clients creating the models of phase 2 at once")
    p.add_argument("--skip", default="", help="phases to skip, comma-separated: latency, scale, delete, chaos")
    p.add_argument("--kubeconfig", default=None, help="a running cluster (default: start one)")
    p.add_argument("--keep", action="store_true", help="leave the cluster running")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--py-spy", type=Path, default=None, help="record the operator's stacks in phase 2 to this file")
    p.add_argument("--operator-arg", action="append", default=[], help="extra flag for the operator (repeatable)")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))

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
    config = KubeConfig.from_file(kubeconfig)
    client = Client(config=config, field_manager="bench", timeout=300)
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"operator-scale-{os.getpid()}.log"
    op = OperatorProcess(kubeconfig, log, args.operator_arg)
    results: dict[str, Any] = {"operator_log": str(log)}
    sampler = Sampler(op)
    spy: subprocess.Popen | None = None

    def report() -> None:
        print(json.dumps(results), flush=True)  # what is measured so far
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")

    def namespace(name: str) -> str:
        client.create(Namespace(metadata=ObjectMeta(name=name)))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                client.get(ServiceAccount, "default", namespace=name)
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

    def n_ready(ns: str) -> int:
        return sum(ready(im.to_dict()) for im in client.list(IM, namespace=ns))

    def n_available(ns: str) -> int:
        return sum(1 for d in client.list(Deployment, namespace=ns)
                   if any(c.type == "Available" and c.status == "True" for c in (d.status and d.status.conditions) or []))

    def owned_left(ns: str) -> int:
        return sum(len(list(client.list(kind, namespace=ns, labels=MANAGED)))
                   for kind in (Deployment, Service, PodDisruptionBudget))

    def create_all(names: list[str], ns: str, threads: int) -> None:
        clients = [Client(config=config, field_manager="bench", timeout=300) for _ in range(threads)]

        def create(i: int) -> None:
            clients[i % threads].create(IM.from_dict(model(names[i], ns)))
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(create, range(len(names))))

    try:
        op.start()
        sampler.start()
        time.sleep(3)
        results["rss_idle_mb"] = round(op.rss_mb(), 1)

        # 1. latency: create -> Deployment exists
        if "latency" not in skip:
            ns = namespace("bench-latency")
            lat = []
            t_phase, req0 = time.monotonic(), api_requests(kubectl, kenv)
            for i in range(args.latency):
                name = f"l{i:03d}"
                t0 = time.monotonic()
                client.create(IM.from_dict(model(name, ns)))
                wait(f"Deployment {name}", lambda: any(d.metadata.name == name for d in client.list(Deployment, namespace=ns)),
                     timeout=60, interval=0.02)
                lat.append(time.monotonic() - t0)
            wait(f"{args.latency} Ready", lambda: n_ready(ns) == args.latency, interval=1)
            results["latency"] = {
                "create_to_deployment_p50_s": round(pct(lat, 0.5), 3),
                "create_to_deployment_p99_s": round(pct(lat, 0.99), 3),
                **load_figures(sampler.between(t_phase, time.monotonic())),
                "requests": request_delta(req0, api_requests(kubectl, kenv), args.latency),
            }
            report()

        # 2. scale: COUNT at once -> all Ready
        ns = namespace("bench-scale")
        if "scale" not in skip:
            if args.py_spy:
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(op.proc.pid),
                                        "--format", "raw", "--rate", "50", "--nonblocking", "-o", str(args.py_spy)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            req0 = api_requests(kubectl, kenv)
            cpu0, t0 = op.cpu_seconds(), time.monotonic()
            create_all([f"m{i:04d}" for i in range(args.count)], ns, args.create_threads)
            t_last = time.monotonic()
            # the control plane's part: every Deployment Available (controllers and kwok);
            # then the operator's: every InferenceModel Ready (its status follows)
            wait(f"{args.count} Deployments Available", lambda: n_available(ns) == args.count, interval=1)
            t_available = time.monotonic()
            wait(f"{args.count} Ready", lambda: n_ready(ns) == args.count, interval=1)
            t_ready = time.monotonic()
            cpu1 = op.cpu_seconds()
            req1 = api_requests(kubectl, kenv)
            time.sleep(10)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
            during = sampler.between(t0, t_ready)
            results["scale"] = {
                "count": args.count,
                "create_all_s": round(t_last - t0, 1),
                "deployments_available_after_last_create_s": round(t_available - t_last, 1),
                "ready_after_last_create_s": round(t_ready - t_last, 1),
                "rss_peak_mb": round(max(s[1] for s in during), 1) if during else None,
                "rss_after_mb": round(op.rss_mb(), 1),
                "cpu_s_during": round(cpu1 - cpu0, 1),
                "cpu_busy_during_pct": round(100 * (cpu1 - cpu0) / max(t_ready - t0, 1e-9), 0),
                "cpu_idle_after_pct": round(100 * (op.cpu_seconds() - cpu1) / max(time.monotonic() - t_ready, 1e-9), 1),
                **load_figures(during),
                "requests": request_delta(req0, req1, args.count),
            }
            report()

        # 3. delete all -> owned objects gone (garbage collection)
        if "delete" not in skip and "scale" not in skip:
            req0, t0 = api_requests(kubectl, kenv), time.monotonic()
            client.deletecollection(IM, namespace=ns)
            wait("InferenceModels gone", lambda: not list(client.list(IM, namespace=ns)), interval=1)
            t_ims = time.monotonic()
            wait("owned objects gone", lambda: owned_left(ns) == 0, interval=1)
            results["delete"] = {
                "delete_all_to_models_gone_s": round(t_ims - t0, 1),
                "delete_all_to_owned_gone_s": round(time.monotonic() - t0, 1),
                **load_figures(sampler.between(t0, time.monotonic())),
                "requests": request_delta(req0, api_requests(kubectl, kenv), args.count),
            }
            report()

        # 4. chaos: SIGKILL half-way through creating CHAOS models
        if "chaos" not in skip:
            ns = namespace("bench-chaos")
            t_phase, req0 = time.monotonic(), api_requests(kubectl, kenv)
            for i in range(args.chaos):
                if i == args.chaos // 2:
                    op.kill()
                client.create(IM.from_dict(model(f"c{i:03d}", ns)))
            t0 = time.monotonic()
            op.start()
            wait(f"{args.chaos} Ready after the restart", lambda: n_ready(ns) == args.chaos, interval=1)
            t_ready = time.monotonic()
            dups = 0
            for kind in (Deployment, Service, PodDisruptionBudget):
                names = [o.metadata.name for o in client.list(kind, namespace=ns)]
                dups += len(names) - len(set(names)) + abs(len(names) - args.chaos)
            per_dep: Counter = Counter()
            for rs in client.list(ReplicaSet, namespace=ns):
                owner = (rs.metadata.ownerReferences or [None])[0]
                per_dep[owner.name if owner else "?"] += 1
            results["chaos"] = {
                "count": args.chaos,
                "ready_after_restart_s": round(t_ready - t0, 1),
                "duplicates": dups + sum(n - 1 for n in per_dep.values()) + abs(len(per_dep) - args.chaos),
                **load_figures(sampler.between(t_phase, t_ready)),
                "requests": request_delta(req0, api_requests(kubectl, kenv), args.chaos),
            }
            report()
    finally:
        sampler.done.set()
        if spy is not None and spy.poll() is None:
            spy.kill()
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
