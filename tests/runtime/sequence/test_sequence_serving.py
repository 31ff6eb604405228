"""Stateful models served by a real ``kubeinfer serve`` process, driven by tritonclient.

Many sequences interleave concurrently (more than the model has slots, so most wait in the
backlog), each checked step by step against its own running sum; error cases are checked
with their HTTP status codes.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from tests.runtime.sequence.models import accumulator_repo, config

SEQUENCES = 40
STEPS = 10


def _value(sid: int, step: int) -> float:
    return float((sid * 7 + step * 3) % 11 + 1)


def _expected(sid: int) -> list[float]:
    return np.cumsum([_value(sid, i) for i in range(STEPS)]).tolist()


def _http_input(module, value: float):
    x = module.InferInput("INPUT", [1, 1], "FP32")
    x.set_data_from_numpy(np.array([[value]], np.float32))
    return [x]


async def _run_sequences_http(url: str, ids: list) -> dict:
    client = httpaio.InferenceServerClient(url, conn_limit=SEQUENCES)
    try:
        async def sequence(sid) -> list[float]:
            sums = []
            for i in range(STEPS):
                r = await client.infer(
                    "acc", _http_input(httpaio, _value(sid, i)), sequence_id=sid,
                    sequence_start=i == 0, sequence_end=i == STEPS - 1,
                )
                sums.append(float(r.as_numpy("OUTPUT")[0, 0]))
            return sums

        results = await asyncio.wait_for(asyncio.gather(*(sequence(s) for s in ids)), 120)
        return dict(zip(ids, results))
    finally:
        await client.close()


@pytest.mark.parametrize(
    "strategy",
    ["direct { }", "oldest { max_candidate_sequences: 6 preferred_batch_size: [ 2, 4 ] "
     "max_queue_delay_microseconds: 500 }"],
    ids=["direct", "oldest"],
)
def test_many_interleaved_sequences_over_http(tmp_path, start_server, strategy):
    repo = accumulator_repo(tmp_path / "repo", config(strategy, max_batch_size=4, instances=2))
    server = start_server(["serve", str(repo), "--model", "acc"])
    ids = list(range(1, SEQUENCES + 1))
    got = asyncio.run(_run_sequences_http(server.url, ids))
    for sid in ids:
        assert got[sid] == _expected(sid), sid
    stats = httpx.get(f"http://{server.url}/v2/models/acc/stats").json()["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == SEQUENCES * STEPS
    assert stats["inference_stats"]["fail"]["count"] == 0
    # sequences shared batches: fewer executions than requests
    assert stats["execution_count"] < SEQUENCES * STEPS


def test_many_interleaved_sequences_over_grpc(tmp_path, start_server):
    repo = accumulator_repo(tmp_path / "repo", config(max_batch_size=8))
    server = start_server(["serve", str(repo), "--model", "acc"])

    async def run() -> list[list[float]]:
        client = grpcaio.InferenceServerClient(server.grpc_url)
        try:
            async def sequence(sid: int) -> list[float]:
                sums = []
                for i in range(STEPS):
                    x = grpcaio.InferInput("INPUT", [1, 1], "FP32")
                    x.set_data_from_numpy(np.array([[_value(sid, i)]], np.float32))
                    r = await client.infer("acc", [x], sequence_id=sid,
                                           sequence_start=i == 0, sequence_end=i == STEPS - 1)
                    assert int(r.as_numpy("CORRID_OUT")[0, 0]) == sid
                    sums.append(float(r.as_numpy("OUTPUT")[0, 0]))
                return sums

            return await asyncio.wait_for(
                asyncio.gather(*(sequence(s) for s in range(1, SEQUENCES + 1))), 120
            )
        finally:
            await client.close()

    for sid, sums in zip(range(1, SEQUENCES + 1), asyncio.run(run())):
        assert sums == _expected(sid), sid


@pytest.fixture
def acc(tmp_path, start_server):
    """One slot; idle sequences released after 300 ms."""
    repo = accumulator_repo(tmp_path / "repo", config(max_batch_size=1, idle_us=300_000))
    return start_server(["serve", str(repo), "--model", "acc"])


@pytest.fixture
def acc_patient(tmp_path, start_server):
    repo = accumulator_repo(tmp_path / "repo", config(max_batch_size=1, idle_us=30_000_000))
    return start_server(["serve", str(repo), "--model", "acc"])


def _post(server, params: dict, inputs: list | None = None) -> httpx.Response:
    body = {
        "parameters": params,
        "inputs": inputs or [{"name": "INPUT", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}],
    }
    return httpx.post(f"http://{server.url}/v2/models/acc/infer", json=body, timeout=10)


def test_sequence_errors_over_http(acc_patient):
    acc = acc_patient

    def check(params, fragment, status=400, inputs=None):
        r = _post(acc, params, inputs)
        assert r.status_code == status, r.text
        assert fragment in r.json()["error"], r.json()

    check({}, "non-zero or non-empty sequence_id")
    check({"sequence_id": 0, "sequence_start": True}, "non-zero or non-empty sequence_id")
    check({"sequence_id": 5}, "must specify the START flag")
    check({"sequence_id": "abc", "sequence_start": True}, "integer sequence ids")
    check({"sequence_id": 5, "sequence_start": "yes"}, "'sequence_start' must be a boolean")
    control = [{"name": "INPUT", "shape": [1, 1], "datatype": "FP32", "data": [1.0]},
               {"name": "START", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]
    check({"sequence_id": 5, "sequence_start": True}, "has no input START", inputs=control)
    two = [{"name": "INPUT", "shape": [2, 1], "datatype": "FP32", "data": [1.0, 2.0]}]
    check({"sequence_id": 5, "sequence_start": True}, "batch size", inputs=two)

    assert _post(acc, {"sequence_id": 5, "sequence_start": True}).status_code == 200
    check({"sequence_id": 5, "sequence_start": True}, "already in progress")
    r = _post(acc, {"sequence_id": 5, "sequence_end": True})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [2.0]
    check({"sequence_id": 5}, "must specify the START flag")


def test_idle_sequence_is_released_for_a_waiting_one(acc):
    client = httpclient.InferenceServerClient(acc.url)
    try:
        out = client.infer("acc", _http_input(httpclient, 3.0), sequence_id=1, sequence_start=True)
        assert out.as_numpy("OUTPUT")[0, 0] == 3.0
        # one slot: sequence 2 waits in the backlog until sequence 1 is idle for 300 ms
        out = client.infer("acc", _http_input(httpclient, 4.0), sequence_id=2, sequence_start=True)
        assert out.as_numpy("OUTPUT")[0, 0] == 4.0
        with pytest.raises(InferenceServerException, match="START flag") as err:
            client.infer("acc", _http_input(httpclient, 1.0), sequence_id=1)
        assert err.value.status() == "400"
    finally:
        client.close()


def test_the_accumulator_example_serves(start_server):
    from pathlib import Path
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, str(root / "examples" / "build.py"), "accumulator"], check=True)
    server = start_server(["serve", str(root / "examples" / "models"), "--model", "accumulator"])
    client = httpclient.InferenceServerClient(server.url)
    try:
        meta = client.get_model_metadata("accumulator")
        assert [i["name"] for i in meta["inputs"]] == ["INPUT"]
        sums = []
        for i, v in enumerate([1.0, 2.0, 3.0, 4.0]):
            r = client.infer("accumulator", _http_input(httpclient, v), sequence_id="example",
                             sequence_start=i == 0, sequence_end=i == 3)
            sums.append(float(r.as_numpy("OUTPUT")[0, 0]))
        assert sums == [1.0, 3.0, 6.0, 10.0]
    finally:
        client.close()
