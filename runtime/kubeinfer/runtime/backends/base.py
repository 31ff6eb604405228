"""The backend interface every framework adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from kubeinfer.spec.types import TensorSpec


class Backend(ABC):
    """One loaded model. ``execute`` may be called concurrently from ``instances`` threads."""

    #: the model's own view of its tensors (batch dimension included when it batches,
    #: -1 for dynamic dimensions); used to auto-complete a config that omits them.
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    #: optional: run a batch as the list of its requests (one result each, an exception
    #: failing only its request), like Triton's Python backend; None means ``execute``
    #: gets the requests concatenated
    execute_requests = None

    #: BYTES inputs reach the model as text (ONNX string tensors): the servable rejects a
    #: request whose elements are not UTF-8 before it is scheduled, so that request fails
    #: alone with ``InvalidInput`` instead of failing its batch in the backend
    utf8_strings = False

    @abstractmethod
    def execute(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Run one batch. Arrays carry the batch dimension when the model batches."""

    def unload(self) -> None:  # noqa: B027 - optional hook
        """Release the model's resources."""
