"""Real ``kubeinfer serve`` step models and a real ``kubeinfer route`` process on loopback,
driven by tritonclient.http exactly as a user calls a single model."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import free_port
from tests.router.router_models import (
    add_sub_repo, affine_repo, fixed_batch_repo, rand, slow_repo, step, tensor, write_definition,
)


def serve(start_server, repo, model):
    return start_server(["serve", str(repo), "--model", model])


def route(start_server, definition, endpoints: dict, ready=True, extra=()):
    args = ["route", str(definition)]
    for model, server in endpoints.items():
        args += ["--endpoint", f"{model}=http://{server.url}"]
    return start_server([*args, *extra], ready=ready)


def infer(client, model, x, name="x", outputs=None, **kw):
    inp = httpclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    outs = [httpclient.InferRequestedOutput(o, binary_data=True) for o in outputs] if outputs else None
    return client.infer(model, [inp], outputs=outs, **kw)


@pytest.fixture
def chain(tmp_path, start_server):
    """x -> a (x*2+1) -> b (y*3) -> c (z-5): three separately served models."""
    repo = tmp_path / "repo"
    affine_repo(repo, "a", 2, 1)
    affine_repo(repo, "b", 3, 0)
    affine_repo(repo, "c", 1, -5)
    servers = {m: serve(start_server, repo, m) for m in "abc"}
    definition = write_definition(
        tmp_path / "chain.yaml", "chain", [tensor("x", [4])], [tensor("out", [4])],
        [step("a", {"INPUT0": "x"}, {"OUTPUT0": "t1"}),
         step("b", {"INPUT0": "t1"}, {"OUTPUT0": "t2"}),
         step("c", {"INPUT0": "t2"}, {"OUTPUT0": "out"})],
    )
    router = route(start_server, definition, servers)
    client = httpclient.InferenceServerClient(router.url)
    yield router, servers, client
    client.close()


def test_linear_chain(chain):
    router, _, client = chain
    x = rand((3, 4))
    result = infer(client, "chain", x, request_id="r-1")
    np.testing.assert_allclose(result.as_numpy("out"), (x * 2 + 1) * 3 - 5, rtol=1e-5)
    assert result.get_response()["id"] == "r-1"
    # JSON in, JSON out works the same
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x[:1], binary_data=False)
    result = client.infer("chain", [inp], outputs=[httpclient.InferRequestedOutput("out", binary_data=False)])
    np.testing.assert_allclose(result.as_numpy("out"), (x[:1] * 2 + 1) * 3 - 5, rtol=1e-5)


def test_metadata_config_stats_metrics(chain):
    router, _, client = chain
    assert client.is_server_ready() and client.is_model_ready("chain")
    meta = client.get_model_metadata("chain")
    assert meta["platform"] == "ensemble"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "out", "datatype": "FP32", "shape": [-1, 4]}]
    config = client.get_model_config("chain")
    assert config["platform"] == "ensemble"
    assert [s["model_name"] for s in config["ensemble_scheduling"]["step"]] == ["a", "b", "c"]
    infer(client, "chain", rand((2, 4)))
    stats = client.get_inference_statistics("chain")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == 1
    assert stats["inference_count"] == 2
    assert [(s["name"], s["success"]["count"]) for s in stats["steps"]] == [("a", 1), ("b", 1), ("c", 1)]
    text = httpx.get(f"http://127.0.0.1:{router.metrics_port}/metrics").text
    assert 'nv_inference_request_success{model="chain",version="1"} 1.0' in text
    assert 'kubeinfer_ensemble_step_request_success{ensemble="chain",model="b",step="b"} 1.0' in text
    assert 'kubeinfer_ensemble_step_duration_us{ensemble="chain",model="a",step="a"}' in text
    assert 'kubeinfer_ensemble_step_request_failure{ensemble="chain",model="c",reason="UNAVAILABLE",step="c"} 0.0' in text


def test_invalid_ensemble_input_is_400(chain):
    _, _, client = chain
    with pytest.raises(InferenceServerException) as err:
        infer(client, "chain", rand((2, 5)))
    assert err.value.status() == "400"
    assert "input 'x'" in err.value.message()


def test_step_model_down_is_503_fast(chain):
    router, servers, client = chain
    servers["b"].terminate()
    t0 = time.monotonic()
    with pytest.raises(InferenceServerException) as err:
        infer(client, "chain", rand((1, 4)))
    assert time.monotonic() - t0 < 3
    assert err.value.status() == "503"
    assert "step 'b' (model 'b')" in err.value.message()
    stats = client.get_inference_statistics("chain")["model_stats"][0]
    assert stats["steps"][1]["failures"]["UNAVAILABLE"] == 1


def test_trace_headers_and_id_are_forwarded(tmp_path, start_server):
    """A step 'model' that is really a tiny HTTP server recording what it received."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import orjson

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, body: bytes, headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.endswith("/ready"):
                return self._send(200, b"{}")
            meta = {"name": "echo", "versions": ["1"], "platform": "x",
                    "inputs": [{"name": "IN", "datatype": "FP32", "shape": [-1, 4]}],
                    "outputs": [{"name": "OUT", "datatype": "FP32", "shape": [-1, 4]}]}
            self._send(200, orjson.dumps(meta))

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            n = int(self.headers["Inference-Header-Content-Length"])
            doc = orjson.loads(body[:n])
            seen.append((dict(self.headers), doc))
            raw = body[n:]
            out = orjson.dumps({"model_name": "echo", "outputs": [
                {"name": "OUT", "datatype": "FP32", "shape": doc["inputs"][0]["shape"],
                 "parameters": {"binary_data_size": len(raw)}}]})
            self._send(200, out + raw, [("Inference-Header-Content-Length", str(len(out)))])

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        definition = write_definition(
            tmp_path / "echo.yaml", "echo_ens", [tensor("x", [4])], [tensor("y", [4])],
            [step("echo", {"IN": "x"}, {"OUT": "y"})],
            endpoints={"echo": f"http://127.0.0.1:{httpd.server_port}"},
        )
        router = route(start_server, definition, {})
        x = rand((2, 4))
        trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        client = httpclient.InferenceServerClient(router.url)
        result = infer(client, "echo_ens", x, request_id="abc", timeout=5_000_000,
                       headers={"traceparent": trace, "tracestate": "k=v"})
        np.testing.assert_array_equal(result.as_numpy("y"), x)
        headers, doc = seen[-1]
        assert headers["traceparent"] == trace and headers["tracestate"] == "k=v"
        assert doc["id"] == "abc"
        assert 0 < doc["parameters"]["timeout"] <= 5_000_000
        assert doc["parameters"]["binary_data_output"] is True
        assert doc["outputs"] == [{"name": "OUT", "parameters": {"binary_data": True}}]
        client.close()
    finally:
        httpd.shutdown()


def test_failing_steps_name_step_and_model_message(tmp_path, start_server):
    """The ensemble input has a variable dim, so 'first' is the one to reject a width of 5
    (its own 400); c's backend fails unless the batch is 2 (500)."""
    repo = tmp_path / "repo"
    affine_repo(repo, "a", 1, 0)
    affine_repo(repo, "b", 1, 0)
    fixed_batch_repo(repo, "c")
    servers = {m: serve(start_server, repo, m) for m in "abc"}
    definition = write_definition(
        tmp_path / "f.yaml", "failing", [tensor("x", [-1])], [tensor("out", [4])],
        [step("a", {"INPUT0": "x"}, {"OUTPUT0": "t1"}, name="first"),
         step("b", {"INPUT0": "t1"}, {"OUTPUT0": "t2"}, name="middle"),
         step("c", {"INPUT0": "t2"}, {"OUTPUT0": "out"}, name="picky")],
    )
    client = httpclient.InferenceServerClient(route(start_server, definition, servers).url)
    np.testing.assert_allclose(infer(client, "failing", rand((2, 4))).as_numpy("out"), rand((2, 4)))
    with pytest.raises(InferenceServerException) as err:
        infer(client, "failing", rand((2, 5)))
    assert err.value.status() == "400"
    msg = err.value.message()
    assert "step 'first' (model 'a')" in msg and "shape [2, 5] does not match [-1, 4]" in msg
    with pytest.raises(InferenceServerException) as err:
        infer(client, "failing", rand((1, 4)))
    assert err.value.status() == "500"
    assert "step 'picky' (model 'c')" in err.value.message()
    assert "HTTP 500" in err.value.message()
    stats = client.get_inference_statistics("failing")["model_stats"][0]
    assert stats["inference_stats"]["fail"]["count"] == 2
    assert stats["steps"][0]["failures"]["REJECTED"] == 1
    assert stats["steps"][2]["failures"]["FAILED"] == 1
    client.close()


@pytest.fixture
def fan(tmp_path, start_server):
    """x -> left (slow) -> l; x -> right (slow) -> r; (l, r) -> join (add_sub) -> sum, diff."""
    repo = tmp_path / "repo"
    slow_repo(repo, "left")
    slow_repo(repo, "right")
    add_sub_repo(repo, "join", 512)
    servers = {m: serve(start_server, repo, m) for m in ("left", "right", "join")}
    definition = write_definition(
        tmp_path / "fan.yaml", "fan", [tensor("x", [512])], [tensor("sum", [512]), tensor("diff", [512])],
        [step("join", {"INPUT0": "l", "INPUT1": "r"}, {"OUTPUT0": "sum", "OUTPUT1": "diff"}),
         step("left", {"INPUT0": "x"}, {"OUTPUT0": "l"}),
         step("right", {"INPUT0": "x"}, {"OUTPUT0": "r"})],
    )
    router = route(start_server, definition, servers)
    client = httpclient.InferenceServerClient(router.url)
    yield client, servers
    client.close()


def test_fan_out_fan_in_runs_branches_in_parallel(fan):
    client, servers = fan
    x = rand((8, 512))
    direct = {}
    for m in ("left", "right"):
        c = httpclient.InferenceServerClient(servers[m].url)
        direct[m] = infer(c, m, x, name="INPUT0").as_numpy("OUTPUT0")
        c.close()
    overlaps = 0
    for _ in range(5):
        result = infer(client, "fan", x)
        np.testing.assert_allclose(result.as_numpy("sum"), direct["left"] + direct["right"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(result.as_numpy("diff"), direct["left"] - direct["right"], rtol=1e-4, atol=1e-3)
        steps = {s["name"]: s for s in client.get_inference_statistics("fan")["model_stats"][0]["steps"]}
        left, right, join = steps["left"], steps["right"], steps["join"]
        # both branches started before either finished; the join started after both ended
        if max(left["last_start_ns"], right["last_start_ns"]) < min(left["last_end_ns"], right["last_end_ns"]):
            overlaps += 1
        assert join["last_start_ns"] >= max(left["last_end_ns"], right["last_end_ns"])
    assert overlaps == 5


def test_request_timeout_is_503(tmp_path, start_server):
    repo = tmp_path / "repo"
    slow_repo(repo, "slow")
    servers = {"slow": serve(start_server, repo, "slow")}
    definition = write_definition(
        tmp_path / "t.yaml", "timed", [tensor("x", [512])], [tensor("y", [512])],
        [step("slow", {"INPUT0": "x"}, {"OUTPUT0": "t"}, name="one"),
         step("slow", {"INPUT0": "t"}, {"OUTPUT0": "y"}, name="two")],
    )
    client = httpclient.InferenceServerClient(route(start_server, definition, servers).url)
    x = rand((8, 512))
    infer(client, "timed", x)  # no timeout: fine
    t0 = time.monotonic()
    with pytest.raises(InferenceServerException) as err:
        infer(client, "timed", x, timeout=2000)  # 2 ms
    assert time.monotonic() - t0 < 2
    assert err.value.status() == "503"
    assert "timeout" in err.value.message()
    client.close()


def test_router_waits_for_steps_and_reports_mismatch(tmp_path, start_server):
    """Not ready while a step is unreachable, then not ready while its signature does not fit."""
    repo = tmp_path / "repo"
    affine_repo(repo, "a", 1, 0)
    port = free_port()
    definition = write_definition(
        tmp_path / "m.yaml", "mismatch", [tensor("x", [5])], [tensor("y", [4])],
        [step("a", {"INPUT0": "x"}, {"OUTPUT0": "y"})],
        endpoints={"a": f"http://127.0.0.1:{port}"},
    )
    router = route(start_server, definition, {}, ready=False)
    base = f"http://{router.url}"

    def wait_for(text):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                r = httpx.post(f"{base}/v2/models/mismatch/infer",
                               json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 5], "data": [0] * 5}]})
                if text in r.json()["error"]:
                    assert r.status_code == 503
                    assert httpx.get(f"{base}/v2/health/ready").status_code == 503
                    return r.json()["error"]
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"never saw {text!r}:\n{router.log()}")

    wait_for("cannot connect")
    # the step model comes up later, on the port the router waits for, with another signature
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubeinfer.cli", "serve", str(repo), "--model", "a", "--host", "127.0.0.1",
         "--http-port", str(port), "--metrics-port", "0", "--grpc-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        msg = wait_for("does not fit")
        assert "tensor 'x'" in msg and "step 'a' (model 'a') input 'INPUT0'" in msg
        assert "FP32 [-1, 5]" in msg and "FP32 [-1, 4]" in msg
    finally:
        proc.terminate()
        proc.wait(10)
