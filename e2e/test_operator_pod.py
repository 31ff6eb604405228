"""The rendered pod spec serves: run its init and runtime commands, exactly as rendered
(only the model root, the URI's host and the ports are moved onto this machine), and infer.

No cluster needed: the commands and env come from the render functions the operator
applies, the model from ``examples/models/digits`` served as a tar.gz over local HTTP.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from kubeinfer.operator.api.v1alpha1 import InferenceModelSpec
from kubeinfer.operator.render import RenderOptions, Target
from kubeinfer.operator.render.common import MODEL_ROOT
from kubeinfer.operator.render.deployment import deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples/models/digits"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _swap(cmd: list[str], old: str, new: str) -> list[str]:
    return [new if a == old else a.replace(old + "/", new + "/") for a in cmd]


def test_rendered_commands_fetch_and_serve_digits(tmp_path):
    if not (DIGITS / "1" / "model.onnx").is_file():
        pytest.skip("examples/models/digits/1/model.onnx not built: python examples/build.py")
    pytest.importorskip("onnxruntime")
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / "digits.tar.gz", "w:gz") as tar:
        tar.add(DIGITS, arcname="digits", filter=lambda ti: None if ti.name.endswith(".py") else ti)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    doc = yaml.safe_load((REPO / "examples/manifests/digits.yaml").read_text())
    target = Target("digits", "models", "uid", InferenceModelSpec.model_validate(doc["spec"]))
    pod = deployment(target, RenderOptions())["spec"]["template"]["spec"]
    fetch_cmd, runtime = pod["initContainers"][0]["command"], pod["containers"][0]
    models = str(tmp_path / "models")
    env = {**os.environ, "PYTHONPATH": f"{REPO}/runtime:{REPO}/operator"}
    kubeinfer = [sys.executable, "-m", "kubeinfer.cli"]
    try:
        uri = doc["spec"]["model"]["uri"]
        local_fetch = _swap(fetch_cmd, uri, f"http://127.0.0.1:{server.server_port}/digits.tar.gz")
        local_fetch = _swap(local_fetch, MODEL_ROOT, models)
        assert local_fetch[0] == "kubeinfer"
        subprocess.run(kubeinfer + local_fetch[1:], env=env, check=True, timeout=60)
        assert (Path(models) / "digits" / "1" / "model.onnx").is_file()

        ports = {str(p["containerPort"]): str(_free_port()) for p in runtime["ports"]}
        serve = [ports.get(a, a) for a in _swap(runtime["command"], MODEL_ROOT, models)]
        serve_env = {**env, **{e["name"]: e["value"] for e in runtime["env"] if "value" in e}}
        proc = subprocess.Popen(kubeinfer + serve[1:], env=serve_env)
        try:
            base = f"http://127.0.0.1:{ports['8000']}"
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                assert proc.poll() is None, "the runtime exited"
                try:
                    if httpx.get(base + runtime["readinessProbe"]["httpGet"]["path"], timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            else:
                pytest.fail("runtime never became ready")
            assert httpx.get(base + runtime["livenessProbe"]["httpGet"]["path"]).status_code == 200
            body = json.loads((DIGITS / "request.json").read_text())
            resp = httpx.post(base + "/v2/models/digits/infer", json=body, timeout=30)
            assert resp.status_code == 200, resp.text
            (out,) = resp.json()["outputs"]
            assert out["name"] == "probabilities" and out["shape"][1] == 10
            metrics = httpx.get(f"http://127.0.0.1:{ports['8002']}/metrics").text
            assert "nv_inference_pending_request_count" in metrics
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    finally:
        server.shutdown()
        server.server_close()
