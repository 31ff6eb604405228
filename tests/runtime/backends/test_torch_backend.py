"""The PyTorch backend: TorchScript and torch.export models built here, served by a real
``kubeinfer serve`` process and called with tritonclient (HTTP and gRPC); load errors."""

from __future__ import annotations

import queue
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402

from kubeinfer.runtime.backends.torch import check_archive, positions  # noqa: E402
from kubeinfer.runtime.errors import ConfigError  # noqa: E402
from kubeinfer.runtime.repository import load_model  # noqa: E402
from tests.runtime.backends.torch_models import (  # noqa: E402
    ADD_SUB_TS_CONFIG,
    MLP_EXPORT_CONFIG,
    SCALE_TS_CONFIG,
    AddSub,
    Mlp,
    ScaleArgmax,
    export_repo,
    torchscript_repo,
)


def _input(module, name, arr, datatype="FP32"):
    inp = module.InferInput(name, list(arr.shape), datatype)
    inp.set_data_from_numpy(arr)
    return inp


@pytest.mark.parametrize("client_module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_torchscript_positional_names_over_both_protocols(tmp_path, start_server, client_module):
    example = (torch.zeros(1, 4), torch.zeros(1, 4))
    repo = torchscript_repo(tmp_path / "repo", "add_sub_pt", AddSub(), ADD_SUB_TS_CONFIG, trace_with=example)
    server = start_server(["serve", str(repo)])
    client = client_module.InferenceServerClient(server.url if client_module is httpclient else server.grpc_url)
    meta = client.get_model_metadata("add_sub_pt")
    platform = meta["platform"] if isinstance(meta, dict) else meta.platform
    assert platform == "pytorch_libtorch"
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 4), dtype=np.float32), rng.random((3, 4), dtype=np.float32)
    result = client.infer("add_sub_pt", [_input(client_module, "INPUT__0", a), _input(client_module, "INPUT__1", b)])
    np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), a + b, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("OUTPUT__1"), a - b, rtol=1e-6)
    client.close()


def test_torchscript_maps_inputs_by_argument_name_and_dict_outputs_by_key(tmp_path, start_server):
    repo = torchscript_repo(tmp_path / "repo", "scale", ScaleArgmax(), SCALE_TS_CONFIG)
    server = start_server(["serve", str(repo)])
    client = httpclient.InferenceServerClient(server.url)
    x = np.array([[1, 5, 2], [9, -1, 0]], dtype=np.float32)
    scale = np.array([[2], [-1]], dtype=np.float32)
    result = client.infer("scale", [_input(httpclient, "x", x), _input(httpclient, "scale", scale)])
    np.testing.assert_allclose(result.as_numpy("scaled"), x * scale)
    np.testing.assert_array_equal(result.as_numpy("argmax"), [[1], [1]])
    assert result.as_numpy("argmax").dtype == np.int64
    client.close()


def test_torch_export_without_config_is_auto_completed(tmp_path, start_server):
    repo = export_repo(tmp_path / "repo", "mlp_export")
    server = start_server(["serve", str(repo)])
    client = httpclient.InferenceServerClient(server.url)
    meta = client.get_model_metadata("mlp_export")
    assert meta["platform"] == "torch_export"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 3]}]
    x = np.random.default_rng(1).random((5, 4), dtype=np.float32)
    result = client.infer("mlp_export", [_input(httpclient, "x", x)])
    with torch.inference_mode():
        expected = Mlp()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), expected, rtol=1e-5, atol=1e-6)
    client.close()


def test_torch_export_batched_through_the_pytorch_backend_name(tmp_path, start_server):
    repo = export_repo(tmp_path / "repo", "mlp", MLP_EXPORT_CONFIG)
    server = start_server(["serve", str(repo)])
    client = grpcclient.InferenceServerClient(server.grpc_url)
    config = client.get_model_config("mlp", as_json=True)["config"]
    assert config["input"][0]["dims"] == ["4"] and config["max_batch_size"] == 16
    rows = np.random.default_rng(2).random((24, 1, 4), dtype=np.float32)
    done: queue.Queue = queue.Queue()
    for row in rows:
        client.async_infer("mlp", [_input(grpcclient, "x", row)], callback=lambda result, error: done.put((result, error)))
    client_http = httpclient.InferenceServerClient(server.url)
    with torch.inference_mode():
        expected = Mlp()(torch.from_numpy(rows[:, 0])).numpy()
    results = [done.get(timeout=30) for _ in rows]
    assert all(e is None for _, e in results)
    got = sorted(tuple(np.round(r.as_numpy("OUTPUT__0")[0], 5)) for r, _ in results)
    assert got == sorted(tuple(np.round(e, 5)) for e in expected)
    stats = client_http.get_inference_statistics("mlp")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == len(rows)
    client.close()
    client_http.close()


def test_torchscript_without_tensors_in_the_config_is_a_config_error(tmp_path):
    repo = torchscript_repo(tmp_path / "repo", "bare", AddSub(), None)
    with pytest.raises(ConfigError, match="declare 'input' and 'output' in config.pbtxt"):
        load_model(repo, "bare")


def test_an_unloadable_file_is_a_config_error(tmp_path):
    for name, filename in (("junk_pt", "model.pt"), ("junk_pt2", "model.pt2")):
        version = tmp_path / "repo" / name / "1"
        version.mkdir(parents=True)
        (version / filename).write_bytes(b"not a model")
        (tmp_path / "repo" / name / "config.pbtxt").write_text(ADD_SUB_TS_CONFIG.replace(
            '"pytorch_libtorch"', '"torch_export"' if filename == "model.pt2" else '"pytorch_libtorch"'))
    with pytest.raises(ConfigError, match="torch.jit.load cannot load the model"):
        load_model(tmp_path / "repo", "junk_pt")
    with pytest.raises(ConfigError, match="not a torch.export archive"):
        load_model(tmp_path / "repo", "junk_pt2")


def test_archives_with_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model/data/constants/opaque_obj_0", b"\x80\x04.")
    with pytest.raises(ConfigError, match="pickled Python object"):
        check_archive(path)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model/data/weights/model_weights_config.json",
                   '{"config": {"w": {"path_name": "weight_0", "use_pickle": true}}}')
    with pytest.raises(ConfigError, match="'w' is stored pickled"):
        check_archive(path)


def test_positions():
    assert positions(["INPUT__1", "INPUT__0"]) == [1, 0]
    assert positions(["scale", "x"], ["x", "scale"]) == [1, 0]
    assert positions(["a", "b"]) == [0, 1]  # config order
    with pytest.raises(ConfigError, match="do not number"):
        positions(["INPUT__0", "INPUT__2"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_kind_gpu_without_cuda_is_a_config_error(tmp_path):
    config = ADD_SUB_TS_CONFIG + "instance_group [ { kind: KIND_GPU gpus: [ 0 ] } ]\n"
    repo = torchscript_repo(tmp_path / "repo", "gpu_pt", AddSub(), config)
    with pytest.raises(ConfigError, match=r"KIND_GPU \(cuda:0\) but torch sees no CUDA GPU"):
        load_model(repo, "gpu_pt")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_on_a_gpu(tmp_path, start_server, kind):
    group = 'instance_group [ { kind: KIND_GPU gpus: [ 0 ] } ]\n'
    if kind == "torchscript":
        repo = torchscript_repo(tmp_path / "repo", "m", AddSub(), ADD_SUB_TS_CONFIG + group)
        names, out = ["INPUT__0", "INPUT__1"], "OUTPUT__0"
    else:
        repo = export_repo(tmp_path / "repo", "m", MLP_EXPORT_CONFIG.replace("KIND_CPU", "KIND_GPU gpus: [ 0 ]"))
        names, out = ["x"], "OUTPUT__0"
    server = start_server(["serve", str(repo)])
    client = httpclient.InferenceServerClient(server.url)
    x = np.ones((2, 4), dtype=np.float32)
    result = client.infer("m", [_input(httpclient, n, x) for n in names])
    assert result.as_numpy(out).shape[0] == 2
    client.close()
