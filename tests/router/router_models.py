"""Step models and ensemble definitions for the router tests (real ONNX, real processes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from onnx import TensorProto, helper

from tests.runtime.models import _save, add_sub, slow_mlp, write_repo


def affine(path: Path, scale: float, bias: float, dims: int = 4) -> None:
    """INPUT0 [B, dims] -> OUTPUT0 = INPUT0 * scale + bias."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["INPUT0", "s"], ["m"]), helper.make_node("Add", ["m", "b"], ["OUTPUT0"])],
        "affine",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["B", dims])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["B", dims])],
        initializer=[helper.make_tensor("s", TensorProto.FLOAT, [], [scale]),
                     helper.make_tensor("b", TensorProto.FLOAT, [], [bias])],
    )
    _save(graph, path)


def fixed_batch(path: Path, dims: int = 4) -> None:
    """INPUT0 [B, dims] -> OUTPUT0: a Reshape to [2, dims] -- fails in the backend unless B == 2."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["INPUT0", "shape"], ["OUTPUT0"])],
        "fixed_batch",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["B", dims])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["B", dims])],
        initializer=[helper.make_tensor("shape", TensorProto.INT64, [2], [2, dims])],
    )
    _save(graph, path)


def config(name: str, dims: int, max_batch: int = 8, inputs=("INPUT0",), outputs=("OUTPUT0",), extra: str = "") -> str:
    ins = ", ".join(f'{{ name: "{n}" data_type: TYPE_FP32 dims: [ {dims} ] }}' for n in inputs)
    outs = ", ".join(f'{{ name: "{n}" data_type: TYPE_FP32 dims: [ {dims} ] }}' for n in outputs)
    return (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch}\n'
            f"input [ {ins} ]\noutput [ {outs} ]\n{extra}")


ONE_THREAD = 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'


def affine_repo(root: Path, name: str, scale: float, bias: float, max_batch: int = 8) -> Path:
    return write_repo(root, name, config(name, 4, max_batch), lambda p: affine(p, scale, bias))


def slow_repo(root: Path, name: str, width: int = 512, layers: int = 24) -> Path:
    return write_repo(root, name, config(name, width, 16, extra=ONE_THREAD), lambda p: slow_mlp(p, width, layers))


def add_sub_repo(root: Path, name: str, dims: int) -> Path:
    return write_repo(root, name, config(name, dims, 16, ("INPUT0", "INPUT1"), ("OUTPUT0", "OUTPUT1")),
                      lambda p: add_sub(p, dims))


def fixed_batch_repo(root: Path, name: str) -> Path:
    return write_repo(root, name, config(name, 4, 8), fixed_batch)


def step(model: str, inputs: dict[str, str], outputs: dict[str, str], **extra) -> dict:
    return {"model_name": model, "input_map": inputs, "output_map": outputs, **extra}


def tensor(name: str, dims: list[int], datatype: str = "FP32") -> dict:
    return {"name": name, "datatype": datatype, "dims": dims}


def write_definition(path: Path, name: str, inputs: list[dict], outputs: list[dict], steps: list[dict], **extra) -> Path:
    doc = {"name": name, "max_batch_size": 8, "inputs": inputs, "outputs": outputs, "steps": steps, **extra}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def rand(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)
