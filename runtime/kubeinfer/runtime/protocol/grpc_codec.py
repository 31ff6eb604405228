"""KServe v2 / Triton gRPC messages <-> ``InferRequest``/``InferResponse``.

``decode_request`` reads a ``ModelInferRequest`` (tensors as ``raw_input_contents``, which
tritonclient sends, or as typed ``contents``) into numpy inputs and plain parameters;
``encode_response`` fills a ``ModelInferResponse`` with the outputs, as
``raw_output_contents`` by default (what Triton sends) or as typed ``contents`` when the
request says ``binary_data: false``. Everything a client can get wrong raises
``InvalidInput``.

The messages are the generated classes of ``inference.GRPCInferenceService`` but this
module never imports them: it reads and fills them through their fields, and the server
layer hands in an empty response to fill. That keeps the codec free of the RPC framework
(importing the generated modules from tritonclient would import grpc).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kubeinfer.runtime.datatypes import DATATYPES, from_numpy, to_numpy
from kubeinfer.runtime.errors import InvalidInput, Unsupported
from kubeinfer.runtime.protocol import tensors
from kubeinfer.runtime.protocol.classification import classify
from kubeinfer.runtime.types import InferRequest, InferResponse, RequestedOutput

if TYPE_CHECKING:  # the generated messages, for readers and type checkers only
    from tritonclient.grpc.service_pb2 import (
        InferParameter,
        InferTensorContents,
        ModelInferRequest,
        ModelInferResponse,
    )

#: datatype -> the ``InferTensorContents`` field holding it (FP16 and BF16 travel raw only)
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_SHARED_MEMORY = "shared_memory_region"


# -- parameters ------------------------------------------------------------------------
def param_value(param: InferParameter) -> Any:
    """An ``InferParameter`` as a plain Python value (None when no field is set)."""
    kind = param.WhichOneof("parameter_choice")
    return None if kind is None else getattr(param, kind)


def set_param(param: InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        if value >= 2**63:
            param.uint64_param = value
        else:
            param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = str(value)


def parameters(params) -> dict[str, Any]:
    """A message's ``parameters`` map as a dict of plain values."""
    return {key: param_value(p) for key, p in params.items()} if params else {}


def _int_param(params: dict, key: str) -> int:
    value = params.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"parameter '{key}' must be a non-negative integer")
    return value


# -- tensors ---------------------------------------------------------------------------
def _from_contents(name: str, datatype: str, shape: list[int], contents: InferTensorContents) -> np.ndarray:
    count = tensors.element_count(name, shape)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input '{name}': {datatype} data must be sent in raw_input_contents")
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}': shape {shape} needs {count} elements, {field} has {len(values)}"
        )
    if datatype == "BYTES":
        out = np.empty(count, dtype=np.object_)
        out[:] = list(values)
        return out.reshape(shape)
    dtype = to_numpy(datatype)
    if dtype.kind in "iu" and dtype.itemsize < 8:
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidInput(f"input '{name}': a value is out of range for {datatype}")
        return wide.astype(dtype).reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


_FIXED = {dt: to_numpy(dt) for dt in DATATYPES if dt != "BYTES"}


def _from_raw(name: str, datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    """One ``raw_input_contents`` entry as an array viewing the bytes (the hot path)."""
    dtype = _FIXED.get(datatype)
    if dtype is None:  # BYTES: length-prefixed elements
        return tensors.from_bytes(name, datatype, shape, memoryview(raw))
    count = 1
    for d in shape:
        if d < 0:
            raise InvalidInput(f"input '{name}': shape {shape} has a negative dimension")
        count *= d
    if not count:
        tensors.check_empty_shape(name, shape)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"input '{name}': {len(raw)} bytes of raw contents for shape {shape} of "
            f"{datatype} (needs {count * dtype.itemsize})"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _check_no_shared_memory(params, what: str) -> None:
    if _SHARED_MEMORY in params:
        raise Unsupported(f"{what}: shared memory is not supported")


# -- request ---------------------------------------------------------------------------
def decode_request(message: ModelInferRequest) -> InferRequest:
    """The request's inputs as numpy arrays, its parameters as plain values."""
    items = message.inputs
    if not items:
        raise InvalidInput("request needs at least one input")
    raw = message.raw_input_contents
    if raw and len(raw) != len(items):
        raise InvalidInput(
            f"request has {len(items)} inputs but {len(raw)} raw_input_contents; when raw "
            "contents are used every input needs one, in order"
        )
    inputs: dict[str, np.ndarray] = {}
    for i, item in enumerate(items):
        name, datatype = item.name, item.datatype
        if name in inputs:
            raise InvalidInput(f"input '{name}' appears twice")
        if datatype not in DATATYPES:
            raise InvalidInput(f"input '{name}': unknown datatype {datatype!r}")
        if item.parameters:
            _check_no_shared_memory(item.parameters, f"input '{name}'")
        shape = list(item.shape)
        if raw:
            if item.HasField("contents"):
                raise InvalidInput(f"input '{name}': both contents and raw_input_contents given")
            inputs[name] = _from_raw(name, datatype, shape, raw[i])
        else:
            inputs[name] = _from_contents(name, datatype, shape, item.contents)
    params = parameters(message.parameters)
    binary_output = params.get("binary_data_output", True) is not False
    outputs = None
    if message.outputs:
        outputs = []
        for item in message.outputs:
            oparams = parameters(item.parameters)
            _check_no_shared_memory(oparams, f"output '{item.name}'")
            outputs.append(
                RequestedOutput(
                    item.name,
                    oparams.get("binary_data", binary_output) is not False,
                    _int_param(oparams, "classification"),
                )
            )
    return InferRequest(
        inputs=inputs,
        id=message.id or None,
        parameters=params,
        outputs=outputs,
        binary_output=binary_output,
        priority=_int_param(params, "priority"),
        timeout_us=_int_param(params, "timeout"),
    )


# -- response --------------------------------------------------------------------------
def encode_response(
    response: InferResponse,
    request: InferRequest,
    out: ModelInferResponse,
    labels: dict[str, list[str]] | None = None,
    batched: bool = True,
) -> ModelInferResponse:
    """Fill the empty ``out`` with ``response`` and return it.

    Outputs go to ``raw_output_contents`` unless every requested output asked for typed
    contents (``binary_data: false``) and every datatype has a typed field: a response
    uses one form for all its outputs, as clients index raw contents by output position.
    """
    requested = request.outputs
    if requested is None:
        requested = [RequestedOutput(n, request.binary_output) for n in response.outputs]
    out.model_name = response.model_name
    out.model_version = response.model_version
    if response.id is not None:
        out.id = response.id
    for key, value in response.parameters.items():
        set_param(out.parameters[key], value)
    arrays = []
    raw = False
    for req in requested:
        arr = response.outputs[req.name]
        if req.classification:
            arr = classify(arr, req.classification, (labels or {}).get(req.name), batched)
        datatype = from_numpy(arr.dtype)
        raw = raw or req.binary or datatype not in CONTENTS_FIELD
        arrays.append((req.name, datatype, arr))
    for name, datatype, arr in arrays:
        tensor = out.outputs.add()
        tensor.name = name
        tensor.datatype = datatype
        tensor.shape.extend(arr.shape)
        if raw:
            out.raw_output_contents.append(tensors.to_raw(arr, datatype))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(
                v if isinstance(v, bytes) else str(v).encode("utf-8") for v in arr.reshape(-1)
            )
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(arr.reshape(-1).tolist())
    return out
