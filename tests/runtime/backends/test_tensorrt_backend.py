"""The TensorRT backend. Without a GPU and the tensorrt package only the load error and
the profile arithmetic run; the engine tests are marked ``gpu`` and build a real engine
from an ONNX model with an optimization profile, then serve it."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from kubeinfer.runtime.backends.tensorrt import fits
from kubeinfer.runtime.errors import ConfigError
from kubeinfer.runtime.repository import load_model
from tests.runtime.models import add_sub


def _gpu_and_tensorrt() -> bool:
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


HAVE_TRT_GPU = _gpu_and_tensorrt()

CONFIG = """
platform: "tensorrt_plan"
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0 ] } ]
"""


def test_fits():
    assert fits((4, 16), (1, 16), (8, 16))
    assert not fits((9, 16), (1, 16), (8, 16))
    assert not fits((4,), (1, 16), (8, 16))


@pytest.mark.skipif(HAVE_TRT_GPU, reason="checks the message where TensorRT cannot run")
def test_without_tensorrt_or_gpu_loading_fails_with_what_is_missing(tmp_path):
    model_dir = tmp_path / "repo" / "engine"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.plan").write_bytes(b"\0" * 64)
    (model_dir / "config.pbtxt").write_text(CONFIG)
    with pytest.raises(ConfigError, match=r"'tensorrt' package|NVIDIA GPUs only") as info:
        load_model(tmp_path / "repo", "engine")
    assert "model.plan" in str(info.value)


def build_engine(onnx_path, plan_path, max_batch: int) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes()), [parser.get_error(i) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name in ("INPUT0", "INPUT1"):
        profile.set_shape(name, (1, 16), (2, 16), (max_batch, 16))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None
    plan_path.write_bytes(bytes(plan))


@pytest.fixture
def engine_server(tmp_path, start_server):
    model_dir = tmp_path / "repo" / "add_sub_trt"
    (model_dir / "1").mkdir(parents=True)
    add_sub(tmp_path / "add_sub.onnx")
    # profile up to 4 rows while the config allows 8: a batch of 6 has no profile
    build_engine(tmp_path / "add_sub.onnx", model_dir / "1" / "model.plan", max_batch=4)
    (model_dir / "config.pbtxt").write_text(CONFIG)
    return start_server(["serve", str(tmp_path / "repo")])


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TRT_GPU, reason="needs an NVIDIA GPU, tensorrt and torch")
@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_engine_with_dynamic_batch_over_both_protocols(engine_server, module):
    url = engine_server.url if module is httpclient else engine_server.grpc_url
    client = module.InferenceServerClient(url)
    meta = client.get_model_metadata("add_sub_trt")
    platform = meta["platform"] if isinstance(meta, dict) else meta.platform
    assert platform == "tensorrt_plan"
    rng = np.random.default_rng(0)
    for batch in (1, 3, 4):
        a, b = rng.random((batch, 16), dtype=np.float32), rng.random((batch, 16), dtype=np.float32)
        inputs = [module.InferInput("INPUT0", [batch, 16], "FP32"), module.InferInput("INPUT1", [batch, 16], "FP32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("add_sub_trt", inputs)
        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b, rtol=1e-5)
        np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-5)
    x = np.zeros((6, 16), dtype=np.float32)
    inputs = [module.InferInput("INPUT0", [6, 16], "FP32"), module.InferInput("INPUT1", [6, 16], "FP32")]
    inputs[0].set_data_from_numpy(x)
    inputs[1].set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="outside every optimization profile"):
        client.infer("add_sub_trt", inputs)
    client.close()
