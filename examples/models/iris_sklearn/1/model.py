"""Iris classifier: a scikit-learn pipeline saved by ../build.py, served by the Python backend.

features FP32 [B, 4] (sepal length, sepal width, petal length, petal width, in cm)
  -> label INT64 [B, 1] (0 setosa, 1 versicolor, 2 virginica), probabilities FP32 [B, 3]
"""

import os

import joblib
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.model = joblib.load(os.path.join(folder, "model.joblib"))

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "features").as_numpy()
            if not np.isfinite(x).all():
                error = pb_utils.TritonError("features must be finite numbers")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            probabilities = self.model.predict_proba(x).astype(np.float32)
            label = probabilities.argmax(axis=1).astype(np.int64).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("label", label),
                pb_utils.Tensor("probabilities", probabilities),
            ]))
        return responses
