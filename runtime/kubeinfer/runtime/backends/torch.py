"""PyTorch backend: TorchScript archives (``model.pt``) and ``torch.export`` programs
(``model.pt2``).

Loading never unpickles arbitrary Python objects: TorchScript archives go through
``torch.jit.load`` (TorchScript's own restricted format); exported programs through
``torch.export.load`` after the archive is checked for pickled entries, with every
``torch.load`` it makes forced to ``weights_only``. ``torch.load`` is not called here.

Tensor mapping, as Triton's PyTorch backend does it:

- inputs: when every configured input name is an argument name of ``forward``, by name;
  else names ending in ``__<i>`` (``INPUT__0``) go to position ``i``; else the config's
  order is the argument order.
- outputs: a ``dict`` result maps by key; a tuple/list (or a single tensor) maps
  ``OUTPUT__<i>`` names to position ``i``, other names in the config's order.

A TorchScript archive says nothing about its tensors' names, types or shapes, so its
config must declare ``input`` and ``output``. An exported program records its example
inputs, so its inputs (argument names, dtypes, shapes with symbolic dimensions as -1)
are derived; its outputs are named ``OUTPUT__<i>``.

Device: ``instance_group { kind: KIND_GPU gpus: [n] }`` runs on ``cuda:n`` (the first
GPU listed, ``cuda:0`` when none is); anything else runs on the CPU. Every call runs
under ``torch.inference_mode()``. Threads: ``torch.set_num_threads`` is process-wide,
which is fine here since a runtime process serves one model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from kubeinfer.runtime.backends.base import Backend
from kubeinfer.runtime.datatypes import to_numpy
from kubeinfer.runtime.errors import BackendError, ConfigError
from kubeinfer.spec.types import TensorSpec

log = logging.getLogger(__name__)

_FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_POSITIONAL = re.compile(r"^.*__(\d+)$")

# v2 datatype -> torch dtype attribute name (BYTES has no torch equivalent)
_TORCH_TYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}


def _datatype_of(torch, dtype) -> str:
    for datatype, attr in _TORCH_TYPES.items():
        if getattr(torch, attr, None) == dtype:
            return datatype
    raise ConfigError(f"torch dtype {dtype} has no v2 datatype")


def positions(names: Sequence[str], arguments: Sequence[str] = ()) -> list[int]:
    """Argument position of each configured tensor name (see the module docstring)."""
    if arguments and all(n in arguments for n in names):
        return [list(arguments).index(n) for n in names]
    matches = [_POSITIONAL.match(n) for n in names]
    if names and all(matches):
        idx = [int(m.group(1)) for m in matches if m]
        if sorted(idx) != list(range(len(names))):
            raise ConfigError(f"tensor names {list(names)} do not number 0..{len(names) - 1}")
        return idx
    return list(range(len(names)))


def device_for(wants_gpu: bool, gpus: Sequence[int]) -> str:
    return f"cuda:{gpus[0] if gpus else 0}" if wants_gpu else "cpu"


class TorchBackend(Backend):
    """``kind`` is ``"torchscript"`` (``model.pt``) or ``"export"`` (``model.pt2``).

    ``inputs``/``outputs`` are the config's declared tensors (batch dimension excluded)
    and ``batched`` whether the model batches (``max_batch_size > 0``).
    """

    def __init__(
        self,
        path: Path,
        *,
        kind: str,
        inputs: Sequence[TensorSpec] = (),
        outputs: Sequence[TensorSpec] = (),
        batched: bool = False,
        device: str = "cpu",
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
    ) -> None:
        try:
            import torch
        except ImportError:
            raise ConfigError(
                f"{path}: the PyTorch backend needs the 'torch' package "
                "(pip install 'kubeinfer[torch]')"
            ) from None
        self._torch = torch
        _set_threads(torch, intra_op_threads, inter_op_threads)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"{path}: instance_group asks for KIND_GPU ({device}) but torch sees no CUDA GPU"
            )
        self.device = torch.device(device)
        for spec in [*inputs, *outputs]:
            if spec.datatype not in _TORCH_TYPES:
                raise ConfigError(f"tensor '{spec.name}': {spec.datatype} is not supported by PyTorch")
        lead = (-1,) if batched else ()
        if kind == "torchscript":
            self._module, arguments = self._load_script(path, inputs, outputs)
            self.inputs = [TensorSpec(s.name, s.datatype, lead + s.shape) for s in inputs]
            self.outputs = [TensorSpec(s.name, s.datatype, lead + s.shape) for s in outputs]
        elif kind == "export":
            self._module, arguments, derived = self._load_export(path)
            declared = [TensorSpec(s.name, s.datatype, lead + s.shape) for s in inputs]
            self.inputs = declared or derived
            self.outputs = [TensorSpec(s.name, s.datatype, lead + s.shape) for s in outputs]
            if not self.outputs:
                # an exported program's output count is known, its names are not
                self.outputs = self._export_outputs(derived)
        else:
            raise ConfigError(f"unknown PyTorch model kind '{kind}'")
        names = [s.name for s in self.inputs]
        self._input_order = sorted(zip(positions(names, arguments), names))
        self._output_names = [s.name for s in self.outputs]
        self._output_positions = dict(zip(self._output_names, positions(self._output_names)))
        self._output_dtypes = {s.name: to_numpy(s.datatype) for s in self.outputs}

    # -- loading ---------------------------------------------------------------------------

    def _load_script(self, path, inputs, outputs):
        if not inputs or not outputs:
            raise ConfigError(
                f"{path}: a TorchScript model does not record its tensors' names, types or "
                "shapes; declare 'input' and 'output' in config.pbtxt "
                '(e.g. input [{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ 4 ] }])'
            )
        try:
            module = self._torch.jit.load(str(path), map_location=self.device)
        except Exception as exc:  # torch raises RuntimeError and friends
            raise ConfigError(f"{path}: torch.jit.load cannot load the model: {exc}") from None
        module.eval()
        try:
            arguments = [a.name for a in module.forward.schema.arguments][1:]  # drop self
        except AttributeError:
            arguments = []
        return module, arguments

    def _load_export(self, path):
        torch = self._torch
        try:
            program = safe_export_load(torch, path)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{path}: torch.export.load cannot load the program: {exc}") from None
        if self.device.type != "cpu":
            move = getattr(getattr(torch.export, "passes", None), "move_to_device_pass", None)
            if move is None:
                raise ConfigError(f"{path}: this torch cannot move an exported program to {self.device}")
            program = move(program, self.device)
        placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        derived, arguments = [], []
        for name in program.graph_signature.user_inputs:
            node = placeholders.get(name)
            value = node.meta.get("val") if node is not None else None
            if value is None or not hasattr(value, "dtype"):
                raise ConfigError(f"{path}: exported input '{name}' is not a tensor")
            shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
            derived.append(TensorSpec(name, _datatype_of(torch, value.dtype), shape))
            arguments.append(name)
        self._output_meta = []
        outputs = [n for n in program.graph.nodes if n.op == "output"]
        if outputs:
            for value in outputs[0].args[0][-len(program.graph_signature.user_outputs) or None:]:
                meta = getattr(value, "meta", {}).get("val")
                self._output_meta.append(meta)
        return program.module(), arguments, derived

    def _export_outputs(self, derived) -> list[TensorSpec]:
        specs = []
        for i, meta in enumerate(self._output_meta):
            if meta is None or not hasattr(meta, "dtype"):
                raise ConfigError("an exported output is not a tensor; declare 'output' in the config")
            shape = tuple(d if isinstance(d, int) else -1 for d in meta.shape)
            specs.append(TensorSpec(f"OUTPUT__{i}", _datatype_of(self._torch, meta.dtype), shape))
        return specs

    # -- execution (instance threads) ------------------------------------------------------

    def execute(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        torch = self._torch
        device = self.device
        args = []
        for _, name in self._input_order:
            arr = inputs[name]
            if not arr.flags.writeable:  # torch wants writable memory; decoded bodies are not
                arr = arr.copy()
            args.append(torch.from_numpy(arr).to(device))
        with torch.inference_mode():
            result = self._module(*args)
        return self._outputs(result, output_names)

    def _outputs(self, result, output_names: Sequence[str]) -> dict[str, np.ndarray]:
        torch = self._torch
        if isinstance(result, torch.Tensor):
            result = (result,)
        out: dict[str, np.ndarray] = {}
        for name in output_names:
            if isinstance(result, Mapping):
                if name not in result:
                    raise BackendError(f"the model returned no output '{name}' (it has {sorted(result)})")
                value = result[name]
            else:
                pos = self._output_positions[name]
                if pos >= len(result):
                    raise BackendError(f"the model returned {len(result)} outputs, no '{name}'")
                value = result[pos]
            if not isinstance(value, torch.Tensor):
                raise BackendError(f"output '{name}' is a {type(value).__name__}, not a tensor")
            arr = value.cpu().numpy()
            want = self._output_dtypes[name]
            if arr.dtype != want:
                raise BackendError(f"output '{name}' is {arr.dtype}, the config declares {want}")
            out[name] = arr
        return out

    def unload(self) -> None:
        self._module = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()


def check_archive(path: Path) -> None:
    """Refuse a ``.pt2`` archive whose loading would unpickle Python objects: pickled
    weights or constants (tensor subclasses) and opaque objects (plain ``pickle``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                base = name.rsplit("/", 1)[-1]
                if base.startswith("opaque_obj_"):
                    raise ConfigError(f"{path}: holds a pickled Python object ({name}); not loaded")
                if base.endswith("_config.json") and "/data/" in name:
                    entries = json.loads(archive.read(name)).get("config", {})
                    for fqn, entry in entries.items():
                        if isinstance(entry, dict) and entry.get("use_pickle"):
                            raise ConfigError(
                                f"{path}: '{fqn}' is stored pickled (a tensor subclass); "
                                "kubeinfer does not unpickle model files"
                            )
    except (zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a torch.export archive: {exc}") from None


def safe_export_load(torch, path: Path):
    """``torch.export.load`` without arbitrary unpickling: the archive is checked first,
    and every ``torch.load`` inside runs weights-only (torch reads
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` per call; set only while loading, at startup)."""
    check_archive(path)
    previous = os.environ.get(_FORCE_WEIGHTS_ONLY)
    os.environ[_FORCE_WEIGHTS_ONLY] = "1"
    try:
        return torch.export.load(str(path))
    finally:
        if previous is None:
            del os.environ[_FORCE_WEIGHTS_ONLY]
        else:
            os.environ[_FORCE_WEIGHTS_ONLY] = previous


def _set_threads(torch, intra: int, inter: int) -> None:
    if intra > 0:
        torch.set_num_threads(intra)
    if inter > 0:
        try:
            torch.set_num_interop_threads(inter)
        except RuntimeError as exc:  # only settable before the first parallel work
            log.warning("cannot set inter-op threads to %d: %s", inter, exc)
