"""RSS of a fresh operator process after importing its handlers and rendering one
InferenceModel with an inline config (the figure in docs/operator.md#operator-image).

    python tools/operator_rss.py        # in the venv to measure
"""

import sys
from kubeinfer.operator import handlers  # noqa: F401
from kubeinfer.operator.api.v1alpha1 import InferenceModelSpec
from kubeinfer.operator.render import RenderOptions, Target, render_all

spec = InferenceModelSpec.model_validate({"model": {"uri": "s3://b/mlp", "format": "onnx", "config": {
    "max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 100},
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}]}}})
objs = render_all(Target(name="mlp", namespace="ns", uid="u", spec=spec), RenderOptions())
assert any(o["kind"] == "ConfigMap" for o in objs)
rss = next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]
heavy = sorted(m for m in ("numpy", "grpc", "fastapi", "uvicorn", "tritonclient", "starlette", "orjson", "httpx") if m in sys.modules)
print(f"VmRSS_kB={rss} modules={len(sys.modules)} heavy={heavy}")
