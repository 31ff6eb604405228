"""Fixtures for the batching tests: request builders and a recording StatsSink."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from kubeinfer.runtime.types import InferRequest


def _make_request(
    batch: int = 1,
    dims: tuple[int, ...] = (4,),
    dtype: str = "float32",
    *,
    value: float = 0.0,
    priority: int = 0,
    timeout_us: int = 0,
    name: str = "x",
) -> InferRequest:
    """A request carrying ``batch`` rows of ``dims`` filled with ``value``."""
    x = np.full((batch, *dims), value, dtype=dtype)
    return InferRequest(
        inputs={name: x}, priority=priority, timeout_us=timeout_us, batch_size=batch
    )


@dataclass
class RecordingStats:
    """A StatsSink that keeps everything (thread-safe: batch stats may come from anywhere)."""

    succeeded: list[tuple[int, int]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request_succeeded(self, request_ns: int, queue_ns: int) -> None:
        with self.lock:
            self.succeeded.append((request_ns, queue_ns))

    def request_failed(self, request_ns: int, reason: str) -> None:
        with self.lock:
            self.failed.append((request_ns, reason))

    def batch_executed(
        self, batch_size: int, compute_input_ns: int, compute_infer_ns: int, compute_output_ns: int
    ) -> None:
        with self.lock:
            self.batches.append(batch_size)


@pytest.fixture
def stats() -> RecordingStats:
    return RecordingStats()


@pytest.fixture(name="make_request")
def make_request_fixture() -> Callable[..., InferRequest]:
    """Builds an InferRequest: ``make_request(batch, dims, dtype, value=, priority=, ...)``."""
    return _make_request
