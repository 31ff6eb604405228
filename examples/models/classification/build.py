#!/usr/bin/env python3
"""Build the ``classification`` example: a ResNet-18-shaped image classifier with RANDOM
weights. It is a benchmark / plumbing model — its answers mean nothing.

The graph is torchvision's resnet18 in inference form with BatchNorm folded into the
convolutions (Conv with bias), built directly with ``onnx.helper`` + numpy (no torch):

    data FP32 [B, 3, 224, 224]
      -> Conv 7x7/2 64 -> Relu -> MaxPool 3x3/2
      -> 4 stages x 2 BasicBlocks (64/128/256/512 channels; block = Conv 3x3 -> Relu ->
         Conv 3x3 -> Add skip -> Relu; the first block of stages 2-4 has stride 2 and a
         1x1/2 Conv downsample on the skip path)
      -> GlobalAveragePool -> Flatten -> Gemm 512x1000
      -> output FP32 [B, 1000]  (logits; class names in labels.txt)

1.814 GMAC per sample, 11.7 M parameters (~47 MB). Weights: numpy ``default_rng(0)``,
He-normal, the last conv of each residual branch and the downsample conv scaled by
sqrt(1/2) so activations stay O(1); the file is the same on every build.

Output: ``1/model.onnx`` (generated, gitignored).
Usage: python examples/models/classification/build.py   (or examples/build.py)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
INPUT, OUTPUT = "data", "output"
NUM_CLASSES = 1000
OPSET = 17
IR_VERSION = 8


def make_model(seed: int = 0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(x, name, cin, cout, k, stride, scale=1.0):
        fan_in = cin * k * k
        w = (rng.standard_normal((cout, cin, k, k)) * (scale * np.sqrt(2.0 / fan_in))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.01).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")])
        nodes.append(helper.make_node(
            "Conv", [x, f"{name}.weight", f"{name}.bias"], [name], name=f"{name}/Conv",
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, dilations=[1, 1], group=1))
        return name

    def relu(x, name):
        nodes.append(helper.make_node("Relu", [x], [name], name=f"{name}/Relu"))
        return name

    branch_scale = np.sqrt(0.5)
    x = relu(conv(INPUT, "conv1", 3, 64, 7, 2), "relu")
    nodes.append(helper.make_node("MaxPool", [x], ["maxpool"], name="maxpool/MaxPool", kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1], ceil_mode=0))
    x, cin = "maxpool", 64
    for stage, cout in enumerate([64, 128, 256, 512], start=1):
        for blk in range(2):
            p = f"layer{stage}.{blk}"
            stride = 2 if (stage > 1 and blk == 0) else 1
            y = relu(conv(x, f"{p}.conv1", cin, cout, 3, stride), f"{p}.relu")
            y = conv(y, f"{p}.conv2", cout, cout, 3, 1, scale=branch_scale)
            skip = x
            if stride != 1 or cin != cout:
                skip = conv(x, f"{p}.downsample", cin, cout, 1, stride, scale=branch_scale)
            nodes.append(helper.make_node("Add", [y, skip], [f"{p}.add"], name=f"{p}/Add"))
            x, cin = relu(f"{p}.add", f"{p}.relu_1"), cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["avgpool"], name="avgpool/GlobalAveragePool"))
    nodes.append(helper.make_node("Flatten", ["avgpool"], ["flatten"], name="Flatten", axis=1))
    w = (rng.standard_normal((NUM_CLASSES, 512)) * np.sqrt(1.0 / 512)).astype(np.float32)
    b = (rng.standard_normal(NUM_CLASSES) * 0.01).astype(np.float32)
    inits.extend([numpy_helper.from_array(w, "fc.weight"), numpy_helper.from_array(b, "fc.bias")])
    nodes.append(helper.make_node("Gemm", ["flatten", "fc.weight", "fc.bias"], [OUTPUT], name="fc/Gemm",
                                  alpha=1.0, beta=1.0, transB=1))
    graph = helper.make_graph(
        nodes, "resnet18",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="kubeinfer examples/models/classification/build.py",
        doc_string="ResNet-18 topology with random weights: a benchmark model, not a trained classifier.",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def build(model_dir: Path = HERE) -> dict:
    import onnx

    out = model_dir / "1" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(make_model(), str(out))
    labels = model_dir / "labels.txt"
    if not labels.exists():
        labels.write_text("".join(f"class_{i:03d}\n" for i in range(NUM_CLASSES)), encoding="utf-8")
    return {"model": str(out)}


if __name__ == "__main__":
    info = build()
    print(f"classification: wrote {info['model']} (ResNet-18 shape, random weights)")
