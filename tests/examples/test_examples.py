"""The example model repositories: they build, the digits classifier really classifies,
and every committed config.pbtxt agrees with the ONNX file next to it."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MODELS = EXAMPLES / "models"
NAMES = ["digits", "classification", "mlp"]
#: stateful examples (sequence batching), served in tests/runtime/sequence
STATEFUL = ["accumulator"]
#: Python-backend examples, served in tests/runtime/backends
PYTHON_BACKEND = ["iris_sklearn"]

ONNX_TO_V2 = {onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.INT64: "INT64"}


@pytest.fixture(scope="module")
def built() -> Path:
    """Run the one build entry point (idempotent: a no-op when already built)."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "build.py")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in NAMES:
        assert (MODELS / name / "1" / "model.onnx").is_file(), name
    return MODELS


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_build_is_idempotent(built):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "build.py")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("up to date") == len(NAMES + STATEFUL + PYTHON_BACKEND), proc.stdout


def test_every_example_dir_has_a_build_script():
    dirs = sorted(p.name for p in MODELS.iterdir() if (p / "config.pbtxt").is_file())
    assert dirs == sorted(NAMES + STATEFUL + PYTHON_BACKEND)
    for name in dirs:
        assert (MODELS / name / "build.py").is_file()


def test_digits_classifies_held_out_split(built):
    # the same split as the build (runpy: no __pycache__ written into the model repository)
    mod = runpy.run_path(str(MODELS / "digits" / "build.py"), run_name="digits_build")
    _, x_test, _, y_test = mod["split"]()
    sess = session(built / "digits" / "1" / "model.onnx")
    (probs,) = sess.run(["probabilities"], {"image": x_test.astype(np.float32)})
    assert probs.shape == (len(y_test), 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float((probs.argmax(axis=1) == y_test).mean())
    assert accuracy >= 0.9, accuracy


def test_digits_samples_and_request_body(built):
    samples = json.loads((built / "digits" / "samples.json").read_text())
    assert samples["input"] == "image" and samples["output"] == "probabilities"
    images = np.array([s["image"] for s in samples["samples"]], dtype=np.float32)
    labels = [s["label"] for s in samples["samples"]]
    assert images.shape == (len(labels), 64) and images.min() >= 0 and images.max() <= 16
    (probs,) = session(built / "digits" / "1" / "model.onnx").run(None, {"image": images})
    assert probs.argmax(axis=1).tolist() == labels

    body = json.loads((built / "digits" / "request.json").read_text())
    (inp,) = body["inputs"]
    assert inp["name"] == "image" and inp["datatype"] == "FP32"
    assert inp["shape"] == [len(labels), 64]
    np.testing.assert_array_equal(np.array(inp["data"], dtype=np.float32).reshape(inp["shape"]), images)

    names = (built / "digits" / "labels.txt").read_text().split()
    assert names == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def test_random_weight_models_run_and_are_deterministic(built):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    (out,) = session(built / "classification" / "1" / "model.onnx").run(None, {"data": x})
    assert out.shape == (2, 1000) and np.isfinite(out).all() and out.std() > 0
    x = rng.standard_normal((5, 64)).astype(np.float32)
    (out,) = session(built / "mlp" / "1" / "model.onnx").run(None, {"INPUT0": x})
    assert out.shape == (5, 10) and np.isfinite(out).all()
    # the build is deterministic: the same bytes from a second in-memory build
    mod = runpy.run_path(str(MODELS / "mlp" / "build.py"), run_name="mlp_build")
    assert mod["make_model"]().SerializeToString() == onnx.load(
        str(built / "mlp" / "1" / "model.onnx")
    ).SerializeToString()


def _onnx_io(path: Path):
    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}

    def describe(vi):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return vi.name, ONNX_TO_V2.get(t.elem_type, str(t.elem_type)), dims

    return [describe(v) for v in graph.input if v.name not in init], [describe(v) for v in graph.output]


@pytest.mark.parametrize("name", NAMES)
def test_config_parses_and_matches_onnx(built, name):
    import kubeinfer.spec.config as config_mod
    cfg = config_mod.load_config(built / name)
    assert cfg is not None
    assert cfg.name == name
    assert cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size > 0 and cfg.dynamic_batching is not None
    assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
    assert [g.kind for g in cfg.instance_group] == ["KIND_CPU"]

    inputs, outputs = _onnx_io(built / name / "1" / "model.onnx")
    for declared, actual in ((cfg.input, inputs), (cfg.output, outputs)):
        assert [t.name for t in declared] == [a[0] for a in actual]
        for t, (_, dtype, dims) in zip(declared, actual):
            assert t.data_type == dtype
            # config dims exclude the batch dimension, which is dynamic in the ONNX file
            assert dims[0] == -1 and t.dims == dims[1:], (t.name, t.dims, dims)

    for out in cfg.output:
        if out.label_filename:
            labels = (built / name / out.label_filename).read_text().splitlines()
            assert len(labels) == out.dims[-1] and all(labels)


def test_expected_max_batch_sizes(built):
    from kubeinfer.spec.config import load_config
    assert {n: load_config(built / n).max_batch_size for n in NAMES} == {
        "digits": 64,
        "classification": 8,
        "mlp": 32,
    }
