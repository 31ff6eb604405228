"""A stateful ONNX accumulator and its Triton configs, for the sequence batching tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.runtime.models import _save, write_repo


def accumulator(path: Path) -> None:
    """INPUT, START, READY, INPUT_STATE FP32 [B, 1]; CORRID UINT64 [B, 1] ->
    OUTPUT = (INPUT_STATE * (1 - START) + INPUT) * READY, OUTPUT_STATE = OUTPUT,
    CORRID_OUT = CORRID (so tests see the injected correlation id)."""
    shape = ["B", 1]
    f32 = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)  # noqa: E731
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["ONE", "START"], ["keep"]),
            helper.make_node("Mul", ["INPUT_STATE", "keep"], ["kept"]),
            helper.make_node("Add", ["kept", "INPUT"], ["sum"]),
            helper.make_node("Mul", ["sum", "READY"], ["OUTPUT"]),
            helper.make_node("Identity", ["OUTPUT"], ["OUTPUT_STATE"]),
            helper.make_node("Identity", ["CORRID"], ["CORRID_OUT"]),
        ],
        "accumulator",
        [f32("INPUT"), f32("START"), f32("READY"), f32("INPUT_STATE"),
         helper.make_tensor_value_info("CORRID", TensorProto.UINT64, shape)],
        [f32("OUTPUT"), f32("OUTPUT_STATE"),
         helper.make_tensor_value_info("CORRID_OUT", TensorProto.UINT64, shape)],
        initializer=[numpy_helper.from_array(np.ones((1, 1), np.float32), "ONE")],
    )
    _save(graph, path)


def config(strategy: str = "direct { }", max_batch_size: int = 4, instances: int = 1,
           idle_us: int = 5_000_000) -> str:
    return f"""
name: "acc"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [
  {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 1 ] }},
  {{ name: "CORRID_OUT" data_type: TYPE_UINT64 dims: [ 1 ] }}
]
sequence_batching {{
  max_sequence_idle_microseconds: {idle_us}
  {strategy}
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "READY" control [ {{ kind: CONTROL_SEQUENCE_READY fp32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }} ] }}
  ]
  state [ {{ input_name: "INPUT_STATE" output_name: "OUTPUT_STATE" data_type: TYPE_FP32 dims: [ 1 ] }} ]
}}
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
"""


def accumulator_repo(root: Path, cfg: str | None = None) -> Path:
    return write_repo(root, "acc", cfg if cfg is not None else config(), accumulator)
