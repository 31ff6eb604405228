"""``kubeinfer serve --workers 2``: two real serving processes sharing the ports, seen by
clients as one pod (tritonclient over HTTP and gRPC, Prometheus on the metrics port).

The model (Python backend) answers each request with the pid of the worker that ran it,
its warm-up waits for ``warm-<worker>`` in the gate directory (so the test decides when
each worker is warmed up), and while ``hold`` exists each execution waits, after leaving
a ``started-*`` file (so the test can hold requests executing and queued).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.runtime.integration.test_lifecycle import _load
from tests.runtime.models import SLOW_CONFIG, slow_mlp, write_repo

CONFIG = """
name: "whoami"
backend: "python"
max_batch_size: 1
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "PID" data_type: TYPE_INT64 dims: [ 1 ] } ]
dynamic_batching { }
instance_group [ { count: 2 kind: KIND_CPU } ]
parameters { key: "gates" value: { string_value: "%s" } }
"""

MODEL = '''
import json
import os
import time
import uuid

import numpy as np
import triton_python_backend_utils as pb_utils


def _wait(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


class TritonPythonModel:
    def initialize(self, args):
        gates = json.loads(args["model_config"])["parameters"]["gates"]["string_value"]
        self.warm = os.path.join(gates, "warm-" + os.environ.get("KUBEINFER_WORKER", "0"))
        self.hold = os.path.join(gates, "hold")
        self.gates = gates

    def execute(self, requests):
        _wait(lambda: os.path.exists(self.warm), 60)
        if os.path.exists(self.hold):
            open(os.path.join(self.gates, f"started-{uuid.uuid4().hex}"), "w").close()
            _wait(lambda: not os.path.exists(self.hold), 30)
        out = []
        for r in requests:
            n = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy().shape[0]
            pid = np.full((n, 1), os.getpid(), dtype=np.int64)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("PID", pid)]))
        return out
'''


def _repo(tmp_path, *, warm: bool = True):
    gates = tmp_path / "gates"
    gates.mkdir()
    model = tmp_path / "repo" / "whoami"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(CONFIG % gates)
    (model / "1" / "model.py").write_text(MODEL)
    if warm:
        for i in (0, 1):
            (gates / f"warm-{i}").touch()
    return tmp_path / "repo", gates


def _worker_pids(server, n: int = 2) -> list[int]:
    match = re.search(r"started %d workers: pids ([\d, ]+)" % n, server.log())
    assert match, server.log()
    return [int(p) for p in match.group(1).split(", ")]


def _http_infer(server) -> int:
    """One request on a new connection (the kernel picks a worker per connection)."""
    client = httpclient.InferenceServerClient(server.url)
    try:
        inp = httpclient.InferInput("INPUT0", [1, 1], "FP32")
        inp.set_data_from_numpy(np.ones((1, 1), np.float32))
        return int(client.infer("whoami", [inp]).as_numpy("PID")[0, 0])
    finally:
        client.close()


def _grpc_infer(server) -> int:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        inp = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
        inp.set_data_from_numpy(np.ones((1, 1), np.float32))
        return int(client.infer("whoami", [inp]).as_numpy("PID")[0, 0])
    finally:
        client.close()


def _metric(server, name: str) -> float:
    """The first sample of ``name`` (a family name, or a sample's start up to a label)."""
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text  # a new connection
    start = name if "{" in name else name + "{"
    line = next(x for x in text.splitlines() if x.startswith(start))
    return float(line.rsplit(" ", 1)[1])


def test_requests_spread_over_workers_and_statistics_are_the_pods(tmp_path, start_server):
    repo, _ = _repo(tmp_path)
    server = start_server(["serve", str(repo), "--workers", "2"])
    workers = _worker_pids(server)
    pids = [_http_infer(server) for _ in range(24)] + [_grpc_infer(server) for _ in range(12)]
    assert set(pids) == set(workers), "both workers serve, and only they do"
    sent = len(pids)
    # whichever worker answers, the statistics are the sum over both
    for _ in range(6):
        c = httpclient.InferenceServerClient(server.url)
        stats = c.get_inference_statistics("whoami")["model_stats"][0]
        c.close()
        assert stats["inference_stats"]["success"]["count"] == sent
        assert stats["inference_count"] == sent
        assert sum(b["compute_infer"]["count"] for b in stats["batch_stats"]) == stats["execution_count"]
    for _ in range(4):
        c = grpcclient.InferenceServerClient(server.grpc_url)
        stats = c.get_inference_statistics("whoami", as_json=True)["model_stats"][0]
        c.close()
        assert int(stats["inference_stats"]["success"]["count"]) == sent
    for _ in range(4):
        assert _metric(server, "nv_inference_request_success") == sent
        assert _metric(server, "kubeinfer_request_duration_seconds_count") == sent
        assert _metric(server, 'kubeinfer_request_duration_seconds_bucket{le="+Inf"') == sent


def test_pending_requests_are_summed_over_workers(tmp_path, start_server):
    repo, gates = _repo(tmp_path)
    server = start_server(["serve", str(repo), "--workers", "2"])
    n = 16
    (gates / "hold").touch()

    async def send() -> list[int]:
        async def one() -> int:
            async with httpx.AsyncClient(timeout=60) as c:  # a connection each
                r = await c.post(
                    f"http://{server.url}/v2/models/whoami/infer",
                    json={"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1]}]},
                )
                return r.json()["outputs"][0]["data"][0]

        return await asyncio.gather(*(one() for _ in range(n)))

    async def scenario() -> list[int]:
        requests = asyncio.ensure_future(send())
        # each worker has two executions held (two instances) and the rest queued: the pod's
        # pending count is every request that is not executing, whichever worker answers
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            started = len(list(gates.glob("started-*")))
            pending = await loop.run_in_executor(None, _metric, server, "nv_inference_pending_request_count")
            if pending + started == n:
                break
            await asyncio.sleep(0.02)
        for _ in range(4):
            pending = await loop.run_in_executor(None, _metric, server, "nv_inference_pending_request_count")
            assert pending + len(list(gates.glob("started-*"))) == n
        (gates / "hold").unlink()
        return await requests

    pids = asyncio.run(scenario())
    assert len(pids) == n
    assert _metric(server, "nv_inference_pending_request_count") == 0


def test_pod_is_ready_only_when_every_worker_warmed_up(tmp_path, start_server):
    repo, gates = _repo(tmp_path, warm=False)
    server = start_server(["serve", str(repo), "--workers", "2"], ready=False)
    (gates / "warm-0").touch()
    deadline = time.monotonic() + 60
    while not re.search(r"\[worker 0 pid \d+\] model 'whoami' is ready", server.log()):
        assert time.monotonic() < deadline, server.log()
        assert server.proc.poll() is None, server.log()
        time.sleep(0.02)
    # worker 0 is warmed up, worker 1 is not: whichever answers, the pod is not ready
    for _ in range(8):
        assert httpx.get(f"http://{server.url}/v2/health/ready").status_code == 503
        assert httpx.get(f"http://{server.url}/v2/models/whoami/ready").status_code == 503
        c = grpcclient.InferenceServerClient(server.grpc_url)
        assert not c.is_server_ready()
        assert not c.is_model_ready("whoami")
        c.close()
    (gates / "warm-1").touch()
    server.wait_ready()
    for _ in range(8):
        assert httpx.get(f"http://{server.url}/v2/health/ready").status_code == 200
        c = grpcclient.InferenceServerClient(server.grpc_url)
        assert c.is_server_ready() and c.is_model_ready("whoami")
        c.close()


async def test_sigterm_under_load_loses_nothing_across_workers(tmp_path, start_server):
    repo = write_repo(tmp_path / "repo", "slow", SLOW_CONFIG, slow_mlp)
    server = start_server(["serve", str(repo), "--workers", "2", "--shutdown-delay-seconds", "3"])
    base = f"http://{server.url}"
    started = asyncio.Event()
    load = asyncio.create_task(_load(base, 400, started))
    await started.wait()
    await asyncio.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)  # within the shutdown delay: the pod is unready, still serving
    for _ in range(2):
        async with httpx.AsyncClient(base_url=base) as c:
            assert (await c.get("/v2/health/ready")).status_code == 503
    codes = await load
    assert server.proc.wait(30) == 0, server.log()
    answered = [c for c in codes if c != -1]
    assert answered and set(answered) == {200}, sorted(set(codes))
    log = server.log()
    per_worker = re.findall(r"\[worker \d pid \d+\] stopped: (\d+) requests succeeded, (\d+) failed", log)
    assert len(per_worker) == 2, log
    assert all(int(ok) > 0 for ok, _ in per_worker), "both workers served"
    assert sum(int(ok) for ok, _ in per_worker) == len(answered)
    total = re.search(r"\[pod\] stopped: 2 workers, (\d+) requests succeeded, (\d+) failed", log)
    assert total and (int(total.group(1)), int(total.group(2))) == (len(answered), 0), log


def test_a_dead_worker_ends_the_pod_with_an_error(tmp_path, start_server):
    repo, _ = _repo(tmp_path)
    server = start_server(["serve", str(repo), "--workers", "2"])
    victim, other = _worker_pids(server)
    os.kill(victim, signal.SIGKILL)
    assert server.proc.wait(30) != 0
    log = server.log()
    assert re.search(rf"worker 0 \(pid {victim}\) exited with status -9 on its own", log), log
    assert re.search(r"\[worker 1 pid \d+\] stopped: \d+ requests succeeded", log), log
    try:
        os.kill(other, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"worker {other} outlived the pod")
