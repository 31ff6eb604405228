"""InlinePolicy on fake timings (ns): when a batch runs on the event loop."""

from __future__ import annotations

from kubeinfer.runtime.batching.inline import InlinePolicy

US = 1_000
MS = 1_000_000


def policy(**kw) -> InlinePolicy:
    # 1 ms threshold, eject above 10 ms, probe while the thread median is <= 2 ms
    return InlinePolicy(1 * MS, probe_every=4, **kw)


def run(p: InlinePolicy, ns: int) -> bool:
    """One batch: decide, then report its time where it ran; True if it ran inline."""
    inline = p.decide()
    (p.ran_inline if inline else p.ran_threaded)([ns])
    return inline


def test_an_unmeasured_model_never_starts_inline():
    p = policy()
    assert p.decide() is False
    assert p.inline_batches == 0


def test_a_model_whose_warm_up_is_fast_runs_inline_from_its_first_batch():
    p = policy()
    p.seed([40 * US])
    assert [run(p, 50 * US) for _ in range(100)] == [True] * 100
    assert p.inline_batches == 100


def test_warm_up_counts_its_fastest_run_since_a_first_run_pays_one_time_costs():
    p = policy()
    p.seed([30 * MS, 60 * US])
    assert p.fast and p.decide()


def test_a_model_slow_at_warm_up_never_runs_inline():
    p = policy()
    p.seed([300 * MS])
    assert not any(run(p, 300 * MS) for _ in range(1000))
    assert p.inline_batches == 0


def test_thread_timings_above_the_probe_ceiling_never_probe():
    """A model seen only on the thread (warm-up failed) at 3 ms, over the 2 ms ceiling:
    GIL waits may inflate it, but a probe could stall the loop for 3 ms."""
    p = policy()
    assert not any(run(p, 3 * MS) for _ in range(1000))


def test_a_fast_model_seen_only_on_the_thread_is_probed_and_moves_inline():
    p = policy()
    ran = [run(p, 80 * US) for _ in range(3)]
    # first batch on the thread (unknown), its 80 us allow a probe at once, which measures
    # the model fast: inline from then on
    assert ran == [False, True, True]


def test_a_fast_model_whose_warm_up_looked_slow_is_probed():
    p = policy()
    p.seed([1500 * US])  # above the threshold, below the probe ceiling
    assert p.decide() is True  # a probe, right away
    p.ran_inline([100 * US])
    assert p.fast


def test_a_model_that_turns_slow_leaves_the_loop_after_one_run_over_the_eject_bound():
    p = policy()
    p.seed([50 * US])
    for _ in range(8):
        run(p, 50 * US)
    assert run(p, 300 * MS) is True  # could not be known before it ran
    assert not any(run(p, 300 * MS) for _ in range(100))  # and never again


def test_one_preempted_run_below_the_eject_bound_does_not_leave_the_loop():
    p = policy()
    p.seed([50 * US])
    for _ in range(8):
        run(p, 50 * US)
    run(p, 5 * MS)
    assert p.fast
    assert run(p, 50 * US) is True


def test_a_model_whose_median_crosses_the_threshold_moves_to_the_thread():
    p = policy()
    p.seed([900 * US])
    ran = [run(p, 1500 * US) for _ in range(3)]
    # median of [0.9, 1.5] is 1.5 ms: to the thread after the first slow run
    assert ran == [True, False, False]


def test_probes_come_every_probe_every_batches_while_the_thread_median_allows():
    p = policy()
    p.seed([1500 * US])
    ran = [run(p, 1500 * US) for _ in range(11)]
    # a probe at once (1.5 ms <= 2 ms ceiling) measures 1.5 ms: not fast; the next
    # probes come every 4 thread batches, each a 1.5 ms stall at most
    assert ran == [True, False, False, False, False, True] + [False] * 4 + [True]


def test_after_leaving_the_loop_old_fast_thread_history_does_not_allow_a_probe():
    p = policy()
    for _ in range(6):  # fast thread runs, then inline
        run(p, 50 * US)
    assert p.fast
    assert run(p, 300 * MS) is True  # ejected
    ran = [run(p, 300 * MS) for _ in range(50)]
    assert not any(ran)


def test_a_failed_batch_reports_no_timings_and_changes_nothing():
    p = policy()
    p.seed([50 * US])
    p.ran_inline([])
    p.ran_threaded([])
    assert p.fast


def test_a_zero_threshold_never_runs_inline():
    p = InlinePolicy(0)
    p.seed([1])
    assert not any(run(p, 1) for _ in range(100))
