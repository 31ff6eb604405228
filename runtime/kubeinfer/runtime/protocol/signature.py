"""Does a request fit a declared signature? The one input check of every servable: a
local model (``runtime.model``) and an ensemble (``router.servable``) check a decoded
request with ``Signature.check``; the router's startup check compares declared shapes
with ``shapes_agree``.

Shapes are declared as Triton's ``dims``: without the batch dimension, -1 for a variable
one. A batching signature (``max_batch_size > 0``) takes a leading batch dimension of
1..``max_batch_size``, the same for every input. Every mismatch raises ``InvalidInput``
naming the tensor and, where it helps, the servable (``kind`` 'model' or 'ensemble').
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from kubeinfer.runtime.datatypes import from_numpy, to_numpy
from kubeinfer.runtime.errors import InvalidInput
from kubeinfer.runtime.types import InferRequest


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One declared input as the check needs it."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    optional: bool = False
    #: Triton's reshape: the shape (batch dimension excluded) the backend gets instead
    reshape: tuple[int, ...] | None = None
    #: BYTES elements must be UTF-8 text (the backend takes strings)
    utf8: bool = False


class Signature:
    """The declared inputs and outputs of one servable, ready to check requests against."""

    def __init__(
        self, kind: str, name: str, inputs: Iterable[InputSpec], outputs: Iterable[str], max_batch_size: int
    ) -> None:
        self.kind, self.name = kind, name
        self.max_batch_size = max_batch_size
        self.batched = max_batch_size > 0
        # (spec, numpy dtype, whether to check UTF-8): one tuple per input, read per request
        self._inputs = [(s, to_numpy(s.datatype), s.utf8 and s.datatype == "BYTES") for s in inputs]
        self._input_names = {s.name for s, _, _ in self._inputs}
        self._output_names = set(outputs)

    def check(self, request: InferRequest) -> int:
        """Raise ``InvalidInput`` unless ``request`` fits; reshape inputs that declare a
        reshape (in place); the request's batch size (1 when the signature does not batch)."""
        inputs = request.inputs
        batched = self.batched
        batch = 0
        for spec, dtype, utf8 in self._inputs:
            arr = inputs.get(spec.name)
            if arr is None:
                if spec.optional:
                    continue
                raise InvalidInput(f"{self.kind} '{self.name}' expects input '{spec.name}'")
            if arr.dtype != dtype:
                raise InvalidInput(
                    f"input '{spec.name}': datatype is {from_numpy(arr.dtype)}, {self.kind} expects {spec.datatype}"
                )
            if utf8:
                check_utf8(spec.name, arr)
            shape = arr.shape
            if batched:
                if len(shape) != len(spec.dims) + 1:
                    raise InvalidInput(
                        f"input '{spec.name}': shape {list(shape)} does not match "
                        f"[-1, {', '.join(map(str, spec.dims))}] (batch dimension first)"
                    )
                b = shape[0]
                if b < 1 or b > self.max_batch_size:
                    raise InvalidInput(f"input '{spec.name}': batch size {b} is outside 1..{self.max_batch_size}")
                if batch and b != batch:
                    raise InvalidInput("inputs disagree on the batch size")
                batch = b
                rest = shape[1:]
            else:
                rest = shape
            if len(rest) != len(spec.dims) or any(d != -1 and d != s for d, s in zip(spec.dims, rest)):
                want = ([-1] if batched else []) + list(spec.dims)
                raise InvalidInput(f"input '{spec.name}': shape {list(shape)} does not match {want}")
            if spec.reshape is not None:
                inputs[spec.name] = arr.reshape(shape[:1] + spec.reshape if batched else spec.reshape)
        if len(inputs) > len(self._input_names) or not self._input_names.issuperset(inputs):
            unknown = sorted(set(inputs) - self._input_names)
            raise InvalidInput(f"{self.kind} '{self.name}' has no input {', '.join(unknown)}")
        if request.outputs is not None:
            for o in request.outputs:
                if o.name not in self._output_names:
                    raise InvalidInput(f"{self.kind} '{self.name}' has no output '{o.name}'")
        return batch or 1


def shapes_agree(a: list[int], b: list[int]) -> bool:
    """Whether two declared shapes can describe the same tensor (-1 matches anything)."""
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b))


def check_utf8(name: str, arr: np.ndarray) -> None:
    """Every BYTES element is UTF-8 text: one decode of the elements joined by a newline
    (which no multi-byte sequence can swallow, so the join is valid iff every part is)."""
    flat = arr.reshape(-1)
    try:
        b"\n".join(flat).decode("utf-8")
    except UnicodeDecodeError:
        index = next(i for i, v in enumerate(flat) if not _is_utf8(v))
        raise InvalidInput(
            f"input '{name}': element {index} is not UTF-8 text, which this model's string input needs"
        ) from None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
