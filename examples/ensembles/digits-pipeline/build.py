#!/usr/bin/env python3
"""Build the two ONNX step models of the digits pipeline (idempotent, takes a second).

    preprocess   raw UINT8 [B, 64] (8x8 image, pixel bytes 0..255)
                   -> Cast -> Mul(16/255) -> image FP32 [B, 64] (the digits model's 0..16 range)
    postprocess  probabilities FP32 [B, 10]
                   -> TopK(k=3) -> scores FP32 [B, 3], classes INT64 [B, 3] (best first)

The classifier in between is ``examples/models/digits`` (``python examples/build.py digits``).
Writes ``models/{preprocess,postprocess}/1/model.onnx`` (generated, not committed).
Needs numpy and onnx.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent
OPSET = [helper.make_opsetid("", 17)]
TOP_K = 3


def _save(graph, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def preprocess(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Cast", ["raw"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["f", "scale"], ["image"])],
        "preprocess",
        [helper.make_tensor_value_info("raw", TensorProto.UINT8, ["B", 64])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 64])],
        initializer=[helper.make_tensor("scale", TensorProto.FLOAT, [], [np.float32(16.0 / 255.0)])],
    )
    _save(graph, path)


def postprocess(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("TopK", ["probabilities", "k"], ["scores", "classes"], axis=-1, largest=1, sorted=1)],
        "postprocess",
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["B", 10])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["B", TOP_K]),
         helper.make_tensor_value_info("classes", TensorProto.INT64, ["B", TOP_K])],
        initializer=[helper.make_tensor("k", TensorProto.INT64, [1], [TOP_K])],
    )
    _save(graph, path)


def main() -> int:
    preprocess(HERE / "models" / "preprocess" / "1" / "model.onnx")
    postprocess(HERE / "models" / "postprocess" / "1" / "model.onnx")
    print("built models/preprocess and models/postprocess")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
