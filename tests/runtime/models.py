"""Small real ONNX models built by the tests, written as Triton model repositories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

_OPSET = [helper.make_opsetid("", 17)]


def _save(graph, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=_OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def add_sub(path: Path, dims: int = 16, dtype=TensorProto.FLOAT) -> None:
    """INPUT0, INPUT1 [B, dims] -> OUTPUT0 = sum, OUTPUT1 = difference (Triton's add_sub)."""
    shape = ["B", dims]
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])],
        "add_sub",
        [helper.make_tensor_value_info("INPUT0", dtype, shape),
         helper.make_tensor_value_info("INPUT1", dtype, shape)],
        [helper.make_tensor_value_info("OUTPUT0", dtype, shape),
         helper.make_tensor_value_info("OUTPUT1", dtype, shape)],
    )
    _save(graph, path)


def identity(path: Path, dtype, dims: list) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "identity",
        [helper.make_tensor_value_info("INPUT0", dtype, dims)],
        [helper.make_tensor_value_info("OUTPUT0", dtype, dims)],
    )
    _save(graph, path)


def write_repo(root: Path, name: str, config: str | None, builder, version: int = 1, files: dict[str, str] | None = None) -> Path:
    model_dir = root / name
    builder(model_dir / str(version) / "model.onnx")
    if config is not None:
        (model_dir / "config.pbtxt").write_text(config)
    for fname, text in (files or {}).items():
        (model_dir / fname).write_text(text)
    return root


ADD_SUB_CONFIG = """
name: "add_sub"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] label_filename: "labels.txt" },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] }
]
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""

LABELS = "\n".join(f"label_{i}" for i in range(16)) + "\n"


def add_sub_repo(root: Path, config: str = ADD_SUB_CONFIG) -> Path:
    return write_repo(root, "add_sub", config, add_sub, files={"labels.txt": LABELS})


def sample(batch: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random((batch, 16), dtype=np.float32), rng.random((batch, 16), dtype=np.float32))


def slow_mlp(path: Path, width: int = 512, layers: int = 64) -> None:
    """INPUT0 [B, width] -> OUTPUT0 [B, width]: enough MatMuls to take milliseconds, so
    concurrent requests reliably queue up behind an executing batch."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "INPUT0"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(helper.make_tensor(f"W{i}", TensorProto.FLOAT, w.shape, w.ravel()))
        out = "OUTPUT0" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "slow_mlp",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["B", width])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["B", width])],
        initializer=inits,
    )
    _save(graph, path)


SLOW_CONFIG = """
name: "slow"
platform: "onnxruntime_onnx"
max_batch_size: 16
dynamic_batching { max_queue_delay_microseconds: 1000 }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


STRINGS_CONFIG = """
name: "strings"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 1000 }
"""


def strings_repo(root: Path) -> Path:
    """``strings``: an ONNX string identity, INPUT0 BYTES [B, -1] -> OUTPUT0 (the same)."""
    return write_repo(
        root, "strings", STRINGS_CONFIG, lambda p: identity(p, TensorProto.STRING, ["B", "N"])
    )


HELD_CONFIG = """
name: "held"
backend: "python"
max_batch_size: 1
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
dynamic_batching { }
instance_group [ { count: 2 kind: KIND_CPU } ]
parameters { key: "gate" value: { string_value: "%s" } }
parameters { key: "record" value: { string_value: "%s" } }
"""

# records the first value of every request it executes, then waits (bounded) while the
# gate file exists; two instances, so it never runs inline on the event loop
HELD_MODEL = '''
import json
import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        self.gate = params["gate"]["string_value"]
        self.record = params["record"]["string_value"]

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        with open(self.record, "a") as f:
            f.writelines(f"{float(x.flat[0])}\\n" for x in inputs)
        deadline = time.monotonic() + 30
        while os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.005)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]) for x in inputs]
'''


class Held:
    """The ``held`` Python model's repository: ``gate`` (a file: while it exists every
    batch waits) and ``executed()`` (the first value of each request it ran, warm-up
    excluded)."""

    def __init__(self, root: Path) -> None:
        self.repo, self.gate, self.record = root / "repo", root / "hold", root / "executed"
        model = self.repo / "held"
        (model / "1").mkdir(parents=True)
        (model / "config.pbtxt").write_text(HELD_CONFIG % (self.gate, self.record))
        (model / "1" / "model.py").write_text(HELD_MODEL)
        self._warm_up: list[str] | None = None

    def started(self) -> None:
        """Call once the server is ready: what ran until now was the warm-up."""
        self._warm_up = self.record.read_text().splitlines() if self.record.exists() else []

    def executed(self) -> list[str]:
        assert self._warm_up is not None, "call started() first"
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        return lines[len(self._warm_up):]
