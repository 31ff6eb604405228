#!/usr/bin/env python3
"""Build the ``digits`` example: a real handwritten-digit classifier, trained offline.

Trains a multinomial logistic regression (scikit-learn, fixed seeds) on the 8x8 digits
data set that ships inside scikit-learn (``load_digits``: no download), then writes the
learned weights as a two-node ONNX graph built with ``onnx.helper``:

    image FP32 [B, 64]  (pixel values 0..16, the 8x8 image flattened row by row)
      -> Gemm (weights pre-divided by 16, the scaling used in training)
      -> Softmax(axis=1)
      -> probabilities FP32 [B, 10]  (class i = digit i, see labels.txt)

Outputs: ``1/model.onnx`` (generated, gitignored), ``samples.json`` (a few held-out test
images with their true labels) and ``request.json`` (the same images as one KServe v2
request body), both committed and used by the README examples and the tests.

Usage: python examples/models/digits/build.py      (or examples/build.py for every example)
Needs: numpy, scikit-learn, onnx (the ``examples`` extra).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 0
TEST_SIZE = 0.25
N_SAMPLES = 4  # held-out images saved to samples.json
OPSET = 17
IR_VERSION = 8


def split():
    """The fixed train/test split: (x_train, x_test, y_train, y_test), pixels 0..16 as float32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    return train_test_split(x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y)


def train(x_train, y_train):
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=2000, random_state=SEED)
    clf.fit(x_train / 16.0, y_train)
    return clf


def to_onnx(clf):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # logits = (x / 16) @ coef.T + intercept  ==  x @ (coef / 16).T + intercept
    w = (clf.coef_ / 16.0).astype(np.float32)  # [10, 64]
    b = clf.intercept_.astype(np.float32)  # [10]
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["image", "W", "B"], ["logits"], transB=1, name="linear"),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"),
        ],
        "digits",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="kubeinfer examples/models/digits/build.py",
        doc_string="Handwritten digit classifier (scikit-learn digits, logistic regression).",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def build(model_dir: Path = HERE) -> dict:
    import onnx

    x_train, x_test, y_train, y_test = split()
    clf = train(x_train, y_train)
    accuracy = float(clf.score(x_test / 16.0, y_test))
    model = to_onnx(clf)
    out = model_dir / "1" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))

    # one held-out image of each of the first N_SAMPLES digits, for curl / tritonclient examples
    picks = [int(np.flatnonzero(y_test == d)[0]) for d in range(N_SAMPLES)]
    samples = [{"label": int(y_test[i]), "image": [int(v) for v in x_test[i]]} for i in picks]
    lines = ",\n".join("  " + json.dumps(s, separators=(", ", ": ")) for s in samples)
    (model_dir / "samples.json").write_text(
        '{"input": "image", "output": "probabilities",\n'
        ' "note": "held-out test images of scikit-learn digits (pixels 0..16, 8x8 flattened)",\n'
        ' "samples": [\n' + lines + "\n ]}\n",
        encoding="utf-8",
    )
    # the same images as a KServe v2 request body (batch of N_SAMPLES): curl -d @request.json
    request = {
        "inputs": [
            {
                "name": "image",
                "shape": [len(samples), 64],
                "datatype": "FP32",
                "data": [v for s in samples for v in s["image"]],
            }
        ]
    }
    (model_dir / "request.json").write_text(json.dumps(request) + "\n", encoding="utf-8")
    return {"model": str(out), "test_accuracy": accuracy, "test_size": int(len(y_test))}


if __name__ == "__main__":
    info = build()
    print(f"digits: wrote {info['model']} (test accuracy {info['test_accuracy']:.4f} "
          f"on {info['test_size']} held-out images)")
    sys.exit(0)
