#!/usr/bin/env python3
"""Build the ``accumulator`` example: a stateful model served by the sequence batcher.

Each sequence keeps a running sum. The sum lives in Triton-style implicit state: the
server feeds the sequence's stored state as ``INPUT_STATE`` and keeps ``OUTPUT_STATE`` for
the next request of the same sequence (zeros at START).

    INPUT FP32 [B, 1], START FP32 [B, 1], READY FP32 [B, 1], INPUT_STATE FP32 [B, 1]
      -> OUTPUT = (INPUT_STATE * (1 - START) + INPUT) * READY,  OUTPUT_STATE = OUTPUT

START and READY are control tensors the server injects (``sequence_batching.control_input``
in config.pbtxt); clients send only INPUT with ``sequence_id``/``sequence_start``/
``sequence_end``. The model resets on START itself too, so it is also right where the
initial state is not zeros.

Output: ``1/model.onnx`` (generated, gitignored).
Usage: python examples/models/accumulator/build.py   (or examples/build.py)
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
OPSET = 17
IR_VERSION = 8


def make_model():
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    one = numpy_helper.from_array(np.ones((1, 1), dtype=np.float32), "ONE")
    nodes = [
        helper.make_node("Sub", ["ONE", "START"], ["keep"]),
        helper.make_node("Mul", ["INPUT_STATE", "keep"], ["kept"]),
        helper.make_node("Add", ["kept", "INPUT"], ["sum"]),
        helper.make_node("Mul", ["sum", "READY"], ["OUTPUT"]),
        helper.make_node("Identity", ["OUTPUT"], ["OUTPUT_STATE"]),
    ]
    shape = ["batch", 1]
    tensor = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    graph = helper.make_graph(
        nodes,
        "accumulator",
        [tensor(n) for n in ("INPUT", "START", "READY", "INPUT_STATE")],
        [tensor(n) for n in ("OUTPUT", "OUTPUT_STATE")],
        initializer=[one],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="kubeinfer examples/models/accumulator/build.py",
        doc_string="Running sum per sequence, state kept by the server (implicit state).",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def build(model_dir: Path = HERE) -> dict:
    import onnx

    out = model_dir / "1" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(make_model(), str(out))
    return {"model": str(out)}


if __name__ == "__main__":
    info = build()
    print(f"accumulator: wrote {info['model']}")
