"""The REST codec's two directions against each other and against tritonclient's own
encoding: a body ``encode_request`` writes is the request ``decode_request`` reads (and
what tritonclient would have sent), a body ``encode_response`` writes is what
``decode_response`` and tritonclient's ``InferResult`` read."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient

from kubeinfer.runtime.errors import InvalidInput
from kubeinfer.runtime.protocol.rest import decode_request, decode_response, encode_request, encode_response
from kubeinfer.runtime.types import InferRequest, InferResponse, RequestedOutput


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "f32": rng.random((2, 3), dtype=np.float32),
        "f16": rng.random((4,)).astype(np.float16),
        "i64": np.arange(-3, 3, dtype=np.int64).reshape(3, 2),
        "u8": np.arange(5, dtype=np.uint8),
        "b": np.array([[True, False]]),
        "s": np.array([b"hi", b"", "caf\u00e9".encode()], dtype=np.object_),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(2.5),
        "strided": np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2],
    }


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("binary", [True, False])
def test_encode_request_is_what_decode_request_reads(binary):
    inputs = _tensors()
    if not binary:
        inputs.pop("f16")  # FP16 travels as JSON numbers and comes back FP16: same values
    request = InferRequest(
        inputs, id="r-1", parameters={"custom": "v"},
        outputs=[RequestedOutput("y", True), RequestedOutput("p", False, 2)],
        binary_output=True, priority=3, timeout_us=1500,
    )
    body, header_length = encode_request(request, binary=binary)
    assert (header_length is None) is not binary
    back = decode_request(body, header_length)
    _same(back.inputs, inputs)
    assert back.id == "r-1" and back.priority == 3 and back.timeout_us == 1500 and back.binary_output
    assert back.parameters["custom"] == "v"
    assert back.outputs == [RequestedOutput("y", True), RequestedOutput("p", False, 2)]


def test_encode_request_matches_tritonclient():
    """The same tensors sent by tritonclient's InferInput/InferRequestedOutput and by
    ``encode_request`` decode to the same request."""
    inputs = _tensors()
    inputs.pop("scalar")  # tritonclient takes shapes of rank >= 1 only
    theirs = []
    for name, arr in inputs.items():
        datatype = "BYTES" if arr.dtype == np.object_ else None
        inp = httpclient.InferInput(name, list(arr.shape), datatype or _dt(arr))
        inp.set_data_from_numpy(arr, binary_data=True)
        theirs.append(inp)
    outputs = [httpclient.InferRequestedOutput("y", binary_data=True, class_count=2)]
    body, header_length = httpclient.InferenceServerClient.generate_request_body(
        theirs, outputs, request_id="r-2", priority=1, timeout=700
    )
    triton = decode_request(body, header_length)
    ours_body, ours_length = encode_request(
        InferRequest(inputs, id="r-2", outputs=[RequestedOutput("y", True, 2)], priority=1, timeout_us=700)
    )
    ours = decode_request(ours_body, ours_length)
    _same(ours.inputs, triton.inputs)
    for field in ("id", "outputs", "priority", "timeout_us", "binary_output"):
        assert getattr(ours, field) == getattr(triton, field), field


def _dt(arr: np.ndarray) -> str:
    from kubeinfer.runtime.datatypes import from_numpy

    return from_numpy(arr.dtype)


@pytest.mark.parametrize("binary", [True, False])
def test_encode_response_is_what_decode_response_and_tritonclient_read(binary):
    outputs = _tensors()
    if not binary:
        outputs = {k: v for k, v in outputs.items() if k not in ("f16", "scalar")}
    request = InferRequest({}, outputs=[RequestedOutput(n, binary) for n in outputs])
    body, header_length = encode_response(InferResponse("m", "3", outputs, "r-3", {"p": 1}), request)
    back = decode_response(body, header_length)
    assert (back.model_name, back.model_version, back.id, back.parameters) == ("m", "3", "r-3", {"p": 1})
    _same(back.outputs, outputs)
    result = httpclient.InferenceServerClient.parse_response_body(body, header_length=header_length)
    for name, arr in outputs.items():
        theirs = result.as_numpy(name)
        if not binary and arr.dtype == np.object_:  # tritonclient gives JSON strings as str
            theirs = np.array([v.encode() for v in theirs], dtype=np.object_)
        assert theirs.dtype == arr.dtype, name
        np.testing.assert_array_equal(theirs, arr, err_msg=name)


def test_decode_response_mixed_binary_and_json():
    request = InferRequest({}, outputs=[RequestedOutput("y", True), RequestedOutput("z", False)])
    y, z = np.array([[1.5, 2.5]], np.float32), np.array([[7]], np.int64)
    body, n = encode_response(InferResponse("m", "1", {"y": y, "z": z}), request)
    back = decode_response(body, n)
    _same(back.outputs, {"y": y, "z": z})


def _response(outputs, tail=b"", **extra) -> tuple[bytes, int]:
    header = orjson.dumps({"model_name": "m", "model_version": "1", "outputs": outputs, **extra})
    return header + tail, len(header)


@pytest.mark.parametrize(
    "body,header_length",
    [
        (b"not json", None),
        (b"[]", None),
        _response([]),
        _response([{"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}], b"\0" * 4),
        _response([{"name": "y", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}], b"\0" * 8),
        _response([{"name": "y", "datatype": "FP32", "shape": [2], "data": [1]}]),
        _response([{"name": "y", "datatype": "NOPE", "shape": [1], "data": [1]}]),
        _response([{"name": "y", "datatype": "FP32", "shape": [1], "data": [1]}], model_name=3),
        (b"{}", 10),
    ],
)
def test_decode_response_rejects_malformed_bodies(body, header_length):
    with pytest.raises(InvalidInput):
        decode_response(body, header_length)
