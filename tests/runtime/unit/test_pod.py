"""The pod's shared state and the sum of its workers' statistics (``server.pod``)."""

from __future__ import annotations

import multiprocessing

from kubeinfer.runtime.metrics import MetricsRenderer
from kubeinfer.runtime.server.pod import DRAINING, READY, PodState, merge_stats, raw_stats
from kubeinfer.runtime.stats import ModelStats


def _worker(ok: int, failed: int, batches: list[int]) -> ModelStats:
    s = ModelStats("m", "1")
    for i in range(ok):
        s.request_succeeded(1000 * (i + 1), 10)
    for _ in range(failed):
        s.request_failed(5, "REJECTED")
    for b in batches:
        s.batch_executed(b, 1, 2, 3)
    return s


def test_the_sum_of_two_workers_is_what_one_worker_with_all_requests_would_report():
    a, b = _worker(3, 1, [1, 2]), _worker(2, 2, [2, 4])
    merged, pending = merge_stats("m", "1", [raw_stats(a, 2), raw_stats(b, 5)])
    both = _worker(0, 0, [])
    for i in range(3):
        both.request_succeeded(1000 * (i + 1), 10)
    for i in range(2):
        both.request_succeeded(1000 * (i + 1), 10)
    for _ in range(3):
        both.request_failed(5, "REJECTED")
    for n in (1, 2, 2, 4):
        both.batch_executed(n, 1, 2, 3)
    assert pending == 7
    got, want = merged.to_json(), both.to_json()
    got["last_inference"] = want["last_inference"] = 0
    assert got == want
    assert merged.latency_us.counts == both.latency_us.counts
    assert merged.batch_size.counts == both.batch_size.counts
    # and the page Prometheus scrapes renders the sums
    page = MetricsRenderer(merged, lambda: pending).render().decode()
    assert 'nv_inference_request_success{model="m",version="1"} 5.0' in page
    assert 'nv_inference_request_failure{model="m",reason="REJECTED",version="1"} 3.0' in page
    assert 'nv_inference_pending_request_count{model="m",version="1"} 7.0' in page
    assert 'kubeinfer_batch_size_count{model="m",version="1"} 4.0' in page


def test_the_pod_is_ready_when_every_worker_is_and_it_is_not_stopping(tmp_path):
    state = PodState(multiprocessing.get_context("spawn"), 2, str(tmp_path))
    assert not state.ready()
    state.set_state(0, READY)
    assert not state.ready()
    state.set_state(1, READY)
    assert state.ready()
    state.set_stopping()
    assert not state.ready()
    state2 = PodState(multiprocessing.get_context("spawn"), 2, str(tmp_path))
    state2.set_state(0, READY)
    state2.set_state(1, DRAINING)
    assert not state2.ready()
    state2.set_final(1, 7, 2)
    assert state2.final(1) == (7, 2) and state2.final(0) == (0, 0)
