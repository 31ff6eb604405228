#!/usr/bin/env python3
"""Build the ``mlp`` example: a small multilayer perceptron with RANDOM weights, the
benchmark's ``mlp`` model (same topology, seed and weights as ../shared/bench's
gen_models.py), used by the router examples and load tests. Its answers mean nothing.

    INPUT0 FP32 [B, 64] -> Gemm 64x256 -> Relu -> Gemm 256x256 -> Relu -> Gemm 256x10
      -> OUTPUT0 FP32 [B, 10]

Output: ``1/model.onnx`` (generated, gitignored).
Usage: python examples/models/mlp/build.py   (or examples/build.py)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OPSET = 17
IR_VERSION = 8


def make_model(seed: int = 0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    dims = [64, 256, 256, 10]
    inits, nodes = [], []
    x = "INPUT0"
    for i in range(3):
        fan_in, fan_out = dims[i], dims[i + 1]
        w = (rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        y = f"gemm{i}" if i < 2 else "OUTPUT0"
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"B{i}"], [y], transB=1, name=f"Gemm{i}"))
        if i < 2:
            nodes.append(helper.make_node("Relu", [y], [f"relu{i}"], name=f"Relu{i}"))
            x = f"relu{i}"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="kubeinfer examples/models/mlp/build.py",
        doc_string="Random-weight MLP: a benchmark model, not a trained classifier.",
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
    print(f"mlp: wrote {info['model']} (random weights)")
