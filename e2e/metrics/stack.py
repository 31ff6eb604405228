"""The e2e metrics pipeline as local processes: Prometheus, KEDA's operator and metrics API
server, and ``kubeinfer serve`` processes standing in for the containers of kwok pods.

Everything listens on 127.0.0.1 (the KEDA adapter's own /metrics port binds ``:<port>``:
KEDA has no flag for its address). How the API server's aggregator reaches the adapter
without kube-proxy: the adapter's Service is ``type: ExternalName`` with ``externalName:
localhost``; the aggregator resolves an ExternalName service to ``https://<externalName>:
<port>`` and its availability check needs no Endpoints for that type (Endpoints may not
hold loopback addresses), so it dials the adapter on loopback, verifying the adapter's
certificate for ``<service>.<namespace>.svc`` against the APIService's caBundle.

Used by e2e/test_autoscaling.py; every wait is bounded.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEDA_NS = "keda"
ADAPTER_SERVICE = "keda-metrics-apiserver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as exc:  # noqa: BLE001 - a probe that fails is retried until the deadline
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_established(cluster: Any, crd: str, timeout: float = 60) -> None:
    """``kubectl wait`` fails while a just-applied CRD has no status yet: retry it."""
    wait_until(f"CRD {crd} Established", lambda: cluster.kubectl(
        "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=10s", check=False).returncode == 0, timeout)


# --- certificates -------------------------------------------------------------------------

def write_certs(out: Path, dns_names: list[str]) -> bytes:
    """A CA and one certificate (server and client auth) for 127.0.0.1 and ``dns_names``,
    as KEDA's cert dir expects: ca.crt, tls.crt, tls.key. Returns the CA in PEM."""
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeinfer-e2e-metrics-ca")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (out / "ca.crt").write_bytes(ca_pem)
    (out / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return ca_pem


# --- processes ------------------------------------------------------------------------------

class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.cmd, self.log = name, cmd, log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


class Prometheus:
    """Prometheus scraping every second the targets listed in ``sd_dir/*.json``."""

    def __init__(self, binary: Path, work: Path) -> None:
        self.sd_dir = work / "sd"
        self.sd_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "kubeinfer-runtimes",
                "file_sd_configs": [{"files": [str(self.sd_dir / "*.json")], "refresh_interval": "1s"}],
            }],
        }
        (work / "prometheus.yml").write_text(json.dumps(config))
        self.proc = Proc("prometheus", [
            str(binary), f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
        ], work / "prometheus.log")
        wait_until("Prometheus ready", lambda: httpx.get(self.url + "/-/ready", timeout=2).status_code == 200, 60)

    def query(self, promql: str) -> list[dict[str, Any]]:
        r = httpx.get(self.url + "/api/v1/query", params={"query": promql}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def series(self, match: str) -> list[dict[str, str]]:
        r = httpx.get(self.url + "/api/v1/series", params={"match[]": match}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]

    def stop(self) -> None:
        self.proc.stop()


class Keda:
    """KEDA's operator and metrics API server against the cluster, and the APIService
    ``v1beta1.external.metrics.k8s.io`` routed to the adapter on loopback."""

    def __init__(self, cluster: Any, bin_dir: Path, crd_dir: Path, work: Path) -> None:
        self.cluster = cluster
        kc = cluster.kubectl
        kc("apply", "--server-side", "-f", str(crd_dir))
        wait_established(cluster, "scaledobjects.keda.sh")
        work.mkdir(parents=True, exist_ok=True)
        kc("create", "namespace", KEDA_NS, check=False)
        certs = work / "certs"
        ca = write_certs(certs, [f"{ADAPTER_SERVICE}.{KEDA_NS}.svc", "localhost",
                                 f"keda-operator.{KEDA_NS}.svc"])
        grpc_port, adapter_port = free_port(), free_port()
        env = dict(cluster.env)
        env.update({"WATCH_NAMESPACE": "", "POD_NAMESPACE": KEDA_NS, "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NS,
                    "KUBECONFIG": cluster.kubeconfig})
        self.operator = Proc("keda-operator", [
            str(bin_dir / "keda-operator"), f"--cert-dir={certs}",
            f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{free_port()}",
            f"--metrics-service-bind-address=127.0.0.1:{grpc_port}",
            "--enable-webhook-patching=false", "--enable-apiservice-patching=false",
            "--zap-log-level=info", "--zap-encoder=console",
        ], work / "keda-operator.log", env)
        self.adapter = Proc("keda-adapter", [
            str(bin_dir / "keda-adapter"), f"--secure-port={adapter_port}", "--bind-address=127.0.0.1",
            f"--cert-dir={certs}", f"--tls-cert-file={certs / 'tls.crt'}",
            f"--tls-private-key-file={certs / 'tls.key'}",
            f"--metrics-service-address=127.0.0.1:{grpc_port}", f"--port={free_port()}",
            f"--lister-kubeconfig={cluster.kubeconfig}", f"--authentication-kubeconfig={cluster.kubeconfig}",
            f"--authorization-kubeconfig={cluster.kubeconfig}", "--v=2",
        ], work / "keda-adapter.log", env)
        manifests = [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": ADAPTER_SERVICE, "namespace": KEDA_NS},
             "spec": {"type": "ExternalName", "externalName": "localhost",
                      "ports": [{"name": "https", "port": adapter_port, "protocol": "TCP"}]}},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
             "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
             "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1",
                      "service": {"name": ADAPTER_SERVICE, "namespace": KEDA_NS, "port": adapter_port},
                      "caBundle": base64.b64encode(ca).decode(), "groupPriorityMinimum": 100,
                      "versionPriority": 100}},
        ]
        kc("apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in manifests))

    def wait_available(self, timeout: float = 90) -> None:
        def available() -> bool:
            for p in (self.operator, self.adapter):
                if not p.alive():
                    raise RuntimeError(f"{p.name} exited:\n{p.tail()}")
            api = json.loads(self.cluster.kubectl("get", "apiservice", "v1beta1.external.metrics.k8s.io",
                                                  "-o", "json").stdout)
            cond = {c["type"]: c for c in api.get("status", {}).get("conditions", [])}.get("Available", {})
            self.last_condition = cond
            return cond.get("status") == "True"

        self.last_condition: dict[str, Any] = {}
        try:
            wait_until("APIService v1beta1.external.metrics.k8s.io Available", available, timeout, interval=1)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{exc}\nAPIService: {self.last_condition}\n--- adapter\n{self.adapter.tail()}"
                               f"\n--- operator\n{self.operator.tail()}") from None

    def stop(self) -> None:
        self.cluster.kubectl("delete", "apiservice", "v1beta1.external.metrics.k8s.io", "--ignore-not-found",
                             check=False)
        for p in (self.adapter, self.operator):
            p.stop()


class PodStandIns:
    """One ``kubeinfer serve`` per Running pod of a model, with the pod's own command (the
    model root and ports moved onto this machine), started and stopped as pods come and
    go; Prometheus finds them through a file_sd file labelled with namespace and pod."""

    def __init__(self, cluster: Any, namespace: str, model: str, repo: Path, sd_file: Path, work: Path,
                 env: dict[str, str]) -> None:
        self.cluster, self.namespace, self.model = cluster, namespace, model
        self.repo, self.sd_file, self.work, self.env = repo, sd_file, work, env
        self.running: dict[str, tuple[Proc, int, int]] = {}  # pod -> (process, http port, metrics port)
        self.scraped = True
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="pod-stand-ins", daemon=True)
        self._thread.start()

    def _pods(self) -> list[dict[str, Any]]:
        out = self.cluster.kubectl("get", "pods", "-n", self.namespace, "-l",
                                   f"kubeinfer.dev/inferencemodel={self.model}", "-o", "json", timeout=30).stdout
        return [p for p in json.loads(out)["items"]
                if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]

    def _command(self, pod: dict[str, Any], http: int, grpc: int, metrics: int) -> list[str]:
        (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "runtime"]
        cmd = list(container["command"]) + list(container.get("args") or [])
        ports = {"--http-port": http, "--grpc-port": grpc, "--metrics-port": metrics}
        out = []
        for i, arg in enumerate(cmd):
            if i > 0 and cmd[i - 1] in ports:
                out.append(str(ports[cmd[i - 1]]))
            elif arg == "/models":
                out.append(str(self.repo))
            else:
                out.append(arg)
        assert out[0] == "kubeinfer", out
        return [sys.executable, "-m", "kubeinfer.cli", *out[1:]]

    def sync(self) -> None:
        pods = {p["metadata"]["name"]: p for p in self._pods()}
        with self._lock:
            for name in list(self.running):
                if name not in pods:
                    proc, _, _ = self.running.pop(name)
                    proc.stop()
            for name, pod in pods.items():
                if name not in self.running:
                    http, grpc, metrics = free_port(), free_port(), free_port()
                    env = dict(self.env)
                    env.update({e["name"]: e["value"] for e in pod["spec"]["containers"][0].get("env") or []
                                if "value" in e})
                    proc = Proc(name, self._command(pod, http, grpc, metrics), self.work / f"{name}.log", env)
                    self.running[name] = (proc, http, metrics)
            self._write_sd()

    def _write_sd(self) -> None:
        groups = [] if not self.scraped else [
            {"targets": [f"127.0.0.1:{metrics}"], "labels": {"namespace": self.namespace, "pod": name}}
            for name, (_, _, metrics) in sorted(self.running.items())
        ]
        tmp = self.sd_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.sd_file)

    def set_scraped(self, scraped: bool) -> None:
        with self._lock:
            self.scraped = scraped
            self._write_sd()

    def http_port(self, pod: str) -> int:
        with self._lock:
            return self.running[pod][1]

    def pods(self) -> list[str]:
        with self._lock:
            return sorted(self.running)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - reported by the test, retried here
                self.errors.append(repr(exc))
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        with self._lock:
            for proc, _, _ in self.running.values():
                proc.stop()
            self.running.clear()
            self.sd_file.unlink(missing_ok=True)
