"""SequencePolicy on a fake clock: slots, backlog, flags, order, idle release, batches."""

from __future__ import annotations

import numpy as np
import pytest

from kubeinfer.runtime.batching.sequence_policy import SeqRequest, SequencePolicy
from kubeinfer.spec.config.model import SequenceBatching
from kubeinfer.runtime.errors import InvalidInput, QueueFull
from kubeinfer.runtime.types import InferRequest

MS = 1_000_000


def cfg(**kw) -> SequenceBatching:
    return SequenceBatching.model_validate(kw)


def req(sid, start=False, end=False, key="k", value=0.0) -> SeqRequest:
    r = InferRequest(inputs={"x": np.full((1, 1), value, np.float32)})
    return SeqRequest(r, sid, start, end, key)


def ids(batch) -> list:
    return [None if e is None else e.seq_id for e in batch.rows]


def run(policy: SequencePolicy, now: int, free=(0,), idle=True):
    d = policy.poll(now, list(free), idle)
    for b in d.batches:
        policy.complete([e for e in b.rows if e is not None], now)
    return d


def test_flags_checked_against_the_sequence_life():
    p = SequencePolicy(cfg(), max_batch_size=4, model="m")
    with pytest.raises(InvalidInput, match="must specify the START flag"):
        p.push(req(1), 0)
    p.push(req(1, start=True), 0)
    with pytest.raises(InvalidInput, match="already in progress"):
        p.push(req(1, start=True), 0)
    p.push(req(1), 0)
    p.push(req(1, end=True), 0)
    with pytest.raises(InvalidInput, match="follows its END"):
        p.push(req(1), 0)
    p.push(req(1, start=True), 0)  # the next sequence with the same id, queued behind
    assert p.pending == 4 and p.live == 1
    # strictly in order: one request of a sequence per batch
    for expected in ([True, False], [False, False], [False, True], [True, False]):
        d = run(p, 0)
        (batch,) = d.batches
        (e,) = batch.rows
        assert [e.start, e.end] == expected
    assert p.live == 1  # the second sequence is still open
    assert p.pending == 0


def test_end_frees_the_slot_and_a_later_request_is_unknown():
    p = SequencePolicy(cfg(), max_batch_size=2)
    p.push(req("a", start=True, end=True), 0)
    run(p, 0)
    assert p.live == 0
    with pytest.raises(InvalidInput, match="START"):
        p.push(req("a"), 1)
    # an integer and a string id are different sequences
    p.push(req(7, start=True), 1)
    p.push(req("7", start=True), 1)
    assert p.live == 2


def test_direct_pins_sequences_to_slots_and_pads_empty_rows():
    p = SequencePolicy(cfg(direct={}), max_batch_size=3)
    for sid in (1, 2, 3):
        p.push(req(sid, start=True), 0)
    (b,) = run(p, 0).batches
    assert ids(b) == [1, 2, 3]
    p.push(req(3), 1)  # only slot 2 has work: rows 0 and 1 are empty
    (b,) = run(p, 1).batches
    assert ids(b) == [None, None, 3]
    p.push(req(1), 2)
    (b,) = run(p, 2).batches
    assert ids(b) == [1]


def test_direct_slots_per_instance_and_busy_instances_wait():
    p = SequencePolicy(cfg(), max_batch_size=2, instances=2)
    for sid in (1, 2, 3, 4):
        p.push(req(sid, start=True), 0)
    d = p.poll(0, [0, 1], True)
    # new sequences spread over instances first
    assert sorted((b.instance, tuple(ids(b))) for b in d.batches) == [(0, (1, 3)), (1, (2, 4))]
    p.complete([e for b in d.batches for e in b.rows if e], 0)
    p.push(req(2), 1)
    assert p.poll(1, [0], False).batches == []  # sequence 2 lives on instance 1
    (b,) = p.poll(1, [1], False).batches
    assert b.instance == 1 and ids(b) == [2]


def test_one_request_of_a_sequence_at_a_time():
    p = SequencePolicy(cfg(), max_batch_size=4, instances=2)
    p.push(req(1, start=True), 0)
    p.push(req(1), 0)
    d = p.poll(0, [0, 1], True)
    assert len(d.batches) == 1 and p.pending == 1
    assert p.poll(0, [1], False).batches == []
    p.complete([d.batches[0].rows[0]], 1)
    assert len(p.poll(1, [0, 1], True).batches) == 1


def test_backlog_waits_for_a_slot_then_queue_full():
    p = SequencePolicy(cfg(), max_batch_size=1, backlog_limit=2)
    p.push(req(1, start=True), 0)
    p.push(req(2, start=True), 0)
    p.push(req(3, start=True), 0)
    with pytest.raises(QueueFull, match="backlog"):
        p.push(req(4, start=True), 0)
    assert p.backlogged == 2
    (b,) = run(p, 0).batches
    assert ids(b) == [1]
    # requests of a backlogged sequence queue up behind its start
    p.push(req(2, end=True), 0)
    assert run(p, 1).batches == []  # sequence 1 holds the only slot
    p.push(req(1, end=True), 2)
    assert ids(run(p, 2).batches[0]) == [1]  # ends 1: 2 takes the slot
    assert ids(run(p, 3).batches[0]) == [2]
    assert ids(run(p, 4).batches[0]) == [2]  # its end: 3 takes the slot
    assert ids(run(p, 5).batches[0]) == [3]
    assert p.backlogged == 0 and p.live == 1


def test_idle_sequence_released_on_time_and_backlog_promoted():
    p = SequencePolicy(cfg(max_sequence_idle_microseconds=100_000), max_batch_size=1)
    p.push(req(1, start=True), 0)
    run(p, 0)
    p.push(req(2, start=True), 10 * MS)
    d = p.poll(20 * MS, [0], True)
    assert d.batches == [] and d.wake_at == 100 * MS  # idle since its completion at 0
    d = p.poll(100 * MS, [0], True)
    assert [s.id for s in d.released] == [1]
    assert ids(d.batches[0]) == [2]
    with pytest.raises(InvalidInput, match="released after being idle"):
        p.push(req(1), 101 * MS)


def test_default_idle_limit_is_one_second():
    p = SequencePolicy(cfg(), max_batch_size=1)
    p.push(req(1, start=True), 0)
    run(p, 0)
    assert run(p, 999 * MS).released == []
    assert [s.id for s in run(p, 1000 * MS).released] == [1]


def test_a_running_or_queued_sequence_is_never_idle():
    p = SequencePolicy(cfg(max_sequence_idle_microseconds=1000), max_batch_size=1)
    p.push(req(1, start=True), 0)
    d = p.poll(0, [0], True)
    assert p.poll(50 * MS, [], False).released == []  # executing for a long time
    p.complete(d.batches[0].rows, 50 * MS)
    p.push(req(1), 50 * MS)
    assert p.poll(60 * MS, [], False).released == []  # queued behind a busy instance


def test_cancel_keeps_order_and_a_cancelled_start_forgets_the_sequence():
    p = SequencePolicy(cfg(), max_batch_size=2)
    a = req(1, start=True)
    p.push(a, 0)
    assert p.cancel(a) and not p.cancel(a)
    assert p.live == 0 and p.pending == 0
    p.push(req(1, start=True), 1)  # allowed again
    b, c = req(1), req(1, end=True)
    p.push(b, 1)
    p.push(c, 1)
    run(p, 1)
    p.cancel(c)  # the END is gone: the sequence stays open
    p.push(req(1, value=5.0), 2)
    (batch,) = run(p, 2).batches
    assert [e for e in batch.rows if e] == [b]
    (batch,) = run(p, 3).batches
    (e,) = [e for e in batch.rows if e]
    assert float(e.request.inputs["x"][0, 0]) == 5.0


def test_different_shapes_are_not_batched_together():
    p = SequencePolicy(cfg(), max_batch_size=4)
    p.push(req(1, start=True, key="a"), 0)
    p.push(req(2, start=True, key="b"), 0)
    p.push(req(3, start=True, key="a"), 0)
    assert ids(run(p, 0).batches[0]) == [1, None, 3]
    assert ids(run(p, 1).batches[0]) == [None, 2]


def test_direct_minimum_slot_utilization_waits_for_the_delay():
    p = SequencePolicy(
        cfg(direct={"max_queue_delay_microseconds": 1000, "minimum_slot_utilization": 0.5}),
        max_batch_size=4,
    )
    p.push(req(1, start=True), 0)
    d = p.poll(0, [0], True)
    assert d.batches == [] and d.wake_at == 1 * MS
    p.push(req(2, start=True), MS // 2)
    assert ids(p.poll(MS // 2, [0], True).batches[0]) == [1, 2]  # 2 of 4 slots ready
    p.push(req(3, start=True), 2 * MS)
    assert p.poll(2 * MS, [0], True).batches == []  # 1 and 2 still executing
    assert p.poll(3 * MS, [0], True).batches[0].rows[2].seq_id == 3  # delay passed


def test_oldest_batches_the_oldest_requests_of_different_sequences():
    p = SequencePolicy(
        cfg(oldest={"max_candidate_sequences": 4, "preferred_batch_size": [2],
                    "max_queue_delay_microseconds": 1000}),
        max_batch_size=4,
        instances=2,
    )
    p.push(req(1, start=True), 0)
    p.push(req(1), 1)
    d = p.poll(2, [0, 1], idle=False)
    assert d.batches == [] and d.wake_at == 1 * MS  # one request, no preferred size yet
    p.push(req(2, start=True), 3)
    p.push(req(3, start=True), 4)
    d = p.poll(5, [0, 1], idle=False)
    # preferred size 2 from the oldest heads; sequence 1's second request waits for its first
    assert [ids(b) for b in d.batches] == [[1, 2]]
    d2 = p.poll(MS + 5, [1], idle=False)
    assert [ids(b) for b in d2.batches] == [[3]]  # delay exceeded: what is there goes
    p.complete([e for b in d.batches for e in b.rows], MS + 6)
    d3 = p.poll(MS + 7, [0], idle=True)
    assert [ids(b) for b in d3.batches] == [[1]]


def test_oldest_candidate_slots_bound_live_sequences():
    p = SequencePolicy(cfg(oldest={"max_candidate_sequences": 2}), max_batch_size=4)
    for sid in (1, 2, 3):
        p.push(req(sid, start=True, end=True), sid)
    assert p.backlogged == 1
    d = run(p, 10)
    assert [ids(b) for b in d.batches] == [[1, 2]]
    assert [ids(b) for b in run(p, 11).batches] == [[3]]
    assert p.live == 0


def test_oldest_preferred_size_must_fit():
    with pytest.raises(ValueError, match="preferred_batch_size"):
        SequencePolicy(cfg(oldest={"preferred_batch_size": [8]}), max_batch_size=4)


def test_unbatched_model_has_one_slot_per_instance():
    p = SequencePolicy(cfg(), max_batch_size=0, instances=2)
    p.push(req(1, start=True), 0)
    p.push(req(2, start=True), 0)
    p.push(req(3, start=True), 0)
    assert p.backlogged == 1
    d = p.poll(0, [0, 1], True)
    assert sorted(ids(b)[0] for b in d.batches) == [1, 2]
