"""KServe v2 REST bodies, with Triton's binary tensor data extension, both directions.

Server direction: ``decode_request`` turns a POST body (and its
``Inference-Header-Content-Length``) into an ``InferRequest``; ``encode_response`` turns
outputs into a body plus the header length to send back (None for pure JSON). Client
direction (the router's step calls): ``encode_request`` and ``decode_response``, their
mirror images. A malformed body either way raises ``InvalidInput``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from kubeinfer.runtime.datatypes import DATATYPES, from_numpy
from kubeinfer.runtime.errors import InvalidInput
from kubeinfer.runtime.protocol import tensors
from kubeinfer.runtime.protocol.classification import classify
from kubeinfer.runtime.types import InferRequest, InferResponse, RequestedOutput

_DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY


def _load_header(body: bytes, header_length: int | None, what: str = "request") -> tuple[dict, memoryview]:
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length} is outside the body "
                f"({len(body)} bytes)"
            )
        view = memoryview(body)
        header, binary = view[:header_length], view[header_length:]
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON in {what} body: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"{what} body must be a JSON object")
    return doc, binary


def _parameters(obj: dict, where: str) -> dict[str, Any]:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    return params


def _int_param(params: dict, key: str) -> int:
    value = params.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"parameter '{key}' must be a non-negative integer")
    return value


def _tensors(items: Any, binary: memoryview, what: str) -> dict[str, np.ndarray]:
    """The ``inputs`` (or ``outputs``) list of a body as numpy arrays, JSON ``data`` or
    ``binary_data_size`` bytes of ``binary`` in order; the sizes must add up to it."""
    if not isinstance(items, list) or not items:
        raise InvalidInput(f"{what} needs a non-empty '{_LIST[what]}' list")
    kind = _LIST[what][:-1]
    out: dict[str, np.ndarray] = {}
    offset = 0
    for item in items:
        if not isinstance(item, dict):
            raise InvalidInput(f"each {kind} must be an object")
        name = item.get("name")
        datatype = item.get("datatype")
        shape = item.get("shape")
        if not isinstance(name, str):
            raise InvalidInput(f"{kind} without a 'name'")
        if name in out:
            raise InvalidInput(f"{kind} '{name}' appears twice")
        if type(datatype) is not str or datatype not in DATATYPES:
            raise InvalidInput(f"{kind} '{name}': unknown datatype {datatype!r}")
        if shape is None:
            raise InvalidInput(f"{kind} '{name}': missing 'shape'")
        iparams = _parameters(item, f"{kind} '{name}'")
        size = iparams.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidInput(f"{kind} '{name}': binary_data_size must be a non-negative int")
            if "data" in item:
                raise InvalidInput(f"{kind} '{name}': both 'data' and binary_data_size given")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"{kind} '{name}': binary_data_size {size} runs past the end of the body"
                )
            out[name] = tensors.from_bytes(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in item:
            out[name] = tensors.from_json(name, datatype, shape, item["data"])
        else:
            raise InvalidInput(f"{kind} '{name}': no 'data' and no binary_data_size")
    if offset != len(binary):
        raise InvalidInput(
            f"binary data is {len(binary)} bytes but the {kind}s' binary_data_size add up "
            f"to {offset}"
        )
    return out


_LIST = {"request": "inputs", "response": "outputs"}


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    doc, binary = _load_header(body, header_length)
    params = _parameters(doc, "request")
    inputs = _tensors(doc.get("inputs"), binary, "request")
    binary_output = params.get("binary_data_output", False) is True
    outputs = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput("'outputs' must be a list")
        outputs = []
        for item in raw_outputs:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidInput("each requested output needs a 'name'")
            oparams = _parameters(item, f"output '{item['name']}'")
            outputs.append(
                RequestedOutput(
                    item["name"],
                    bool(oparams.get("binary_data", binary_output)),
                    _int_param(oparams, "classification"),
                )
            )
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    return InferRequest(
        inputs=inputs,
        id=request_id,
        parameters=params,
        outputs=outputs,
        binary_output=binary_output,
        priority=_int_param(params, "priority"),
        timeout_us=_int_param(params, "timeout"),
    )


def encode_response(
    response: InferResponse,
    request: InferRequest,
    labels: dict[str, list[str]] | None = None,
    batched: bool = True,
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    requested = request.outputs
    if requested is None:
        requested = [RequestedOutput(n, request.binary_output) for n in response.outputs]
    out_docs = []
    blobs: list[bytes] = []
    for req in requested:
        arr = response.outputs[req.name]
        if req.classification:
            arr = classify(arr, req.classification, (labels or {}).get(req.name), batched)
        datatype = from_numpy(arr.dtype)
        doc: dict[str, Any] = {"name": req.name, "datatype": datatype, "shape": list(arr.shape)}
        if req.binary:
            raw = tensors.to_raw(arr, datatype)
            doc["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            doc["data"] = tensors.to_json_data(arr, datatype)
        out_docs.append(doc)
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id is not None:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = response.parameters
    body["outputs"] = out_docs
    header = orjson.dumps(body, option=_DUMPS_OPTS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


# -- client direction ------------------------------------------------------------------
def encode_request(request: InferRequest, binary: bool = True) -> tuple[bytes, int | None]:
    """The POST body for ``request`` and, when its inputs travel binary, the JSON header's
    length (send it as ``Inference-Header-Content-Length``); None for pure JSON. The mirror
    of ``decode_request``: ``id``, ``parameters`` (with ``timeout``, ``priority`` and
    ``binary_data_output`` from the request's fields) and the requested outputs (each with
    its ``binary_data`` and ``classification``) go along."""
    inputs = []
    blobs: list[Any] = []
    for name, arr in request.inputs.items():
        datatype = from_numpy(arr.dtype)
        doc: dict[str, Any] = {"name": name, "datatype": datatype, "shape": arr.shape}
        if binary:
            raw = _raw_view(arr, datatype)
            doc["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            doc["data"] = tensors.to_json_data(arr, datatype)
        inputs.append(doc)
    params = dict(request.parameters)
    if request.binary_output:
        params["binary_data_output"] = True
    if request.timeout_us:
        params["timeout"] = request.timeout_us
    if request.priority:
        params["priority"] = request.priority
    body: dict[str, Any] = {"inputs": inputs}
    if request.id is not None:
        body["id"] = request.id
    if params:
        body["parameters"] = params
    if request.outputs is not None:
        body["outputs"] = [_requested(o) for o in request.outputs]
    header = orjson.dumps(body, option=_DUMPS_OPTS)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _raw_view(arr: np.ndarray, datatype: str) -> Any:
    """A tensor's bytes, without a copy when the array is contiguous already."""
    if datatype != "BYTES" and arr.flags.c_contiguous and arr.size:
        return arr.data.cast("B")
    return tensors.to_raw(arr, datatype)


def _requested(o: RequestedOutput) -> dict[str, Any]:
    params: dict[str, Any] = {"binary_data": o.binary}
    if o.classification:
        params["classification"] = o.classification
    return {"name": o.name, "parameters": params}


def decode_response(body: bytes, header_length: int | None = None) -> InferResponse:
    """An inference response body (JSON, or binary outputs after a JSON header of
    ``header_length`` bytes) as an ``InferResponse``: the mirror of ``encode_response``."""
    doc, binary = _load_header(body, header_length, "response")
    outputs = _tensors(doc.get("outputs"), binary, "response")
    name, version, rid = doc.get("model_name"), doc.get("model_version", ""), doc.get("id")
    if not isinstance(name, str) or not isinstance(version, str):
        raise InvalidInput("response body needs a string 'model_name' and 'model_version'")
    if rid is not None and not isinstance(rid, str):
        raise InvalidInput("'id' must be a string")
    return InferResponse(name, version, outputs, rid, _parameters(doc, "response"))


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
