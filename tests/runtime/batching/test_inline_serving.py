"""The servable as the server composes it, in process, with a real ONNX model: warm-up
measures the model, and a fast one runs its batches on the event loop from the first."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from kubeinfer.runtime.model import ModelServable
from kubeinfer.runtime.repository import load_model
from kubeinfer.runtime.server.run import make_scheduler
from kubeinfer.runtime.types import InferRequest
from tests.runtime.models import add_sub_repo, sample

GUARD = 10.0


async def test_a_fast_model_runs_inline_from_its_first_batch(tmp_path):
    loaded = load_model(add_sub_repo(tmp_path), "add_sub")
    execute = loaded.backend.execute
    threads: list[int] = []

    def spying(inputs, names):  # where each execution runs, not what it computes
        threads.append(threading.get_ident())
        return execute(inputs, names)

    loaded.backend.execute = spying
    servable = ModelServable(loaded, make_scheduler)
    await asyncio.wait_for(servable.start(), GUARD)
    policy = servable.scheduler.inline
    try:
        assert policy is not None and policy.fast  # measured at warm-up, before any request
        assert policy.inline_batches == 0
        loop_thread = threading.get_ident()
        assert threads and loop_thread not in threads  # warm-up ran on a thread
        threads.clear()
        a, b = sample(batch=1, seed=3)
        response = await asyncio.wait_for(
            servable.infer(InferRequest(inputs={"INPUT0": a, "INPUT1": b})), GUARD
        )
        np.testing.assert_allclose(response.outputs["OUTPUT0"], a + b, rtol=1e-6)
        np.testing.assert_allclose(response.outputs["OUTPUT1"], a - b, rtol=1e-6)
        assert threads == [loop_thread]
        assert policy.inline_batches == 1 == servable.stats.execution_count
    finally:
        await asyncio.wait_for(servable.drain(), GUARD)
