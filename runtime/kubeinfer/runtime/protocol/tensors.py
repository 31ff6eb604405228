"""One tensor's data: JSON lists and raw little-endian bytes to numpy, and back."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from kubeinfer.runtime.datatypes import DATATYPES, to_numpy
from kubeinfer.runtime.errors import InvalidInput

_U32 = struct.Struct("<I")


#: numpy's limit: the product of the non-zero dimensions times the item size (8 at most)
#: must fit in a signed 64-bit size, even for an empty array
_MAX_SPAN = 2**63 // 8


def element_count(name: str, shape: Any) -> int:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"input '{name}': shape must be a list of non-negative integers")
    count = 1
    for d in shape:
        count *= d
    if count == 0:
        check_empty_shape(name, shape)
    return count


def check_empty_shape(name: str, shape: list[int]) -> None:
    """An empty tensor's other dimensions must still make an array numpy can describe."""
    span = 1
    for d in shape:
        span *= d or 1
    if span >= _MAX_SPAN:
        raise InvalidInput(f"input '{name}': shape {shape} is too large")


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
    return _numbers(name, datatype, flat).reshape(shape)


def _numbers(name: str, datatype: str, flat: list) -> np.ndarray:
    """JSON numbers as one typed array: numpy infers the elements' kind in one pass (a
    ``null``, string or object makes an object or string array), then it is checked
    against the datatype and cast."""
    dtype, accepts = _NUMERIC[datatype]
    try:
        arr = np.array(flat)
    except (TypeError, ValueError, OverflowError):
        arr = np.array(flat, dtype=np.object_)
    if arr.dtype.kind not in accepts and arr.size:
        want = "true/false" if datatype == "BOOL" else f"numbers of datatype {datatype}"
        raise InvalidInput(f"input '{name}': data must be {want}")
    if accepts == "iu" and arr.dtype != dtype and arr.size:
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise InvalidInput(f"input '{name}': a value is out of range for {datatype}")
    return arr.astype(dtype, copy=False)


#: datatype -> (numpy dtype, the element kinds numpy infers from JSON values that it
#: takes): integers take integers only, floats integers and floats, BOOL only true/false
_NUMERIC = {
    dt: (to_numpy(dt), {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[to_numpy(dt).kind])
    for dt in DATATYPES
    if dt != "BYTES"
}


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
