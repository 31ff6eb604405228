"""A real ``kubeinfer serve`` process on loopback, driven by tritonclient.http."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from onnx import TensorProto

from tests.runtime.models import SLOW_CONFIG, add_sub_repo, identity, sample, slow_mlp, write_repo


@pytest.fixture
def server(tmp_path, start_server):
    repo = add_sub_repo(tmp_path / "repo")
    return start_server(["serve", str(repo), "--model", "add_sub"])


@pytest.fixture
def client(server):
    c = httpclient.InferenceServerClient(server.url, concurrency=16)
    yield c
    c.close()


def _inputs(a, b, binary=True):
    inputs = [httpclient.InferInput("INPUT0", list(a.shape), "FP32"), httpclient.InferInput("INPUT1", list(b.shape), "FP32")]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=binary)
    return inputs


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add_sub")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert meta["name"] == "kubeinfer"
    assert {"binary_tensor_data", "classification", "statistics", "model_configuration"} <= set(meta["extensions"])


def test_model_metadata_and_config(client):
    meta = client.get_model_metadata("add_sub")
    assert meta["name"] == "add_sub"
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [
        {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]},
        {"name": "INPUT1", "datatype": "FP32", "shape": [-1, 16]},
    ]
    config = client.get_model_config("add_sub")
    assert config["max_batch_size"] == 8
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
    assert client.get_model_metadata("add_sub", model_version="1")["name"] == "add_sub"


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_infer_json_and_binary(client, binary_in, binary_out):
    a, b = sample(batch=3)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_out),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary_out)]
    result = client.infer("add_sub", _inputs(a, b, binary_in), outputs=outputs, request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)
    assert result.get_response()["id"] == "req-7"
    assert result.get_response()["model_version"] == "1"


def test_requested_output_subset(client):
    a, b = sample()
    result = client.infer("add_sub", _inputs(a, b), outputs=[httpclient.InferRequestedOutput("OUTPUT1")])
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)


def test_classification_with_labels(client):
    a, b = sample(batch=2)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=False, class_count=3)
    result = client.infer("add_sub", _inputs(a, b), outputs=[out])
    classes = result.as_numpy("OUTPUT0")
    assert classes.shape == (2, 3)
    expected = np.argsort(-(a + b), axis=1)[:, :3]
    for row, idx in zip(classes, expected):
        parsed = [(c.decode() if isinstance(c, bytes) else c).split(":") for c in row]
        assert [int(p[1]) for p in parsed] == list(idx)
        assert [p[2] for p in parsed] == [f"label_{i}" for i in idx]


async def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(tmp_path, start_server):
    repo = write_repo(tmp_path / "repo", "slow", SLOW_CONFIG, slow_mlp)
    server = start_server(["serve", str(repo)])
    rng = np.random.default_rng(1)
    data = [rng.random((1, 512), dtype=np.float32) for _ in range(96)]

    def one(x):
        inp = aioclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return inp

    client = aioclient.InferenceServerClient(server.url, conn_limit=16)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(client.infer("slow", [one(x)]) for x in data)), 120
        )
        stacked = np.concatenate([r.as_numpy("OUTPUT0") for r in results])
        # every request got its own row: compare with one batched call of the same model
        batched = await client.infer("slow", [one(np.concatenate(data[:16]))])
        np.testing.assert_allclose(batched.as_numpy("OUTPUT0"), stacked[:16], rtol=1e-4, atol=1e-5)
        stats = (await client.get_inference_statistics("slow"))["model_stats"][0]
    finally:
        await client.close()
    assert stats["inference_count"] == 96 + 16
    assert stats["inference_stats"]["success"]["count"] == 97
    # 16 requests in flight against a model that takes milliseconds: batches formed
    assert stats["execution_count"] < 97
    assert max(b["batch_size"] for b in stats["batch_stats"]) > 1
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in stats["batch_stats"]) == 112


def test_errors_have_triton_status_and_body(server, client):
    a, b = sample()
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("nope", _inputs(a, b))
    bad = httpclient.InferInput("INPUT0", [1, 16], "INT32")
    bad.set_data_from_numpy(np.zeros((1, 16), np.int32))
    with pytest.raises(InferenceServerException, match="datatype"):
        client.infer("add_sub", [bad, _inputs(a, b)[1]])
    r = httpx.post(f"http://{server.url}/v2/models/add_sub/infer", content=b"{not json")
    assert r.status_code == 400 and "error" in r.json()
    r = httpx.get(f"http://{server.url}/v2/models/add_sub/versions/9")
    assert r.status_code == 404 and "error" in r.json()


def test_metrics_use_triton_names(server, client):
    a, b = sample()
    client.infer("add_sub", _inputs(a, b))
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    assert 'nv_inference_request_success{model="add_sub",version="1"} 1.0' in text
    assert 'nv_inference_count{model="add_sub",version="1"} 1.0' in text
    assert 'nv_inference_pending_request_count{model="add_sub",version="1"} 0.0' in text
    assert 'nv_inference_request_failure{model="add_sub",reason="BACKEND",version="1"} 0.0' in text
    assert "# TYPE nv_inference_request_success counter" in text
    assert "_total" not in text.replace("kubeinfer_", "")


@pytest.mark.parametrize(
    "datatype,onnx_type,values",
    [
        ("BYTES", TensorProto.STRING, np.array([[b"hello", "wörld".encode(), b""]], dtype=np.object_)),
        ("FP16", TensorProto.FLOAT16, np.array([[0.5, -1.25, 3.0]], dtype=np.float16)),
        ("BOOL", TensorProto.BOOL, np.array([[True, False, True]])),
        ("INT64", TensorProto.INT64, np.array([[1, -2, 2**40]], dtype=np.int64)),
        ("UINT8", TensorProto.UINT8, np.array([[0, 7, 255]], dtype=np.uint8)),
    ],
)
def test_datatypes_round_trip(tmp_path, start_server, datatype, onnx_type, values):
    repo = write_repo(tmp_path / "repo", "ident", None, lambda p: identity(p, onnx_type, ["B", 3]))
    (repo / "ident" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 4\n')
    server = start_server(["serve", str(repo)])
    client = httpclient.InferenceServerClient(server.url)
    assert client.get_model_metadata("ident")["inputs"][0]["datatype"] == datatype
    for binary in (True, False):
        inp = httpclient.InferInput("INPUT0", [1, 3], datatype)
        inp.set_data_from_numpy(values, binary_data=binary)
        out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
        got = client.infer("ident", [inp], outputs=[out]).as_numpy("OUTPUT0")
        if datatype == "BYTES":
            got = np.array([[v if isinstance(v, bytes) else v.encode() for v in row] for row in got], dtype=np.object_)
        np.testing.assert_array_equal(got, values)
    client.close()
