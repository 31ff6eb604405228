"""Python-backend model repositories written by the tests: a scikit-learn iris classifier
(trained here, saved with joblib next to its model.py) and small models for error paths."""

from __future__ import annotations

import functools
import textwrap
from pathlib import Path

IRIS_CONFIG = """
name: "iris"
backend: "python"
max_batch_size: 16
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "LABEL" data_type: TYPE_INT64 dims: [ 1 ] },
  { name: "PROBABILITIES" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "INSTANCE" data_type: TYPE_STRING dims: [ 1 ] }
]
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [ { count: 2 kind: KIND_CPU } ]
"""

# Written as a Triton user writes it: Triton's module name, per-request loop, an error
# response for a bad request instead of an exception.
IRIS_MODEL = '''
import json
import os

import joblib
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_instance_name"]
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.clf = joblib.load(os.path.join(folder, "model.joblib"))
        config = json.loads(args["model_config"])
        out = pb_utils.get_output_config_by_name(config, "PROBABILITIES")
        self.proba_dtype = pb_utils.triton_string_to_numpy(out["data_type"])

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            if np.isnan(x).any():
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("INPUT contains NaN")))
                continue
            label = self.clf.predict(x).astype(np.int64).reshape(-1, 1)
            proba = self.clf.predict_proba(x).astype(self.proba_dtype)
            instance = np.array([[self.name.encode()]] * len(x), dtype=object)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("LABEL", label),
                pb_utils.Tensor("PROBABILITIES", proba),
                pb_utils.Tensor("INSTANCE", instance),
            ]))
        return responses

    def finalize(self):
        self.clf = None
'''


@functools.cache
def train_iris():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    clf = LogisticRegression(max_iter=500).fit(data.data, data.target)
    return clf, data.data.astype("float32"), data.target


def iris_repo(root: Path) -> Path:
    import joblib

    clf, _, _ = train_iris()
    model_dir = root / "iris"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(IRIS_CONFIG)
    (model_dir / "1" / "model.py").write_text(IRIS_MODEL)
    joblib.dump(clf, model_dir / "1" / "model.joblib")
    return root


ECHO_CONFIG = """
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]
dynamic_batching { max_queue_delay_microseconds: 20000 }
"""

# doubles its input; raises for a negative input (the exception path); imports the
# project's own module name
RAISING_MODEL = '''
from kubeinfer.runtime.backends import python_api as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = request.inputs()[0].as_numpy()
            if (x < 0).any():
                raise ValueError("negative input")
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x * 2)]))
        return out
'''


def python_repo(root: Path, name: str, model_py: str, config: str = ECHO_CONFIG) -> Path:
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_text(textwrap.dedent(model_py))
    if config is not None:
        (model_dir / "config.pbtxt").write_text(config)
    return root
