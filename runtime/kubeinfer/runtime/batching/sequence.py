"""The sequence batcher: an asyncio ``Scheduler`` for stateful models.

Requests come from the server layer (``infer``, inputs already validated) carrying
``sequence_id``, ``sequence_start`` and ``sequence_end`` in their parameters (REST and
gRPC both put them there). ``SequencePolicy`` (pure, ``sequence_policy.py``) decides
slots, backlog, order and batches; this module runs them like the dynamic batcher does:
scheduling on the event loop (an enqueue, a finished batch or one armed timer triggers
``_pump``), batches on a ``ThreadPoolExecutor`` with one thread per instance, results back
with one ``call_soon_threadsafe`` per batch.

What a batch feeds the backend, per row (Triton's sequence batcher):

- the request's own inputs; a row without a request (``direct``: a slot with nothing
  ready) gets zeros shaped like the batch's first request, and its outputs are dropped;
- the control tensors of ``sequence_batching.control_input``: START (the row's request
  starts its sequence), END (it ends it), READY (the row holds a request), CORRID (the
  sequence id; 0 or empty on an empty row), each shaped ``[1]`` per row with the
  configured false/true values or datatype;
- implicit state (``sequence_batching.state``): the sequence's stored state as
  ``input_name``, the initial state (zeros, or ``initial_state``) on START and on empty
  rows; ``output_name`` replaces the stored state after the request and is not returned.

Failure handling as in the dynamic batcher: a failing batch of several requests re-runs
each request alone so only the bad one fails (state is committed only on success, so a
re-run is free of side effects); a cancelled request never executes. A failed request
leaves its sequence's state as it was; its sequence stays live (an END that failed still
ends it). Every failure raised here is reported to ``StatsSink.request_failed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kubeinfer.runtime.batching.interface import ExecuteFn, StatsSink
from kubeinfer.runtime.batching.lifecycle import DrainingScheduler
from kubeinfer.runtime.batching.policy import shape_key
from kubeinfer.runtime.batching.sequence_policy import (
    Batch,
    SeqRequest,
    SequenceId,
    SequencePolicy,
)
from kubeinfer.spec.config.model import SequenceBatching, SequenceControl, SequenceState
from kubeinfer.runtime.datatypes import to_numpy
from kubeinfer.runtime.errors import (
    BackendError,
    Cancelled,
    ConfigError,
    InferError,
    InvalidInput,
    ModelNotReady,
    QueueFull,
)
from kubeinfer.runtime.types import InferRequest

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]
#: per request: (its outputs, the sequence's new state) or its error
Result = tuple[Outputs, dict[str, np.ndarray]] | InferError

_MAX_U64 = (1 << 64) - 1


def sequence_flags(params: dict[str, Any], model: str) -> tuple[SequenceId, bool, bool]:
    """``sequence_id`` (non-zero uint64 or non-empty string), ``sequence_start``,
    ``sequence_end`` from request parameters; ``InvalidInput`` when malformed."""
    sid = params.get("sequence_id")
    if isinstance(sid, bool) or not isinstance(sid, (int, str)) or sid in (0, ""):
        raise InvalidInput(
            f"inference request to model '{model}' must specify a non-zero or non-empty "
            "sequence_id (the model uses sequence batching)"
        )
    if isinstance(sid, int) and not 0 < sid <= _MAX_U64:
        raise InvalidInput(f"sequence_id {sid} is not an unsigned 64-bit integer")
    return sid, _flag(params, "sequence_start"), _flag(params, "sequence_end")


def _flag(params: dict[str, Any], key: str) -> bool:
    value = params.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InvalidInput(f"parameter '{key}' must be a boolean")


class _Control:
    __slots__ = ("name", "kind", "dtype", "false", "true")

    def __init__(self, name: str, control: SequenceControl) -> None:
        self.name = name
        self.kind = control.kind.removeprefix("CONTROL_SEQUENCE_")
        self.dtype = to_numpy(control.datatype)
        if self.kind != "CORRID":
            self.false, self.true = control.false_true


class _State:
    __slots__ = ("input", "output", "initial")

    def __init__(self, state: SequenceState, model_dir: Path | None) -> None:
        self.input = state.input_name
        self.output = state.output_name
        self.initial = initial_state(state, model_dir)


def initial_state(state: SequenceState, model_dir: Path | None) -> np.ndarray:
    """A state's value at START: ``initial_state`` (zeros or ``<model>/initial_state/<file>``
    raw row-major data), else zeros of ``dims`` (a variable dimension taken as 1)."""
    dtype = to_numpy(state.data_type)
    if not state.initial_state:
        return np.zeros([1 if d == -1 else d for d in state.dims], dtype=dtype)
    init = state.initial_state[0]
    if to_numpy(init.data_type) != dtype:
        raise ConfigError(f"state '{state.input_name}': initial_state data_type differs from the state's")
    if any(d < 1 for d in init.dims):
        raise ConfigError(f"state '{state.input_name}': initial_state dims must be concrete")
    if init.zero_data:
        return np.zeros(init.dims, dtype=dtype)
    if model_dir is None:
        raise ConfigError(f"state '{state.input_name}': initial_state data_file needs a model directory")
    path = model_dir / "initial_state" / str(init.data_file)
    try:
        raw = path.read_bytes()
        return np.frombuffer(raw, dtype=dtype).reshape(init.dims).copy()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"state '{state.input_name}': initial_state {path}: {exc}") from None


class _Flight:
    __slots__ = ("batch", "entries", "states", "dispatch_ns", "results", "timings")

    def __init__(self, batch: Batch, states: list[Any], dispatch_ns: int) -> None:
        self.batch = batch
        #: the requests of the batch (rows without one left out), in row order
        self.entries = [e for e in batch.rows if e is not None]
        #: per row: the state to feed (None: initial)
        self.states = states
        self.dispatch_ns = dispatch_ns
        self.results: list[Result] | None = None
        self.timings: list[tuple[int, int, int, int]] = []


class SequenceBatcher(DrainingScheduler):
    """Triton's sequence batcher (``direct`` or ``oldest``) as a ``Scheduler``."""

    def __init__(
        self,
        execute: ExecuteFn,
        output_names: Sequence[str],
        max_batch_size: int,
        config: SequenceBatching,
        *,
        instances: int = 1,
        stats: StatsSink,
        model: str = "",
        model_dir: Path | None = None,
        backlog_limit: int = 1024,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if instances < 1:
            raise ValueError("instances must be >= 1")
        self._execute = execute
        self._model = model
        self._batching = max_batch_size > 0
        self._controls = [_Control(ci.name, ci.control[0]) for ci in config.control_input]
        self._corrid_bytes = any(c.kind == "CORRID" and c.dtype.kind == "O" for c in self._controls)
        self._corrid_numeric = any(c.kind == "CORRID" and c.dtype.kind in "iu" for c in self._controls)
        self._states = [_State(s, model_dir) for s in config.state]
        hidden = config.internal_outputs()
        self._client_outputs = [n for n in output_names if n not in hidden]
        self._fetch = self._client_outputs + [s.output for s in self._states]
        try:
            self._policy = SequencePolicy(
                config, max_batch_size, instances, backlog_limit=backlog_limit, model=model
            )
        except ValueError as exc:
            raise ConfigError(f"model '{model}': {exc}") from None
        self._instances = instances
        self._stats = stats
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._busy = [False] * instances
        self._executing = 0
        self._kicked = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0
        self._closed = False
        self._drained: asyncio.Future[None] | None = None

    # -- Scheduler -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pool = ThreadPoolExecutor(self._instances, thread_name_prefix="kubeinfer-sequence")

    def pending_count(self) -> int:
        return self._policy.pending

    def warmed_up(self, execute_ns: Sequence[int]) -> None:
        """Nothing to learn: sequence batches always run on the instance threads."""

    async def infer(self, request: InferRequest) -> Outputs:
        loop = self._loop
        if self._closed or loop is None:
            self._stats.request_failed(0, ModelNotReady.reason)
            raise ModelNotReady("model is not ready" if loop is None else "model is draining")
        try:
            sid, start, end = sequence_flags(request.parameters, self._model)
            if request.batch_size != 1:
                raise InvalidInput(
                    f"inference request to model '{self._model}' must have batch size 1: the "
                    f"sequence batcher runs one request per sequence (got {request.batch_size})"
                )
            if isinstance(sid, str) and self._corrid_numeric:
                raise InvalidInput(
                    f"model '{self._model}' takes integer sequence ids (its CORRID control is "
                    f"numeric), got the string {sid!r}"
                )
            fut = loop.create_future()
            entry = SeqRequest(request, sid, start, end, shape_key(request.inputs), fut)
            self._policy.push(entry, self._clock())
        except (InvalidInput, QueueFull) as exc:
            self._stats.request_failed(0, exc.reason)
            raise
        if not self._kicked:
            self._kicked = True
            loop.call_soon(self._pump)
        try:
            return await fut
        except asyncio.CancelledError:
            if self._policy.cancel(entry):
                self._kick()  # a cancelled request may free a slot for the backlog
            if fut.cancelled():
                self._stats.request_failed(self._clock() - entry.enqueue_ns, Cancelled.reason)
            if self._closed:
                self._check_drained()
            raise

    # -- scheduling (event loop) -----------------------------------------------------------

    def _kick(self) -> None:
        if not self._kicked and self._loop is not None:
            self._kicked = True
            self._loop.call_soon(self._pump)

    def _pump(self, now: int = 0) -> None:
        self._kicked = False
        now = max(now, self._clock())
        free = [i for i, busy in enumerate(self._busy) if not busy]
        batches, released, wake_at = self._policy.poll(now, free, self._executing == 0)
        for seq in released:
            log.info("sequence %r of model '%s' released after being idle", seq.id, self._model)
        for batch in batches:
            self._dispatch(batch, now)
        if wake_at is not None:
            self._arm(wake_at, now)
        if self._closed:
            self._check_drained()

    def _dispatch(self, batch: Batch, now: int) -> None:
        self._busy[batch.instance] = True
        self._executing += 1
        states = [
            None if e is None or e.start or e.seq is None else e.seq.state for e in batch.rows
        ]
        flight = _Flight(batch, states, now)
        assert self._pool is not None
        self._pool.submit(self._run, flight)

    def _complete(self, flight: _Flight) -> None:
        self._busy[flight.batch.instance] = False
        self._executing -= 1
        stats = self._stats
        for size, c_in, c_infer, c_out in flight.timings:
            stats.batch_executed(size, c_in, c_infer, c_out)
        now = self._clock()
        results = flight.results
        assert results is not None
        for e, result in zip(flight.entries, results):
            if type(result) is tuple:
                assert e.seq is not None
                e.seq.state = result[1]
        self._policy.complete(flight.entries, now)
        dispatch_ns = flight.dispatch_ns
        for e, result in zip(flight.entries, results):
            fut = e.handle
            if fut.done():  # cancelled while executing: reported by infer()
                continue
            if type(result) is tuple:
                fut.set_result(result[0])
                stats.request_succeeded(now - e.enqueue_ns, dispatch_ns - e.enqueue_ns)
            else:
                fut.set_exception(result)
                stats.request_failed(now - e.enqueue_ns, result.reason)
        self._pump()

    # -- execution (instance threads) ------------------------------------------------------

    def _run(self, flight: _Flight) -> None:
        try:
            flight.results = self._run_rows(flight, flight.batch.rows, flight.states)
        except BaseException as exc:  # noqa: BLE001 - every request must be resolved
            flight.results = [BackendError(_message(exc))] * len(flight.entries)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._complete, flight)

    def _run_rows(
        self, flight: _Flight, rows: list[SeqRequest | None], states: list[Any]
    ) -> list[Result]:
        clock = self._clock
        t0 = clock()
        try:
            feed = self._feed(rows, states)
            t1 = clock()
            outputs = self._execute(feed, self._fetch)
            t2 = clock()
            results = self._split(rows, outputs)
        except Exception as exc:
            real = [(e, s) for e, s in zip(rows, states) if e is not None]
            if len(real) == 1:
                err = exc if isinstance(exc, BackendError) else BackendError(_message(exc))
                return [err]
            return self._isolate(flight, real)
        flight.timings.append((len(results), t1 - t0, t2 - t1, clock() - t2))
        return results

    def _isolate(self, flight: _Flight, real: list[tuple[SeqRequest | None, Any]]) -> list[Result]:
        """Re-run each request of a failed batch alone so only the bad one fails."""
        results: list[Result] = []
        for e, state in real:
            assert e is not None
            if e.handle.cancelled():
                results.append(Cancelled("request was cancelled"))
                continue
            results.extend(self._run_rows(flight, [e], [state]))
        return results

    def _feed(self, rows: list[SeqRequest | None], states: list[Any]) -> dict[str, np.ndarray]:
        first = next(e for e in rows if e is not None).request.inputs
        batched = self._batching
        feed: dict[str, np.ndarray] = {}
        if not batched or len(rows) == 1:
            feed.update(first)
        else:
            for name, arr in first.items():
                blank = None
                parts = []
                for e in rows:
                    if e is None:
                        if blank is None:
                            blank = _zeros_like(arr)
                        parts.append(blank)
                    else:
                        parts.append(e.request.inputs[name])
                feed[name] = np.concatenate(parts)
        n = len(rows)
        shape = (n, 1) if batched else (1,)
        for c in self._controls:
            if c.kind == "CORRID":
                if c.dtype.kind == "O":
                    ids = [b"" if e is None else str(e.seq_id).encode() for e in rows]
                    feed[c.name] = np.array(ids, dtype=object).reshape(shape)
                else:
                    ids = [0 if e is None else e.seq_id for e in rows]
                    feed[c.name] = np.array(ids, dtype=c.dtype).reshape(shape)
                continue
            if c.kind == "READY":
                flags = [e is not None for e in rows]
            elif c.kind == "START":
                flags = [e is not None and e.start for e in rows]
            else:
                flags = [e is not None and e.end for e in rows]
            feed[c.name] = np.array(
                [c.true if f else c.false for f in flags], dtype=c.dtype
            ).reshape(shape)
        for st in self._states:
            values = [st.initial if s is None else s[st.input] for s in states]
            feed[st.input] = np.stack(values) if batched else values[0]
        return feed

    def _split(self, rows: list[SeqRequest | None], outputs: Outputs) -> list[Result]:
        n = len(rows)
        if self._batching:
            for name, arr in outputs.items():
                if not isinstance(arr, np.ndarray):
                    raise BackendError(f"output '{name}' is a {type(arr).__name__}, not an array")
                if arr.ndim == 0 or arr.shape[0] != n:
                    got = arr.shape[0] if arr.ndim else "none"
                    raise BackendError(f"output '{name}' has batch dimension {got}, expected {n}")
        results: list[Result] = []
        for i, e in enumerate(rows):
            if e is None:
                continue
            if self._batching:
                outs = {name: outputs[name][i:i + 1] for name in self._client_outputs}
                state = {st.input: outputs[st.output][i].copy() for st in self._states}
            else:
                outs = {name: outputs[name] for name in self._client_outputs}
                state = {st.input: outputs[st.output] for st in self._states}
            results.append((outs, state))
        return results


def _zeros_like(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "O":
        return np.full(arr.shape, b"", dtype=object)
    return np.zeros_like(arr)


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
