#!/usr/bin/env python3
"""Router overhead: a 3-step chain of the mlp through ``kubeinfer route`` versus the same
three calls made directly by the client, at concurrency 1; and, in the same run, the step
call's transport variants side by side.

    python bench/router_overhead.py [--requests 3000] [--warmup 300] [--no-clients]

Setup (all on loopback, started here, stopped at the end):
* one ``kubeinfer serve`` process with ``mlp64``: the benchmark mlp's topology
  (64 -> 256 -> 256 -> 64, Gemm+Relu, random weights, fixed seed) with a 64-wide output so
  that three of them chain (the benchmark ``mlp`` ends in 10 outputs, which cannot feed its
  own 64-wide input). onnxruntime with one intra-op thread; no dynamic batching, so
  nothing waits for a batch at concurrency 1.
* one ``kubeinfer route`` process: ensemble x -> mlp64 -> mlp64 -> mlp64 -> y (three steps,
  one endpoint).
* the client: one keep-alive ``http.client`` connection per server, pre-encoded binary
  tensor requests (Triton's binary extension both ways), one request at a time.

``direct`` = the three calls from the client, each with the previous output (end-to-end
time of the three); ``router`` = one call to the router. Added per hop =
(p50 router - p50 direct) / 3: the router's own work per step (ingress/egress amortised).

Step client variants (``bench_clients``; skipped with ``--no-clients``): the same three
calls made from one asyncio loop in this process, the way the router makes them, by each
transport in turn, interleaved request by request:

* ``StepClient``: the router's own step client (``kubeinfer.router.client``), end to end
  (encode, call, decode, error mapping);
* ``http1.Pool``: the router's hand-written HTTP/1.1 pool, if this checkout has it;
* ``aiohttp``, ``httpx``: a ``ClientSession`` / ``AsyncClient`` with a keep-alive pool;
* ``grpc.aio``: ``ModelInfer`` on one HTTP/2 channel to the step server's gRPC port, raw
  tensor contents both ways.

The HTTP variants share the runtime's REST codec (``encode_request``/``decode_response``),
so they differ in transport only. Columns: wall time of the three calls, and this
process's CPU time per call (client-side cost; the servers run in their own processes).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MLP64_CONFIG = """name: "mlp64"
platform: "onnxruntime_onnx"
max_batch_size: 32
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 64 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 64 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
parameters { key: "inter_op_thread_count" value: { string_value: "1" } }
"""


def build_mlp64(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    sizes = [64, 256, 256, 64]
    nodes, inits, prev = [], [], "INPUT0"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [helper.make_tensor(f"W{i}", TensorProto.FLOAT, w.shape, w.ravel()),
                  helper.make_tensor(f"B{i}", TensorProto.FLOAT, [b], np.zeros(b, np.float32))]
        out = "OUTPUT0" if i == 2 else f"g{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [out if i == 2 else f"g{i}"]))
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i}"]))
            prev = f"h{i}"
    graph = helper.make_graph(
        nodes, "mlp64",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["B", 64])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["B", 64])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], port: int, log: Path, grpc_port: int = 0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "kubeinfer.cli", *args, "--host", "127.0.0.1", "--http-port", str(port),
           "--metrics-port", "0", "--grpc-port", str(grpc_port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(args)} exited:\n{log.read_text()}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/v2/health/ready")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{' '.join(args)} not ready:\n{log.read_text()}")


def body(name: str, x: np.ndarray, output: str) -> tuple[bytes, dict]:
    raw = x.astype(np.float32).tobytes()
    header = json.dumps({
        "inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape), "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": output, "parameters": {"binary_data": True}}],
    }).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


def post(conn: http.client.HTTPConnection, path: str, payload: bytes, headers: dict) -> np.ndarray:
    conn.request("POST", path, payload, headers)
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise SystemExit(f"{path}: HTTP {r.status}: {data[:300]!r}")
    n = int(r.getheader("Inference-Header-Content-Length"))
    return np.frombuffer(data[n:], dtype=np.float32).reshape(1, -1)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def table(title: str, times: dict[str, list[float]], cpu: dict[str, float] | None = None) -> None:
    print(title)
    print("| path | p50 ms | p90 ms | p99 ms | mean ms |" + (" CPU us/call |" if cpu else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|" if cpu else ""))
    for name, xs in times.items():
        extra = f" {cpu[name]:.0f} |" if cpu else ""
        print(f"| {name} | {pct(xs, 50):.3f} | {pct(xs, 90):.3f} | {pct(xs, 99):.3f} | {statistics.fmean(xs):.3f} |{extra}")


async def bench_clients(definition: Path, grpc_port: int, x: np.ndarray, requests: int, warmup: int):
    """Three chained step calls per variant, interleaved; (wall ms per chain, CPU us per call)."""
    import importlib

    import aiohttp
    import grpc
    import httpx
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from kubeinfer.router.client import CallContext, StepClient
    from kubeinfer.spec.ensemble import build_graph, load_definition
    from kubeinfer.runtime.protocol.rest import decode_response, encode_request
    from kubeinfer.runtime.types import InferRequest, RequestedOutput

    step = build_graph(load_definition(definition)).steps[0]
    url, path = step.url, step.model_path + "/infer"
    wanted = [RequestedOutput("OUTPUT0", True)]

    def encode(y):
        body, n = encode_request(InferRequest({"INPUT0": y}, outputs=wanted, binary_output=True))
        return body, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(n)}

    def decode(status, content, n):
        if status != 200:
            raise SystemExit(f"step call: HTTP {status}: {content[:300]!r}")
        return decode_response(content, None if n is None else int(n)).outputs["OUTPUT0"]

    variants, closers = {}, []
    router_client = StepClient()

    async def via_step_client(y):
        return (await router_client.infer(step, {"INPUT0": y}, CallContext()))["OUTPUT0"]

    variants["StepClient"] = via_step_client
    closers.append(router_client.aclose)

    try:
        http1 = importlib.import_module("kubeinfer.router.http1")
    except ImportError:  # a checkout whose router has no hand-written client
        http1 = None
    if http1 is not None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        pool = http1.Pool(host, int(port), 1.0)

        async def via_http1(y):
            body, headers = encode(y)
            status, rheaders, content = await pool.post(path, body, list(headers.items()))
            return decode(status, content, rheaders.get(b"inference-header-content-length"))

        async def close_pool():
            pool.close()

        variants["http1.Pool"] = via_http1
        closers.append(close_pool)

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), auto_decompress=False)

    async def via_aiohttp(y):
        body, headers = encode(y)
        async with session.post(url + path, data=body, headers=headers) as r:
            content = await r.read()
            return decode(r.status, content, r.headers.get("Inference-Header-Content-Length"))

    variants["aiohttp"] = via_aiohttp
    closers.append(session.close)

    hx = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))

    async def via_httpx(y):
        body, headers = encode(y)
        r = await hx.post(url + path, content=body, headers=headers)
        return decode(r.status_code, r.content, r.headers.get("inference-header-content-length"))

    variants["httpx"] = via_httpx
    closers.append(hx.aclose)

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    async def via_grpc(y):
        req = service_pb2.ModelInferRequest(model_name=step.model)
        req.inputs.add(name="INPUT0", datatype="FP32", shape=y.shape)
        req.outputs.add(name="OUTPUT0")
        req.raw_input_contents.append(y.tobytes())
        resp = await stub.ModelInfer(req, timeout=30)
        return np.frombuffer(resp.raw_output_contents[0], dtype=np.float32).reshape(tuple(resp.outputs[0].shape))

    variants["grpc.aio"] = via_grpc
    closers.append(channel.close)

    async def chain(call):
        y = x
        for _ in range(3):
            y = await call(y)
        return y

    try:
        expected = await chain(variants["StepClient"])
        for name, call in variants.items():
            np.testing.assert_allclose(await chain(call), expected, rtol=1e-5, err_msg=name)
        times: dict[str, list[float]] = {name: [] for name in variants}
        cpu = dict.fromkeys(variants, 0.0)
        for i in range(warmup + requests):
            for name, call in variants.items():  # interleaved: same conditions
                c0, t0 = time.process_time(), time.perf_counter()
                await chain(call)
                if i >= warmup:
                    times[name].append((time.perf_counter() - t0) * 1e3)
                    cpu[name] += time.process_time() - c0
        return times, {name: c / (3 * requests) * 1e6 for name, c in cpu.items()}
    finally:
        for close in closers:
            await close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--no-clients", action="store_true", help="skip the step client variants")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="router-bench-"))
    repo = tmp / "repo"
    build_mlp64(repo / "mlp64" / "1" / "model.onnx")
    (repo / "mlp64" / "config.pbtxt").write_text(MLP64_CONFIG)
    step_port, router_port, grpc_port = free_port(), free_port(), free_port()
    procs = [start(["serve", str(repo), "--model", "mlp64"], step_port, tmp / "step.log", grpc_port)]
    definition = {
        "name": "chain3", "max_batch_size": 32,
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [64]}],
        "outputs": [{"name": "y", "datatype": "FP32", "dims": [64]}],
        "steps": [
            {"name": f"hop{i}", "model_name": "mlp64", "input_map": {"INPUT0": src}, "output_map": {"OUTPUT0": dst}}
            for i, (src, dst) in enumerate([("x", "t1"), ("t1", "t2"), ("t2", "y")], 1)
        ],
        "endpoints": {"mlp64": f"http://127.0.0.1:{step_port}"},
    }
    (tmp / "chain3.json").write_text(json.dumps(definition))
    try:
        procs.append(start(["route", str(tmp / "chain3.json")], router_port, tmp / "router.log"))
        step = http.client.HTTPConnection("127.0.0.1", step_port)
        router = http.client.HTTPConnection("127.0.0.1", router_port)
        x = np.random.default_rng(1).random((1, 64), dtype=np.float32)

        def direct() -> np.ndarray:
            y = x
            for _ in range(3):
                y = post(step, "/v2/models/mlp64/infer", *body("INPUT0", y, "OUTPUT0"))
            return y

        router_body = body("x", x, "y")

        def routed() -> np.ndarray:
            return post(router, "/v2/models/chain3/infer", *router_body)

        np.testing.assert_allclose(routed(), direct(), rtol=1e-5)
        times: dict[str, list[float]] = {"direct": [], "router": []}
        for i in range(args.warmup + args.requests):
            for name, fn in (("direct", direct), ("router", routed)):  # interleaved: same conditions
                t0 = time.perf_counter()
                fn()
                if i >= args.warmup:
                    times[name].append((time.perf_counter() - t0) * 1e3)
        print(f"# router overhead: 3-step mlp64 chain, concurrency 1, {args.requests} requests each "
              f"({args.warmup} warm-up), {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"python {platform.python_version()}")
        table("", times)
        added = (pct(times["router"], 50) - pct(times["direct"], 50)) / 3
        print(f"\nadded per hop (p50): {added * 1000:.0f} us (goal <= 500 us)")
        if not args.no_clients:
            import asyncio

            ctimes, cpu = asyncio.run(bench_clients(tmp / "chain3.json", grpc_port, x, args.requests, args.warmup))
            table("\n# step client variants: the same 3 calls from one asyncio loop, interleaved", ctimes, cpu)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
