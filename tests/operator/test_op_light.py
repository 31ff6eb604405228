"""The operator renders and checks specs without the data plane (issue #12): importing its
handlers and rendering a model with an inline config and an ensemble imports none of the
runtime's or router's dependencies, nor the runtime or router themselves."""

from __future__ import annotations

import subprocess
import sys
import textwrap

DATA_PLANE = ("numpy", "grpc", "fastapi", "starlette", "uvicorn", "tritonclient", "orjson", "prometheus_client",
              "kubeinfer.runtime", "kubeinfer.router", "kubeinfer.fetch")

CODE = """
import sys
import kubeinfer.operator.handlers
from kubeinfer.operator.api.v1alpha1 import InferenceEnsembleSpec, InferenceModelSpec
from kubeinfer.operator.render import EnsembleTarget, RenderOptions, ResolvedStep, Target, render_all, render_ensemble

config = {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 100},
          "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
          "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}]}
spec = InferenceModelSpec.model_validate({"model": {"uri": "s3://b/mlp", "format": "onnx", "config": config}})
objects = render_all(Target(name="mlp", namespace="ns", uid="u", spec=spec), RenderOptions())
assert 'backend: "onnxruntime"' in next(o for o in objects if o["kind"] == "ConfigMap")["data"]["config.pbtxt"]

espec = InferenceEnsembleSpec.model_validate({
    "inputs": [{"name": "in", "datatype": "FP32", "dims": [4]}],
    "outputs": [{"name": "out", "datatype": "FP32", "dims": [2]}],
    "steps": [{"name": "s", "modelRef": "mlp", "inputMap": {"x": "in"}, "outputMap": {"y": "out"}}]})
steps = (ResolvedStep("s", "mlp", "http://mlp.ns.svc.cluster.local:8000"),)
render_ensemble(EnsembleTarget(name="e", namespace="ns", uid="v", spec=espec, steps=steps), RenderOptions())
print(sorted(m for m in %r if m in sys.modules))
"""


def test_operator_renders_without_importing_the_data_plane():
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CODE % (DATA_PLANE,))],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
