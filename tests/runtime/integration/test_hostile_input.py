"""Requests a codec or the signature check must refuse, over HTTP and gRPC, before any
backend runs: empty tensors with huge dimensions, non-UTF-8 strings for a model whose
strings are text, and JSON data that is not numbers."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc
from tritonclient.utils import InferenceServerException

HUGE_EMPTY = [[2**62, 0], [2**40, 2**40, 0], [0, 2**63 - 1]]
NOT_UTF8 = np.array([[b"fine", b"\xff\xfe", "é".encode()[:1]]], dtype=np.object_)


def _post(server, model: str, body: bytes, headers=None) -> httpx.Response:
    return httpx.post(
        f"http://{server.url}/v2/models/{model}/infer", content=body, headers=headers, timeout=10
    )


def _executions(server, model: str) -> int:
    stats = httpx.get(f"http://{server.url}/v2/models/{model}/stats").json()
    return stats["model_stats"][0]["execution_count"]


def _stub(server):
    channel = grpc.insecure_channel(server.grpc_url)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _good_add_sub(server) -> None:
    a = np.full((1, 16), 0.5, np.float32)
    client = httpclient.InferenceServerClient(server.url)
    inputs = [httpclient.InferInput(n, [1, 16], "FP32") for n in ("INPUT0", "INPUT1")]
    for i in inputs:
        i.set_data_from_numpy(a)
    np.testing.assert_array_equal(client.infer("add_sub", inputs).as_numpy("OUTPUT0"), a + a)
    client.close()


# -- empty tensors with huge dimensions ---------------------------------------------------
@pytest.mark.parametrize("shape", HUGE_EMPTY, ids=str)
def test_http_empty_tensor_with_huge_dims_is_400(add_sub_server, shape):
    good = {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}
    json_body = orjson.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": shape, "data": []}, good]}
    )
    header = orjson.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": 0}},
        {**good, "data": None, "parameters": {"binary_data_size": 64}},
    ]}).replace(b',"data":null', b"")
    binary = (header + np.zeros(16, np.float32).tobytes(), {"Inference-Header-Content-Length": str(len(header))})
    for body, headers in ((json_body, None), binary):
        r = _post(add_sub_server, "add_sub", body, headers)
        assert r.status_code == 400, r.text
        assert "too large" in r.json()["error"]
    _good_add_sub(add_sub_server)


@pytest.mark.parametrize("shape", HUGE_EMPTY, ids=str)
@pytest.mark.parametrize("form", ["raw", "typed"])
def test_grpc_empty_tensor_with_huge_dims_is_invalid_argument(add_sub_server, shape, form):
    channel, stub = _stub(add_sub_server)
    request = pb.ModelInferRequest(model_name="add_sub")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=shape)
    second = request.inputs.add(name="INPUT1", datatype="FP32", shape=[1, 16])
    if form == "raw":
        request.raw_input_contents.extend([b"", np.zeros(16, np.float32).tobytes()])
    else:
        second.contents.fp32_contents.extend([0.0] * 16)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "too large" in info.value.details()
    channel.close()


# -- JSON data that is not numbers --------------------------------------------------------
@pytest.mark.parametrize(
    "datatype,data",
    [
        ("FP32", [None] * 16),
        ("FP32", [0.5] * 15 + [None]),
        ("FP32", ["1.5"] * 16),
        ("FP32", [True] * 16),
        ("FP32", [{"x": 1}] + [0.5] * 15),
        ("INT32", [1.5] * 16),
        ("INT32", [None] * 16),
        ("BOOL", [1] * 16),
    ],
    ids=["fp32-nulls", "fp32-one-null", "fp32-strings", "fp32-bools", "fp32-object",
         "int32-floats", "int32-nulls", "bool-ints"],
)
def test_json_data_that_is_not_numbers_is_400(add_sub_server, datatype, data):
    body = orjson.dumps({"inputs": [
        {"name": "INPUT0", "datatype": datatype, "shape": [1, 16], "data": data},
        {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16},
    ]})
    r = _post(add_sub_server, "add_sub", body)
    assert r.status_code == 400, r.text
    assert "data must be" in r.json()["error"]


def test_integers_are_fp32_data(add_sub_server):
    body = orjson.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [1] * 16},
        {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16},
    ]})
    r = _post(add_sub_server, "add_sub", body)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1.5] * 16


# -- non-UTF-8 strings for a model whose strings are text ---------------------------------
@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
def test_http_non_utf8_bytes_is_400_before_the_backend(strings_server, binary_out):
    client = httpclient.InferenceServerClient(strings_server.url)
    before = _executions(strings_server, "strings")
    inp = httpclient.InferInput("INPUT0", [1, 3], "BYTES")
    inp.set_data_from_numpy(NOT_UTF8, binary_data=True)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_out)
    with pytest.raises(InferenceServerException) as info:
        client.infer("strings", [inp], outputs=[out])
    assert str(info.value.status()) == "400"
    assert "element 1 is not UTF-8" in info.value.message()
    assert _executions(strings_server, "strings") == before  # refused before the backend
    good = np.array([[b"fine", "wörld".encode()]], dtype=np.object_)
    inp = httpclient.InferInput("INPUT0", [1, 2], "BYTES")
    inp.set_data_from_numpy(good, binary_data=True)
    got = client.infer("strings", [inp], outputs=[out]).as_numpy("OUTPUT0")
    assert [v if isinstance(v, bytes) else v.encode() for v in got[0]] == list(good[0])
    client.close()


def test_grpc_non_utf8_bytes_is_invalid_argument_raw_and_typed(strings_server):
    before = _executions(strings_server, "strings")
    client = grpcclient.InferenceServerClient(strings_server.grpc_url)
    inp = grpcclient.InferInput("INPUT0", [1, 3], "BYTES")
    inp.set_data_from_numpy(NOT_UTF8)  # raw_input_contents
    with pytest.raises(InferenceServerException) as info:
        client.infer("strings", [inp])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "not UTF-8" in info.value.message()
    client.close()
    channel, stub = _stub(strings_server)
    request = pb.ModelInferRequest(model_name="strings")
    request.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, 3]).contents.bytes_contents.extend(
        list(NOT_UTF8[0])
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "element 1 is not UTF-8" in err.value.details()
    channel.close()
    assert _executions(strings_server, "strings") == before
