"""What flows between the protocol layer, the scheduler and the backends.

The protocol layer decodes wire formats into ``InferRequest`` (numpy arrays keyed by input
name); the scheduler batches them; a backend returns numpy arrays keyed by output name;
the protocol layer encodes ``InferResponse``. Plain slotted classes: one of each is built
per request on the hot path, so no validation machinery here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool = False
    classification: int = 0


@dataclass(slots=True)
class InferRequest:
    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    #: None means every output of the model.
    outputs: list[RequestedOutput] | None = None
    #: all outputs binary (Triton's ``binary_data_output``)
    binary_output: bool = False
    priority: int = 0
    #: relative timeout in microseconds (0: none)
    timeout_us: int = 0
    #: size of the batch dimension this request carries (1 when the model does not batch)
    batch_size: int = 1


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
