"""Header floods and slow clients against a real ``kubeinfer serve`` (bounded, loopback).

Serves the given model, then (1) ``--floods`` connections send header bytes (half as 1 KiB header
lines, half as one endless header line) until the server answers or closes, at most
``--flood-mib`` each, and the server's RSS is read before and after; (2) ``--slow``
connections send half a request and stop, and the time until the server closed each one
is measured. Prints the figures as JSON.

    .venv/bin/python bench/hostile_clients.py examples/models --model mlp
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _drain(sock: socket.socket) -> bytes:
    out = []
    try:
        while chunk := sock.recv(65536):
            out.append(chunk)
    except OSError:
        pass
    return b"".join(out)


def flood(port: int, model: str, lines: bool, limit: int) -> tuple[int, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\n".encode() + (b"" if lines else b"X-Long: "))
    piece = (b"X-Pad: " + b"a" * 1017 + b"\r\n") * 64 if lines else b"a" * 65536
    sent = 0
    try:
        while sent < limit:
            sock.sendall(piece)
            sent += len(piece)
    except OSError:
        pass
    answer = _drain(sock)
    sock.close()
    return sent, answer[:12]


def slow(port: int, model: str) -> float:
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    start = time.monotonic()
    sock.sendall(f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
    _drain(sock)
    sock.close()
    return time.monotonic() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repository")
    p.add_argument("--model", required=True)
    p.add_argument("--floods", type=int, default=4)
    p.add_argument("--flood-mib", type=int, default=128)
    p.add_argument("--slow", type=int, default=200)
    p.add_argument("--header-timeout", default="2")
    args = p.parse_args()
    port = _free_port()
    env = {**os.environ, "KUBEINFER_HEADER_TIMEOUT_SECONDS": args.header_timeout}
    server = subprocess.Popen(
        [sys.executable, "-m", "kubeinfer.cli", "serve", args.repository, "--model", args.model,
         "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", "0", "--metrics-port", "0",
         "--log-level", "warning"], env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        before = _rss_mib(server.pid)
        with ThreadPoolExecutor(args.floods) as pool:
            floods = list(pool.map(lambda i: flood(port, args.model, i % 2 == 0, args.flood_mib << 20), range(args.floods)))
        after = _rss_mib(server.pid)
        with ThreadPoolExecutor(max(args.slow, 1)) as pool:
            closed = sorted(pool.map(lambda _: slow(port, args.model), range(args.slow)))
        fds = len(os.listdir(f"/proc/{server.pid}/fd"))
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps({
        "flood_connections": args.floods,
        "flood_bytes_sent_each_mib": [round(s / 2**20, 2) for s, _ in floods],
        "flood_answers": sorted({a.decode(errors="replace") for _, a in floods}),
        "rss_before_mib": round(before, 1), "rss_after_flood_mib": round(after, 1),
        "slow_connections": args.slow, "header_timeout_s": float(args.header_timeout),
        "slow_closed_after_s": {"min": round(closed[0], 2), "max": round(closed[-1], 2)} if closed else None,
        "server_fds_after": fds,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
