"""KServe v2 datatype names and their config spellings (the numpy side is the runtime's)."""

from __future__ import annotations

#: every v2 datatype; ``kubeinfer.runtime.datatypes`` maps each to a numpy dtype
DATATYPES = frozenset({
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
})


def normalize_datatype(value: str) -> str:
    """``TYPE_FP32`` (config.pbtxt) and ``FP32`` (v2) are the same; ``TYPE_STRING`` is BYTES."""
    name = value.upper().removeprefix("TYPE_")
    if name == "STRING":
        name = "BYTES"
    if name not in DATATYPES:
        raise ValueError(f"unsupported data_type '{value}'")
    return name


def type_name(datatype: str | None) -> str | None:
    """``FP32`` -> ``TYPE_FP32`` (Triton's JSON and config.pbtxt spelling)."""
    if datatype is None:
        return None
    return "TYPE_STRING" if datatype == "BYTES" else "TYPE_" + datatype
