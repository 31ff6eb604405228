"""A full queue sheds load before decoding (HTTP 503 + Retry-After, gRPC UNAVAILABLE),
and clients that retry at once do not starve the requests being served."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc

from tests.conftest import REPO_ROOT

GATED_CONFIG = """
name: "gated"
backend: "python"
max_batch_size: 1
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
dynamic_batching { default_queue_policy { max_queue_size: 2 } }
instance_group [ { count: 2 kind: KIND_CPU } ]
parameters { key: "gate" value: { string_value: "%s" } }
"""

# while the test holds the gate (the file exists), each batch waits (bounded) for it to go
GATED_MODEL = '''
import json
import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        self.gate = params["gate"]["string_value"]

    def execute(self, requests):
        deadline = time.monotonic() + 30
        while os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.005)
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
            for r in requests
        ]
'''

BODY = orjson.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]})


def _stats(server) -> dict:
    return httpx.get(f"http://{server.url}/v2/models/gated/stats").json()["model_stats"][0]


def _pending(server) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("nv_inference_pending_request_count{"))
    return float(line.rsplit(" ", 1)[1])


def test_full_queue_is_shed_before_decoding(tmp_path, start_server):
    gate = tmp_path / "hold"
    model = tmp_path / "repo" / "gated"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(GATED_CONFIG % gate)
    (model / "1" / "model.py").write_text(GATED_MODEL)
    server = start_server(["serve", str(tmp_path / "repo")])
    url = f"http://{server.url}/v2/models/gated/infer"
    gate.touch()
    with ThreadPoolExecutor(4) as pool, httpx.Client(timeout=30) as client:
        # two executing (held at the gate; two instances, so never inline on the event
        # loop), two queued: the queue is full
        held = [pool.submit(httpx.post, url, content=BODY, timeout=30) for _ in range(4)]
        deadline = time.monotonic() + 20
        while _pending(server) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _pending(server) == 2
        # not even decoded: a malformed body is shed with 503, not a 400
        for body in (BODY, b"{not json"):
            r = client.post(url, content=body)
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert "queue is full" in r.json()["error"]
        channel = grpc.insecure_channel(server.grpc_url)
        request = pb.ModelInferRequest(model_name="gated")
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
        request.raw_input_contents.append(b"\0" * 64)
        with pytest.raises(grpc.RpcError) as info:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "queue is full" in info.value.details()
        channel.close()
        gate.unlink()
        assert [f.result().status_code for f in held] == [200] * 4
        # the connection that was shed serves again (its retry was only delayed)
        assert client.post(url, content=BODY).status_code == 200
    stats = _stats(server)
    assert stats["inference_stats"]["success"]["count"] == 5
    assert stats["inference_stats"]["fail"]["count"] == 3  # the rejections are counted


def test_goodput_under_overload_with_immediate_retries():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    try:
        import overload
    finally:
        sys.path.pop(0)
    figures = overload.measure(duration=2.0, overload=10, compute_ms=10.0, batch=8, queue=16)
    assert figures["capacity_non_200"] == 0
    assert figures["overload_503_per_s"] > 0  # it was overloaded
    # the benchmark shows >= 0.8 on an idle machine; a loaded CI machine gets some slack
    assert figures["goodput_ratio"] >= 0.6, figures
