"""Small real PyTorch models built by the tests: TorchScript (scripted and traced) and
``torch.export`` programs, written as Triton model repositories."""

from __future__ import annotations

from pathlib import Path

import torch


class AddSub(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a - b


class ScaleArgmax(torch.nn.Module):
    """Dict output (mapped by key); arguments named like the config's inputs."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        y = x * scale
        return {"scaled": y, "argmax": torch.argmax(y, dim=1, keepdim=True)}


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc2(torch.relu(self.fc1(x))), dim=1)


ADD_SUB_TS_CONFIG = """
platform: "pytorch_libtorch"
max_batch_size: 8
input [
  { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "INPUT__1" data_type: TYPE_FP32 dims: [ 4 ] }
]
output [
  { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 4 ] }
]
dynamic_batching { max_queue_delay_microseconds: 20000 }
"""

# inputs declared in the other order than forward's arguments: mapped by name
SCALE_TS_CONFIG = """
platform: "pytorch_libtorch"
max_batch_size: 4
input [
  { name: "scale" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "x" data_type: TYPE_FP32 dims: [ 3 ] }
]
output [
  { name: "argmax" data_type: TYPE_INT64 dims: [ 1 ] },
  { name: "scaled" data_type: TYPE_FP32 dims: [ 3 ] }
]
"""

MLP_EXPORT_CONFIG = """
backend: "pytorch"
default_model_filename: "model.pt2"
max_batch_size: 16
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [ { count: 2 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


def _repo(root: Path, name: str, filename: str, config: str | None) -> Path:
    version = root / name / "1"
    version.mkdir(parents=True)
    if config is not None:
        (root / name / "config.pbtxt").write_text(config)
    return version / filename


def torchscript_repo(root: Path, name: str, module: torch.nn.Module, config: str | None, trace_with=None) -> Path:
    path = _repo(root, name, "model.pt", config)
    scripted = torch.jit.trace(module, trace_with) if trace_with else torch.jit.script(module)
    scripted.save(str(path))
    return root


def export_repo(root: Path, name: str, config: str | None = None) -> Path:
    path = _repo(root, name, "model.pt2", config)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(Mlp().eval(), (torch.randn(2, 4),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    return root
