"""gRPC clients that give up, and streams open at shutdown, against a real server.

A client deadline is the request's timeout: a request queued behind a busy instance
whose client stopped waiting is never executed (the statistics prove it). An open
``ModelStreamInfer`` stream does not hold SIGTERM for the whole grace period: its
in-flight requests are answered, then the stream ends and the process exits.
"""

from __future__ import annotations

import asyncio
import signal
import time

import numpy as np
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from tests.runtime.models import SLOW_CONFIG, Held, slow_mlp, write_repo


def _input(batch: int) -> list:
    inp = aioclient.InferInput("INPUT0", [batch, 512], "FP32")
    inp.set_data_from_numpy(np.ones((batch, 512), dtype=np.float32))
    return [inp]


async def test_requests_whose_client_deadline_passed_are_never_executed(tmp_path, start_server):
    held = Held(tmp_path)
    server = start_server(["serve", str(held.repo)])
    held.started()
    held.gate.touch()
    async with aioclient.InferenceServerClient(server.grpc_url) as client:
        # both instances busy (held at the gate); late requests queue behind them
        blockers = [asyncio.ensure_future(client.infer("held", _held_input(v), client_timeout=60)) for v in (0.5, 0.25)]
        while sorted(held.executed()) != ["0.25", "0.5"]:
            await asyncio.sleep(0.005)
        hurried = [client.infer("held", _held_input(7.0), client_timeout=0.2) for _ in range(20)]
        outcomes = await asyncio.gather(*hurried, return_exceptions=True)
        # the server gave up on them too (they left the queue), while the gate still holds
        while (await client.get_inference_statistics("held")).model_stats[0].inference_stats.fail.count < 20:
            await asyncio.sleep(0.005)
        held.gate.unlink()
        await asyncio.gather(*blockers)
        stats = (await client.get_inference_statistics("held")).model_stats[0]
    gave_up = [o for o in outcomes if isinstance(o, InferenceServerException)]
    assert len(gave_up) == 20, outcomes
    assert {str(o.status()) for o in gave_up} <= {"StatusCode.DEADLINE_EXCEEDED"}
    # only the blockers ran; the 20 late ones failed without executing
    assert sorted(held.executed()) == ["0.25", "0.5"]
    assert stats.inference_stats.success.count == 2
    assert stats.inference_stats.fail.count == 20


def _held_input(value: float) -> list:
    inp = aioclient.InferInput("INPUT0", [1, 16], "FP32")
    inp.set_data_from_numpy(np.full((1, 16), value, dtype=np.float32))
    return [inp]


async def test_open_stream_does_not_hold_shutdown(tmp_path, start_server):
    repo = write_repo(tmp_path / "repo", "slow", SLOW_CONFIG, slow_mlp)
    server = start_server(["serve", str(repo)])
    answers: asyncio.Queue = asyncio.Queue()
    more = asyncio.Event()

    async def requests():
        for i in range(4):
            yield {"model_name": "slow", "inputs": _input(16), "request_id": str(i)}
        await more.wait()  # the client keeps its stream open and idle

    async with aioclient.InferenceServerClient(server.grpc_url) as client:

        async def read() -> None:
            async for result, error in client.stream_infer(requests()):
                await answers.put((result, error))

        reader = asyncio.ensure_future(read())
        first = await asyncio.wait_for(answers.get(), 30)  # work is in flight on the stream
        server.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        exit_code = await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 20)
        took = time.monotonic() - sent
        await asyncio.wait_for(reader, 10)  # the server ended the stream
        more.set()
    rest = [answers.get_nowait() for _ in range(answers.qsize())]
    assert exit_code == 0
    assert took < 10, f"shutdown took {took:.1f}s with an open stream"
    # every request sent on the stream before SIGTERM was answered
    assert [e for _, e in [first, *rest]] == [None] * 4
    assert sorted(r.get_response().id for r, _ in [first, *rest]) == ["0", "1", "2", "3"]
