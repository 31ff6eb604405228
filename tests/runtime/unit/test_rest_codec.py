"""v2 JSON and binary tensor codecs, without a server."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from kubeinfer.runtime.errors import InvalidInput
from kubeinfer.runtime.protocol.classification import classify
from kubeinfer.runtime.protocol.rest import decode_request, encode_response
from kubeinfer.runtime.types import InferResponse


def test_json_nested_and_flat_data():
    flat = orjson.dumps({"inputs": [{"name": "a", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]}]})
    nested = orjson.dumps({"inputs": [{"name": "a", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]})
    for body in (flat, nested):
        req = decode_request(body)
        np.testing.assert_array_equal(req.inputs["a"], np.array([[1, 2], [3, 4]], np.int32))


def test_binary_inputs_and_bytes_elements():
    raw_f = np.arange(6, dtype=np.float32).tobytes()
    raw_b = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 0)
    header = orjson.dumps({
        "id": "x",
        "inputs": [
            {"name": "f", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": len(raw_f)}},
            {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw_b)}},
        ],
        "parameters": {"binary_data_output": True, "priority": 2, "timeout": 500},
    })
    req = decode_request(header + raw_f + raw_b, len(header))
    np.testing.assert_array_equal(req.inputs["f"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert list(req.inputs["s"]) == [b"hi", b""]
    assert req.binary_output and req.priority == 2 and req.timeout_us == 500 and req.id == "x"


def test_encode_binary_and_json_outputs():
    req = decode_request(orjson.dumps({
        "inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
    }))
    y = np.array([[1.5, 2.5]], np.float32)
    z = np.array([[7]], np.int64)
    body, n = encode_response(InferResponse("m", "1", {"y": y, "z": z}, "id1"), req)
    head = orjson.loads(body[:n])
    assert head["id"] == "id1"
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert head["outputs"][1]["data"] == [7]
    assert np.frombuffer(body[n:], np.float32).tolist() == [1.5, 2.5]


def test_classification_format():
    scores = np.array([[0.1, 0.7, 0.2]], np.float32)
    out = classify(scores, 2, ["a", "b", "c"], batched=True)
    assert out.tolist() == [[b"0.700000:1:b", b"0.200000:2:c"]]
    assert classify(scores[0], 1, None, batched=False).tolist() == [b"0.700000:1"]


@pytest.mark.parametrize(
    "doc",
    [
        {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1]}]},
        {"inputs": [{"name": "a", "datatype": "FP32", "shape": "2", "data": [1, 2]}]},
        {"inputs": [{"name": "a", "datatype": "BOOL", "shape": [1], "data": [1]}]},
        {"inputs": [{"name": "a", "datatype": "INT8", "shape": [1], "data": [1000]}]},
        {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": {"name": "x"}},
    ],
)
def test_invalid_documents(doc):
    with pytest.raises(InvalidInput):
        decode_request(orjson.dumps(doc))
