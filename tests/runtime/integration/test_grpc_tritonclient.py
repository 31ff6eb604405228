"""A real ``kubeinfer serve`` process on loopback, driven over gRPC by tritonclient.grpc
(sync and asyncio) and, for what tritonclient never sends, by the raw generated stub."""

from __future__ import annotations

import asyncio
import queue
import re
import signal

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from onnx import TensorProto
from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.runtime.models import SLOW_CONFIG, add_sub_repo, identity, sample, slow_mlp, write_repo


@pytest.fixture
def server(tmp_path, start_server):
    repo = add_sub_repo(tmp_path / "repo")
    return start_server(["serve", str(repo), "--model", "add_sub"])


@pytest.fixture
def client(server):
    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


@pytest.fixture
def stub(server):
    channel = grpc.insecure_channel(server.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _inputs(a, b, module=grpcclient):
    inputs = [module.InferInput("INPUT0", list(a.shape), "FP32"), module.InferInput("INPUT1", list(b.shape), "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def _status(exc: InferenceServerException) -> str:
    return str(exc.status())


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("add_sub", model_version="1")
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready("add_sub", model_version="9")
    meta = client.get_server_metadata()
    assert meta.name == "kubeinfer"
    assert {"classification", "statistics", "model_configuration"} <= set(meta.extensions)


def test_model_metadata_and_config(client):
    meta = client.get_model_metadata("add_sub")
    assert meta.name == "add_sub"
    assert list(meta.versions) == ["1"]
    assert meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("INPUT0", "FP32", [-1, 16]),
        ("INPUT1", "FP32", [-1, 16]),
    ]
    assert [t.name for t in meta.outputs] == ["OUTPUT0", "OUTPUT1"]
    config = client.get_model_config("add_sub").config
    assert config.name == "add_sub"
    assert config.max_batch_size == 8
    assert config.input[0].data_type == grpcclient.model_config_pb2.TYPE_FP32
    assert config.output[0].label_filename == "labels.txt"
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    as_json = client.get_model_config("add_sub", model_version="1", as_json=True)["config"]
    assert as_json["input"][1]["data_type"] == "TYPE_FP32"


def test_infer_raw_contents_and_request_id(client):
    a, b = sample(batch=3)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    result = client.infer("add_sub", _inputs(a, b), outputs=outputs, request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)
    response = result.get_response()
    assert response.id == "req-7"
    assert response.model_name == "add_sub"
    assert response.model_version == "1"
    # Triton's form: raw_output_contents, one per output, no typed contents
    assert len(response.raw_output_contents) == 2
    assert not response.outputs[0].HasField("contents")


def test_requested_output_subset_and_all_outputs(client):
    a, b = sample()
    result = client.infer("add_sub", _inputs(a, b), outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)
    result = client.infer("add_sub", _inputs(a, b))
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b, rtol=1e-6)


def test_scheduling_and_sequence_parameters_are_accepted(client):
    a, b = sample()
    result = client.infer("add_sub", _inputs(a, b), priority=1, timeout=10_000_000, parameters={"custom": "x"})
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b, rtol=1e-6)


def _typed_request(a, b, **output_params) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="add_sub", id="typed")
    for name, arr in (("INPUT0", a), ("INPUT1", b)):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=arr.shape)
        tensor.contents.fp32_contents.extend(arr.reshape(-1).tolist())
    for name in ("OUTPUT0", "OUTPUT1"):
        out = request.outputs.add(name=name)
        for key, value in output_params.items():
            out.parameters[key].bool_param = value
    return request


def test_typed_contents_in_raw_out_by_default(stub):
    a, b = sample(batch=2)
    response = stub.ModelInfer(_typed_request(a, b))
    assert response.id == "typed"
    assert [list(o.shape) for o in response.outputs] == [[2, 16], [2, 16]]
    got = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(2, 16)
    np.testing.assert_allclose(got, a + b, rtol=1e-6)


def test_typed_contents_out_on_request(stub):
    a, b = sample(batch=2)
    response = stub.ModelInfer(_typed_request(a, b, binary_data=False))
    assert not response.raw_output_contents
    got = np.array(response.outputs[1].contents.fp32_contents, dtype=np.float32).reshape(2, 16)
    np.testing.assert_allclose(got, a - b, rtol=1e-6)


@pytest.mark.parametrize(
    "datatype,onnx_type,values",
    [
        ("BYTES", TensorProto.STRING, np.array([[b"hello", "wörld".encode(), b""]], dtype=np.object_)),
        ("FP16", TensorProto.FLOAT16, np.array([[0.5, -1.25, 3.0]], dtype=np.float16)),
        ("BOOL", TensorProto.BOOL, np.array([[True, False, True]])),
        ("INT64", TensorProto.INT64, np.array([[1, -2, 2**40]], dtype=np.int64)),
        ("UINT8", TensorProto.UINT8, np.array([[0, 7, 255]], dtype=np.uint8)),
        ("INT16", TensorProto.INT16, np.array([[-32768, 0, 32767]], dtype=np.int16)),
    ],
)
def test_datatypes_round_trip_raw_and_typed(tmp_path, start_server, datatype, onnx_type, values):
    repo = write_repo(tmp_path / "repo", "ident", None, lambda p: identity(p, onnx_type, ["B", 3]))
    (repo / "ident" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 4\n')
    server = start_server(["serve", str(repo)])
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.get_model_metadata("ident").inputs[0].datatype == datatype
    inp = grpcclient.InferInput("INPUT0", [1, 3], datatype)
    inp.set_data_from_numpy(values)
    got = client.infer("ident", [inp]).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(got, values)
    client.close()

    channel = grpc.insecure_channel(server.grpc_url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = pb.ModelInferRequest(model_name="ident")
    tensor = request.inputs.add(name="INPUT0", datatype=datatype, shape=[1, 3])
    request.outputs.add(name="OUTPUT0").parameters["binary_data"].bool_param = False
    if datatype == "FP16":  # no typed field for FP16: it travels raw only
        tensor.contents.fp32_contents.extend([0.0] * 3)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "raw_input_contents" in err.value.details()
        channel.close()
        return
    from kubeinfer.runtime.protocol.grpc_codec import CONTENTS_FIELD

    field = CONTENTS_FIELD[datatype]
    getattr(tensor.contents, field).extend(values.reshape(-1).tolist())
    response = stub.ModelInfer(request)
    channel.close()
    assert not response.raw_output_contents
    typed = list(getattr(response.outputs[0].contents, field))
    np.testing.assert_array_equal(np.array(typed, dtype=values.dtype).reshape(1, 3), values)


def test_classification_with_labels(client):
    a, b = sample(batch=2)
    out = grpcclient.InferRequestedOutput("OUTPUT0", class_count=3)
    classes = client.infer("add_sub", _inputs(a, b), outputs=[out]).as_numpy("OUTPUT0")
    assert classes.shape == (2, 3)
    expected = np.argsort(-(a + b), axis=1)[:, :3]
    for row, idx, values in zip(classes, expected, a + b):
        parsed = [c.decode().split(":") for c in row]
        assert [int(p[1]) for p in parsed] == list(idx)
        assert [p[2] for p in parsed] == [f"label_{i}" for i in idx]
        np.testing.assert_allclose([float(p[0]) for p in parsed], values[idx], rtol=1e-5)


def test_statistics_and_repository_index(client):
    a, b = sample(batch=2)
    client.infer("add_sub", _inputs(a, b))
    stats = client.get_inference_statistics("add_sub").model_stats[0]
    assert (stats.name, stats.version) == ("add_sub", "1")
    assert stats.inference_count == 2
    assert stats.execution_count == 1
    assert stats.inference_stats.success.count == 1
    assert stats.inference_stats.compute_infer.ns > 0
    assert [(b.batch_size, b.compute_infer.count) for b in stats.batch_stats] == [(2, 1)]
    assert len(client.get_inference_statistics().model_stats) == 1
    index = client.get_model_repository_index()
    assert [(m.name, m.version, m.state) for m in index.models] == [("add_sub", "1", "READY")]
    client.load_model("add_sub")  # already served: a no-op, as in REST


def test_errors_have_grpc_status_codes(client, stub):
    a, b = sample()
    with pytest.raises(InferenceServerException, match="unknown model") as err:
        client.infer("nope", _inputs(a, b))
    assert _status(err.value) == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as err:
        client.infer("add_sub", _inputs(a, b), model_version="9")
    assert _status(err.value) == "StatusCode.NOT_FOUND"
    bad = grpcclient.InferInput("INPUT0", [1, 16], "INT32")
    bad.set_data_from_numpy(np.zeros((1, 16), np.int32))
    with pytest.raises(InferenceServerException, match="datatype") as err:
        client.infer("add_sub", [bad, _inputs(a, b)[1]])
    assert _status(err.value) == "StatusCode.INVALID_ARGUMENT"
    big_a, big_b = sample(batch=9)
    with pytest.raises(InferenceServerException, match="batch size") as err:
        client.infer("add_sub", _inputs(big_a, big_b))
    assert _status(err.value) == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("nope")
    assert _status(err.value) == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as err:
        client.get_model_config("nope")
    assert _status(err.value) == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as err:
        client.unload_model("add_sub")
    assert _status(err.value) == "StatusCode.UNIMPLEMENTED"
    with pytest.raises(InferenceServerException) as err:
        client.get_system_shared_memory_status()
    assert _status(err.value) == "StatusCode.UNIMPLEMENTED"

    # what tritonclient never sends: fewer raw contents than inputs, missing data
    request = pb.ModelInferRequest(model_name="add_sub")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
    request.inputs.add(name="INPUT1", datatype="FP32", shape=[1, 16])
    request.raw_input_contents.append(a.tobytes())
    with pytest.raises(grpc.RpcError) as rpc_err:
        stub.ModelInfer(request)
    assert rpc_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request.raw_input_contents.append(b.tobytes()[:-4])
    with pytest.raises(grpc.RpcError) as rpc_err:
        stub.ModelInfer(request)
    assert rpc_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bytes" in rpc_err.value.details()
    # the server goes on serving
    np.testing.assert_allclose(client.infer("add_sub", _inputs(a, b)).as_numpy("OUTPUT0"), a + b, rtol=1e-6)


def test_stream_infer_answers_each_request(client):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    data = {f"s{i}": sample(batch=1, seed=i) for i in range(8)}
    for rid, (a, b) in data.items():
        client.async_stream_infer("add_sub", _inputs(a, b), request_id=rid)
    bad = grpcclient.InferInput("INPUT0", [1, 16], "INT32")
    bad.set_data_from_numpy(np.zeros((1, 16), np.int32))
    client.async_stream_infer("add_sub", [bad, _inputs(*data["s0"])[1]], request_id="bad")
    got, errors = {}, []
    for _ in range(len(data) + 1):
        result, error = answers.get(timeout=30)
        if error is not None:
            errors.append(error)
        else:
            got[result.get_response().id] = result.as_numpy("OUTPUT0")
    client.stop_stream()
    assert len(errors) == 1 and "datatype" in str(errors[0])
    assert set(got) == set(data)
    for rid, (a, b) in data.items():
        np.testing.assert_allclose(got[rid], a + b, rtol=1e-6)


async def test_aio_client(server):
    async with aioclient.InferenceServerClient(server.grpc_url) as client:
        assert await client.is_server_live()
        assert await client.is_server_ready()
        assert await client.is_model_ready("add_sub")
        meta = await client.get_model_metadata("add_sub", as_json=True)
        assert meta["inputs"][0]["datatype"] == "FP32"
        config = await client.get_model_config("add_sub", as_json=True)
        assert config["config"]["max_batch_size"] == 8
        a, b = sample(batch=2)
        result = await client.infer("add_sub", _inputs(a, b, aioclient), request_id="aio")
        np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)
        assert result.get_response().id == "aio"
        with pytest.raises(InferenceServerException) as err:
            await client.infer("nope", _inputs(a, b, aioclient))
        assert _status(err.value) == "StatusCode.NOT_FOUND"
        stats = await client.get_inference_statistics("add_sub", as_json=True)
        assert stats["model_stats"][0]["inference_stats"]["success"]["count"] == "1"


async def test_concurrent_aio_requests_are_batched_and_each_gets_its_own_answer(tmp_path, start_server):
    repo = write_repo(tmp_path / "repo", "slow", SLOW_CONFIG, slow_mlp)
    server = start_server(["serve", str(repo)])
    rng = np.random.default_rng(1)
    data = [rng.random((1, 512), dtype=np.float32) for _ in range(96)]

    async with aioclient.InferenceServerClient(server.grpc_url) as client:

        async def one(x):
            inp = aioclient.InferInput("INPUT0", [1, 512], "FP32")
            inp.set_data_from_numpy(x)
            return (await client.infer("slow", [inp])).as_numpy("OUTPUT0")

        results = await asyncio.wait_for(asyncio.gather(*(one(x) for x in data)), 60)
        stacked = np.concatenate(results)
        inp = aioclient.InferInput("INPUT0", [16, 512], "FP32")
        inp.set_data_from_numpy(np.concatenate(data[:16]))
        whole = (await client.infer("slow", [inp])).as_numpy("OUTPUT0")
        np.testing.assert_allclose(whole, stacked[:16], rtol=1e-4, atol=1e-5)
        stats = (await client.get_inference_statistics("slow")).model_stats[0]
    assert stats.inference_count == 96 + 16
    assert stats.inference_stats.success.count == 97
    assert stats.execution_count < 97
    assert max(b.batch_size for b in stats.batch_stats) > 1


async def test_sigterm_drains_accepted_grpc_requests(tmp_path, start_server):
    repo = write_repo(tmp_path / "repo", "slow", SLOW_CONFIG, slow_mlp)
    server = start_server(["serve", str(repo), "--shutdown-delay-seconds", "1"])
    x = np.ones((1, 512), dtype=np.float32)
    codes: list[str] = []
    started = asyncio.Event()

    async with aioclient.InferenceServerClient(server.grpc_url) as client:

        async def worker() -> None:
            while len(codes) < 400:
                started.set()
                inp = aioclient.InferInput("INPUT0", [1, 512], "FP32")
                inp.set_data_from_numpy(x)
                try:
                    await client.infer("slow", [inp], client_timeout=30)
                    codes.append("OK")
                except InferenceServerException as exc:
                    # refused once the server stopped accepting: it never saw the request
                    codes.append(_status(exc))
                    if _status(exc) == "StatusCode.UNAVAILABLE":
                        return

        load = asyncio.gather(*(worker() for _ in range(16)))
        await started.wait()
        await asyncio.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # readiness is off during the shutdown delay while requests are still served
        assert not await client.is_server_ready()
        await asyncio.wait_for(load, 60)
    assert server.proc.wait(30) == 0
    assert set(codes) <= {"OK", "StatusCode.UNAVAILABLE"}, sorted(set(codes))
    answered = codes.count("OK")
    assert answered
    match = re.search(r"stopped: (\d+) requests succeeded, (\d+) failed", server.log())
    assert match, server.log()
    assert int(match.group(1)) == answered
    assert int(match.group(2)) == 0
