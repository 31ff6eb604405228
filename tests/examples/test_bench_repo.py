"""bench/: the model repository kubeinfer's start script writes for the peer harness is a
valid kubeinfer config with the peers' settings, and servers.conf points at real scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.mark.parametrize(("model", "dims", "out_dims"), [("mlp", [64], [10]), ("resnet18", [3, 224, 224], [1000])])
def test_serve_script_writes_the_peers_config(tmp_path, model, dims, out_dims):
    from kubeinfer.spec.config import load_config
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / f"{model}.onnx").write_bytes(b"not used: the server is not started")
    env = dict(os.environ, BENCH_ROOT=str(tmp_path), PORT="8199", KUBEINFER_PYTHON="true")
    env.pop("BENCH_OUT", None)
    script = BENCH / "servers" / "kubeinfer" / f"serve_{model}.sh"
    proc = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr

    model_dir = tmp_path / "kubeinfer" / "repo" / model
    assert (model_dir / "1" / "model.onnx").resolve() == (tmp_path / "models" / f"{model}.onnx").resolve()
    cfg = load_config(model_dir)
    assert cfg.name == model and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 32
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.kind, g.count) for g in cfg.instance_group] == [("KIND_CPU", 1)]
    assert [(t.name, t.data_type, t.dims) for t in cfg.input] == [("INPUT0", "FP32", dims)]
    assert [(t.name, t.data_type, t.dims) for t in cfg.output] == [("OUTPUT0", "FP32", out_dims)]
    assert cfg.parameters["intra_op_thread_count"] == {"string_value": "1"}
    assert cfg.parameters["inter_op_thread_count"] == {"string_value": "1"}


def test_servers_conf_lines():
    lines = [
        line.split()
        for line in (BENCH / "servers.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ours = [fields for fields in lines if fields[0] == "kubeinfer"]
    assert {run.split(":")[0] for fields in ours for run in fields[3:]} == {"mlp", "resnet18"}
    assert len({fields[1] for fields in ours}) == len(ours), "one port per kubeinfer process"
    for fields in ours:
        script = BENCH / fields[2].replace("@KUBEINFER@", "servers/kubeinfer")
        assert script.is_file() and os.access(script, os.X_OK), script
    assert {fields[0] for fields in lines} >= {"kubeinfer", "triton", "mlserver", "naive"}
