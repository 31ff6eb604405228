"""The sequence batcher: ``SequencePolicy`` and a row assembler over the engine.

Requests come from the server layer (``infer``, inputs already validated) carrying
``sequence_id``, ``sequence_start`` and ``sequence_end`` in their parameters (REST and
gRPC both put them there). ``SequencePolicy`` (pure, ``sequence_policy.py``) decides
slots, backlog, order and batches; ``BatchingEngine`` (``engine.py``) runs them as it runs
the dynamic batcher's, always on the instance threads (one per instance; a batch runs on
the instance whose slots it holds).

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

Failure handling is the engine's: a failing batch of several requests re-runs each request
alone so only the bad one fails (state is committed only on success, so a re-run is free
of side effects); a cancelled request never executes. A failed request leaves its
sequence's state as it was; its sequence stays live (an END that failed still ends it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from kubeinfer.runtime.batching.assembler import Assembler, Flight, Outputs, Polled, Result
from kubeinfer.runtime.batching.engine import BatchingEngine
from kubeinfer.runtime.batching.interface import ExecuteFn, StatsSink
from kubeinfer.runtime.batching.policy import shape_key
from kubeinfer.runtime.batching.sequence_policy import SeqRequest, SequenceId, SequencePolicy
from kubeinfer.spec.config.model import SequenceBatching, SequenceControl, SequenceState
from kubeinfer.runtime.datatypes import to_numpy
from kubeinfer.runtime.errors import BackendError, ConfigError, InvalidInput
from kubeinfer.runtime.types import InferRequest

log = logging.getLogger(__name__)

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


class _Work(NamedTuple):
    """A sequence batch as the assembler executes it."""

    #: the instance whose slots the rows are
    instance: int
    #: one per row: its request, or None (an empty ``direct`` slot)
    rows: list[SeqRequest | None]
    #: per row: the state to feed (None: initial)
    states: list[Any]


class SequenceAssembler(Assembler):
    """Rows of sequences: control tensors, implicit state, results with the new state."""

    thread_name = "kubeinfer-sequence"

    def __init__(
        self,
        policy: SequencePolicy,
        config: SequenceBatching,
        output_names: Sequence[str],
        max_batch_size: int,
        instances: int,
        *,
        model: str,
        model_dir: Path | None,
        clock: Callable[[], int],
    ) -> None:
        self._policy = policy
        self._model = model
        self._clock = clock
        self._batching = max_batch_size > 0
        self._busy = [False] * instances
        self._controls = [_Control(ci.name, ci.control[0]) for ci in config.control_input]
        self._corrid_numeric = any(c.kind == "CORRID" and c.dtype.kind in "iu" for c in self._controls)
        self._states = [_State(s, model_dir) for s in config.state]
        hidden = config.internal_outputs()
        self._client_outputs = [n for n in output_names if n not in hidden]
        self.fetch = self._client_outputs + [s.output for s in self._states]
        self.key = shape_key
        self.completed = self._completed

    # -- event loop ------------------------------------------------------------------------

    def entry(self, request: InferRequest, key: Any, handle: Any) -> SeqRequest:
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
        return SeqRequest(request, sid, start, end, key, handle)

    def poll(self, now: int, executing: int, closing: bool) -> Polled:
        busy = self._busy
        free = [i for i, b in enumerate(busy) if not b]
        batches, released, wake_at = self._policy.poll(now, free, executing == 0)
        for seq in released:
            log.info("sequence %r of model '%s' released after being idle", seq.id, self._model)
        flights: list[Flight] = []
        for batch in batches:
            busy[batch.instance] = True
            rows = batch.rows
            states = [None if e is None or e.start or e.seq is None else e.seq.state for e in rows]
            entries = [e for e in rows if e is not None]
            flights.append(Flight(entries, _Work(batch.instance, rows, states), now))
        return flights, (), wake_at

    def _completed(self, flight: Flight) -> None:
        """Free the instance, commit each successful request's state, tell the policy;
        the results become the outputs the clients get."""
        self._busy[flight.work.instance] = False
        results = flight.results
        assert results is not None
        for i, (e, result) in enumerate(zip(flight.entries, results)):
            if type(result) is tuple:
                e.seq.state = result[1]
                results[i] = result[0]
        self._policy.complete(flight.entries, self._clock())

    # -- instance thread -------------------------------------------------------------------

    def alone(self, work: _Work) -> list[Any]:
        return [
            _Work(work.instance, [e], [state])
            for e, state in zip(work.rows, work.states)
            if e is not None
        ]

    def feed(self, work: _Work) -> tuple[dict[str, np.ndarray], int]:
        rows, states = work.rows, work.states
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
        return feed, n - rows.count(None)

    def split(self, work: _Work, size: int, outputs: Outputs) -> list[Result]:
        """Per request: (its outputs, the sequence's new state)."""
        rows = work.rows
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


class SequenceBatcher(BatchingEngine):
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
        try:
            policy = SequencePolicy(
                config, max_batch_size, instances, backlog_limit=backlog_limit, model=model
            )
        except ValueError as exc:
            raise ConfigError(f"model '{model}': {exc}") from None
        assembler = SequenceAssembler(
            policy, config, output_names, max_batch_size, instances,
            model=model, model_dir=model_dir, clock=clock,
        )
        # sequence batches always run on the instance threads: nothing to learn at warm-up
        super().__init__(
            assembler, policy, execute, instances=instances, stats=stats, clock=clock, model=model
        )


def _zeros_like(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "O":
        return np.full(arr.shape, b"", dtype=object)
    return np.zeros_like(arr)
