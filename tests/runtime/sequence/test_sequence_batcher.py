"""SequenceBatcher on a real event loop with a numpy accumulator in the instance threads."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from kubeinfer.runtime.batching.sequence import SequenceBatcher
from kubeinfer.spec.config.model import SequenceBatching
from kubeinfer.runtime.errors import BackendError, InvalidInput, ModelNotReady, QueueFull
from kubeinfer.runtime.types import InferRequest
from tests.runtime.batching.conftest import RecordingStats

GUARD = 10.0
BAD = -1.0


def config(start="fp32_false_true", corrid="TYPE_UINT64", **kw) -> SequenceBatching:
    pair = {"fp32_false_true": [0, 1], "int32_false_true": [0, 1], "bool_false_true": [False, True]}[start]
    return SequenceBatching.model_validate({
        "control_input": [
            {"name": "START", "control": [{"kind": "CONTROL_SEQUENCE_START", start: pair[:]}]},
            {"name": "END", "control": [{"kind": "CONTROL_SEQUENCE_END", "int32_false_true": [0, 1]}]},
            {"name": "READY", "control": [{"kind": "CONTROL_SEQUENCE_READY", "fp32_false_true": [0, 1]}]},
            {"name": "CORRID", "control": [{"kind": "CONTROL_SEQUENCE_CORRID", "data_type": corrid}]},
        ],
        "state": [{"input_name": "S_IN", "output_name": "S_OUT", "data_type": "TYPE_FP32", "dims": [1]}],
        **kw,
    })


class Accumulator:
    """OUT = S_IN * (1 - START) + X (per row), S_OUT = OUT; records every feed."""

    def __init__(self) -> None:
        self.feeds: list[dict[str, np.ndarray]] = []
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> dict:
        with self.lock:
            self.feeds.append({k: v.copy() for k, v in inputs.items()})
        assert self.gate.wait(GUARD)
        x = inputs["X"]
        if (x == BAD).any():
            raise ValueError("bad value in X")
        start = inputs["START"].astype(np.float32)
        out = inputs["S_IN"] * (1 - start) + x
        return {"OUT": out, "S_OUT": out.copy()}


def request(sid, value, start=False, end=False) -> InferRequest:
    params = {"sequence_id": sid, "sequence_start": start, "sequence_end": end}
    return InferRequest(inputs={"X": np.array([[value]], np.float32)}, parameters=params)


async def make(model, cfg=None, max_batch_size=4, instances=1, **kw) -> tuple[SequenceBatcher, RecordingStats]:
    stats = RecordingStats()
    b = SequenceBatcher(
        model, ["OUT"], max_batch_size, cfg or config(), instances=instances, stats=stats, model="acc", **kw
    )
    await b.start()
    return b, stats


async def step(b, sid, value, start=False, end=False) -> float:
    out = await asyncio.wait_for(b.infer(request(sid, value, start, end)), GUARD)
    assert list(out) == ["OUT"]  # the state output is not returned
    return float(out["OUT"][0, 0])


async def test_state_and_controls_are_fed_per_row():
    model = Accumulator()
    b, stats = await make(model)
    assert await step(b, 5, 1.0, start=True) == 1.0
    assert await step(b, 9, 10.0, start=True) == 10.0
    assert await step(b, 9, 2.0) == 12.0
    assert await step(b, 5, 3.0, end=True) == 4.0
    f = model.feeds[2]  # sequence 9 (slot 1) alone: slot 0 is an empty row
    assert f["X"].tolist() == [[0.0], [2.0]]
    assert f["READY"].tolist() == [[0.0], [1.0]] and f["READY"].dtype == np.float32
    assert f["START"].tolist() == [[0.0], [0.0]]
    assert f["END"].tolist() == [[0], [0]] and f["END"].dtype == np.int32
    assert f["CORRID"].tolist() == [[0], [9]] and f["CORRID"].dtype == np.uint64
    assert f["S_IN"].tolist() == [[0.0], [10.0]]
    f = model.feeds[3]
    assert f["END"].tolist() == [[1]] and f["CORRID"].tolist() == [[5]]
    assert f["START"].tolist() == [[0.0]]
    assert len(stats.succeeded) == 4 and stats.batches == [1, 1, 1, 1]
    await b.drain()


@pytest.mark.parametrize("start", ["int32_false_true", "bool_false_true"])
async def test_control_datatypes_and_string_ids(start):
    model = Accumulator()
    b, _ = await make(model, config(start=start, corrid="TYPE_STRING"))
    assert await step(b, "abc", 2.0, start=True) == 2.0
    assert await step(b, "abc", 2.0) == 4.0
    f = model.feeds[0]
    assert f["START"].dtype == (np.int32 if start.startswith("int32") else np.bool_)
    assert f["START"].tolist() == ([[1]] if start.startswith("int32") else [[True]])
    assert f["CORRID"].tolist() == [[b"abc"]]
    await b.drain()


async def test_many_interleaved_sequences_more_than_slots():
    model = Accumulator()
    b, stats = await make(model, max_batch_size=4, instances=2)
    rng = random.Random(0)

    async def sequence(sid: int) -> list[float]:
        out = []
        for i in range(8):
            await asyncio.sleep(rng.random() / 1000)
            out.append(await step(b, sid, float(sid + i), start=i == 0, end=i == 7))
        return out

    results = await asyncio.wait_for(asyncio.gather(*(sequence(s) for s in range(1, 31))), 60)
    for sid, got in zip(range(1, 31), results):
        assert got == list(np.cumsum([float(sid + i) for i in range(8)])), sid
    assert len(stats.succeeded) == 240 and not stats.failed
    assert max(stats.batches) > 1  # rows of different sequences did share batches
    await b.drain()


async def test_oldest_strategy_sums():
    model = Accumulator()
    cfg = config(oldest={"max_candidate_sequences": 6, "preferred_batch_size": [3]})
    b, _ = await make(model, cfg, max_batch_size=4, instances=2)

    async def sequence(sid: int) -> float:
        total = 0.0
        for i in range(5):
            total = await step(b, sid, 1.0, start=i == 0, end=i == 4)
        return total

    assert await asyncio.gather(*(sequence(s) for s in range(1, 13))) == [5.0] * 12
    # oldest batches hold no empty rows
    assert all(f["READY"].min() == 1.0 for f in model.feeds)
    await b.drain()


async def test_a_bad_request_fails_alone_and_keeps_the_state():
    model = Accumulator()
    model.gate.clear()
    b, stats = await make(model)
    first = asyncio.ensure_future(step(b, 1, 1.0, start=True))
    await asyncio.sleep(0.05)  # held in the model: the next requests queue up together
    tasks = [
        asyncio.ensure_future(step(b, 2, 5.0, start=True)),
        asyncio.ensure_future(step(b, 3, BAD, start=True)),
        asyncio.ensure_future(step(b, 1, 2.0)),
    ]
    await asyncio.sleep(0.05)
    model.gate.set()
    assert await first == 1.0
    r2, r3, r1 = await asyncio.gather(*tasks, return_exceptions=True)
    assert r2 == 5.0 and r1 == 3.0
    assert isinstance(r3, BackendError) and "bad value" in r3.message
    assert await step(b, 3, 4.0) == 4.0  # the failed start left the initial state
    assert [r for _, r in stats.failed] == ["BACKEND"]
    await b.drain()


async def test_cancelled_request_never_executes_and_order_holds():
    model = Accumulator()
    b, stats = await make(model)
    assert await step(b, 1, 1.0, start=True) == 1.0
    model.gate.clear()
    held = asyncio.ensure_future(step(b, 1, 10.0))
    await asyncio.sleep(0.05)
    doomed = asyncio.ensure_future(step(b, 1, 100.0))
    after = asyncio.ensure_future(step(b, 1, 1000.0))
    await asyncio.sleep(0.05)
    doomed.cancel()
    await asyncio.sleep(0.05)  # the cancellation reaches the scheduler while 10.0 executes
    model.gate.set()
    assert await held == 11.0
    assert await after == 1011.0
    assert all(100.0 not in f["X"] for f in model.feeds)
    assert [r for _, r in stats.failed] == ["CANCELED"]
    await b.drain()


async def test_request_errors():
    b, stats = await make(Accumulator(), max_batch_size=1, backlog_limit=1)
    with pytest.raises(InvalidInput, match="non-zero or non-empty sequence_id"):
        await b.infer(InferRequest(inputs={"X": np.zeros((1, 1), np.float32)}))
    with pytest.raises(InvalidInput, match="must specify the START flag"):
        await step(b, 1, 1.0)
    with pytest.raises(InvalidInput, match="integer sequence ids"):
        await step(b, "s", 1.0, start=True)
    with pytest.raises(InvalidInput, match="'sequence_start' must be a boolean"):
        await b.infer(InferRequest(inputs={"X": np.zeros((1, 1), np.float32)},
                                   parameters={"sequence_id": 1, "sequence_start": "yes"}))
    big = InferRequest(inputs={"X": np.zeros((2, 1), np.float32)},
                       parameters={"sequence_id": 1, "sequence_start": True}, batch_size=2)
    with pytest.raises(InvalidInput, match="batch size 1"):
        await b.infer(big)
    await step(b, 1, 1.0, start=True)
    with pytest.raises(InvalidInput, match="already in progress"):
        await step(b, 1, 1.0, start=True)
    waiting = asyncio.ensure_future(step(b, 2, 1.0, start=True))  # backlog (1 slot, held by 1)
    await asyncio.sleep(0.02)
    with pytest.raises(QueueFull, match="backlog"):
        await step(b, 3, 1.0, start=True)
    assert b.pending_count() == 1
    await step(b, 1, 1.0, end=True)
    assert await waiting == 1.0
    assert sorted(r for _, r in stats.failed) == ["OTHER"] * 6 + ["REJECTED"]
    await b.drain()
    with pytest.raises(ModelNotReady):
        await step(b, 9, 1.0, start=True)


async def test_idle_sequence_releases_its_slot_for_the_backlog():
    b, _ = await make(Accumulator(), config(max_sequence_idle_microseconds=50_000), max_batch_size=1)
    await step(b, 1, 1.0, start=True)
    # sequence 1 is abandoned: 2 waits in the backlog until 1 has been idle 50 ms
    assert await step(b, 2, 2.0, start=True) == 2.0
    with pytest.raises(InvalidInput, match="START"):
        await step(b, 1, 1.0)
    await b.drain()


async def test_initial_state_from_a_data_file(tmp_path):
    (tmp_path / "initial_state").mkdir()
    np.array([100.0], np.float32).tofile(tmp_path / "initial_state" / "hundred")
    cfg = config()
    cfg.state[0].initial_state = [
        SequenceBatching.model_validate({"state": [{
            "input_name": "a", "output_name": "b", "data_type": "TYPE_FP32", "dims": [1],
            "initial_state": [{"data_type": "TYPE_FP32", "dims": [1], "data_file": "hundred"}],
        }]}).state[0].initial_state[0]
    ]

    def model(inputs, names):  # no reset on START: shows the initial state
        out = inputs["S_IN"] + inputs["X"]
        return {"OUT": out, "S_OUT": out}

    b, _ = await make(model, cfg, model_dir=tmp_path)
    assert await step(b, 1, 1.0, start=True) == 101.0
    assert await step(b, 1, 1.0) == 102.0
    await b.drain()
