"""Autoscaling on the pending-request gauge, end to end on the real control plane.

Real pieces: kube-apiserver (its aggregator proxies external.metrics.k8s.io to KEDA's
metrics API server), kube-controller-manager's HPA controller, kwok pods, the operator as a
process with the chart's RBAC, Prometheus and KEDA (operator + metrics API server) built
from Go modules by e2e/metrics/build.sh, and one ``kubeinfer serve`` process per Running
pod (the pod's own command), scraped by Prometheus with the pod's namespace/pod labels.
The model (Python backend) holds every request whose input is 1 while a gate file exists,
so the number of pending requests is exact.

KEDA path: pending rises -> replicas go up in bounded time; several operator resyncs and a
spec edit leave the autoscaler's replicas alone; ``kubectl scale`` is refused; load gone
-> replicas come back down; runtimes no longer scraped -> KEDA's fallback replicas and
``AutoscalerMetricMissing``. HPA path (prometheus-adapter is not available here): the
operator's HPA and the chart's adapter rules applied on the real API server, the rules'
queries evaluated on the real Prometheus against real runtimes, and the HPA's own
FailedGetPodsMetric surfacing as ``AutoscalerMetricMissing``.

Reaction times are printed (``[autoscaling] ...``); docs/autoscaling.md quotes them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from e2e.metrics.stack import Keda, PodStandIns, Proc, Prometheus, wait_established, wait_until
from e2e.test_operator import SYSTEM_NS, _helm, _sa_kubeconfig, condition, get

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
MODEL = "held"
RESYNC_SECONDS = 4

HELD_CONFIG = """
name: "held"
backend: "python"
max_batch_size: 1
input [ { name: "HOLD" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
dynamic_batching { }
instance_group [ { count: 2 kind: KIND_CPU } ]
"""
# two instances: a batch never runs on the event loop, so a held request cannot stall
# the metrics endpoint; two requests execute (held), the rest are pending
HELD_MODEL = '''
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.gate = os.path.join(args["model_repository"], "hold")

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "HOLD").as_numpy()
            deadline = time.monotonic() + 300
            while x.any() and os.path.exists(self.gate) and time.monotonic() < deadline:
                time.sleep(0.01)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x.astype(np.float32))]))
        return responses
'''


def log(msg: str) -> None:
    print(f"[autoscaling] {msg}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def pipeline(kube_cluster, metrics_bins, tmp_path_factory) -> Iterator[dict]:
    c = kube_cluster
    work = tmp_path_factory.mktemp("autoscaling")
    started: list = []
    try:
        prom = Prometheus(metrics_bins / "prometheus", work / "prometheus")
        started.append(prom)
        # KEDA's CRDs first: the operator's RBAC and sweeps refer to ScaledObjects
        c.kubectl("apply", "--server-side", "-f", str(metrics_bins.parent / "crds"))
        c.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        wait_established(c, "inferencemodels.kubeinfer.dev")
        c.kubectl("create", "namespace", SYSTEM_NS, check=False)
        rendered = subprocess.run(
            [_helm(), "template", "kubeinfer", str(REPO / "charts/kubeinfer"), "-n", SYSTEM_NS,
             "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml",
             "--show-only", "templates/prometheus-adapter-rules.yaml",
             "--set", "monitoring.prometheusAdapterRules.enabled=true"],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout
        c.kubectl("apply", "-f", "-", input=rendered)
        env = dict(c.env)
        env["PYTHONPATH"] = f"{REPO}/runtime:{REPO}/operator"
        kubeconfig = _sa_kubeconfig(c, work / "operator.kubeconfig")
        env["KUBECONFIG"] = str(kubeconfig)
        operator = Proc("operator", [
            sys.executable, "-m", "kubeinfer.cli", "operator", "--kubeconfig", str(kubeconfig),
            "--resync-seconds", str(RESYNC_SECONDS), "--runtime-image", "registry.local/kubeinfer/runtime:e2e",
        ], work / "operator.log", env)
        started.append(operator)

        repo = work / "models"
        (repo / MODEL / "1").mkdir(parents=True)
        (repo / MODEL / "config.pbtxt").write_text(HELD_CONFIG)
        (repo / MODEL / "1" / "model.py").write_text(HELD_MODEL)
        runtime_env = dict(os.environ)
        runtime_env["PYTHONPATH"] = f"{REPO}/runtime:{REPO}/operator"
        yield {"prom": prom, "operator": operator, "work": work, "repo": repo, "env": runtime_env}
    finally:
        for thing in reversed(started):
            thing.stop()
        for p in ("operator.log", "keda/keda-operator.log", "keda/keda-adapter.log", "prometheus/prometheus.log"):
            path = work / p
            if path.exists():
                print(f"---- {p} (tail)\n" + path.read_text(errors="replace")[-2500:], file=sys.stderr)


@pytest.fixture(scope="module")
def keda(kube_cluster, metrics_bins, pipeline) -> Iterator[Keda]:
    """KEDA's operator and metrics API server, and the external metrics APIService."""
    k = Keda(kube_cluster, metrics_bins, metrics_bins.parent / "crds", pipeline["work"] / "keda")
    try:
        t0 = time.monotonic()
        k.wait_available()
        log(f"APIService v1beta1.external.metrics.k8s.io Available after {time.monotonic() - t0:.1f}s")
        kube_cluster.kubectl("get", "--raw", "/apis/external.metrics.k8s.io/v1beta1")
        yield k
    finally:
        k.stop()


@pytest.fixture
def ns(kube_cluster, pipeline) -> Iterator[str]:
    name = f"as-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", name)
    wait_until("default ServiceAccount",
               lambda: kube_cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0, 60)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def model_manifest(autoscaling: dict) -> dict:
    return {
        "apiVersion": "kubeinfer.dev/v1alpha1", "kind": "InferenceModel", "metadata": {"name": MODEL},
        "spec": {
            "model": {"uri": "/opt/models/held", "format": "python"},
            "runtime": {"shutdownDelaySeconds": 0, "drainSeconds": 5},
            "autoscaling": autoscaling,
        },
    }


def deployment_replicas(c, ns: str) -> int | None:
    dep = get(c, "deployment", MODEL, "-n", ns)
    return None if dep is None else dep["spec"].get("replicas")


class Load:
    """``n`` held requests to one runtime over gRPC (tritonclient), answered on release."""

    def __init__(self, port: int, n: int) -> None:
        self.client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        self.done = 0
        self.failed: list[str] = []
        self._lock = threading.Lock()
        for _ in range(n):
            inp = grpcclient.InferInput("HOLD", [1, 1], "FP32")
            inp.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
            self.client.async_infer(MODEL, [inp], callback=self._answered)

    def _answered(self, result, error) -> None:
        with self._lock:
            self.done += 1
            if error is not None:
                self.failed.append(str(error))

    def close(self) -> None:
        self.client.close()


def pending_sum(prom: Prometheus, ns: str) -> float | None:
    result = prom.query(f'sum(nv_inference_pending_request_count{{namespace="{ns}",model="{MODEL}"}})')
    return float(result[0]["value"][1]) if result else None


def test_keda_scales_on_pending_requests(kube_cluster, pipeline, keda, ns):
    c, prom = kube_cluster, pipeline["prom"]
    gate = pipeline["repo"] / MODEL / "hold"
    # the model first runs unscaled, so that its runtime is scraped before KEDA first reads
    # the metric (a read finding no series counts towards the fallback)
    manifest = model_manifest({})
    del manifest["spec"]["autoscaling"]
    c.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))
    wait_until("1 replica", lambda: deployment_replicas(c, ns) == 1, 60)
    pods = PodStandIns(c, ns, MODEL, pipeline["repo"], prom.sd_dir / f"{ns}.json", pipeline["work"], pipeline["env"])
    load = None
    try:
        (first,) = wait_until("a runtime for the pod", lambda: pods.pods() or None, 60)
        proc = pods.running[first][0]
        grpc_port = int(proc.cmd[proc.cmd.index("--grpc-port") + 1])
        wait_until("the runtime scraped with pending 0", lambda: pending_sum(prom, ns) == 0.0, 90)

        c.kubectl("patch", "im", MODEL, "-n", ns, "--type", "merge", "-p", json.dumps({"spec": {"autoscaling": {
            "autoscaler": "keda", "prometheusAddress": prom.url,
            "minReplicas": 1, "maxReplicas": 4, "targetPendingRequests": 2, "pollingIntervalSeconds": 2,
            "fallback": {"failureThreshold": 2, "replicas": 3, "behavior": "static"},
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 1}]},
                "scaleDown": {"stabilizationWindowSeconds": 10,
                              "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1}]},
            },
        }}}))
        so = wait_until("ScaledObject Ready", lambda: (lambda o: o if condition(o, "Ready").get("status") == "True"
                                                         else None)(get(c, "scaledobject", MODEL, "-n", ns)), 90)
        assert so["metadata"]["ownerReferences"][0]["kind"] == "InferenceModel"
        hpa = wait_until("keda-hpa-held", lambda: get(c, "hpa", f"keda-hpa-{MODEL}", "-n", ns), 60)
        assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 10
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
        assert deployment_replicas(c, ns) == 1

        # -- load: 10 held requests, 2 execute, 8 pending -> ceil(8 / 2) = 4 replicas
        gate.write_text("")
        t_load = time.monotonic()
        load = Load(grpc_port, 10)
        wait_until("8 pending in Prometheus", lambda: pending_sum(prom, ns) == 8.0, 30)
        wait_until("first scale-up", lambda: (deployment_replicas(c, ns) or 0) > 1, 90, interval=0.25)
        t_first = time.monotonic() - t_load
        wait_until("4 replicas", lambda: deployment_replicas(c, ns) == 4, 90, interval=0.25)
        t_full = time.monotonic() - t_load
        log(f"load -> first scale-up {t_first:.1f}s, -> 4 replicas {t_full:.1f}s")

        # -- the operator leaves the replicas alone: resyncs and a spec edit (no rollout)
        c.kubectl("patch", "im", MODEL, "-n", ns, "--type", "merge",
                  "-p", json.dumps({"spec": {"rollout": {"pdbMaxUnavailable": 2}}}))
        wait_until("PDB updated", lambda: (get(c, "pdb", MODEL, "-n", ns) or {}).get("spec", {})
                   .get("maxUnavailable") == 2, 30)
        seen = set()
        deadline = time.monotonic() + 3 * RESYNC_SECONDS + 1
        while time.monotonic() < deadline:
            seen.add(deployment_replicas(c, ns))
            time.sleep(0.5)
        assert seen == {4}, f"replicas moved while the autoscaler held them at 4: {seen}"
        dep = get(c, "deployment", MODEL, "-n", ns, "--show-managed-fields")
        owners = [m["manager"] for m in dep["metadata"]["managedFields"]
                  if "f:replicas" in json.dumps(m.get("fieldsV1", {}).get("f:spec", {}))]
        assert "kubeinfer-operator" not in owners, owners

        # -- kubectl scale is refused while autoscaling is on
        refused = c.kubectl("scale", "im", MODEL, "-n", ns, "--replicas", "2", check=False)
        assert refused.returncode != 0
        assert "autoscaler owns the replicas" in refused.stderr, refused.stderr

        # -- status: desired/current replicas and the metric
        def status_full():
            st = (get(c, "im", MODEL, "-n", ns) or {}).get("status", {}).get("autoscaler") or {}
            return st if st.get("desiredReplicas") == 4 and st.get("currentPendingRequests") else None
        st = wait_until("status.autoscaler", status_full, 30)
        assert st["hpaName"] == f"keda-hpa-{MODEL}" and st["kind"] == "keda"
        table = c.kubectl("get", "im", MODEL, "-n", ns).stdout
        assert "DESIRED" in table and "PENDING" in table
        assert condition(get(c, "im", MODEL, "-n", ns), "AutoscalerMetricMissing").get("status") == "False"

        # -- load gone -> back to 1 replica after the 10 s stabilization window
        gate.unlink()
        t_release = time.monotonic()
        wait_until("every held request answered", lambda: load.done == 10, 60)
        assert not load.failed, load.failed
        wait_until("1 replica again", lambda: deployment_replicas(c, ns) == 1, 120, interval=0.25)
        t_down = time.monotonic() - t_release
        log(f"load gone -> 1 replica {t_down:.1f}s (scale-down stabilization 10s)")

        # -- the runtimes are no longer scraped: no series, KEDA's fallback (3 replicas)
        pods.set_scraped(False)
        t_gone = time.monotonic()
        wait_until("fallback replicas", lambda: deployment_replicas(c, ns) == 3, 120, interval=0.5)
        log(f"metric gone -> fallback 3 replicas {time.monotonic() - t_gone:.1f}s")
        missing = wait_until("AutoscalerMetricMissing", lambda: (lambda cond: cond if cond.get("status") == "True"
                                                                 else None)(condition(get(c, "im", MODEL, "-n", ns),
                                                                                      "AutoscalerMetricMissing")), 30)
        assert missing["reason"] in ("KedaFallback", "FailedGetExternalMetric"), missing
        assert not pods.errors, pods.errors[-3:]
        (pipeline["work"] / "timings.json").write_text(json.dumps(
            {"first_scale_up_s": t_first, "full_scale_up_s": t_full, "scale_down_s": t_down}))
    finally:
        if gate.exists():
            gate.unlink()
        if load is not None:
            load.close()
        pods.stop()


def test_hpa_path_rules_match_real_runtime_series(kube_cluster, pipeline, ns):
    """The operator's HPA and the chart's prometheus-adapter rules, on the real API server
    and the real Prometheus (there is no prometheus-adapter here: the HPA controller finds
    no custom metrics API and reports it, which the model's status passes on)."""
    c, prom = kube_cluster, pipeline["prom"]
    # first without autoscaling, 2 replicas; then autoscaling on: the replicas are handed
    # over (server-side apply would otherwise drop the field and the Deployment to 1)
    manifest = model_manifest({})
    del manifest["spec"]["autoscaling"]
    manifest["spec"]["replicas"] = 2
    c.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))
    wait_until("2 replicas", lambda: deployment_replicas(c, ns) == 2, 60)
    c.kubectl("patch", "im", MODEL, "-n", ns, "--type", "merge", "-p", json.dumps({"spec": {"autoscaling": {
        "autoscaler": "hpa", "minReplicas": 1, "maxReplicas": 3, "targetPendingRequests": 2}}}))
    hpa = wait_until("HPA", lambda: get(c, "hpa", MODEL, "-n", ns), 60)
    (pods_metric,) = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert get(c, "scaledobject", MODEL, "-n", ns) is None

    rules_cm = get(c, "configmap", "kubeinfer-adapter-rules", "-n", SYSTEM_NS)
    (rule,) = yaml.safe_load(rules_cm["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == pods_metric["pods"]["metric"]["name"]

    stand_ins = PodStandIns(c, ns, MODEL, pipeline["repo"], prom.sd_dir / f"{ns}.json", pipeline["work"],
                            pipeline["env"])
    try:
        pods = wait_until("runtimes for both pods", lambda: (lambda p: p if len(p) == 2 else None)(stand_ins.pods()),
                          60)
        # the adapter's discovery: seriesQuery finds the runtimes' gauge with the pods' labels
        series = wait_until("the rule's series", lambda: (lambda found: found if len(found) == 2 else None)(
            [s for s in prom.series(rule["seriesQuery"]) if s.get("namespace") == ns]), 60)
        assert sorted(s["pod"] for s in series) == pods
        for s in series:
            assert s["__name__"] == rule["name"]["as"]
            for label, value in pods_metric["pods"]["metric"]["selector"]["matchLabels"].items():
                assert s[label] == value  # the HPA's selector matches the series' labels
        pod = pods[0]
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        # the adapter's query for this HPA: the template filled as prometheus-adapter does
        query = (rule["metricsQuery"].replace("<<.Series>>", rule["seriesQuery"].split("{")[0])
                 .replace("<<.LabelMatchers>>", f'namespace="{ns}",pod=~"{pod}",model="{MODEL}"')
                 .replace("<<.GroupBy>>", "pod"))
        (value,) = wait_until("the rule's query", lambda: prom.query(query), 30)
        assert value["metric"] == {"pod": pod} and float(value["value"][1]) == 0.0

        # the HPA controller cannot get the Pods metric (no custom.metrics.k8s.io here):
        # its condition reaches the model's status; replicas hold
        missing = wait_until("AutoscalerMetricMissing from the HPA", lambda: (
            lambda cond: cond if cond.get("status") == "True" else None)(
            condition(get(c, "im", MODEL, "-n", ns), "AutoscalerMetricMissing")), 90)
        assert missing["reason"] == "FailedGetPodsMetric", missing
        assert deployment_replicas(c, ns) == 2  # handed over, and held
        dep = get(c, "deployment", MODEL, "-n", ns, "--show-managed-fields")
        owners = {m["manager"] for m in dep["metadata"]["managedFields"]
                  if "f:replicas" in json.dumps(m.get("fieldsV1", {}).get("f:spec", {}))}
        assert owners == {"kubeinfer-replicas-handover"}, owners
    finally:
        stand_ins.stop()
