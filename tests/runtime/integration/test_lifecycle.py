"""Readiness after warm-up, and SIGTERM draining without losing accepted requests."""

from __future__ import annotations

import asyncio
import re
import signal
import time

import httpx
import numpy as np

from tests.runtime.models import SLOW_CONFIG, slow_mlp, write_repo

WARMUP = """
model_warmup [{
  name: "long"
  batch_size: 16
  count: 50
  inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 512 ] random_data: true } }
}]
"""


def test_live_before_ready_and_ready_only_after_warmup(tmp_path, start_server):
    repo = write_repo(tmp_path / "repo", "slow", SLOW_CONFIG + WARMUP, slow_mlp)
    server = start_server(["serve", str(repo)], ready=False)
    base = f"http://{server.url}"
    deadline = time.monotonic() + 60
    seen_live_not_ready = False
    while time.monotonic() < deadline:
        try:
            # asked in this order: readiness only ever turns on, so a health answer of 503
            # means the model's own answer just before was 503 too
            live = httpx.get(f"{base}/v2/health/live", timeout=1).status_code
            model_ready = httpx.get(f"{base}/v2/models/slow/ready", timeout=1).status_code
            ready = httpx.get(f"{base}/v2/health/ready", timeout=1).status_code
        except httpx.HTTPError:
            time.sleep(0.02)
            continue
        if live == 200 and ready == 503:
            seen_live_not_ready = True
            assert model_ready == 503
        if ready == 200:
            break
        time.sleep(0.02)
    assert seen_live_not_ready, "warm-up of 50 batches should leave a window: live, not ready"
    assert "warm-up sample 'long' ran" in server.log()
    assert httpx.get(f"{base}/v2/models/slow/ready").status_code == 200


async def _load(base: str, n: int, started: asyncio.Event) -> list[int]:
    body = {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 512], "data": np.ones(512).tolist()}]
    }
    codes: list[int] = []
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=16)) as client:

        async def one() -> None:
            try:
                r = await client.post("/v2/models/slow/infer", json=body)
                codes.append(r.status_code)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                # refused, or an idle keep-alive connection closed by the server as it
                # stopped accepting: allowed after SIGTERM if the server never saw the
                # request, which the final count in its log proves below
                codes.append(-1)

        async def worker() -> None:
            while len(codes) < n:
                started.set()
                await one()

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(16))), 60)
    return codes


async def test_sigterm_drains_accepted_requests(tmp_path, start_server):
    repo = write_repo(tmp_path / "repo", "slow", SLOW_CONFIG, slow_mlp)
    server = start_server(["serve", str(repo), "--shutdown-delay-seconds", "1"])
    base = f"http://{server.url}"
    started = asyncio.Event()
    load = asyncio.create_task(_load(base, 400, started))
    await started.wait()
    await asyncio.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    # during the shutdown delay readiness is already off while requests are still served
    await asyncio.sleep(0.3)
    async with httpx.AsyncClient(base_url=base) as c:
        assert (await c.get("/v2/health/ready")).status_code == 503
    codes = await load
    assert server.proc.wait(30) == 0
    answered = [c for c in codes if c != -1]
    assert answered, "some requests must have been served"
    # every answer was a success, and the server's own count of what it executed matches
    # what clients received: no accepted request was lost
    assert set(answered) == {200}, sorted(set(codes))
    match = re.search(r"stopped: (\d+) requests succeeded, (\d+) failed", server.log())
    assert match, server.log()
    assert int(match.group(1)) == len(answered)
    assert int(match.group(2)) == 0
