"""Readers: ``config.pbtxt`` (Triton's ModelConfig in protobuf text format), YAML, JSON.

All three end in the same ``ModelConfig``; any problem becomes a ``ConfigError`` whose
message names the file and the offending field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format, text_format
from pydantic import ValidationError

from kubeinfer.spec.config.model import ModelConfig
from kubeinfer.spec.errors import ConfigError, validation_problems
from kubeinfer.spec.proto.model_config_pb2 import ModelConfig as ModelConfigMessage

CONFIG_FILES = ("config.pbtxt", "config.yaml", "config.yml", "config.json")


def pbtxt_to_dict(text: str, source: str = "config.pbtxt") -> dict[str, Any]:
    message = ModelConfigMessage()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def validate(data: dict[str, Any], source: str) -> ModelConfig:
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid model config: {validation_problems(exc)}") from None


def parse_pbtxt(text: str, source: str = "config.pbtxt") -> ModelConfig:
    return validate(pbtxt_to_dict(text, source), source)


def to_pbtxt(config: ModelConfig) -> str:
    """Render a config back to protobuf text format (used by the operator's ConfigMap)."""
    message = ModelConfigMessage()
    json_format.ParseDict(config.to_json(exclude_defaults=True), message)
    return text_format.MessageToString(message)


def load_config(model_dir: Path) -> ModelConfig | None:
    """The config found in ``model_dir``, or None when it has none (auto-complete then)."""
    found = [model_dir / f for f in CONFIG_FILES if (model_dir / f).is_file()]
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ConfigError(f"{model_dir}: more than one config file ({names}); keep one")
    path = found[0]
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".pbtxt":
        return parse_pbtxt(text, str(path))
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping")
    return validate(data, str(path))
