"""The one input check of every servable (``protocol.signature``), without a server; the
same check reached through real servers is in tests/runtime/integration/test_bad_input.py
(a model) and tests/router/test_router_robustness.py (an ensemble)."""

from __future__ import annotations

import numpy as np
import pytest

from kubeinfer.runtime.errors import InvalidInput
from kubeinfer.runtime.protocol.signature import InputSpec, Signature, shapes_agree
from kubeinfer.runtime.types import InferRequest, RequestedOutput


def batched(**kw) -> Signature:
    return Signature(
        kw.pop("kind", "model"), "m",
        [InputSpec("a", "FP32", (4,)), InputSpec("b", "INT64", (-1,)), InputSpec("opt", "FP32", (1,), optional=True)],
        ["y"], max_batch_size=8,
    )


def req(outputs=None, **inputs) -> InferRequest:
    return InferRequest(inputs, outputs=[RequestedOutput(o) for o in outputs] if outputs else None)


def test_batched_request_fits_and_gives_its_batch_size():
    r = req(["y"], a=np.zeros((3, 4), np.float32), b=np.zeros((3, 7), np.int64))
    assert batched().check(r) == 3


@pytest.mark.parametrize(
    "inputs,outputs,message",
    [
        ({"b": np.zeros((1, 2), np.int64)}, None, "model 'm' expects input 'a'"),
        ({"a": np.zeros((1, 4), np.float64), "b": np.zeros((1, 2), np.int64)}, None,
         "input 'a': datatype is FP64, model expects FP32"),
        ({"a": np.zeros((4,), np.float32), "b": np.zeros((1, 2), np.int64)}, None,
         r"input 'a': shape \[4\] does not match \[-1, 4\] \(batch dimension first\)"),
        ({"a": np.zeros((1, 5), np.float32), "b": np.zeros((1, 2), np.int64)}, None,
         r"input 'a': shape \[1, 5\] does not match \[-1, 4\]"),
        ({"a": np.zeros((9, 4), np.float32), "b": np.zeros((9, 2), np.int64)}, None, "batch size 9 is outside 1..8"),
        ({"a": np.zeros((0, 4), np.float32), "b": np.zeros((0, 2), np.int64)}, None, "batch size 0 is outside 1..8"),
        ({"a": np.zeros((2, 4), np.float32), "b": np.zeros((3, 2), np.int64)}, None, "inputs disagree on the batch size"),
        ({"a": np.zeros((1, 4), np.float32), "b": np.zeros((1, 2), np.int64), "c": np.zeros(1)}, None,
         "model 'm' has no input c"),
        ({"a": np.zeros((1, 4), np.float32), "b": np.zeros((1, 2), np.int64)}, ["z"], "model 'm' has no output 'z'"),
    ],
)
def test_mismatches_name_the_tensor(inputs, outputs, message):
    with pytest.raises(InvalidInput, match=message):
        batched().check(req(outputs, **inputs))


def test_an_ensemble_is_named_as_such():
    with pytest.raises(InvalidInput, match="ensemble 'm' expects input 'a'"):
        batched(kind="ensemble").check(req(b=np.zeros((1, 2), np.int64)))


def test_non_batching_signature_takes_the_shape_as_declared_and_reshapes():
    sig = Signature("model", "m", [InputSpec("a", "INT32", (2, 3), reshape=(6,))], [], max_batch_size=0)
    r = req(a=np.arange(6, dtype=np.int32).reshape(2, 3))
    assert sig.check(r) == 1 and r.inputs["a"].shape == (6,)
    with pytest.raises(InvalidInput, match=r"shape \[1, 2, 3\] does not match \[2, 3\]"):
        sig.check(req(a=np.zeros((1, 2, 3), np.int32)))
    batched_sig = Signature("model", "m", [InputSpec("a", "INT32", (2, 3), reshape=(6,))], [], max_batch_size=4)
    r = req(a=np.zeros((3, 2, 3), np.int32))
    assert batched_sig.check(r) == 3 and r.inputs["a"].shape == (3, 6)


def test_utf8_is_checked_only_where_declared():
    bad = np.array([b"ok", b"\xff"], dtype=np.object_)
    text = Signature("model", "m", [InputSpec("s", "BYTES", (2,), utf8=True)], [], 0)
    raw = Signature("model", "m", [InputSpec("s", "BYTES", (2,))], [], 0)
    with pytest.raises(InvalidInput, match="input 's': element 1 is not UTF-8 text"):
        text.check(req(s=bad))
    assert raw.check(req(s=bad)) == 1


def test_shapes_agree():
    assert shapes_agree([-1, 4], [8, 4]) and shapes_agree([2, -1], [-1, 3])
    assert not shapes_agree([-1, 4], [-1, 5]) and not shapes_agree([4], [-1, 4])
