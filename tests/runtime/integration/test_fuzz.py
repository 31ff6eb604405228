"""Property-based fuzzing of the infer path of real ``kubeinfer serve`` processes.

Hypothesis draws v2 JSON bodies, binary-tensor bodies (a JSON header plus raw tensors) and
gRPC ``ModelInferRequest`` messages that are mostly almost right — the model's own input
names, real datatypes, plausible shapes — with wrong parts mixed in (garbage values, huge
or negative dimensions, nulls, strings, bad framing, unknown parameters). Properties, for
the FP32 model ``add_sub`` and the BYTES model ``strings``:

* HTTP: never a 5xx; an error is a JSON ``{"error": "<non-empty>"}`` body;
* gRPC: OK, or a status other than INTERNAL / UNKNOWN with a non-empty message;
* afterwards both servers still answer a good request correctly.

The example count is bounded (``KUBEINFER_FUZZ_EXAMPLES``, default 120 per property) and
the run is derandomized, so CI sees the same cases every time; raise the count and set
``KUBEINFER_FUZZ_RANDOM=1`` locally to search further.
"""

from __future__ import annotations

import os
import struct

import grpc
import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc

from kubeinfer.runtime.datatypes import DATATYPES

EXAMPLES = int(os.environ.get("KUBEINFER_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=os.environ.get("KUBEINFER_FUZZ_RANDOM", "") != "1",
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MODELS = {"add_sub": ["INPUT0", "INPUT1"], "strings": ["INPUT0"]}
DTYPES = sorted(DATATYPES)

# -- JSON values ---------------------------------------------------------------------------
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
json_value = st.recursive(
    leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8
)
dim = st.one_of(
    st.sampled_from([0, 1, 2, 3, 16, -1, 2**31, 2**40, 2**62, 2**63 - 1]),
    st.integers(0, 40),
)
shape = st.one_of(st.lists(dim, max_size=4), st.sampled_from([[1, 16], [2, 16], [1, 3], [1, 0]]), json_value)
numbers = st.lists(st.one_of(st.floats(-1e6, 1e6, width=32), st.integers(-300, 300)), min_size=0, max_size=40)
data = st.one_of(
    st.lists(st.floats(-1e6, 1e6, width=32), min_size=16, max_size=16),
    numbers,
    st.lists(leaf, max_size=20),
    st.lists(st.text(max_size=5), min_size=1, max_size=6),
    json_value,
)
param_value = st.one_of(leaf, st.integers(-5, 2**40), json_value)
param_keys = st.sampled_from(
    ["binary_data_size", "binary_data", "binary_data_output", "classification", "timeout",
     "priority", "sequence_id", "sequence_start", "sequence_end", "shared_memory_region", "x"]
)
parameters = st.dictionaries(param_keys, param_value, max_size=3)


garbage = {
    "name": st.one_of(st.sampled_from(["INPUT0", "INPUT1", "X", ""]), json_value),
    "datatype": st.one_of(st.sampled_from(DTYPES), st.text(max_size=5), json_value),
    "shape": shape,
    "data": data,
    "parameters": st.one_of(parameters, json_value),
}


@st.composite
def good_tensors(draw, model: str) -> list[tuple[str, str, list[int], np.ndarray]]:
    """The model's inputs, right: (name, datatype, shape, values)."""
    batch = draw(st.integers(1, 3))
    if model == "add_sub":
        return [
            (n, "FP32", [batch, 16], np.array(draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=16 * batch, max_size=16 * batch)), np.float32).reshape(batch, 16))
            for n in MODELS[model]
        ]
    width = draw(st.integers(0, 3))
    texts = draw(st.lists(st.text(max_size=4), min_size=batch * width, max_size=batch * width))
    values = np.array([t.encode() for t in texts] or [b""] * 0, dtype=np.object_).reshape(batch, width)
    return [("INPUT0", "BYTES", [batch, width], values)]


@st.composite
def mutated_doc(draw, model: str, binary: bool) -> tuple[dict, bytes]:
    """A right request with a few of its parts replaced by wrong ones, and its binary part."""
    tensors = draw(good_tensors(model))
    inputs, blobs = [], []
    for name, datatype, dims, values in tensors:
        item = {"name": name, "datatype": datatype, "shape": dims}
        if binary:
            raw = framed(list(values.ravel())) if datatype == "BYTES" else values.tobytes()
            item["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            item["data"] = [v.decode() for v in values.ravel()] if datatype == "BYTES" else values.ravel().tolist()
        inputs.append(item)
    doc: dict = {"inputs": inputs}
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["input", "input", "input", "drop", "extra", "request"]))
        if where == "input":
            objects = [i for i in inputs if isinstance(i, dict)] or [{}]
            item = objects[draw(st.integers(0, len(objects) - 1))]
            key = draw(st.sampled_from(["name", "datatype", "shape", "shape", "data", "parameters"]))
            item[key] = draw(garbage[key])
            if binary and key == "parameters" and draw(st.booleans()):
                item[key] = {"binary_data_size": draw(st.one_of(st.integers(0, 200), json_value))}
        elif where == "drop" and inputs:
            inputs.pop(draw(st.integers(0, len(inputs) - 1)))
        elif where == "extra":
            first = next((i for i in inputs if isinstance(i, dict)), None)
            inputs.append(dict(first) if first is not None and draw(st.booleans()) else draw(garbage["data"]))
        else:
            key = draw(st.sampled_from(["id", "parameters", "outputs", "inputs"]))
            doc[key] = draw(st.one_of(json_value, parameters, outputs))
    raw = b"".join(blobs)
    if binary and draw(st.booleans()):
        raw = draw(st.one_of(blob, st.just(raw[:-1]), st.just(raw + b"\xff"), st.just(raw.replace(b"a", b"\xff"))))
    return doc, raw


outputs = st.lists(
    st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["OUTPUT0", "OUTPUT1", "NOPE"]), json_value)},
        optional={"parameters": parameters},
    ),
    max_size=3,
)


def framed(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


blob = st.one_of(
    st.binary(max_size=160),
    st.lists(st.binary(max_size=6), max_size=6).map(framed),
)
models = st.sampled_from(sorted(MODELS))


def _check_http(r: httpx.Response) -> None:
    event(f"HTTP {r.status_code}")
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error, str) and error, r.text


@pytest.fixture(scope="module")
def servers(add_sub_server, strings_server):
    return {"add_sub": add_sub_server, "strings": strings_server}


@pytest.fixture(scope="module")
def http(servers):
    clients = {m: httpx.Client(base_url=f"http://{s.url}", timeout=10) for m, s in servers.items()}
    yield clients
    for c in clients.values():
        c.close()


@FUZZ
@given(models.flatmap(lambda m: st.tuples(st.just(m), mutated_doc(m, binary=False))))
def test_json_requests_never_5xx(http, case):
    model, (doc, _) = case
    _check_http(http[model].post(f"/v2/models/{model}/infer", content=orjson.dumps(doc)))


@FUZZ
@given(
    models.flatmap(lambda m: st.tuples(st.just(m), mutated_doc(m, binary=True))),
    st.one_of(st.none(), st.none(), st.integers(-3, 400), st.sampled_from(["abc", "", "+1", "1_0", "1e3"])),
)
def test_binary_requests_never_5xx(http, case, header_length):
    model, (doc, raw) = case
    header = orjson.dumps(doc)
    if header_length is None:
        header_length = len(header)
    headers = {"Inference-Header-Content-Length": str(header_length)}
    _check_http(http[model].post(f"/v2/models/{model}/infer", content=header + raw, headers=headers))


CONTENT_VALUES = {
    "fp32_contents": st.floats(width=32, allow_nan=False),
    "fp64_contents": st.floats(allow_nan=False),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "bool_contents": st.booleans(),
    "bytes_contents": st.binary(max_size=6),
}


@st.composite
def grpc_request(draw, model: str) -> pb.ModelInferRequest:
    """A right ``ModelInferRequest`` (raw or typed contents) with a few parts made wrong."""
    request = pb.ModelInferRequest(model_name=model, id=draw(st.text(max_size=4)))
    raw = draw(st.booleans())
    for name, datatype, dims, values in draw(good_tensors(model)):
        item = request.inputs.add(name=name, datatype=datatype, shape=dims)
        if raw:
            request.raw_input_contents.append(
                framed(list(values.ravel())) if datatype == "BYTES" else values.tobytes()
            )
        elif datatype == "BYTES":
            item.contents.bytes_contents.extend(values.ravel().tolist())
        else:
            item.contents.fp32_contents.extend(values.ravel().tolist())
    for _ in range(draw(st.integers(0, 3))):
        item = request.inputs[draw(st.integers(0, len(request.inputs) - 1))]
        what = draw(st.sampled_from(["name", "datatype", "shape", "shape", "contents", "params", "target", "extra"]))
        if what == "name":
            item.name = draw(garbage["name"].filter(lambda v: isinstance(v, str)))
        elif what == "datatype":
            item.datatype = draw(st.one_of(st.sampled_from(DTYPES), st.text(max_size=4)))
        elif what == "shape":
            del item.shape[:]
            item.shape.extend(draw(st.lists(st.one_of(dim, st.integers(-(2**63), 2**63 - 1)), max_size=4)))
        elif what == "contents" and raw:
            request.raw_input_contents[draw(st.integers(0, len(request.raw_input_contents) - 1))] = draw(blob)
        elif what == "contents":
            item.ClearField("contents")
            field = draw(st.sampled_from(sorted(CONTENT_VALUES)))
            getattr(item.contents, field).extend(draw(st.lists(CONTENT_VALUES[field], max_size=20)))
        elif what == "params":
            _draw_params(draw, draw(st.sampled_from([item.parameters, request.parameters])))
        elif what == "target":
            request.model_name = draw(st.sampled_from([model, "nope"]))
            request.model_version = draw(st.sampled_from(["", "1", "9"]))
        elif raw:
            request.raw_input_contents.append(draw(blob))
        else:
            request.inputs.add(name=item.name, datatype=item.datatype, shape=item.shape)
    for _ in range(draw(st.integers(0, 2))):
        out = request.outputs.add(name=draw(st.sampled_from(["OUTPUT0", "OUTPUT1", "NOPE", ""])))
        _draw_params(draw, out.parameters)
    return request


def _draw_params(draw, params) -> None:
    for key in draw(st.lists(param_keys, max_size=2)):
        kind = draw(st.sampled_from(["bool_param", "int64_param", "string_param", "double_param", "uint64_param"]))
        value = {
            "bool_param": st.booleans(),
            "int64_param": st.integers(-(2**63), 2**63 - 1),
            "string_param": st.text(max_size=4),
            "double_param": st.floats(),
            "uint64_param": st.integers(0, 2**64 - 1),
        }[kind]
        setattr(params[key], kind, draw(value))


@pytest.fixture(scope="module")
def stubs(servers):
    channels = {m: grpc.insecure_channel(s.grpc_url) for m, s in servers.items()}
    yield {m: service_pb2_grpc.GRPCInferenceServiceStub(c) for m, c in channels.items()}
    for c in channels.values():
        c.close()


@FUZZ
@given(models.flatmap(lambda m: st.tuples(st.just(m), grpc_request(m))))
def test_grpc_requests_never_internal(stubs, case):
    model, request = case
    try:
        stubs[model].ModelInfer(request, timeout=10)
        event("gRPC OK")
    except grpc.RpcError as exc:
        event(f"gRPC {exc.code().name}")
        assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), exc.details()
        assert exc.details(), exc.code()


def test_servers_answer_correctly_after_the_fuzzing(http, stubs):
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    body = {"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": a.ravel().tolist()},
        {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16},
    ]}
    r = http["add_sub"].post("/v2/models/add_sub/infer", content=orjson.dumps(body))
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == (a + 1).ravel().tolist()
    request = pb.ModelInferRequest(model_name="strings")
    request.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, 2])
    request.raw_input_contents.append(framed([b"ok", "wörld".encode()]))
    response = stubs["strings"].ModelInfer(request, timeout=10)
    assert response.raw_output_contents[0] == framed([b"ok", "wörld".encode()])
