"""BatchPolicy on a fake clock: times are plain integers (ns) handed to ``poll``."""

from __future__ import annotations

import pytest

from kubeinfer.runtime.batching.policy import BatchPolicy, Pending, shape_key
from kubeinfer.spec.config.model import DynamicBatching, QueuePolicy
from kubeinfer.runtime.errors import QueueFull

US = 1_000
S = 1_000_000_000


def push(policy: BatchPolicy, req, now: int = 0) -> Pending:
    entry = Pending(req, shape_key(req.inputs), handle=None)
    policy.push(entry, now)
    return entry


def fill(policy: BatchPolicy, make_request, n: int, now: int = 0, **kw) -> list[Pending]:
    return [push(policy, make_request(**kw), now) for _ in range(n)]


def sizes(batch: list[Pending] | None) -> list[int]:
    assert batch is not None
    return [e.size for e in batch]


# -- batch size and preferred sizes ------------------------------------------------------


def test_waits_until_preferred_size_then_dispatches(make_request):
    p = BatchPolicy(8, DynamicBatching(preferred_batch_size=[4], max_queue_delay_microseconds=S))
    fill(p, make_request, 3)
    d = p.poll(10, idle=False)
    assert d.batch is None and d.wake_at == S * 1000
    push(p, make_request(), 20)
    d = p.poll(30, idle=False)
    assert sizes(d.batch) == [1, 1, 1, 1]
    assert p.pending == 0


def test_largest_preferred_size_reached_goes_and_rest_waits(make_request):
    cfg = DynamicBatching(preferred_batch_size=[2, 4], max_queue_delay_microseconds=1000)
    p = BatchPolicy(8, cfg)
    entries = fill(p, make_request, 3)
    d = p.poll(0, idle=False)
    assert d.batch == entries[:2]
    d = p.poll(0, idle=False)
    assert d.batch is None and d.wake_at == 1000 * US


def test_batch_never_outgrows_largest_preferred(make_request):
    cfg = DynamicBatching(preferred_batch_size=[4, 8], max_queue_delay_microseconds=1000)
    p = BatchPolicy(16, cfg)
    fill(p, make_request, 3, batch=3)
    # 3, 6, then 9 > 8: send 6 (Triton's saturation mark)
    assert sizes(p.poll(0, idle=False).batch) == [3, 3]
    assert p.pending == 1


def test_max_batch_size_reached_without_preferred(make_request):
    p = BatchPolicy(4, DynamicBatching(max_queue_delay_microseconds=S))
    entries = fill(p, make_request, 5)
    assert p.poll(0, idle=False).batch == entries[:4]
    d = p.poll(0, idle=False)
    assert d.batch is None and p.pending == 1


def test_request_batch_sizes_are_counted(make_request):
    p = BatchPolicy(8, DynamicBatching(max_queue_delay_microseconds=S))
    fill(p, make_request, 3, batch=3)
    d = p.poll(0, idle=False)
    # 3 + 3 = 6; the third would make 9 > 8: it cannot grow, so it goes now
    assert sizes(d.batch) == [3, 3]
    assert p.pending == 1


def test_request_bigger_than_max_batch_size_is_refused(make_request):
    p = BatchPolicy(4)
    with pytest.raises(ValueError, match="exceeds max_batch_size 4"):
        push(p, make_request(batch=5))


# -- delay, idle --------------------------------------------------------------------------


def test_delay_expiry_sends_what_is_there(make_request):
    p = BatchPolicy(8, DynamicBatching(max_queue_delay_microseconds=100))
    push(p, make_request(), 0)
    push(p, make_request(), 60 * US)
    d = p.poll(50 * US, idle=False)
    assert d.batch is None and d.wake_at == 100 * US  # the oldest request's delay
    assert sizes(p.poll(100 * US, idle=False).batch) == [1, 1]


def test_delay_expiry_with_preferred_sizes_sends_everything(make_request):
    cfg = DynamicBatching(preferred_batch_size=[4], max_queue_delay_microseconds=100)
    p = BatchPolicy(8, cfg)
    fill(p, make_request, 3)
    assert p.poll(99 * US, idle=False).batch is None
    assert sizes(p.poll(100 * US, idle=False).batch) == [1, 1, 1]


def test_no_config_means_no_delay(make_request):
    p = BatchPolicy(8, None)
    fill(p, make_request, 3)
    assert sizes(p.poll(0, idle=False).batch) == [1, 1, 1]


def test_idle_dispatches_without_waiting(make_request):
    p = BatchPolicy(8, DynamicBatching(max_queue_delay_microseconds=10 * S // US))
    push(p, make_request())
    assert p.poll(0, idle=False).batch is None
    assert sizes(p.poll(0, idle=True).batch) == [1]


def test_idle_still_prefers_a_preferred_size(make_request):
    cfg = DynamicBatching(preferred_batch_size=[2], max_queue_delay_microseconds=S)
    p = BatchPolicy(8, cfg)
    fill(p, make_request, 3)
    assert sizes(p.poll(0, idle=True).batch) == [1, 1]
    assert sizes(p.poll(0, idle=True).batch) == [1]


def test_unbatched_model_sends_one_request_at_a_time(make_request):
    p = BatchPolicy(0, DynamicBatching(max_queue_delay_microseconds=S))
    entries = fill(p, make_request, 2, batch=1)
    assert p.poll(0, idle=False).batch == entries[:1]
    assert p.poll(0, idle=False).batch == entries[1:]


def test_empty_queue_decides_nothing():
    d = BatchPolicy(8).poll(0, idle=True)
    assert d.batch is None and d.wake_at is None and not d.expired


# -- priorities ---------------------------------------------------------------------------


def test_priority_level_one_goes_first(make_request):
    p = BatchPolicy(2, DynamicBatching(priority_levels=2, default_priority_level=2))
    low = fill(p, make_request, 2, priority=2)
    high = push(p, make_request(priority=1))
    assert p.poll(0, idle=True).batch == [high, low[0]]
    assert p.poll(0, idle=True).batch == [low[1]]


def test_priority_zero_or_out_of_range_uses_the_default_level(make_request):
    p = BatchPolicy(1, DynamicBatching(priority_levels=3, default_priority_level=2))
    assert p.level_of(0) == 1 and p.level_of(7) == 1 and p.level_of(3) == 2
    unset = BatchPolicy(1, DynamicBatching(priority_levels=3))
    assert unset.level_of(0) == 2  # no default level: the lowest


# -- shape keys, ordering -----------------------------------------------------------------


def test_different_shapes_are_not_mixed_and_order_is_kept(make_request):
    p = BatchPolicy(8)
    a1 = push(p, make_request(dims=(4,)))
    b1 = push(p, make_request(dims=(5,)))
    a2 = push(p, make_request(dims=(4,)))
    b2 = push(p, make_request(dims=(5,)))
    assert p.poll(0, idle=True).batch == [a1, a2]
    assert p.poll(0, idle=True).batch == [b1, b2]


def test_different_datatypes_or_names_are_not_mixed(make_request):
    p = BatchPolicy(8)
    f = push(p, make_request(dtype="float32"))
    i = push(p, make_request(dtype="int32"))
    n = push(p, make_request(name="y"))
    assert [p.poll(0, idle=True).batch for _ in range(3)] == [[f], [i], [n]]


def test_fifo_order_within_a_level(make_request):
    p = BatchPolicy(3)
    entries = fill(p, make_request, 7)
    got = []
    while p.pending:
        got += p.poll(0, idle=True).batch
    assert got == entries


# -- queue size ---------------------------------------------------------------------------


def test_full_level_rejects_at_once(make_request):
    cfg = DynamicBatching(
        priority_levels=2,
        default_priority_level=2,
        default_queue_policy=QueuePolicy(max_queue_size=2),
        priority_queue_policy={1: QueuePolicy(max_queue_size=1)},
    )
    p = BatchPolicy(8, cfg)
    fill(p, make_request, 2)
    with pytest.raises(QueueFull):
        push(p, make_request())
    push(p, make_request(priority=1))  # its own level, its own bound
    with pytest.raises(QueueFull):
        push(p, make_request(priority=1))
    p.poll(0, idle=True)
    push(p, make_request())  # room again


# -- timeouts -----------------------------------------------------------------------------


def _timeouts(default_us: int = 0, override: bool = False, action: str = "REJECT"):
    qp = QueuePolicy(
        default_timeout_microseconds=default_us,
        allow_timeout_override=override,
        timeout_action=action,
    )
    return DynamicBatching(max_queue_delay_microseconds=S, default_queue_policy=qp)


@pytest.mark.parametrize(
    ("default_us", "override", "request_us", "expected_us"),
    [
        (0, False, 0, 0),
        (0, False, 50, 50),  # no default: the request's own timeout is honoured
        (100, False, 50, 100),  # override not allowed
        (100, True, 50, 50),  # allowed to shorten
        (100, True, 500, 100),  # never to lengthen
        (100, True, 0, 100),
    ],
)
def test_timeout_override_rules(default_us, override, request_us, expected_us):
    p = BatchPolicy(8, _timeouts(default_us, override))
    assert p.timeout_ns(0, request_us) == expected_us * US


def test_expired_request_is_rejected_on_the_timer_and_never_batched(make_request):
    p = BatchPolicy(8, _timeouts(100))
    a = push(p, make_request(), 0)
    d = p.poll(10 * US, idle=False)
    assert d.batch is None and d.wake_at == 100 * US  # deadline before the 1 s delay
    b = push(p, make_request(), 50 * US)
    d = p.poll(100 * US, idle=False)
    assert d.expired == [a] and p.pending == 1
    assert p.poll(100 * US, idle=True).batch == [b]


def test_expiry_is_checked_at_dispatch(make_request):
    p = BatchPolicy(8, _timeouts(100))
    a = push(p, make_request(), 0)
    d = p.poll(200 * US, idle=True)  # first look after the deadline: an instance is free
    assert d.batch is None and d.expired == [a] and p.pending == 0


def test_next_deadline_while_instances_are_busy(make_request):
    p = BatchPolicy(8, _timeouts(100, override=True))
    push(p, make_request(), 0)
    short = push(p, make_request(timeout_us=30), 10 * US)
    assert p.next_deadline() == 40 * US
    p.cancel(short)
    assert p.next_deadline() == 100 * US
    assert p.expire(99 * US) == [] and len(p.expire(100 * US)) == 1
    assert p.next_deadline() is None


def test_delay_action_keeps_expired_requests_behind_the_others(make_request):
    p = BatchPolicy(1, _timeouts(1000, override=True, action="DELAY"))
    late = push(p, make_request(timeout_us=100), 0)
    on_time = push(p, make_request(), 10 * US)
    d = p.poll(200 * US, idle=True)
    assert d.expired == [] and d.batch == [on_time]
    assert p.poll(200 * US, idle=True).batch == [late]


def test_delay_action_stays_within_its_priority_level(make_request):
    cfg = DynamicBatching(
        priority_levels=2,
        default_priority_level=2,
        default_queue_policy=QueuePolicy(default_timeout_microseconds=100, timeout_action="DELAY"),
    )
    p = BatchPolicy(1, cfg)
    delayed_high = push(p, make_request(priority=1), 0)
    low = push(p, make_request(priority=2), 150 * US)
    assert p.poll(150 * US, idle=True).batch == [delayed_high]
    assert p.poll(150 * US, idle=True).batch == [low]


# -- cancellation, bookkeeping ------------------------------------------------------------


def test_cancelled_request_leaves_the_queue(make_request):
    p = BatchPolicy(8)
    a, b, c = fill(p, make_request, 3)
    assert p.cancel(b) and not p.cancel(b)
    assert p.pending == 2
    assert p.poll(0, idle=True).batch == [a, c]
    assert not p.cancel(a)  # already dispatched


def test_many_cancellations_keep_order_and_counts(make_request):
    p = BatchPolicy(4)
    entries = fill(p, make_request, 300)
    for e in entries[1::2]:
        p.cancel(e)
    got = []
    while p.pending:
        got += p.poll(0, idle=True).batch
    assert got == entries[::2]
