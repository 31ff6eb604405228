"""What a model config declares about one tensor, as the runtime's backends consume it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output as the model declares it (-1 = variable dimension).

    ``shape`` excludes the batch dimension when the model batches (Triton's ``dims``).
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    label_filename: str | None = None
    optional: bool = False
    #: Triton's reshape: the shape the backend sees instead of ``shape``
    reshape: tuple[int, ...] | None = None
