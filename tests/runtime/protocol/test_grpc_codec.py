"""The gRPC codec on its own: ModelInferRequest -> InferRequest, InferResponse -> ModelInferResponse."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from kubeinfer.runtime.errors import InvalidInput, Unsupported
from kubeinfer.runtime.protocol.grpc_codec import decode_request, encode_response
from kubeinfer.runtime.types import InferRequest, InferResponse, RequestedOutput


def _raw_request(**arrays: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id="r1")
    for name, arr in arrays.items():
        request.inputs.add(name=name, datatype="FP32", shape=arr.shape)
        request.raw_input_contents.append(arr.tobytes())
    return request


def test_raw_inputs_decode_to_numpy_without_copy_semantics_leaking():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    req = decode_request(_raw_request(X=x, Y=x * 2))
    np.testing.assert_array_equal(req.inputs["X"], x)
    np.testing.assert_array_equal(req.inputs["Y"], x * 2)
    assert req.inputs["X"].dtype == np.float32 and req.inputs["X"].shape == (2, 3)
    assert req.id == "r1"
    assert req.outputs is None and req.binary_output is True


def test_typed_inputs_decode():
    message = pb.ModelInferRequest(model_name="m")
    t = message.inputs.add(name="A", datatype="INT8", shape=[3])
    t.contents.int_contents.extend([-128, 0, 127])
    t = message.inputs.add(name="S", datatype="BYTES", shape=[1, 2])
    t.contents.bytes_contents.extend([b"a", b"bc"])
    t = message.inputs.add(name="B", datatype="BOOL", shape=[2])
    t.contents.bool_contents.extend([True, False])
    req = decode_request(message)
    assert req.inputs["A"].dtype == np.int8 and req.inputs["A"].tolist() == [-128, 0, 127]
    assert req.inputs["S"].dtype == np.object_ and req.inputs["S"].tolist() == [[b"a", b"bc"]]
    assert req.inputs["B"].tolist() == [True, False]
    assert req.id is None


def test_raw_bytes_input():
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="S", datatype="BYTES", shape=[2])
    message.raw_input_contents.append(b"\x01\x00\x00\x00a\x02\x00\x00\x00bc")
    assert decode_request(message).inputs["S"].tolist() == [b"a", b"bc"]


def test_parameters_become_plain_values():
    message = _raw_request(X=np.zeros(1, np.float32))
    message.parameters["priority"].uint64_param = 2
    message.parameters["timeout"].int64_param = 5000
    message.parameters["sequence_id"].string_param = "seq-1"
    message.parameters["sequence_start"].bool_param = True
    message.parameters["sequence_end"].bool_param = False
    message.parameters["ratio"].double_param = 0.5
    out = message.outputs.add(name="Y")
    out.parameters["classification"].int64_param = 3
    req = decode_request(message)
    assert (req.priority, req.timeout_us) == (2, 5000)
    assert req.parameters == {
        "priority": 2,
        "timeout": 5000,
        "sequence_id": "seq-1",
        "sequence_start": True,
        "sequence_end": False,
        "ratio": 0.5,
    }
    assert req.outputs == [RequestedOutput("Y", True, 3)]


@pytest.mark.parametrize(
    "mutate,error,match",
    [
        (lambda m: m.ClearField("inputs"), InvalidInput, "at least one input"),
        (lambda m: m.inputs.add(name="Z", datatype="FP32", shape=[1]), InvalidInput, "raw_input_contents"),
        (lambda m: m.inputs.add(name="X", datatype="FP32", shape=[1]) and m.raw_input_contents.append(b"\0" * 4), InvalidInput, "twice"),
        (lambda m: setattr(m.inputs[0], "datatype", "FP8"), InvalidInput, "unknown datatype"),
        (lambda m: m.inputs[0].shape.append(2), InvalidInput, "bytes of raw contents"),
        (lambda m: m.inputs[0].shape.__setitem__(0, -1), InvalidInput, "negative"),
        (lambda m: m.inputs[0].contents.fp32_contents.append(1.0), InvalidInput, "both"),
        (lambda m: setattr(m.inputs[0].parameters["shared_memory_region"], "string_param", "r"), Unsupported, "shared memory"),
        (lambda m: setattr(m.parameters["priority"], "int64_param", -1), InvalidInput, "priority"),
        (lambda m: setattr(m.parameters["timeout"], "string_param", "soon"), InvalidInput, "timeout"),
    ],
)
def test_bad_requests(mutate, error, match):
    message = _raw_request(X=np.zeros((1, 2), np.float32))
    mutate(message)
    with pytest.raises(error, match=match):
        decode_request(message)


def test_typed_input_errors():
    message = pb.ModelInferRequest(model_name="m")
    t = message.inputs.add(name="A", datatype="INT8", shape=[1])
    t.contents.int_contents.append(300)
    with pytest.raises(InvalidInput, match="out of range"):
        decode_request(message)
    t.contents.int_contents[0] = 1
    t.shape[0] = 2
    with pytest.raises(InvalidInput, match="needs 2 elements"):
        decode_request(message)
    t.datatype = "FP16"
    with pytest.raises(InvalidInput, match="raw_input_contents"):
        decode_request(message)


def _encode(outputs, request=None, **kw) -> pb.ModelInferResponse:
    response = InferResponse("m", "1", outputs, id="r1", parameters={"sequence_id": 7})
    request = request or InferRequest({}, binary_output=True)  # decode_request's default
    return encode_response(response, request, pb.ModelInferResponse(), **kw)


def test_outputs_raw_by_default():
    y = np.arange(4, dtype=np.float32).reshape(2, 2)
    s = np.array([b"x", b"yz"], dtype=np.object_)
    msg = _encode({"Y": y, "S": s})
    assert (msg.model_name, msg.model_version, msg.id) == ("m", "1", "r1")
    assert msg.parameters["sequence_id"].int64_param == 7
    assert [(o.name, o.datatype, list(o.shape)) for o in msg.outputs] == [("Y", "FP32", [2, 2]), ("S", "BYTES", [2])]
    assert np.frombuffer(msg.raw_output_contents[0], np.float32).tolist() == [0, 1, 2, 3]
    assert msg.raw_output_contents[1] == b"\x01\x00\x00\x00x\x02\x00\x00\x00yz"
    assert not msg.outputs[0].HasField("contents")


def test_typed_outputs_when_every_output_asks():
    y = np.arange(4, dtype=np.int32)
    s = np.array([b"x"], dtype=np.object_)
    request = InferRequest({}, outputs=[RequestedOutput("Y", False), RequestedOutput("S", False)])
    msg = _encode({"Y": y, "S": s}, request)
    assert not msg.raw_output_contents
    assert list(msg.outputs[0].contents.int_contents) == [0, 1, 2, 3]
    assert list(msg.outputs[1].contents.bytes_contents) == [b"x"]
    # FP16 has no typed field: the whole response goes raw, so positions stay aligned
    h = np.ones(2, np.float16)
    request = InferRequest({}, outputs=[RequestedOutput("Y", False), RequestedOutput("H", False)])
    msg = _encode({"Y": y, "H": h}, request)
    assert len(msg.raw_output_contents) == 2
    assert np.frombuffer(msg.raw_output_contents[1], np.float16).tolist() == [1.0, 1.0]


def test_classification_output():
    scores = np.array([[0.1, 0.7, 0.2]], dtype=np.float32)
    request = InferRequest({}, outputs=[RequestedOutput("P", True, 2)])
    msg = _encode({"P": scores}, request, labels={"P": ["a", "b", "c"]}, batched=True)
    assert msg.outputs[0].datatype == "BYTES" and list(msg.outputs[0].shape) == [1, 2]
    assert msg.raw_output_contents[0] == b"\x0c\x00\x00\x000.700000:1:b\x0c\x00\x00\x000.200000:2:c"


def test_codec_imports_no_rpc_framework():
    code = "import sys, kubeinfer.runtime.protocol.grpc_codec; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
