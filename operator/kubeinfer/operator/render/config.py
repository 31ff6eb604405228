"""The model config ConfigMap: an inline ``spec.model.config`` rendered as ``config.pbtxt``.

The inline config (Triton's ModelConfig fields, snake_case) is validated with
:class:`~kubeinfer.spec.config.ModelConfig`, the class the runtime reads configs into, so a
config the runtime would refuse is an invalid spec here, before any pod starts. The fetch init container copies the rendered
file over the repository's config (see ``kubeinfer fetch --config``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

from google.protobuf.json_format import ParseError

from kubeinfer.operator.render.common import InvalidSpec, Target, config_map_name, metadata
from kubeinfer.spec.config.model import ModelConfig
from kubeinfer.spec.config.readers import to_pbtxt, validate
from kubeinfer.spec.errors import ConfigError

CONFIG_FILE = "config.pbtxt"
BACKENDS = {"onnx": "onnxruntime", "pytorch": "pytorch", "tensorrt": "tensorrt", "python": "python"}


def model_config(t: Target) -> ModelConfig | None:
    """The inline config as the runtime will read it, or None when the repository's is used."""
    source = t.spec.model
    if source.config is None:
        return None
    data: dict[str, Any] = dict(source.config)
    if data.get("name") not in (None, "", t.model_name):
        raise InvalidSpec(
            f"spec.model.config.name '{data['name']}' differs from the served model name '{t.model_name}'"
        )
    data["name"] = t.model_name
    if source.format and not data.get("backend") and not data.get("platform"):
        data["backend"] = BACKENDS[source.format]
    try:
        return validate(data, "spec.model.config")
    except ConfigError as exc:
        raise InvalidSpec(str(exc)) from None


def config_text(t: Target) -> str | None:
    """``config.pbtxt`` of the inline config; a value protobuf refuses (out of its field's
    range, say) is an :class:`InvalidSpec` naming the field."""
    config = model_config(t)
    if config is None:
        return None
    try:
        return to_pbtxt(config)
    except (ParseError, ValueError, TypeError) as exc:
        data = config.to_json(exclude_defaults=True)
        where = _field_path(data, re.findall(r"Failed to parse (\w+) field", str(exc)))
        reason = re.sub(r"^(Failed to parse \w+ field: )+", "", str(exc)).rstrip(".")
        raise InvalidSpec(f"spec.model.config.{where}: {reason}") from None


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (str(key),)
            yield from _paths(value, prefix + (str(key),))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix[:-1] + (f"{prefix[-1]}[{i}]",) if prefix else (f"[{i}]",))


def _field_path(data: dict[str, Any], names: list[str]) -> str:
    """Where in the config the field protobuf names sits (its messages name only the
    innermost fields): the first path ending with those names, e.g. ``dynamic_batching.
    max_queue_delay_microseconds`` for ``max_queue_delay_microseconds``."""
    if not names:
        return "(config)"
    for path in _paths(data):
        bare = [re.sub(r"\[\d+\]$", "", p) for p in path]
        if bare[-len(names):] == names:
            return ".".join(path)
    return ".".join(names)


def config_hash(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()[:16]


def config_map(t: Target, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(t, config_map_name(t)),
        "data": {CONFIG_FILE: text},
    }
