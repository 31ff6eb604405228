"""Triton's classification extension: top-N of an output as ``"value:index[:label]"``."""

from __future__ import annotations

import numpy as np

from kubeinfer.runtime.errors import InvalidInput


def classify(
    arr: np.ndarray, count: int, labels: list[str] | None, batched: bool
) -> np.ndarray:
    if arr.dtype == np.object_:
        raise InvalidInput("classification needs a numeric output")
    rows = arr.reshape(arr.shape[0], -1) if batched and arr.ndim else arr.reshape(1, -1)
    count = min(count, rows.shape[1])
    top = np.argsort(-rows, axis=1, kind="stable")[:, :count]
    out = np.empty(top.shape, dtype=np.object_)
    for r in range(top.shape[0]):
        for c in range(count):
            idx = int(top[r, c])
            text = f"{float(rows[r, idx]):f}:{idx}"
            if labels is not None and idx < len(labels):
                text += ":" + labels[idx]
            out[r, c] = text.encode("utf-8")
    return out if batched else out.reshape(count)
