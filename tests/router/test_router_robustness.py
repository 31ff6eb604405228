"""The router against step models that misbehave, all real processes on loopback: a step
that accepts the connection and never answers (the step timeout), an ensemble batch larger
than a step model allows (refused at startup, as Triton does), and a step process killed
and started again (the ensemble model's readiness follows it, the router's does not)."""

from __future__ import annotations

import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import free_port
from tests.router.router_models import affine_repo, rand, step, tensor, write_definition
from tests.router.test_router_processes import infer, route, serve


class SilentStep:
    """A v2 'model' on a real loopback socket: it answers readiness, metadata and config
    like a model with INPUT0/OUTPUT0 FP32 [-1, 4], accepts every infer request, reads it,
    and never answers it (until the test ends)."""

    def __init__(self) -> None:
        release = self.release = threading.Event()
        self.held = threading.Semaphore(0)

        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path.endswith("/ready"):
                    body = b"{}"
                elif self.path.endswith("/config"):
                    body = orjson.dumps({"name": "silent", "max_batch_size": 8})
                else:
                    body = orjson.dumps({
                        "name": "silent", "versions": ["1"], "platform": "test",
                        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}],
                        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]}],
                    })
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.held.release()
                release.wait(60)  # holds the connection without a byte of answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def silent():
    s = SilentStep()
    yield s
    s.close()


def _timed_out_infer(router, name: str) -> tuple[float, InferenceServerException]:
    client = httpclient.InferenceServerClient(router.url, network_timeout=30)
    t0 = time.monotonic()
    with pytest.raises(InferenceServerException) as err:
        infer(client, name, rand((2, 4)))
    elapsed = time.monotonic() - t0
    stats = client.get_inference_statistics(name)["model_stats"][0]
    assert stats["steps"][0]["failures"]["TIMEOUT"] == 1
    client.close()
    return elapsed, err.value


def test_step_that_never_answers_is_503_within_the_step_timeout(tmp_path, start_server, silent):
    # the ensemble-wide default, set by the flag
    d = write_definition(
        tmp_path / "stuck.yaml", "stuck", [tensor("x", [4])], [tensor("y", [4])],
        [step("silent", {"INPUT0": "x"}, {"OUTPUT0": "y"}, name="black_hole")],
        endpoints={"silent": silent.url},
    )
    router = route(start_server, d, {}, extra=["--step-timeout-seconds", "1"])
    elapsed, err = _timed_out_infer(router, "stuck")
    assert silent.held.acquire(timeout=0)  # the request did reach the step and was held
    assert 1 <= elapsed < 3, elapsed
    assert err.status() == "503"
    assert err.message() == (f"ensemble step 'black_hole' (model 'silent') failed: no answer from {silent.url} "
                             "within the step timeout of 1s")

    # a step's own timeout_seconds, from the definition
    d = write_definition(
        tmp_path / "stuck2.yaml", "stuck2", [tensor("x", [4])], [tensor("y", [4])],
        [step("silent", {"INPUT0": "x"}, {"OUTPUT0": "y"}, name="black_hole", timeout_seconds=0.3)],
        endpoints={"silent": silent.url}, step_timeout_seconds=30,
    )
    elapsed, err = _timed_out_infer(route(start_server, d, {}), "stuck2")
    assert 0.3 <= elapsed < 2.3, elapsed
    assert err.status() == "503" and "step 'black_hole'" in err.message() and "timeout of 0.3s" in err.message()


def _wait_for_not_ready_message(router, model: str, text: str, timeout: float = 30) -> str:
    base = f"http://{router.url}"
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            r = httpx.post(f"{base}/v2/models/{model}/infer",
                           json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]})
            last = r.json().get("error")
            if last and text in last:
                assert r.status_code == 503
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"never saw {text!r} (last: {last!r}):\n{router.log()}")


def test_ensemble_batch_larger_than_a_step_models_is_refused(tmp_path, start_server):
    repo = tmp_path / "repo"
    affine_repo(repo, "a", 2, 1)  # max_batch_size 8
    affine_repo(repo, "b", 3, 0, max_batch=2)
    servers = {m: serve(start_server, repo, m) for m in "ab"}
    d = write_definition(  # max_batch_size 8
        tmp_path / "big.yaml", "big_batches", [tensor("x", [4])], [tensor("y", [4])],
        [step("a", {"INPUT0": "x"}, {"OUTPUT0": "t"}), step("b", {"INPUT0": "t"}, {"OUTPUT0": "y"}, name="small")],
    )
    router = route(start_server, d, servers, ready=False)
    msg = _wait_for_not_ready_message(router, "big_batches", "max_batch_size")
    assert msg == ("ensemble 'big_batches' is not ready: ensemble 'big_batches' does not fit its step models: "
                   "step 'small' (model 'b'): the ensemble allows max_batch_size 8 but the model allows only 2; "
                   "lower the ensemble's max_batch_size or raise the model's")
    assert httpx.get(f"http://{router.url}/v2/health/ready").status_code == 503
    assert "the ensemble allows max_batch_size 8" in router.log()
    # the same ensemble with max_batch_size 2 fits
    d = write_definition(
        tmp_path / "ok.yaml", "fits", [tensor("x", [4])], [tensor("y", [4])],
        [step("a", {"INPUT0": "x"}, {"OUTPUT0": "t"}), step("b", {"INPUT0": "t"}, {"OUTPUT0": "y"}, name="small")],
        max_batch_size=2,
    )
    client = httpclient.InferenceServerClient(route(start_server, d, servers).url)
    x = rand((2, 4))
    assert abs(infer(client, "fits", x).as_numpy("y") - (x * 2 + 1) * 3).max() < 1e-5
    client.close()


def test_step_down_and_back(tmp_path, start_server):
    repo = tmp_path / "repo"
    affine_repo(repo, "a", 2, 1)
    affine_repo(repo, "b", 3, 0)
    a = serve(start_server, repo, "a")
    port = free_port()
    b = start_server(["serve", str(repo), "--model", "b"], http_port=port)
    d = write_definition(
        tmp_path / "p.yaml", "pipe", [tensor("x", [4])], [tensor("y", [4])],
        [step("a", {"INPUT0": "x"}, {"OUTPUT0": "t"}), step("b", {"INPUT0": "t"}, {"OUTPUT0": "y"})],
        endpoints={"a": f"http://{a.url}", "b": f"http://{b.url}"},
    )
    router = route(start_server, d, {}, extra=["--health-interval-seconds", "0.2"])
    base = f"http://{router.url}"
    http = httpclient.InferenceServerClient(router.url)
    grpc = grpcclient.InferenceServerClient(router.grpc_url)
    x = rand((2, 4))
    assert http.is_server_ready() and http.is_model_ready("pipe") and grpc.is_model_ready("pipe")
    assert http.get_model_metadata("pipe")["parameters"] == {"steps_ready": True, "step:a": "ready", "step:b": "ready"}

    os.killpg(b.proc.pid, signal.SIGKILL)  # no drain, no goodbye
    b.proc.wait(10)
    deadline = time.monotonic() + 20
    while httpx.get(f"{base}/v2/models/pipe/ready").status_code == 200:
        # while the ensemble model turns not ready, the router's own readiness stays up
        assert httpx.get(f"{base}/v2/health/ready").status_code == 200
        assert time.monotonic() < deadline, router.log()
        time.sleep(0.05)
    r = httpx.get(f"{base}/v2/models/pipe/ready")
    assert r.status_code == 503 and r.json() == {"error": "model 'pipe' is not ready"}
    assert httpx.get(f"{base}/v2/health/ready").status_code == 200
    assert http.is_server_ready() and not http.is_model_ready("pipe") and not grpc.is_model_ready("pipe")
    params = http.get_model_metadata("pipe")["parameters"]
    assert params["steps_ready"] is False and params["step:a"] == "ready"
    assert params["step:b"].startswith(f"not ready: cannot connect to http://{b.url}")
    stats = http.get_inference_statistics("pipe")["model_stats"][0]["steps"]
    assert [s["ready"] for s in stats] == [True, False] and stats[1]["reason"] == params["step:b"][11:]
    metrics = httpx.get(f"http://127.0.0.1:{router.metrics_port}/metrics").text
    assert 'kubeinfer_ensemble_step_ready{ensemble="pipe",model="b",step="b"} 0.0' in metrics
    assert 'kubeinfer_ensemble_step_ready{ensemble="pipe",model="a",step="a"} 1.0' in metrics
    # requests are still tried: they fail fast, naming the step that is down
    t0 = time.monotonic()
    with pytest.raises(InferenceServerException) as err:
        infer(http, "pipe", x)
    assert time.monotonic() - t0 < 3
    assert err.value.status() == "503" and "step 'b' (model 'b')" in err.value.message()

    # again on the same port, as a Kubernetes Service keeps its address
    b = start_server(["serve", str(repo), "--model", "b"], http_port=port)
    deadline = time.monotonic() + 20
    while httpx.get(f"{base}/v2/models/pipe/ready").status_code != 200:
        assert time.monotonic() < deadline, router.log()
        time.sleep(0.05)
    assert grpc.is_model_ready("pipe")
    assert http.get_model_metadata("pipe")["parameters"]["steps_ready"] is True
    assert abs(infer(http, "pipe", x).as_numpy("y") - (x * 2 + 1) * 3).max() < 1e-5
    assert "step 'b' (model 'b' at" in router.log() and "is ready again" in router.log()
    http.close()
    grpc.close()
