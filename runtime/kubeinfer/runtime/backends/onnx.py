"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers.

Settings come from the model config as Triton's onnxruntime backend reads them:
``instance_group { kind: KIND_GPU }`` asks for CUDA, ``optimization {
execution_accelerators { gpu_execution_accelerator [{ name: "tensorrt" }] } }`` puts
TensorRT in front, and ``parameters`` ``intra_op_thread_count`` /
``inter_op_thread_count`` set the thread pools (``allow_spinning: "1"`` lets idle ORT
threads spin, off by default: they would take the CPU the HTTP loop needs). A provider that is not available is
logged and skipped; CPU is always last.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from kubeinfer.runtime.backends.base import Backend
from kubeinfer.runtime.errors import ConfigError
from kubeinfer.spec.types import TensorSpec

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def _spec(arg) -> TensorSpec:
    datatype = _ORT_TYPES.get(arg.type)
    if datatype is None:
        raise ConfigError(f"ONNX tensor '{arg.name}' has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


def choose_providers(
    wants_gpu: bool, accelerators: Sequence[str], available: Sequence[str]
) -> list[str]:
    """Execution providers in priority order, from what the config asks and ORT offers."""
    wanted: list[str] = []
    if wants_gpu or accelerators:
        for acc in accelerators:
            if acc.lower() == "tensorrt":
                wanted.append("TensorrtExecutionProvider")
        wanted.append("CUDAExecutionProvider")
    chosen = []
    for provider in wanted:
        if provider in available:
            chosen.append(provider)
        else:
            log.warning("%s is not available in this onnxruntime; falling back", provider)
    chosen.append("CPUExecutionProvider")
    return chosen


def _strings(arr: np.ndarray) -> np.ndarray:
    """BYTES elements (bytes) as the str objects ONNX Runtime's string tensors take."""
    flat = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
    return np.array(flat, dtype=np.object_).reshape(arr.shape)


class OnnxBackend(Backend):
    utf8_strings = True

    def __init__(
        self,
        path: Path,
        *,
        wants_gpu: bool = False,
        accelerators: Sequence[str] = (),
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        allow_spinning: bool = False,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        # spinning worker threads burn the CPU the HTTP loop needs (and a pod's CPU quota)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if allow_spinning else "0")
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = choose_providers(wants_gpu, accelerators, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types
            raise ConfigError(f"{path}: onnxruntime cannot load the model: {exc}") from None
        self.providers = self.session.get_providers()
        self.inputs = [_spec(a) for a in self.session.get_inputs()]
        self.outputs = [_spec(a) for a in self.session.get_outputs()]
        self._run = self.session.run

    def execute(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        feed = {k: (_strings(v) if v.dtype == np.object_ else v) for k, v in inputs.items()}
        results = self._run(list(output_names), feed)
        return dict(zip(output_names, results, strict=True))

    def unload(self) -> None:
        del self.session
