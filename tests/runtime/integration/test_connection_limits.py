"""Bounded resources per HTTP connection against a real server: a header flood gets 431
with the server's memory flat, slow clients are cut off and their descriptors freed."""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest

from tests.runtime.models import add_sub_repo

REQUEST_LINE = b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
BODY = orjson.dumps({"inputs": [
    {"name": n, "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16} for n in ("INPUT0", "INPUT1")
]})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.conftest import ServerProcess

    env = {"KUBEINFER_HEADER_TIMEOUT_SECONDS": "1", "KUBEINFER_BODY_TIMEOUT_SECONDS": "1"}
    s = ServerProcess(["serve", str(add_sub_repo(tmp_path_factory.mktemp("repo")))], env)
    s.wait_ready()
    yield s
    s.terminate()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.http_port), timeout=10)


def _read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _flood(server, line_endings: bool, limit: int = 64 * 1024 * 1024) -> tuple[int, bytes]:
    """Send header bytes until the server answers or closes; (bytes sent, its answer)."""
    sock = _connect(server)
    sent = 0
    piece = (b"X-Pad: " + b"a" * 1000 + b"\r\n") if line_endings else b"a" * 1024
    sock.sendall(REQUEST_LINE + (b"" if line_endings else b"X-Long: "))
    try:
        while sent < limit:
            sock.sendall(piece * 16)
            sent += len(piece) * 16
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _read_response(sock)
    sock.close()
    return sent, answer


def test_header_flood_gets_431_and_memory_stays_flat(server):
    rss_before = _rss_kib(server.proc.pid)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: _flood(server, line_endings=i % 2 == 0), range(4)))
    grew_mib = (_rss_kib(server.proc.pid) - rss_before) / 1024
    for sent, answer in results:
        assert sent < 8 * 1024 * 1024, "the server kept reading an endless header"
        if answer:  # the answer may be lost when the server closes while we still send
            assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
            assert b'"error":"request headers exceed 32768 bytes"' in answer
    assert any(answer for _, answer in results)
    assert grew_mib < 24, f"RSS grew by {grew_mib:.1f} MiB under a header flood"
    assert httpx.post(f"http://{server.url}/v2/models/add_sub/infer", content=BODY).status_code == 200


def test_headers_just_under_the_limit_are_served(server):
    r = httpx.post(
        f"http://{server.url}/v2/models/add_sub/infer", content=BODY, headers={"X-Pad": "a" * 30_000}
    )
    assert r.status_code == 200, r.text
    r = httpx.post(
        f"http://{server.url}/v2/models/add_sub/infer", content=BODY, headers={"X-Pad": "a" * 40_000}
    )
    assert r.status_code == 431 and "exceed" in r.json()["error"]


def _wait_fds(pid: int, at_most: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while (n := _fds(pid)) > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


@pytest.mark.parametrize("phase", ["headers", "body", "silent"])
def test_slow_clients_are_cut_off_and_their_fds_freed(server, phase):
    pid = server.proc.pid
    baseline = _fds(pid)
    start = time.monotonic()
    socks = [_connect(server) for _ in range(100)]
    for s in socks:
        if phase == "headers":
            s.sendall(REQUEST_LINE + b"X-Slow: ")
        elif phase == "body":
            s.sendall(REQUEST_LINE + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY[:10])
    answers = [_read_response(s) for s in socks]
    elapsed = time.monotonic() - start
    for s in socks:
        s.close()
    assert 0.9 < elapsed < 8, f"slow connections closed after {elapsed:.1f}s (timeout 1s)"
    if phase == "body":
        assert all(a == b"" for a in answers)  # closed without an answer
    else:
        assert all(a.startswith(b"HTTP/1.1 408 ") and b'"error"' in a for a in answers), answers[0]
    assert _wait_fds(pid, baseline + 2) <= baseline + 2
    assert httpx.post(f"http://{server.url}/v2/models/add_sub/infer", content=BODY).status_code == 200


def test_kept_alive_connection_serves_many_requests(server):
    with httpx.Client(base_url=f"http://{server.url}") as client:
        for _ in range(20):
            assert client.post("/v2/models/add_sub/infer", content=BODY).status_code == 200
        assert client.get("/v2/health/ready").status_code == 200


def test_malformed_http_gets_a_json_400(server):
    sock = _connect(server)
    sock.sendall(b"POST /v2/models/add_sub/infer HTTP/1.1\r\nContent-Length: x\r\n\r\n")
    answer = _read_response(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400 ") and b'"error":"invalid HTTP request' in answer
