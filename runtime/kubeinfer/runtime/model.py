"""A local model as a servable: validation against the signature, scheduling, warm-up.

Requests arrive decoded (numpy inputs) from the protocol layer, are checked against the
model's declared inputs (``protocol.signature``, the check ensembles use too), handed to the scheduler, and come back as outputs to encode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import numpy as np

from kubeinfer.runtime.batching.interface import Scheduler
from kubeinfer.runtime.datatypes import to_numpy
from kubeinfer.runtime.errors import InferError, ModelNotReady, QueueFull
from kubeinfer.runtime.protocol.signature import InputSpec, Signature
from kubeinfer.runtime.repository import LoadedModel
from kubeinfer.runtime.stats import ModelStats
from kubeinfer.runtime.types import InferRequest, InferResponse

log = logging.getLogger(__name__)


class ModelServable:
    def __init__(
        self,
        loaded: LoadedModel,
        scheduler_factory: Callable[[LoadedModel, ModelStats], Scheduler],
    ) -> None:
        self.loaded = loaded
        self.name = loaded.name
        self.version = loaded.version
        self.config = loaded.config
        self.labels = loaded.labels
        self.max_batch_size = loaded.config.max_batch_size
        self.batched = self.max_batch_size > 0
        self.stats = ModelStats(self.name, self.version)
        self.scheduler = scheduler_factory(loaded, self.stats)
        #: whether the scheduler would reject any request now (cheap, before decoding)
        self.queue_full = getattr(self.scheduler, "queue_full", None) or (lambda: False)
        self._ready = False
        self._accepting = False
        seq = self.config.sequence_batching
        # control and implicit-state inputs are fed by the sequence batcher, not by clients
        self._internal = seq.internal_inputs() if seq is not None else set()
        self.signature = Signature(
            "model", self.name,
            [
                InputSpec(s.name, s.datatype, s.shape, s.optional, s.reshape, loaded.backend.utf8_strings)
                for s in self.config.inputs()
                if s.name not in self._internal
            ],
            [s.name for s in self.config.outputs()],
            self.max_batch_size,
        )

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self.scheduler.start()
        timings = await asyncio.get_running_loop().run_in_executor(None, self.warm_up)
        self.scheduler.warmed_up(timings)
        self._ready = self._accepting = True

    def mark_unready(self) -> None:
        self._ready = False

    async def drain(self) -> None:
        self._ready = self._accepting = False
        await self.scheduler.drain()
        self.loaded.backend.unload()

    def is_ready(self) -> bool:
        return self._ready

    def pending_count(self) -> int:
        return self.scheduler.pending_count()

    def warm_up(self) -> list[int]:
        """Run the config's ``model_warmup`` samples, else one synthetic batch of zeros;
        the time of each execution (ns). A single run under ``_RERUN_BELOW_NS`` runs once
        more: a first run pays one-time costs (allocations, kernel choice) that would make
        a fast model look slow to the scheduler."""
        backend, outputs = self.loaded.backend, [s.name for s in self.config.outputs()]
        batch = (1,) if self.batched else ()
        samples = []
        for w in self.config.model_warmup:
            feed = {}
            for name, spec in w.inputs.items():
                shape = ((w.batch_size,) if self.batched else ()) + tuple(spec.dims)
                dtype = to_numpy(spec.data_type)
                if spec.input_data_file:
                    raw = (self.loaded.path.parent.parent / "warmup" / spec.input_data_file).read_bytes()
                    feed[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
                elif spec.random_data and dtype.kind in "fiu":
                    feed[name] = np.random.default_rng(0).random(shape).astype(dtype)
                else:
                    feed[name] = _zeros(shape, dtype)
            samples.extend([(w.name, feed)] * max(w.count, 1))
        if samples:
            timings = []
            for name, feed in samples:
                timings.append(_timed(backend.execute, feed, outputs))
                log.info("warm-up sample '%s' ran", name)
            if len(timings) == 1 and timings[0] < _RERUN_BELOW_NS:
                timings.append(_timed(backend.execute, samples[0][1], outputs))
            return timings
        # zeros for every input of the model file's own signature (batch dimension, the
        # sequence batcher's control and state tensors included), else of the config
        specs = backend.inputs or [
            s.__class__(s.name, s.datatype, batch + s.shape) for s in self.config.inputs()
        ]
        feed = {
            s.name: _zeros(tuple(1 if d == -1 else d for d in s.shape), to_numpy(s.datatype))
            for s in specs
            if not s.optional
        }
        try:
            timings = [_timed(backend.execute, feed, outputs)]
            if timings[0] < _RERUN_BELOW_NS:
                timings.append(_timed(backend.execute, feed, outputs))
            log.info("warm-up ran a synthetic batch")
            return timings
        except Exception as exc:  # a synthetic batch may not suit every model
            log.warning("synthetic warm-up failed (%s); set model_warmup in the config", exc)
            return []

    # -- data plane --------------------------------------------------------------------
    def validate(self, request: InferRequest) -> None:
        request.batch_size = self.signature.check(request)

    def check_capacity(self) -> None:
        """Raise ``QueueFull`` (and count it) when the queue is full; the server calls
        this before reading and decoding a request, so shedding load costs little."""
        if self.queue_full():
            self.stats.request_failed(0, QueueFull.reason)
            raise QueueFull(f"model '{self.name}': the queue is full")

    async def infer(self, request: InferRequest) -> InferResponse:
        if not self._accepting:
            raise ModelNotReady(f"model '{self.name}' is not ready")
        try:
            self.validate(request)
        except InferError as exc:
            self.stats.request_failed(0, exc.reason)
            raise
        outputs = await self.scheduler.infer(request)
        return InferResponse(self.name, self.version, outputs, request.id)

    # -- metadata ----------------------------------------------------------------------
    def metadata(self) -> dict:
        lead = [-1] if self.batched else []
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.config.platform or self.config.backend,
            "inputs": [
                {"name": s.name, "datatype": s.datatype, "shape": lead + list(s.shape)}
                for s in self.config.inputs()
                if s.name not in self._internal
            ],
            "outputs": [
                {"name": s.name, "datatype": s.datatype, "shape": lead + list(s.shape)}
                for s in self.config.outputs()
            ],
        }

    def config_json(self) -> dict:
        return self.config.to_json()

    def statistics(self) -> dict:
        return self.stats.to_json()


#: a single warm-up run shorter than this runs once more (see ``warm_up``)
_RERUN_BELOW_NS = 10_000_000


def _timed(execute: Callable, feed: Mapping[str, np.ndarray], outputs: list[str]) -> int:
    t0 = time.monotonic_ns()
    execute(feed, outputs)
    return time.monotonic_ns() - t0


def _zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.zeros(shape, dtype=dtype) if dtype.kind != "O" else np.full(shape, b"", dtype=object)
