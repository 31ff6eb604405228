"""One tensor's data: JSON lists and raw little-endian bytes to numpy, and back."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from kubeinfer.runtime.datatypes import to_numpy
from kubeinfer.runtime.errors import InvalidInput

_U32 = struct.Struct("<I")


def element_count(name: str, shape: Any) -> int:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"input '{name}': shape must be a list of non-negative integers")
    count = 1
    for d in shape:
        count *= d
    return count


def _flatten(data: list) -> list:
    """Nested JSON lists to one flat list (flat lists, the common case, pass through)."""
    if not data or not isinstance(data[0], list):
        return data
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def from_json(name: str, datatype: str, shape: list[int], data: Any) -> np.ndarray:
    count = element_count(name, shape)
    if not isinstance(data, list):
        data = [data]
    flat = _flatten(data)
    if len(flat) != count:
        raise InvalidInput(
            f"input '{name}': shape {shape} needs {count} elements, data has {len(flat)}"
        )
    if datatype == "BYTES":
        out = np.empty(count, dtype=np.object_)
        for i, v in enumerate(flat):
            if isinstance(v, str):
                out[i] = v.encode("utf-8")
            elif isinstance(v, (bytes, int, float)):
                out[i] = str(v).encode() if not isinstance(v, bytes) else v
            else:
                raise InvalidInput(f"input '{name}': BYTES elements must be strings")
        return out.reshape(shape)
    dtype = to_numpy(datatype)
    try:
        if datatype == "BOOL":
            if not all(isinstance(v, bool) for v in flat):
                raise InvalidInput(f"input '{name}': BOOL data must be true/false")
            arr = np.array(flat, dtype=dtype)
        else:
            arr = np.array(flat, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"input '{name}': data does not match datatype {datatype}: {exc}")
    if arr.ndim != 1:
        raise InvalidInput(f"input '{name}': data must be numbers of datatype {datatype}")
    return arr.reshape(shape)


def from_bytes(name: str, datatype: str, shape: list[int], raw: memoryview) -> np.ndarray:
    count = element_count(name, shape)
    if datatype == "BYTES":
        return np.array(deserialize_bytes(name, raw, count), dtype=np.object_).reshape(shape)
    dtype = to_numpy(datatype)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"input '{name}': {len(raw)} bytes of binary data for shape {shape} of "
            f"{datatype} (needs {count * dtype.itemsize})"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def deserialize_bytes(name: str, raw: memoryview, count: int) -> list[bytes]:
    out = []
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise InvalidInput(f"input '{name}': truncated BYTES element length")
        (n,) = _U32.unpack_from(raw, pos)
        pos += 4
        if pos + n > end:
            raise InvalidInput(f"input '{name}': BYTES element longer than the data")
        out.append(bytes(raw[pos : pos + n]))
        pos += n
    if len(out) != count:
        raise InvalidInput(f"input '{name}': expected {count} BYTES elements, got {len(out)}")
    return out


def serialize_bytes(arr: np.ndarray) -> bytes:
    parts = []
    for v in arr.reshape(-1):
        b = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts.append(_U32.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def to_raw(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return serialize_bytes(arr)
    return np.ascontiguousarray(arr).tobytes()


def to_json_data(arr: np.ndarray, datatype: str) -> Any:
    """JSON-ready data: numpy arrays orjson serializes natively, else a flat list."""
    if datatype == "BYTES":
        out = []
        for v in arr.reshape(-1):
            if isinstance(v, bytes):
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInput(
                        "output holds non-UTF-8 bytes; request it with binary_data: true"
                    ) from None
            out.append(v if isinstance(v, str) else str(v))
        return out
    if datatype == "FP16":
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr).reshape(-1)
