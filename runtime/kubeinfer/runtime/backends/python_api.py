"""What a Python-backend ``model.py`` imports: Triton's ``triton_python_backend_utils``.

A model written for Triton keeps working unchanged: when a Python model loads, this module
is registered as ``triton_python_backend_utils`` (unless a real one is importable), so
``import triton_python_backend_utils as pb_utils`` finds it. New models may import it by
its own name: ``from kubeinfer.runtime.backends import python_api as pb_utils``.

The subset implemented is what models use: ``Tensor``, ``InferenceRequest``,
``InferenceResponse``, ``TritonError``, ``TritonModelException``, ``Logger``,
``get_input_tensor_by_name``, ``get_output_tensor_by_name``, ``get_input_config_by_name``,
``get_output_config_by_name``, ``triton_string_to_numpy``, ``numpy_to_triton_type``.
Tensors live in host memory as numpy arrays (no DLPack or GPU tensors).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from kubeinfer.runtime.datatypes import from_numpy, to_numpy

_log = logging.getLogger("kubeinfer.python_model")


class TritonError:
    """An error for one request: ``InferenceResponse(error=TritonError("message"))``."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r})"


class TritonModelException(Exception):
    """Raised by a model to fail the whole ``execute`` call with a message."""

    def message(self) -> str:
        return str(self)


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        if not isinstance(array, np.ndarray):
            array = np.asarray(array)
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def triton_dtype(self) -> str:
        return "TYPE_" + ("STRING" if (dt := from_numpy(self._array.dtype)) == "BYTES" else dt)

    def is_cpu(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, shape={self.shape()}, dtype={self._array.dtype})"


class InferenceRequest:
    """One request as ``execute`` receives it."""

    def __init__(
        self,
        inputs: Sequence[Tensor],
        requested_output_names: Sequence[str] = (),
        request_id: str = "",
        correlation_id: int | str = 0,
        parameters: dict[str, Any] | None = None,
        model_name: str = "",
        model_version: int = -1,
        flags: int = 0,
    ) -> None:
        self._inputs = list(inputs)
        self._requested = list(requested_output_names)
        self._id = request_id
        self._correlation_id = correlation_id
        self._parameters = parameters or {}
        self._flags = flags
        self.model_name = model_name
        self.model_version = model_version

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def requested_output_names(self) -> list[str]:
        return self._requested

    def request_id(self) -> str:
        return self._id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def parameters(self) -> str:
        """The request's parameters as a JSON string (as Triton gives them)."""
        return json.dumps(self._parameters)

    def flags(self) -> int:
        return self._flags

    def is_cancelled(self) -> bool:
        return False


class InferenceResponse:
    def __init__(
        self,
        output_tensors: Sequence[Tensor] = (),
        error: TritonError | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        self._outputs = list(output_tensors)
        self._error = error
        self._parameters = parameters or {}

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


class Logger:
    """Triton's ``pb_utils.Logger``: class methods writing to the runtime's log."""

    @staticmethod
    def log_info(message: str) -> None:
        _log.info("%s", message)

    @staticmethod
    def log_warn(message: str) -> None:
        _log.warning("%s", message)

    @staticmethod
    def log_error(message: str) -> None:
        _log.error("%s", message)

    @staticmethod
    def log_verbose(message: str) -> None:
        _log.debug("%s", message)


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    for t in request.inputs():
        if t.name() == name:
            return t
    return None


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    for t in response.output_tensors():
        if t.name() == name:
            return t
    return None


def _config_entry(model_config: dict | str, field: str, name: str) -> dict | None:
    config = json.loads(model_config) if isinstance(model_config, str) else model_config
    for entry in config.get(field, []):
        if entry.get("name") == name:
            return entry
    return None


def get_input_config_by_name(model_config: dict | str, name: str) -> dict | None:
    return _config_entry(model_config, "input", name)


def get_output_config_by_name(model_config: dict | str, name: str) -> dict | None:
    return _config_entry(model_config, "output", name)


def triton_string_to_numpy(triton_type: str) -> type:
    """``"TYPE_FP32"`` -> ``numpy.float32``; ``TYPE_STRING`` -> ``numpy.object_``."""
    name = triton_type.upper().removeprefix("TYPE_")
    return to_numpy("BYTES" if name == "STRING" else name).type


def numpy_to_triton_type(dtype) -> str:
    return from_numpy(np.dtype(dtype))
