"""The base of every API model: camelCase aliases, unknown fields refused, attribute
docstrings as descriptions (they become ``kubectl explain`` text through crdgen)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_attribute_docstrings=True
    )
