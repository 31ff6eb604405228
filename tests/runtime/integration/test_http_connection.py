"""The infer route over real connections: a client that goes away while its request waits
cancels it (it never executes), and replies keep HTTP/1.1's rules — keep-alive,
``Connection: close``, HTTP/1.0, pipelined requests answered in order — whichever way the
reply is written (one write under uvicorn's httptools protocol)."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson

from tests.runtime.models import Held

def _body(value: float) -> bytes:
    return orjson.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [value] * 16}]})


def _stats(server) -> dict:
    return httpx.get(f"http://{server.url}/v2/models/held/stats").json()["model_stats"][0]


def _metric(server, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    line = next(x for x in text.splitlines() if x.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


def _until(check, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _request(path: bytes, body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (
        b"POST " + path + b" HTTP/" + version + b"\r\nhost: x\r\ncontent-type: application/json\r\n"
        + extra + b"content-length: %d\r\n\r\n" % len(body) + body
    )


def _read_reply(sock: socket.socket, buf: bytearray) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One HTTP response from ``sock`` (``buf`` keeps what belongs to the next one)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a reply: {bytes(buf)!r}"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines)}
    length = int(headers[b"content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        rest += chunk
    buf[:] = rest[length:]
    return status, headers, rest[:length]


def test_a_request_whose_client_disconnects_while_queued_never_executes(tmp_path, start_server):
    held = Held(tmp_path)
    server = start_server(["serve", str(held.repo)])
    held.started()
    url = f"http://{server.url}/v2/models/held/infer"
    held.gate.touch()
    with ThreadPoolExecutor(2) as pool:
        blockers = [pool.submit(httpx.post, url, content=_body(v), timeout=30) for v in (0.5, 0.25)]
        _until(lambda: sorted(held.executed()) == ["0.25", "0.5"], "both instances not held")
        with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
            sock.sendall(_request(b"/v2/models/held/infer", _body(7.0)))
            _until(lambda: _metric(server, "nv_inference_pending_request_count") == 1, "not queued")
        # the connection is gone: the queued request is cancelled at once (both instances
        # are still held, so it cannot have executed)
        _until(lambda: _stats(server)["inference_stats"]["fail"]["count"] == 1, "not cancelled")
        assert _metric(server, "nv_inference_pending_request_count") == 0
        held.gate.unlink()
        assert [f.result().status_code for f in blockers] == [200, 200]
    assert httpx.post(url, content=_body(2.0)).status_code == 200  # the server serves on
    assert sorted(held.executed()) == ["0.25", "0.5", "2.0"]  # the abandoned one never executed
    assert _stats(server)["inference_stats"]["success"]["count"] == 3


def test_replies_keep_http_connection_semantics(add_sub_server):
    path = b"/v2/models/add_sub/infer"
    body = orjson.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16},
        {"name": "INPUT1", "datatype": "FP32", "shape": [1, 16], "data": [2.0] * 16},
    ]})
    bad = b'{"inputs": []}'
    with socket.create_connection(("127.0.0.1", add_sub_server.http_port), timeout=10) as sock:
        buf = bytearray()
        # keep-alive: three requests one after another on one connection, then three
        # pipelined in one write (a good one, a bad one, a good one) answered in order
        for _ in range(3):
            sock.sendall(_request(path, body))
            status, headers, reply = _read_reply(sock, buf)
            assert status == b"HTTP/1.1 200 OK"
            assert headers[b"content-type"] == b"application/json"
            assert b"date" in headers and b"connection" not in headers
            assert orjson.loads(reply)["outputs"][0]["data"] == [3.0] * 16
        sock.sendall(_request(path, body) + _request(path, bad) + _request(path, body, b"x-n: 3\r\n"))
        replies = [_read_reply(sock, buf) for _ in range(3)]
        assert [r[0] for r in replies] == [b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 200 OK"]
        assert "error" in orjson.loads(replies[1][2])
        # "Connection: close": the reply says so and the server closes
        sock.sendall(_request(path, body, b"connection: close\r\n"))
        status, headers, _ = _read_reply(sock, buf)
        assert status == b"HTTP/1.1 200 OK" and headers[b"connection"] == b"close"
        assert sock.recv(1) == b""
    # HTTP/1.0 without keep-alive: answered, then closed
    with socket.create_connection(("127.0.0.1", add_sub_server.http_port), timeout=10) as sock:
        sock.sendall(_request(path, body, version=b"1.0"))
        buf = bytearray()
        status, headers, reply = _read_reply(sock, buf)
        assert status == b"HTTP/1.1 200 OK" and headers[b"connection"] == b"close"
        assert orjson.loads(reply)["outputs"][0]["name"] == "OUTPUT0"
        assert sock.recv(1) == b""
