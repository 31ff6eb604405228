"""A corpus of bad requests: each is answered 4xx with {"error": ...}; the server stays healthy."""

from __future__ import annotations

import struct

import httpx
import orjson
import pytest

from tests.runtime.models import add_sub_repo


def _body(inputs, **extra) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


GOOD = {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}
GOOD1 = {**GOOD, "name": "INPUT1"}
BIN_HEADER = orjson.dumps(
    {"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
        {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
    ]}
)

# (case, path, body, headers, expected status)
CORPUS = [
    ("malformed json", "add_sub", b"{nope", {}, 400),
    ("not an object", "add_sub", b"[1,2]", {}, 400),
    ("empty body", "add_sub", b"", {}, 400),
    ("no inputs", "add_sub", b"{}", {}, 400),
    ("inputs not a list", "add_sub", b'{"inputs": 3}', {}, 400),
    ("unknown model", "nope", _body([GOOD, GOOD1]), {}, 404),
    ("unknown version", "add_sub/versions/7", _body([GOOD, GOOD1]), {}, 404),
    ("missing input", "add_sub", _body([GOOD]), {}, 400),
    ("unknown input", "add_sub", _body([GOOD, GOOD1, {**GOOD, "name": "X"}]), {}, 400),
    ("duplicate input", "add_sub", _body([GOOD, GOOD]), {}, 400),
    ("wrong datatype", "add_sub", _body([{**GOOD, "datatype": "INT32", "data": [1] * 16}, GOOD1]), {}, 400),
    ("unknown datatype", "add_sub", _body([{**GOOD, "datatype": "FLOAT"}, GOOD1]), {}, 400),
    ("wrong shape", "add_sub", _body([{**GOOD, "shape": [1, 8], "data": [0.5] * 8}, GOOD1]), {}, 400),
    ("no batch dim", "add_sub", _body([{**GOOD, "shape": [16]}, {**GOOD1, "shape": [16]}]), {}, 400),
    ("batch too big", "add_sub", _body([{**GOOD, "shape": [9, 16], "data": [0.5] * 144}, {**GOOD1, "shape": [9, 16], "data": [0.5] * 144}]), {}, 400),
    ("batch sizes disagree", "add_sub", _body([{**GOOD, "shape": [2, 16], "data": [0.5] * 32}, GOOD1]), {}, 400),
    ("data count mismatch", "add_sub", _body([{**GOOD, "data": [0.5] * 15}, GOOD1]), {}, 400),
    ("strings as FP32", "add_sub", _body([{**GOOD, "data": ["a"] * 16}, GOOD1]), {}, 400),
    ("negative dim", "add_sub", _body([{**GOOD, "shape": [-1, 16]}, GOOD1]), {}, 400),
    ("huge declared shape", "add_sub", _body([{**GOOD, "shape": [1, 10**12]}, GOOD1]), {}, 400),
    ("huge binary shape", "add_sub", orjson.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2**31, 2**31], "parameters": {"binary_data_size": 4}}]}) + b"\0" * 4, {"inference-header-content-length": None}, 400),
    ("binary sizes short", "add_sub", BIN_HEADER + b"\0" * 100, {"inference-header-content-length": None}, 400),
    ("binary sizes long", "add_sub", BIN_HEADER + b"\0" * 200, {"inference-header-content-length": None}, 400),
    ("header length past body", "add_sub", BIN_HEADER, {"inference-header-content-length": "999999"}, 400),
    ("header length not a number", "add_sub", BIN_HEADER, {"inference-header-content-length": "abc"}, 400),
    ("bad BYTES encoding", "add_sub", orjson.dumps({"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]}) + struct.pack("<I", 50) + b"ab", {"inference-header-content-length": None}, 400),
    ("unknown output", "add_sub", _body([GOOD, GOOD1], outputs=[{"name": "NOPE"}]), {}, 400),
    ("bad timeout", "add_sub", _body([GOOD, GOOD1], parameters={"timeout": "soon"}), {}, 400),
    ("bad id", "add_sub", _body([GOOD, GOOD1], id=5), {}, 400),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.conftest import ServerProcess

    repo = add_sub_repo(tmp_path_factory.mktemp("repo"))
    s = ServerProcess(["serve", str(repo)])
    s.wait_ready()
    yield s
    s.terminate()


@pytest.mark.parametrize("case,path,body,headers,status", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_request_gets_error_body(server, case, path, body, headers, status):
    headers = dict(headers)
    if headers.get("inference-header-content-length", "") is None:
        headers["inference-header-content-length"] = str(body.index(b"}]}") + 3)
    r = httpx.post(f"http://{server.url}/v2/models/{path}/infer", content=body, headers=headers, timeout=10)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"]


def test_oversized_body_is_rejected(tmp_path, start_server):
    repo = add_sub_repo(tmp_path)
    s = start_server(["serve", str(repo)], env={"KUBEINFER_MAX_BODY_BYTES": "1000"})
    r = httpx.post(f"http://{s.url}/v2/models/add_sub/infer", content=_body([GOOD, GOOD1]) + b" " * 2000)
    assert r.status_code == 413 and "exceeds" in r.json()["error"]


def test_server_healthy_after_the_corpus(server):
    for case, path, body, headers, _ in CORPUS:
        headers = {k: v for k, v in headers.items() if v is not None}
        httpx.post(f"http://{server.url}/v2/models/{path}/infer", content=body, headers=headers)
    assert httpx.get(f"http://{server.url}/v2/health/ready").status_code == 200
    r = httpx.post(f"http://{server.url}/v2/models/add_sub/infer", content=_body([GOOD, GOOD1]))
    assert r.status_code == 200
    assert r.json()["outputs"][0]["data"] == [1.0] * 16
