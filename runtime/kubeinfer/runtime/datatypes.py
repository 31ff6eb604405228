"""KServe v2 datatypes (named in ``kubeinfer.spec.datatypes``) and their numpy equivalents."""

from __future__ import annotations

import numpy as np

from kubeinfer.runtime.errors import InvalidInput
from kubeinfer.spec.datatypes import DATATYPES

__all__ = ["DATATYPES", "element_size", "from_numpy", "to_numpy"]

_V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_NUMPY_TO_V2 = {v: k for k, v in _V2_TO_NUMPY.items()}


def to_numpy(datatype: str) -> np.dtype:
    try:
        return _V2_TO_NUMPY[datatype]
    except KeyError:
        raise InvalidInput(f"unknown datatype '{datatype}'") from None


def from_numpy(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind in ("S", "U", "O"):
        return "BYTES"
    try:
        return _NUMPY_TO_V2[dtype]
    except KeyError:
        raise InvalidInput(f"numpy dtype {dtype} has no v2 datatype") from None


def element_size(datatype: str) -> int:
    """Bytes per element of a fixed-size datatype (BYTES has none: -1)."""
    if datatype == "BYTES":
        return -1
    return to_numpy(datatype).itemsize
