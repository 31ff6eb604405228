"""The two assemblers without an event loop: policy decisions become flights on a fake
clock, feeds and splits are plain numpy, the sequence's settlement commits its state."""

from __future__ import annotations

import numpy as np
import pytest

from kubeinfer.runtime.batching.batcher import DynamicAssembler
from kubeinfer.runtime.batching.policy import BatchPolicy
from kubeinfer.runtime.batching.sequence import SequenceAssembler
from kubeinfer.runtime.batching.sequence_policy import SequencePolicy
from kubeinfer.spec.config.model import DynamicBatching, QueuePolicy
from kubeinfer.runtime.errors import BackendError, InvalidInput
from kubeinfer.runtime.types import InferRequest
from tests.runtime.sequence.test_sequence_batcher import config

MS = 1_000_000


def dynamic(max_batch_size=8, config=None, instances=1):
    policy = BatchPolicy(max_batch_size, config)
    return policy, DynamicAssembler(policy, ["y"], instances)


def push(policy, asm, rows: int, now: int = 0, value: float = 0.0, dims=(2,), **kw):
    inputs = {"x": np.full((rows, *dims), value, np.float32)}
    key = asm.key(inputs) if asm.key else None
    entry = asm.entry(InferRequest(inputs=inputs, batch_size=rows, **kw), key, None)
    policy.push(entry, now)
    return entry


def test_dynamic_poll_fills_every_free_instance_in_one_call():
    policy, asm = dynamic(instances=2)
    a = push(policy, asm, 1, dims=(2,))
    b = push(policy, asm, 1, dims=(3,))  # another shape: the next batch
    flights, expired, wake_at = asm.poll(0, 0, False)
    assert [f.entries for f in flights] == [[a], [b]] and [f.work for f in flights] == [[a], [b]]
    assert not expired and wake_at is None
    assert asm.poll(0, 2, False) == ([], [], None)  # no instance free


def test_dynamic_poll_reports_timeouts_while_every_instance_is_busy():
    cfg = DynamicBatching(default_queue_policy=QueuePolicy(default_timeout_microseconds=1000))
    policy, asm = dynamic(config=cfg)
    e = push(policy, asm, 1)
    assert asm.poll(0, 1, False) == ([], [], MS)  # busy: wake at its deadline
    flights, expired, wake_at = asm.poll(MS, 1, False)
    assert flights == [] and expired == [e] and wake_at is None


def test_dynamic_feed_and_split():
    policy, asm = dynamic()
    one = push(policy, asm, 1, value=1.0)
    three = push(policy, asm, 3, value=3.0)
    inputs, size = asm.feed([one])
    assert inputs is one.request.inputs and size == 1  # untouched when alone
    inputs, size = asm.feed([one, three])
    assert size == 4 and inputs["x"][:, 0].tolist() == [1.0, 3.0, 3.0, 3.0]
    y = inputs["x"] * 2
    r1, r3 = asm.split([one, three], size, {"y": y})
    assert r1["y"].shape == (1, 2) and r3["y"].shape == (3, 2)
    assert np.shares_memory(r3["y"], y)
    with pytest.raises(BackendError, match="batch dimension 3, expected 4"):
        asm.split([one, three], size, {"y": y[:3]})
    assert asm.alone([one, three]) == [[one], [three]]


def test_unbatched_split_takes_the_outputs_as_they_are():
    policy, asm = dynamic(max_batch_size=0)
    e = push(policy, asm, 1)
    outputs = {"y": np.zeros(7)}
    assert asm.split([e], 1, outputs)[0] is outputs


def sequence(max_batch_size=2, instances=1):
    cfg = config()
    policy = SequencePolicy(cfg, max_batch_size, instances)
    asm = SequenceAssembler(policy, cfg, ["OUT"], max_batch_size, instances,
                            model="acc", model_dir=None, clock=lambda: 0)
    return policy, asm


def seq_push(policy, asm, sid, value, start=False, end=False):
    params = {"sequence_id": sid, "sequence_start": start, "sequence_end": end}
    x = {"X": np.array([[value]], np.float32)}
    entry = asm.entry(InferRequest(inputs=x, parameters=params), asm.key(x), None)
    policy.push(entry, 0)
    return entry


def test_sequence_flight_feed_split_and_settlement():
    policy, asm = sequence()
    seq_push(policy, asm, 1, 1.0, start=True)
    b = seq_push(policy, asm, 2, 5.0, start=True)
    (flight,), _, _ = asm.poll(0, 0, False)
    inputs, size = asm.feed(flight.work)
    assert size == 2 and inputs["START"].tolist() == [[1.0], [1.0]]
    out = inputs["X"] + 1
    results = asm.split(flight.work, size, {"OUT": out, "S_OUT": out * 10})
    assert [r[1]["S_IN"].tolist() for r in results] == [[20.0], [60.0]]
    flight.results = [BackendError("bad"), results[1]]  # sequence 1 failed
    asm.completed(flight)
    assert isinstance(flight.results[0], BackendError)
    assert flight.results[1]["OUT"].tolist() == [[6.0]]  # what the client gets
    assert b.seq.state["S_IN"].tolist() == [60.0]  # committed for the next request
    # the instance is free again; sequence 1 kept its initial state
    seq_push(policy, asm, 1, 1.0)
    seq_push(policy, asm, 2, 1.0, end=True)
    (flight,), _, _ = asm.poll(0, 0, False)
    assert flight.work.states[0] is None and flight.work.states[1]["S_IN"].tolist() == [60.0]
    alone = asm.alone(flight.work)
    assert [w.rows for w in alone] == [[e] for e in flight.entries]
    assert [w.states for w in alone] == [[s] for s in flight.work.states]


def test_sequence_poll_leaves_a_busy_instance_alone():
    policy, asm = sequence()
    seq_push(policy, asm, 1, 1.0, start=True)
    (flight,), _, _ = asm.poll(0, 0, False)
    b = seq_push(policy, asm, 2, 1.0, start=True)  # ready in the busy instance's other slot
    assert asm.poll(0, 1, False)[0] == []
    flight.results = [BackendError("bad")]
    asm.completed(flight)
    (flight,), _, _ = asm.poll(0, 0, False)
    assert flight.entries == [b]


def test_sequence_empty_rows_get_zeros_and_ready_false():
    policy, asm = sequence()
    seq_push(policy, asm, 1, 1.0, start=True)
    seq_push(policy, asm, 2, 2.0, start=True)
    (flight,), _, _ = asm.poll(0, 0, False)
    flight.results = [({"OUT": None}, {"S_IN": np.ones(1, np.float32)})] * 2
    asm.completed(flight)
    seq_push(policy, asm, 2, 3.0)  # slot 1 only: slot 0 is an empty row
    (flight,), _, _ = asm.poll(0, 0, False)
    inputs, size = asm.feed(flight.work)
    assert size == 1 and inputs["X"].tolist() == [[0.0], [3.0]]
    assert inputs["READY"].tolist() == [[0.0], [1.0]] and inputs["CORRID"].tolist() == [[0], [2]]
    assert inputs["S_IN"].tolist() == [[0.0], [1.0]]


def test_sequence_entry_refuses_a_string_id_for_a_numeric_corrid():
    policy, asm = sequence()
    with pytest.raises(InvalidInput, match="integer sequence ids"):
        seq_push(policy, asm, "s", 1.0, start=True)
    assert policy.pending == 0
