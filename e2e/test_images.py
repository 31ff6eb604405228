"""The shipped container images, built from images/ and run as Kubernetes would run them.

- The Dockerfiles agree with each other and with the pods that run them (stages, args,
  user, entrypoint, ports) - including the GPU Dockerfile, which cannot be built here.
- The CPU runtime and operator images are built on a locally debootstrapped base
  (``images/ci/build.sh``: cached, an unchanged tree rebuilds in seconds).
- The runtime image runs the fetch init container and the runtime container of the
  Deployment the operator renders for ``examples/manifests/digits.yaml``: their command,
  args and env exactly as rendered, with only the model URI (a local HTTP server instead of
  models.example.com) and the ports (free ones: the containers share the host's network)
  moved; read-only root filesystem, /tmp a tmpfs where the pod has an emptyDir, the pod's
  uid/gid, all capabilities dropped, the model mounted read-only at /models. It answers the
  digits samples with the right labels, and SIGTERM under load loses no accepted request.
- The operator image, run with the chart's command and env (liveness port moved; the
  chart's ServiceAccount token and the cluster CA as mounted files, through KUBECONFIG,
  instead of in-cluster credentials),
  reconciles the example on the e2e control plane, using the default runtime image name
  the images are built under.

Needs podman, runc and debootstrap (``apt-get install podman runc debootstrap``) and root.
``KUBEINFER_IMAGES=0`` skips the tests that build or run images.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from kubeinfer.operator.api.v1alpha1 import InferenceModelSpec
from kubeinfer.operator.render import RenderOptions, Target
from kubeinfer.operator.render.common import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    MODEL_ROOT,
    RUNTIME_UID,
)
from kubeinfer.operator.render.deployment import deployment
from kubeinfer.operator.settings import DEFAULT_RUNTIME_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
DOCKERFILES = {
    "runtime": IMAGES / "runtime/Dockerfile",
    "runtime-gpu": IMAGES / "runtime/Dockerfile.gpu",
    "operator": IMAGES / "operator/Dockerfile",
}
DIGITS = REPO / "examples/models/digits"
SYSTEM_NS = "kubeinfer-system"
CACHE = Path(os.environ.get("KUBEINFER_CACHE", Path.home() / ".cache" / "kubeinfer")) / "images"


# ---- Dockerfile parity (no container engine needed) --------------------------------------


def parse_dockerfile(path: Path) -> dict:
    """Instructions of a Dockerfile, by stage: {"args": [...before FROM], "stages": [...]}."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out: dict = {"args": [], "stages": []}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m, line
            out["stages"].append({"from": m.group(1), "name": m.group(2), "ops": []})
        elif not out["stages"]:
            assert op == "ARG", f"{path}: only ARG may precede FROM: {line}"
            out["args"].append(rest)
        else:
            out["stages"][-1]["ops"].append((op, rest))
    return out


def _ops(stage: dict, op: str) -> list[str]:
    return [rest for o, rest in stage["ops"] if o == op]


def _arg_default(stage_or_args, name: str) -> str | None:
    args = stage_or_args if isinstance(stage_or_args, list) else _ops(stage_or_args, "ARG")
    for a in args:
        key, _, value = a.partition("=")
        if key == name:
            return value.strip('"')
    return None


def test_dockerfiles_agree_with_each_other_and_the_pods():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    parsed = {name: parse_dockerfile(p) for name, p in DOCKERFILES.items()}
    cpu = parsed["runtime"]
    shape = [(s["name"], s["from"]) for s in cpu["stages"]]
    assert shape == [("base", "${BASE_IMAGE}"), ("builder", "base"), (None, "base")], shape
    for name, df in parsed.items():
        # same stages, each from the same parent; BASE_IMAGE declared before the first FROM
        assert [(s["name"], s["from"]) for s in df["stages"]] == shape, name
        base = _arg_default(df["args"], "BASE_IMAGE")
        assert base and not base.startswith(("localhost/", "127.0.0.1")), f"{name}: public default base"
        builder, final = df["stages"][1], df["stages"][2]
        # the extras exist in pyproject.toml, builder and final stage agree on them
        extras = _arg_default(builder, "EXTRAS")
        assert extras == _arg_default(final, "EXTRAS"), name
        assert set(extras.split(",")) <= set(pyproject["optional-dependencies"]), name
        assert any("pip wheel" in r and "/wheels" in r for r in _ops(builder, "RUN")), name
        # the final stage installs from the builder's wheels only, and keeps no pip
        (install,) = [r for r in _ops(final, "RUN") if "from=builder" in r]
        assert "--no-index" in install and "uninstall --yes pip" in install, name
        assert not _ops(final, "COPY"), f"{name}: wheels come in through a mount, not a layer"
        # non-root, the uid/gid of the pods the operator renders and the chart's operator pod
        assert _ops(final, "USER") == [f"{RUNTIME_UID}:{RUNTIME_UID}"], name
        assert any(f"--uid {RUNTIME_UID}" in r for r in _ops(final, "RUN")), name
        env = " ".join(_ops(final, "ENV"))
        assert "HOME=/tmp" in env and "TMPDIR=/tmp" in env, f"{name}: writable HOME on a read-only root"
        assert not _ops(final, "HEALTHCHECK"), f"{name}: probes are Kubernetes'"
        (entrypoint,) = _ops(final, "ENTRYPOINT")
        assert json.loads(entrypoint)[0] == "kubeinfer", name
    for name in ("runtime", "runtime-gpu"):
        final = parsed[name]["stages"][2]
        assert json.loads(_ops(final, "ENTRYPOINT")[0]) == ["kubeinfer"]
        assert _ops(final, "EXPOSE") == [f"{HTTP_PORT} {GRPC_PORT} {METRICS_PORT}"], name
        # `kubeinfer fetch` of s3:// needs boto3, which no runtime extra brings
        assert "boto3" in _arg_default(parsed[name]["stages"][1], "EXTRA_REQUIREMENTS"), name
    assert _arg_default(parsed["runtime"]["stages"][1], "EXTRAS") == "serve,onnx"
    assert set(_arg_default(parsed["runtime-gpu"]["stages"][1], "EXTRAS").split(",")) == {"serve", "gpu", "torch", "tensorrt"}
    # the operator image carries no data plane (#12): the operator extra only
    assert _arg_default(parsed["operator"]["stages"][1], "EXTRAS") == "operator"
    assert json.loads(_ops(parsed["operator"]["stages"][2], "ENTRYPOINT")[0]) == ["kubeinfer", "operator"]
    # the build context keeps what the Dockerfiles COPY
    ignore = (REPO / ".dockerignore").read_text().split()
    for src in ["pyproject.toml", "README.md", "images/requirements.py", "runtime/", "operator/"]:
        assert f"!{src}" in ignore, src


def test_image_names_match_the_operator_and_the_chart():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((REPO / "charts/kubeinfer/Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts/kubeinfer/values.yaml").read_text())
    build = (IMAGES / "build.sh").read_text()
    registry = re.search(r'REGISTRY="\$\{REGISTRY:-([^}]+)\}"', build).group(1)
    assert DEFAULT_RUNTIME_IMAGE == f"{registry}/runtime:{version}"
    assert RenderOptions().runtime_image == DEFAULT_RUNTIME_IMAGE
    assert values["image"]["repository"] == f"{registry}/operator"
    assert chart["appVersion"] == version  # the chart's default tag


# ---- building the images -------------------------------------------------------------------


def _cli() -> list[str]:
    return os.environ.get("CONTAINER_CLI", str(IMAGES / "ci/podman")).split()


def _podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*_cli(), *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(_cli() + list(args))} exited {proc.returncode}\n{proc.stderr[-3000:]}",
                    pytrace=False)
    return proc


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """{"runtime": name, "operator": name}, built (or found cached) by images/ci/build.sh."""
    if os.environ.get("KUBEINFER_IMAGES") == "0":
        pytest.skip("KUBEINFER_IMAGES=0: container image tests disabled")
    missing = [b for b in ("podman", "debootstrap") if not shutil.which(b)]
    missing += [] if os.path.exists("/usr/sbin/runc") or "CONTAINER_CLI" in os.environ else ["runc"]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install podman runc debootstrap "
                    "(or KUBEINFER_IMAGES=0 to skip the image tests)", pytrace=False)
    CACHE.mkdir(parents=True, exist_ok=True)
    log = CACHE / "build.log"
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.run(["bash", str(IMAGES / "ci/build.sh"), "runtime", "operator"],
                              stdout=subprocess.PIPE, stderr=fh, text=True, timeout=1500)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
        pytest.fail(f"images/ci/build.sh failed (exit {proc.returncode}); log: {log}\n{tail}", pytrace=False)
    runtime, operator = proc.stdout.split()[-2:]
    print(f"\n[images] built {runtime} {operator} in {time.monotonic() - t0:.0f}s (log: {log})")
    return {"runtime": runtime, "operator": operator}


def test_images_are_small_non_root_and_without_build_tools(images):
    for name, image in images.items():
        info = json.loads(_podman("image", "inspect", image).stdout)[0]
        assert info["Config"]["User"] == f"{RUNTIME_UID}:{RUNTIME_UID}", name
        assert "Healthcheck" not in info["Config"] or not info["Config"]["Healthcheck"], name
        print(f"[images] {image}: {info['Size'] / 1e6:.0f} MB")
        listing = _podman(
            "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c",
            "ls /opt/kubeinfer/bin; ls -d /root/.cache /wheels /opt/build /etc/pip.conf 2>/dev/null;"
            " command -v gcc cc pip pip3 || true; id -u; kubeinfer --help >/dev/null && echo cli-ok",
        ).stdout.split()
        assert "kubeinfer" in listing and "cli-ok" in listing, listing
        assert not {"pip", "pip3", "/wheels", "/opt/build", "/root/.cache", "/etc/pip.conf"} & set(listing), listing
        assert not [x for x in listing if x.endswith(("/gcc", "/cc"))], listing
        assert str(RUNTIME_UID) in listing


def test_images_hold_this_checkouts_code_and_requirements(images):
    """The image is today's source, not a cached layer of an older one (buildah's cache does
    not key a bind mount by its content; images/build.sh passes SOURCE_DIGEST for that)."""
    for name, image, package in (("runtime", images["runtime"], "runtime"), ("operator", images["operator"], "operator")):
        files = sorted(p.relative_to(REPO / package) for p in (REPO / package / "kubeinfer").rglob("*.py"))
        local = hashlib.sha256(b"".join((REPO / package / f).read_bytes() for f in files)).hexdigest()
        script = (
            "import hashlib, importlib.metadata as m, os, sys, kubeinfer\n"
            "root = os.path.dirname(list(kubeinfer.__path__)[0])\n"
            "files = sys.argv[1:]\n"
            "print(hashlib.sha256(b''.join(open(os.path.join(root, f), 'rb').read() for f in files)).hexdigest())\n"
            "print(' '.join(sorted(d.metadata['Name'].lower() for d in m.distributions())))\n"
        )
        out = _podman("run", "--rm", "--network", "none", "--entrypoint", "/opt/kubeinfer/bin/python", image,
                      "-c", script, *map(str, files)).stdout.split("\n")
        assert out[0] == local, f"{name} image: installed kubeinfer differs from {package}/kubeinfer"
        if name == "runtime":  # every requirement of the serve extra is installed
            assert {"hpack", "httptools", "grpcio", "orjson"} <= set(out[1].split()), out[1]


# ---- the runtime image, as the rendered Deployment runs it ------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _swap(cmd: list[str], old: str, new: str) -> list[str]:
    return [new if a == old else a for a in cmd]


def _run_args(container: dict, image: str, name: str, command: list[str], mounts: list[str]) -> list[str]:
    """`podman run` of a rendered container: the pod's uid/gid and security context, the
    rendered env, a read-only root with the pod's emptyDirs as tmpfs / host directories."""
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["allowPrivilegeEscalation"] is False
    args = ["run", "--name", name, "--network", "host",
            "--user", f"{RUNTIME_UID}:{RUNTIME_UID}", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges",
            "--read-only", "--read-only-tmpfs=false", *mounts]
    for e in container.get("env", []):
        args += ["--env", f"{e['name']}={e['value']}"]
    # Kubernetes `command` replaces the image's ENTRYPOINT (and its CMD): the first word as
    # the entrypoint, the rest (and the rendered `args`) as the arguments
    return [*args, "--entrypoint", command[0], image, *command[1:], *container.get("args", [])]


@pytest.fixture(scope="module")
def digits_pod(images, tmp_path_factory) -> Iterator[dict]:
    """The digits Deployment's pod spec, rendered with the built runtime image, and the
    model fetched by running its init container from that image."""
    if not (DIGITS / "1" / "model.onnx").is_file():
        pytest.fail("examples/models/digits/1/model.onnx not built: python examples/build.py")
    tmp_path = tmp_path_factory.mktemp("digits-pod")
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / "digits.tar.gz", "w:gz") as tar:
        tar.add(DIGITS, arcname="digits", filter=lambda ti: None if ti.name.endswith(".py") else ti)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    doc = yaml.safe_load((REPO / "examples/manifests/digits.yaml").read_text())
    target = Target("digits", "models", "uid", InferenceModelSpec.model_validate(doc["spec"]))
    pod = deployment(target, RenderOptions(runtime_image=images["runtime"]))["spec"]["template"]["spec"]
    (fetch,), (runtime,) = pod["initContainers"], pod["containers"]
    assert fetch["image"] == runtime["image"] == images["runtime"]
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == RUNTIME_UID
    assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"] == {}

    # the "models" emptyDir: a host directory owned like an fsGroup volume
    models = tmp_path / "models"
    models.mkdir()
    os.chown(models, RUNTIME_UID, RUNTIME_UID)
    tmpfs = ["--tmpfs", "/tmp:rw,exec,mode=1777"]
    assert {m["mountPath"] for m in fetch["volumeMounts"]} == {MODEL_ROOT, "/tmp"}
    name = f"kubeinfer-fetch-{uuid.uuid4().hex[:8]}"
    uri = doc["spec"]["model"]["uri"]
    command = _swap(fetch["command"], uri, f"http://127.0.0.1:{server.server_port}/digits.tar.gz")
    try:
        proc = subprocess.run(
            [*_cli(), *_run_args(fetch, images["runtime"], name, command,
                                 [*tmpfs, "--volume", f"{models}:{MODEL_ROOT}:rw"])],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        _podman("rm", "--force", name, check=False)
        server.shutdown()
        server.server_close()
    assert (models / "digits" / "1" / "model.onnx").is_file()
    yield {"pod": pod, "runtime": runtime, "models": models, "tmpfs": tmpfs, "image": images["runtime"]}


class Container:
    def __init__(self, name: str) -> None:
        self.name = name

    def running(self) -> bool:
        out = _podman("inspect", "--format", "{{.State.Running}}", self.name, check=False).stdout.strip()
        return out == "true"

    def logs(self) -> str:
        proc = _podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def wait(self, timeout: float = 60) -> int:
        return int(_podman("wait", self.name, timeout=timeout).stdout.strip().splitlines()[-1])

    def remove(self) -> None:
        _podman("rm", "--force", "--time", "0", self.name, check=False)


def _wait_http(url: str, container: Container, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        if not container.running():
            pytest.fail(f"container exited before {url} answered\n{container.logs()[-4000:]}")
        time.sleep(0.1)
    pytest.fail(f"{url} not 200 within {timeout}s\n{container.logs()[-4000:]}")


@pytest.fixture
def runtime_container(digits_pod) -> Iterator[dict]:
    """The runtime container running, ready; its HTTP base URL and start-to-ready time."""
    runtime = digits_pod["runtime"]
    port_names = {str(p["containerPort"]): p["name"] for p in runtime["ports"]}
    ports = {name: _free_port() for name in port_names.values()}
    command = [str(ports[port_names[a]]) if a in port_names else a for a in runtime["command"]]
    assert command != runtime["command"], "the rendered ports should be the only change"
    assert {m["mountPath"]: m.get("readOnly", False) for m in runtime["volumeMounts"]} == {
        MODEL_ROOT: True, "/tmp": False}
    c = Container(f"kubeinfer-runtime-{uuid.uuid4().hex[:8]}")
    args = _run_args(runtime, digits_pod["image"], c.name, command,
                     [*digits_pod["tmpfs"], "--volume", f"{digits_pod['models']}:{MODEL_ROOT}:ro"])
    base = f"http://127.0.0.1:{ports['http']}"
    t0 = time.monotonic()
    _podman(*args[:1], "--detach", *args[1:])
    try:
        probe = runtime["startupProbe"]["httpGet"]
        assert probe["port"] == "http"
        ready_at = _wait_http(base + probe["path"], c, timeout=120)
        ready = ready_at - t0
        # vfs copies the whole image for each new container: time from the process start too
        started = _podman("inspect", "--format", "{{.State.StartedAt.UnixNano}}", c.name).stdout.strip()
        since_start = time.time() - (time.monotonic() - ready_at) - int(started) / 1e9
        print(f"\n[images] {digits_pod['image']}: digits ready {ready:.1f}s after `podman run`, "
              f"{since_start:.1f}s after the container started")
        yield {"container": c, "base": base, "ports": ports, "ready_s": ready, "runtime": runtime}
    finally:
        if os.environ.get("KUBEINFER_KEEP_CONTAINERS") != "1":
            c.remove()


def _samples() -> list[dict]:
    return json.loads((DIGITS / "samples.json").read_text())["samples"]


def test_runtime_image_serves_digits_as_rendered(runtime_container):
    import tritonclient.http as triton

    rc = runtime_container
    runtime, base = rc["runtime"], rc["base"]
    assert httpx.get(base + runtime["readinessProbe"]["httpGet"]["path"]).status_code == 200
    assert httpx.get(base + runtime["livenessProbe"]["httpGet"]["path"]).status_code == 200
    client = triton.InferenceServerClient(base.removeprefix("http://"))
    try:
        assert client.is_model_ready("digits")
        samples = _samples()
        for sample in samples:
            inp = triton.InferInput("image", [1, 64], "FP32")
            inp.set_data_from_numpy(np.asarray([sample["image"]], dtype=np.float32))
            result = client.infer("digits", [inp], outputs=[triton.InferRequestedOutput("probabilities")])
            assert int(result.as_numpy("probabilities")[0].argmax()) == sample["label"], sample["label"]
    finally:
        client.close()
    metrics = httpx.get(f"http://127.0.0.1:{rc['ports']['metrics']}/metrics").text
    assert 'nv_inference_request_success{model="digits"' in metrics or "nv_inference_count" in metrics
    # gRPC port serves too
    import tritonclient.grpc as triton_grpc

    g = triton_grpc.InferenceServerClient(f"127.0.0.1:{rc['ports']['grpc']}")
    try:
        assert g.is_server_ready()
    finally:
        g.close()


async def _load(base: str, samples: list[dict], started: asyncio.Event, seconds: float) -> list[int]:
    """16 clients posting digits requests until the server stops taking connections (or
    `seconds` pass); -1 for a request the server may never have seen."""
    codes: list[int] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=16)) as client:

        async def worker(i: int) -> None:
            body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 64],
                                "data": samples[i % len(samples)]["image"]}]}
            while time.monotonic() < deadline:
                started.set()
                try:
                    r = await client.post("/v2/models/digits/infer", json=body)
                    codes.append(r.status_code)
                except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                    # refused, or a keep-alive connection closed as the server stopped
                    # accepting: the server's own count below proves it never ran it
                    codes.append(-1)
                    return

        await asyncio.gather(*(worker(i) for i in range(16)))
    return codes


async def test_runtime_image_drains_on_sigterm_under_load(runtime_container):
    rc = runtime_container
    c, base = rc["container"], rc["base"]
    delay = float({e["name"]: e["value"] for e in rc["runtime"]["env"]}["KUBEINFER_SHUTDOWN_DELAY_SECONDS"])
    started = asyncio.Event()
    load = asyncio.create_task(_load(base, _samples(), started, seconds=delay + 30))
    await started.wait()
    await asyncio.sleep(1.0)
    _podman("kill", "--signal", "TERM", c.name)
    # during the shutdown delay readiness is off while requests are still served
    await asyncio.sleep(min(1.0, delay / 2))
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get(rc["runtime"]["readinessProbe"]["httpGet"]["path"])).status_code == 503
    codes = await asyncio.wait_for(load, delay + 60)
    assert c.wait(timeout=60) == 0, c.logs()[-4000:]
    answered = [code for code in codes if code != -1]
    assert len(answered) > 100, "the load should have been served for a while"
    assert set(answered) == {200}, sorted(set(codes))
    log = c.logs()
    match = re.search(r"stopped: (\d+) requests succeeded, (\d+) failed", log)
    assert match, log[-4000:]
    assert (int(match.group(1)), int(match.group(2))) == (len(answered), 0)


# ---- the operator image, as the chart runs it -------------------------------------------------


def _helm() -> str:
    return subprocess.run([str(REPO / "charts/tools/get-helm.sh")], capture_output=True, text=True,
                          check=True, timeout=300).stdout.strip()


CREDS = "/var/run/kubeinfer"


def _credentials_dir(cluster, path: Path) -> Path:
    """The chart's ServiceAccount token and the cluster CA as files, and a kubeconfig using
    them by path (as in-cluster credentials are: no CA data for a client to write to a
    temporary file - the chart's operator pod has no writable /tmp)."""
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    token = cluster.kubectl("create", "token", "kubeinfer", "-n", SYSTEM_NS, "--duration", "1h").stdout.strip()
    ctx = admin["contexts"][0]["context"]
    cl = {c["name"]: c["cluster"] for c in admin["clusters"]}[ctx["cluster"]]
    if "certificate-authority-data" in cl:
        ca = base64.b64decode(cl["certificate-authority-data"])
    else:
        ca = Path(cl["certificate-authority"]).read_bytes()
    kubeconfig = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "op",
        "clusters": [{"name": "c", "cluster": {"server": cl["server"], "certificate-authority": f"{CREDS}/ca.crt"}}],
        "users": [{"name": "op", "user": {"token": token}}],
        "contexts": [{"name": "op", "context": {"cluster": "c", "user": "op", "namespace": SYSTEM_NS}}],
    })
    path.mkdir(mode=0o755)
    for name, data in {"token": token.encode(), "ca.crt": ca, "kubeconfig": kubeconfig.encode()}.items():
        (path / name).write_bytes(data)
        (path / name).chmod(0o644)  # readable by the container's uid
    return path


def _get(cluster, *args: str) -> dict | None:
    proc = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_operator_image_reconciles_the_example(kube_cluster, images, tmp_path):
    c = kube_cluster
    c.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    c.kubectl("wait", "--for=condition=Established", "crd/inferencemodels.kubeinfer.dev", "--timeout=60s")
    c.kubectl("create", "namespace", SYSTEM_NS, check=False)
    rendered = subprocess.run(
        [_helm(), "template", "kubeinfer", str(REPO / "charts/kubeinfer"), "-n", SYSTEM_NS],
        capture_output=True, text=True, check=True, timeout=120).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    rbac = [d for d in docs if d["kind"] in {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}]
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (op,) = pod["containers"]
    # the chart deploys the image build.sh builds, and tells it the runtime image it builds
    assert op["image"] == images["operator"]
    env = {e["name"]: e["value"] for e in op["env"]}
    assert env["KUBEINFER_OPERATOR_RUNTIME_IMAGE"] == images["runtime"]
    assert pod["securityContext"]["runAsUser"] == RUNTIME_UID

    liveness = _free_port()
    command = [a.replace(":8080/", f":{liveness}/") for a in op["command"]]
    assert command != op["command"], "the liveness port should be the only change"
    # credentials: the ServiceAccount's token and CA files through a kubeconfig (kopf's
    # in-cluster login insists on https://kubernetes.default.svc, which only cluster DNS
    # and the kubernetes Service provide)
    creds = _credentials_dir(c, tmp_path / "credentials")
    container = {**op, "env": [*op["env"], {"name": "KUBECONFIG", "value": f"{CREDS}/kubeconfig"}],
                 "securityContext": {**op["securityContext"], "runAsNonRoot": pod["securityContext"]["runAsNonRoot"]}}
    oc = Container(f"kubeinfer-operator-{uuid.uuid4().hex[:8]}")
    # no /tmp: the chart's pod has no writable volume at all
    args = _run_args(container, images["operator"], oc.name, command,
                     ["--volume", f"{creds}:{CREDS}:ro"])
    _podman(*args[:1], "--detach", *args[1:])
    ns = f"img-{uuid.uuid4().hex[:6]}"
    try:
        _wait_http(f"http://127.0.0.1:{liveness}/healthz", oc, timeout=60)
        c.kubectl("create", "namespace", ns)
        c.kubectl("apply", "-n", ns, "-f", str(REPO / "examples/manifests/digits.yaml"))
        deadline = time.monotonic() + 180
        im: dict | None = None
        while time.monotonic() < deadline:
            im = _get(c, "inferencemodel", "digits", "-n", ns)
            st = (im or {}).get("status") or {}
            ready = next((x for x in st.get("conditions") or [] if x["type"] == "Ready"), {})
            if ready.get("status") == "True" and st.get("readyReplicas") == 2:
                break
            assert oc.running(), oc.logs()[-4000:]
            time.sleep(1)
        else:
            pytest.fail(f"digits not Ready: {json.dumps((im or {}).get('status'))}\n{oc.logs()[-4000:]}")
        d = _get(c, "deployment", "digits", "-n", ns)
        assert d["spec"]["template"]["spec"]["containers"][0]["image"] == images["runtime"]
        assert d["metadata"]["ownerReferences"][0]["uid"] == im["metadata"]["uid"]
        # SIGTERM stops the operator cleanly
        _podman("kill", "--signal", "TERM", oc.name)
        assert oc.wait(timeout=60) == 0, oc.logs()[-4000:]
    finally:
        c.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        if os.environ.get("KUBEINFER_KEEP_CONTAINERS") != "1":
            oc.remove()
