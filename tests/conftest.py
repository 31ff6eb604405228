"""Shared test helpers: free ports and real ``kubeinfer serve`` processes on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A real runtime process started exactly as a user would start it."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, http_port: int | None = None) -> None:
        self.http_port = http_port or free_port()
        self.metrics_port = free_port()
        self.grpc_port = free_port()
        self.url = f"127.0.0.1:{self.http_port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        cmd = [
            sys.executable, "-m", "kubeinfer.cli", *args,
            "--host", "127.0.0.1",
            "--http-port", str(self.http_port),
            "--metrics-port", str(self.metrics_port),
            "--grpc-port", str(self.grpc_port),
        ]
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"kubeinfer-test-{self.http_port}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"http://{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_server():
    """Factory: start ``kubeinfer <args>`` and wait until ready; stopped at teardown.
    ``http_port`` fixes the HTTP port (to start a server again where it was)."""
    servers: list[ServerProcess] = []

    def start(
        args: list[str], env: dict[str, str] | None = None, ready: bool = True, http_port: int | None = None
    ) -> ServerProcess:
        server = ServerProcess(args, env, http_port)
        servers.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for s in servers:
        s.terminate()
