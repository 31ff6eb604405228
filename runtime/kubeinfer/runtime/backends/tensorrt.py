"""TensorRT backend: serialized engines (``model.plan``), GPU only, TensorRT 10 API.

The engine's I/O tensors are its signature (names, types, shapes with -1 for dynamic
dimensions), so a config may omit ``input``/``output``. Dynamic shapes are served through
the engine's optimization profiles: one execution context per profile (at most one per
scheduler instance; with dynamic shapes TensorRT lets a profile serve one context at a
time), each with its own CUDA stream. A batch runs on a free context whose profile's
[min, max] range holds its input shapes; a shape no profile holds is a ``BackendError``.

Device memory and streams come from PyTorch (``torch.cuda``), which the ``tensorrt`` extra
installs with it. A call copies the inputs to the GPU, sets each input's shape and every
tensor's address, runs ``execute_async_v3`` on the context's stream and copies the outputs
back. Not supported: shape tensors (inputs living on the host), outputs whose shape
depends on the data, BF16/FP8/INT4 tensors.

Without the ``tensorrt`` package, PyTorch or a visible GPU, loading fails with a
``ConfigError`` naming what is missing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from kubeinfer.runtime.backends.base import Backend
from kubeinfer.runtime.errors import BackendError, ConfigError
from kubeinfer.spec.types import TensorSpec

log = logging.getLogger(__name__)

# TensorRT DataType member name -> (v2 datatype, torch dtype attribute)
_TRT_TYPES = {
    "FLOAT": ("FP32", "float32"),
    "HALF": ("FP16", "float16"),
    "INT8": ("INT8", "int8"),
    "INT32": ("INT32", "int32"),
    "INT64": ("INT64", "int64"),
    "BOOL": ("BOOL", "bool"),
    "UINT8": ("UINT8", "uint8"),
}


def _imports(path: Path):
    try:
        import tensorrt as trt
    except ImportError:
        raise ConfigError(
            f"{path}: the TensorRT backend needs the 'tensorrt' package and an NVIDIA GPU "
            "(pip install 'kubeinfer[tensorrt]'); the 'tensorrt' package is not installed"
        ) from None
    try:
        import torch
    except ImportError:
        raise ConfigError(
            f"{path}: the TensorRT backend needs 'torch' for CUDA memory and streams "
            "(pip install 'kubeinfer[tensorrt]')"
        ) from None
    return trt, torch


def fits(shape: Sequence[int], low: Sequence[int], high: Sequence[int]) -> bool:
    """Whether a concrete shape lies within an optimization profile's [min, max]."""
    return len(shape) == len(low) and all(lo <= s <= hi for s, lo, hi in zip(shape, low, high))


class _Context:
    __slots__ = ("context", "profile", "stream", "lock", "ranges")

    def __init__(self, context, profile: int, stream, ranges: dict) -> None:
        self.context = context
        self.profile = profile
        self.stream = stream
        self.lock = threading.Lock()
        #: input name -> (min shape, max shape) under this context's profile
        self.ranges = ranges


class TensorRTBackend(Backend):
    def __init__(
        self, path: Path, *, batched: bool = False, device: int = 0, instances: int = 1
    ) -> None:
        trt, torch = _imports(path)
        if not torch.cuda.is_available():
            raise ConfigError(f"{path}: TensorRT engines run on NVIDIA GPUs only; no CUDA GPU is visible")
        if device >= torch.cuda.device_count():
            raise ConfigError(
                f"{path}: instance_group names GPU {device}; {torch.cuda.device_count()} visible"
            )
        self._trt, self._torch = trt, torch
        self._device = torch.device("cuda", device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self._device):
            self._runtime = trt.Runtime(self._logger)
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ConfigError(
                f"{path}: TensorRT {trt.__version__} cannot deserialize the engine (built by "
                "another TensorRT version, for another GPU, or not an engine)"
            )
        self._engine = engine
        self.inputs, self.outputs = [], []
        self._types: dict[str, object] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            spec = self._spec(name)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                if engine.get_tensor_location(name) != trt.TensorLocation.DEVICE:
                    raise ConfigError(f"{path}: input '{name}' is a shape tensor; not supported")
                self.inputs.append(spec)
            else:
                self.outputs.append(spec)
        self._input_names = [s.name for s in self.inputs]
        self._contexts = self._create_contexts(path, max(instances, 1))

    def _spec(self, name: str) -> TensorSpec:
        dtype = self._engine.get_tensor_dtype(name)
        entry = _TRT_TYPES.get(dtype.name)
        if entry is None:
            raise ConfigError(f"TensorRT tensor '{name}' has unsupported type {dtype.name}")
        datatype, torch_attr = entry
        self._types[name] = getattr(self._torch, torch_attr)
        shape = tuple(int(d) if d >= 0 else -1 for d in self._engine.get_tensor_shape(name))
        return TensorSpec(name, datatype, shape)

    def _create_contexts(self, path: Path, instances: int) -> list[_Context]:
        engine, torch = self._engine, self._torch
        profiles = max(engine.num_optimization_profiles, 1)
        contexts = []
        with torch.cuda.device(self._device):
            for profile in range(min(instances, profiles)):
                context = engine.create_execution_context()
                if context is None:
                    raise ConfigError(f"{path}: cannot create a TensorRT execution context (GPU memory?)")
                stream = torch.cuda.Stream(self._device)
                if profile:
                    context.set_optimization_profile_async(profile, stream.cuda_stream)
                    stream.synchronize()
                ranges = {}
                for name in self._input_names:
                    low, _opt, high = engine.get_tensor_profile_shape(name, profile)
                    ranges[name] = (tuple(low), tuple(high))
                contexts.append(_Context(context, profile, stream, ranges))
        if instances > len(contexts):
            log.info(
                "%d instances share %d TensorRT execution context(s), one per optimization profile",
                instances, len(contexts),
            )
        return contexts

    # -- execution (instance threads) ------------------------------------------------------

    def _acquire(self, shapes: Mapping[str, tuple[int, ...]]) -> _Context:
        fitting = [
            c for c in self._contexts
            if all(fits(shapes[n], *c.ranges[n]) for n in self._input_names)
        ]
        if not fitting:
            ranges = {n: self._contexts[0].ranges[n] for n in self._input_names}
            raise BackendError(
                f"input shapes {dict(shapes)} are outside every optimization profile "
                f"(profile 0: {ranges})"
            )
        for c in fitting:
            if c.lock.acquire(blocking=False):
                return c
        fitting[0].lock.acquire()
        return fitting[0]

    def execute(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        torch = self._torch
        shapes = {n: tuple(inputs[n].shape) for n in self._input_names}
        ctx = self._acquire(shapes)
        try:
            with torch.cuda.device(self._device), torch.cuda.stream(ctx.stream):
                keep = []
                context = ctx.context
                for name in self._input_names:
                    arr = inputs[name]
                    if not arr.flags.writeable:
                        arr = arr.copy()
                    tensor = torch.from_numpy(np.ascontiguousarray(arr)).to(self._device)
                    keep.append(tensor)
                    if not context.set_input_shape(name, shapes[name]):
                        raise BackendError(f"TensorRT refused shape {shapes[name]} for input '{name}'")
                    context.set_tensor_address(name, tensor.data_ptr())
                outputs = {}
                for spec in self.outputs:
                    shape = tuple(context.get_tensor_shape(spec.name))
                    if any(d < 0 for d in shape):
                        raise BackendError(f"output '{spec.name}' has a data-dependent shape; not supported")
                    out = torch.empty(shape, dtype=self._types[spec.name], device=self._device)
                    context.set_tensor_address(spec.name, out.data_ptr())
                    outputs[spec.name] = out
                if not context.execute_async_v3(ctx.stream.cuda_stream):
                    raise BackendError("TensorRT execute_async_v3 failed (see the server log)")
                result = {name: outputs[name].cpu().numpy() for name in output_names}
                ctx.stream.synchronize()
                return result
        finally:
            ctx.lock.release()

    def unload(self) -> None:
        for c in self._contexts:
            with c.lock:
                c.context = None
        self._contexts = []
        self._engine = None
