"""Triton's model repository layout: find a model, pick its version, load its backend.

``<repo>/<model>/config.pbtxt`` (or YAML/JSON), ``<repo>/<model>/<version>/model.<ext>``,
optional label files. The config is completed from the model file where it omits
inputs/outputs (Triton's auto-complete), and checked against it where it has them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from kubeinfer.runtime.backends.base import Backend
from kubeinfer.runtime.errors import ConfigError
from kubeinfer.spec.config import ModelConfig, load_config
from kubeinfer.spec.config.model import InputConfig, OutputConfig

log = logging.getLogger(__name__)

# platform / backend name -> (default file name, backend kind)
_PLATFORMS = {
    "onnxruntime_onnx": ("model.onnx", "onnx"),
    "onnxruntime": ("model.onnx", "onnx"),
    "pytorch_libtorch": ("model.pt", "torch"),
    "pytorch": ("model.pt", "torch"),
    "torch_export": ("model.pt2", "torch"),
    "tensorrt_plan": ("model.plan", "tensorrt"),
    "tensorrt": ("model.plan", "tensorrt"),
    "python": ("model.py", "python"),
}
_EXTENSIONS = {".onnx": "onnx", ".pt": "torch", ".pt2": "torch", ".plan": "tensorrt", ".py": "python"}


@dataclass
class LoadedModel:
    name: str
    version: str
    config: ModelConfig
    backend: Backend
    backend_kind: str
    path: Path
    labels: dict[str, list[str]]


def list_models(repository: Path) -> list[str]:
    if not repository.is_dir():
        raise ConfigError(f"model repository {repository} is not a directory")
    return sorted(p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))


def available_versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def select_version(model_dir: Path, config: ModelConfig, pinned: int | None) -> int:
    versions = available_versions(model_dir)
    if not versions:
        raise ConfigError(f"{model_dir}: no numeric version directory (e.g. {model_dir}/1/)")
    if pinned is not None:
        if pinned not in versions:
            raise ConfigError(f"{model_dir}: version {pinned} not found (have {versions})")
        return pinned
    policy = config.version_policy
    if policy is not None and policy.specific:
        wanted = [v for v in policy.specific.get("versions", []) if v in versions]
        if not wanted:
            raise ConfigError(f"{model_dir}: version_policy.specific names no existing version")
        return max(wanted)
    # latest (Triton's default: latest { num_versions: 1 }); one process serves one version
    return versions[-1]


def _model_file(version_dir: Path, config: ModelConfig) -> tuple[Path, str]:
    key = config.platform or config.backend
    if config.default_model_filename:
        path = version_dir / config.default_model_filename
        kind = _PLATFORMS.get(key, (None, _EXTENSIONS.get(path.suffix)))[1]
    elif key:
        if key not in _PLATFORMS:
            raise ConfigError(
                f"unsupported platform/backend '{key}' (supported: {', '.join(sorted(_PLATFORMS))})"
            )
        filename, kind = _PLATFORMS[key]
        path = version_dir / filename
    else:
        candidates = [p for p in sorted(version_dir.iterdir()) if p.suffix in _EXTENSIONS]
        if len(candidates) != 1:
            raise ConfigError(
                f"{version_dir}: set 'platform' in the config; cannot tell the model file "
                f"among {[p.name for p in candidates]}"
            )
        path, kind = candidates[0], _EXTENSIONS[candidates[0].suffix]
    if kind is None:
        raise ConfigError(f"{path}: cannot tell the backend from the file name")
    if not path.exists():
        raise ConfigError(f"model file {path} not found")
    return path, kind


def _parameter(config: ModelConfig, key: str, default: int = 0) -> int:
    value = config.parameters.get(key, {}).get("string_value")
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"parameters.{key} must be an integer, got '{value}'") from None


def create_backend(kind: str, path: Path, config: ModelConfig) -> Backend:
    """Explicit factory: each backend's framework is imported only when it is used."""
    if kind == "onnx":
        from kubeinfer.runtime.backends.onnx import OnnxBackend

        accelerators = [
            a.get("name", "")
            for a in (config.optimization or {})
            .get("execution_accelerators", {})
            .get("gpu_execution_accelerator", [])
        ]
        return OnnxBackend(
            path,
            wants_gpu=config.wants_gpu,
            accelerators=accelerators,
            intra_op_threads=_parameter(config, "intra_op_thread_count"),
            inter_op_threads=_parameter(config, "inter_op_thread_count"),
            allow_spinning=bool(_parameter(config, "allow_spinning")),
        )
    if kind == "torch":
        from kubeinfer.runtime.backends.torch import TorchBackend, device_for

        gpus = [g for group in config.instance_group if group.kind == "KIND_GPU" for g in group.gpus]
        return TorchBackend(
            path,
            kind="export" if path.suffix == ".pt2" else "torchscript",
            inputs=config.inputs(),
            outputs=config.outputs(),
            batched=config.max_batch_size > 0,
            device=device_for(config.wants_gpu, gpus),
            intra_op_threads=_parameter(config, "intra_op_thread_count"),
            inter_op_threads=_parameter(config, "inter_op_thread_count"),
        )
    if kind == "python":
        from kubeinfer.runtime.backends.python import PythonBackend

        return PythonBackend(
            path,
            model_name=config.name,
            model_version=path.parent.name,
            model_config=config.to_json(),
            inputs=config.inputs(),
            outputs=config.outputs(),
            batched=config.max_batch_size > 0,
            instance_kind="GPU" if config.wants_gpu else "CPU",
            instances=config.instance_count,
        )
    if kind == "tensorrt":
        from kubeinfer.runtime.backends.tensorrt import TensorRTBackend

        gpus = [g for group in config.instance_group for g in group.gpus]
        return TensorRTBackend(
            path,
            batched=config.max_batch_size > 0,
            device=gpus[0] if gpus else 0,
            instances=config.instance_count,
        )
    raise ConfigError(f"backend '{kind}' is not available in this build of kubeinfer")


def complete_config(config: ModelConfig, backend: Backend) -> ModelConfig:
    """Fill inputs/outputs from the model file; check declared ones exist there."""
    batch = 1 if config.max_batch_size > 0 else 0
    update = {}
    for field, declared, actual, cls in (
        ("input", config.input, backend.inputs, InputConfig),
        ("output", config.output, backend.outputs, OutputConfig),
    ):
        known = {t.name: t for t in actual}
        for t in declared:
            if known and t.name not in known:
                raise ConfigError(
                    f"config {field} '{t.name}' is not in the model (it has {sorted(known)})"
                )
            spec = known.get(t.name)
            if spec is not None and spec.datatype != t.data_type:
                raise ConfigError(
                    f"config {field} '{t.name}' is {t.data_type} but the model says {spec.datatype}"
                )
        if not declared:
            update[field] = [
                cls(name=s.name, data_type=s.datatype, dims=list(s.shape[batch:]) or [1])
                for s in actual
            ]
    return config.model_copy(update=update) if update else config


def _labels(model_dir: Path, config: ModelConfig) -> dict[str, list[str]]:
    labels = {}
    for out in config.output:
        if out.label_filename:
            path = model_dir / out.label_filename
            if not path.is_file():
                raise ConfigError(f"label file {path} for output '{out.name}' not found")
            labels[out.name] = path.read_text(encoding="utf-8").splitlines()
    return labels


def _default_platform(kind: str, path: Path) -> dict[str, str]:
    """What a config without ``platform``/``backend`` reports, in Triton's names."""
    if kind == "onnx":
        return {"platform": "onnxruntime_onnx"}
    if kind == "torch":
        return {"platform": "torch_export" if path.suffix == ".pt2" else "pytorch_libtorch"}
    if kind == "tensorrt":
        return {"platform": "tensorrt_plan"}
    return {"backend": kind}


def load_model(repository: Path, name: str | None, version: int | None = None) -> LoadedModel:
    models = list_models(repository)
    if name is None:
        if len(models) != 1:
            raise ConfigError(
                f"{repository} holds {len(models)} models {models}: choose one with --model"
            )
        name = models[0]
    if name not in models:
        raise ConfigError(f"model '{name}' not found in {repository} (have {models})")
    model_dir = repository / name
    config = load_config(model_dir) or ModelConfig(name=name)
    if config.name and config.name != name:
        raise ConfigError(f"{model_dir}: config name '{config.name}' differs from directory '{name}'")
    config = config.model_copy(update={"name": name})
    chosen = select_version(model_dir, config, version)
    path, kind = _model_file(model_dir / str(chosen), config)
    backend = create_backend(kind, path, config)
    config = complete_config(config, backend)
    if not config.platform and not config.backend:
        config = config.model_copy(update=_default_platform(kind, path))
    return LoadedModel(name, str(chosen), config, backend, kind, path, _labels(model_dir, config))
