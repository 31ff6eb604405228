"""The internal model configuration: Triton's ``ModelConfig`` message as pydantic models.

Field names are the protobuf field names, so a ``config.pbtxt`` converted with
``MessageToDict(preserving_proto_field_name=True)``, a YAML file and a JSON body from the
operator all validate into the same object, and ``model_dump`` is what
``GET /v2/models/{m}/config`` returns. Unknown fields are rejected with the field's path.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

from kubeinfer.spec.datatypes import normalize_datatype, type_name
from kubeinfer.spec.types import TensorSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TensorConfig(_Strict):
    """Fields shared by Triton's ModelInput and ModelOutput."""

    name: str
    data_type: str
    dims: list[int] = Field(default_factory=list)
    reshape: dict[str, list[int]] | None = None
    is_shape_tensor: bool = False
    is_non_linear_format_io: bool = False

    _dt = field_validator("data_type")(lambda cls, v: normalize_datatype(v))

    @field_validator("dims")
    @classmethod
    def _dims(cls, dims: list[int]) -> list[int]:
        for d in dims:
            if d < -1 or d == 0:
                raise ValueError(f"dims must be positive or -1, got {dims}")
        return dims

    def spec(self) -> TensorSpec:
        reshape = tuple(self.reshape.get("shape", [])) if self.reshape is not None else None
        return TensorSpec(
            self.name,
            self.data_type,
            tuple(self.dims),
            getattr(self, "label_filename", None),
            getattr(self, "optional", False),
            reshape,
        )


class InputConfig(TensorConfig):
    format: str | None = None
    optional: bool = False
    allow_ragged_batch: bool = False


class OutputConfig(TensorConfig):
    label_filename: str | None = None


class QueuePolicy(_Strict):
    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    default_timeout_microseconds: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0


class DynamicBatching(_Strict):
    preferred_batch_size: list[int] = Field(default_factory=list)
    max_queue_delay_microseconds: int = 0
    preserve_ordering: bool = False
    priority_levels: int = 0
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy = Field(default_factory=QueuePolicy)
    priority_queue_policy: dict[int, QueuePolicy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _levels(self) -> DynamicBatching:
        if self.priority_levels and not 0 < self.default_priority_level <= self.priority_levels:
            if self.default_priority_level != 0:
                raise ValueError(
                    f"default_priority_level {self.default_priority_level} is outside "
                    f"1..priority_levels ({self.priority_levels})"
                )
        for level in self.priority_queue_policy:
            if not 1 <= level <= max(self.priority_levels, 1):
                raise ValueError(f"priority_queue_policy names level {level} > priority_levels")
        return self


ControlKind = Literal[
    "CONTROL_SEQUENCE_START",
    "CONTROL_SEQUENCE_READY",
    "CONTROL_SEQUENCE_END",
    "CONTROL_SEQUENCE_CORRID",
]


class SequenceControl(_Strict):
    """One control signal of a control input (Triton's ``ModelSequenceBatching.Control``).

    START/END/READY carry a false/true pair in exactly one of ``int32_false_true``,
    ``fp32_false_true`` or ``bool_false_true``; CORRID carries ``data_type`` instead.
    ``kind`` defaults to START: protobuf omits an enum's first value.
    """

    kind: ControlKind = "CONTROL_SEQUENCE_START"
    int32_false_true: list[int] = Field(default_factory=list)
    fp32_false_true: list[float] = Field(default_factory=list)
    bool_false_true: list[bool] = Field(default_factory=list)
    data_type: str | None = None

    @field_validator("data_type")
    @classmethod
    def _dt(cls, v: str | None) -> str | None:
        return None if v is None or v == "TYPE_INVALID" else normalize_datatype(v)

    @field_serializer("data_type")
    def _dt_out(self, v: str | None) -> str | None:
        return type_name(v)

    @model_validator(mode="after")
    def _values(self) -> SequenceControl:
        pairs = [p for p in (self.int32_false_true, self.fp32_false_true, self.bool_false_true) if p]
        if self.kind == "CONTROL_SEQUENCE_CORRID":
            if pairs:
                raise ValueError("a CONTROL_SEQUENCE_CORRID control takes data_type, not false/true values")
            if self.data_type not in ("UINT64", "INT64", "UINT32", "INT32", "BYTES"):
                raise ValueError(
                    "a CONTROL_SEQUENCE_CORRID control needs data_type TYPE_UINT64, TYPE_INT64, "
                    f"TYPE_UINT32, TYPE_INT32 or TYPE_STRING (got {self.data_type})"
                )
        else:
            if len(pairs) != 1 or len(pairs[0]) != 2:
                raise ValueError(
                    f"a {self.kind} control needs exactly one of int32_false_true, "
                    "fp32_false_true, bool_false_true with two values [false, true]"
                )
            if self.data_type is not None:
                raise ValueError(f"a {self.kind} control takes false/true values, not data_type")
        return self

    @property
    def datatype(self) -> str:
        """The control tensor's v2 datatype."""
        if self.kind == "CONTROL_SEQUENCE_CORRID":
            assert self.data_type is not None
            return self.data_type
        if self.int32_false_true:
            return "INT32"
        return "FP32" if self.fp32_false_true else "BOOL"

    @property
    def false_true(self) -> tuple[Any, Any]:
        pair = self.int32_false_true or self.fp32_false_true or self.bool_false_true
        return pair[0], pair[1]


class SequenceControlInput(_Strict):
    name: str
    control: list[SequenceControl] = Field(min_length=1, max_length=1)


class SequenceInitialState(_Strict):
    data_type: str
    dims: list[int] = Field(default_factory=list)
    zero_data: bool = False
    data_file: str | None = None
    name: str = ""

    _dt = field_validator("data_type")(lambda cls, v: normalize_datatype(v))

    @field_serializer("data_type")
    def _dt_out(self, v: str) -> str | None:
        return type_name(v)

    @model_validator(mode="after")
    def _source(self) -> SequenceInitialState:
        if self.zero_data == bool(self.data_file):
            raise ValueError("initial_state needs exactly one of zero_data and data_file")
        return self


class SequenceState(_Strict):
    """Implicit state: fed as ``input_name``, replaced by ``output_name`` after each request."""

    input_name: str
    output_name: str
    data_type: str
    dims: list[int] = Field(default_factory=list)
    initial_state: list[SequenceInitialState] = Field(default_factory=list, max_length=1)
    use_same_buffer_for_input_output: bool = False
    use_growable_memory: bool = False

    _dt = field_validator("data_type")(lambda cls, v: normalize_datatype(v))

    @field_serializer("data_type")
    def _dt_out(self, v: str) -> str | None:
        return type_name(v)

    @field_validator("dims")
    @classmethod
    def _dims(cls, dims: list[int]) -> list[int]:
        if not dims or any(d < -1 or d == 0 for d in dims):
            raise ValueError(f"state dims must be non-empty, positive or -1, got {dims}")
        return dims


class SequenceDirect(_Strict):
    max_queue_delay_microseconds: int = Field(default=0, ge=0)
    minimum_slot_utilization: float = Field(default=0.0, ge=0.0, le=1.0)


class SequenceOldest(_Strict):
    max_candidate_sequences: int = Field(default=0, ge=0)
    preferred_batch_size: list[int] = Field(default_factory=list)
    max_queue_delay_microseconds: int = Field(default=0, ge=0)
    preserve_ordering: bool = False


class SequenceBatching(_Strict):
    """Triton's ``ModelSequenceBatching``; ``direct`` is the strategy when neither is set."""

    max_sequence_idle_microseconds: int = Field(default=0, ge=0)
    control_input: list[SequenceControlInput] = Field(default_factory=list)
    state: list[SequenceState] = Field(default_factory=list)
    direct: SequenceDirect | None = None
    oldest: SequenceOldest | None = None
    iterative_sequence: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> SequenceBatching:
        if self.direct is not None and self.oldest is not None:
            raise ValueError("set one strategy: direct or oldest")
        if self.iterative_sequence:
            raise ValueError("iterative_sequence is not supported")
        names: set[str] = set()
        kinds: set[str] = set()
        for ci in self.control_input:
            kind = ci.control[0].kind
            if ci.name in names:
                raise ValueError(f"control input '{ci.name}' is declared twice")
            if kind in kinds:
                raise ValueError(f"more than one control input of kind {kind}")
            names.add(ci.name)
            kinds.add(kind)
        for st in self.state:
            for name in (st.input_name, st.output_name):
                if name in names:
                    raise ValueError(f"state tensor '{name}' is declared twice")
                names.add(name)
        return self

    @property
    def idle_ns(self) -> int:
        """The idle limit in ns (0 in the config means Triton's default of 1 second)."""
        return (self.max_sequence_idle_microseconds or 1_000_000) * 1000

    def internal_inputs(self) -> set[str]:
        """Inputs the scheduler feeds (controls, state): never sent by a client."""
        return {c.name for c in self.control_input} | {s.input_name for s in self.state}

    def internal_outputs(self) -> set[str]:
        return {s.output_name for s in self.state}


class InstanceGroup(_Strict):
    name: str | None = None
    kind: Literal["KIND_AUTO", "KIND_CPU", "KIND_GPU", "KIND_MODEL"] = "KIND_AUTO"
    count: int = Field(default=1, ge=1)
    gpus: list[int] = Field(default_factory=list)
    rate_limiter: dict[str, Any] | None = None
    profile: list[str] = Field(default_factory=list)
    passive: bool = False
    host_policy: str | None = None
    secondary_devices: list[dict[str, Any]] = Field(default_factory=list)


class VersionPolicy(_Strict):
    latest: dict[str, int] | None = None
    all: dict[str, Any] | None = None
    specific: dict[str, list[int]] | None = None


class WarmupInput(_Strict):
    data_type: str
    dims: list[int] = Field(default_factory=list)
    zero_data: bool = False
    random_data: bool = False
    input_data_file: str | None = None

    _dt = field_validator("data_type")(lambda cls, v: normalize_datatype(v))


class Warmup(_Strict):
    name: str
    batch_size: int = 1
    inputs: dict[str, WarmupInput] = Field(default_factory=dict)
    count: int = 1


class ModelConfig(_Strict):
    name: str = ""
    platform: str = ""
    backend: str = ""
    runtime: str = ""
    version_policy: VersionPolicy | None = None
    max_batch_size: int = Field(default=0, ge=0)
    input: list[InputConfig] = Field(default_factory=list)
    output: list[OutputConfig] = Field(default_factory=list)
    batch_input: list[dict[str, Any]] = Field(default_factory=list)
    batch_output: list[dict[str, Any]] = Field(default_factory=list)
    optimization: dict[str, Any] | None = None
    dynamic_batching: DynamicBatching | None = None
    sequence_batching: SequenceBatching | None = None
    ensemble_scheduling: dict[str, Any] | None = None
    instance_group: list[InstanceGroup] = Field(default_factory=list)
    default_model_filename: str = ""
    cc_model_filenames: dict[str, str] = Field(default_factory=dict)
    metric_tags: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, dict[str, str]] = Field(default_factory=dict)
    model_warmup: list[Warmup] = Field(default_factory=list)
    model_operations: dict[str, Any] | None = None
    model_transaction_policy: dict[str, Any] | None = None
    model_repository_agents: dict[str, Any] | None = None
    response_cache: dict[str, Any] | None = None
    model_metrics: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        seen: set[str] = set()
        for t in [*self.input, *self.output]:
            if t.name in seen:
                raise ValueError(f"tensor name '{t.name}' is declared twice")
            seen.add(t.name)
        if self.dynamic_batching is not None and self.max_batch_size == 0:
            if self.dynamic_batching.preferred_batch_size:
                raise ValueError("dynamic_batching.preferred_batch_size needs max_batch_size > 0")
        if self.dynamic_batching is not None:
            for p in self.dynamic_batching.preferred_batch_size:
                if p < 1 or (self.max_batch_size and p > self.max_batch_size):
                    raise ValueError(
                        f"dynamic_batching.preferred_batch_size {p} is outside "
                        f"1..max_batch_size ({self.max_batch_size})"
                    )
        if self.dynamic_batching is not None and self.sequence_batching is not None:
            raise ValueError("dynamic_batching and sequence_batching cannot both be set")
        if (self.model_transaction_policy or {}).get("decoupled"):
            raise ValueError("model_transaction_policy.decoupled is not supported")
        return self

    @property
    def instance_count(self) -> int:
        return sum(g.count for g in self.instance_group) or 1

    @property
    def wants_gpu(self) -> bool:
        return any(g.kind == "KIND_GPU" for g in self.instance_group)

    def inputs(self) -> list[TensorSpec]:
        return [t.spec() for t in self.input]

    def outputs(self) -> list[TensorSpec]:
        return [t.spec() for t in self.output]

    def to_json(self, exclude_defaults: bool = False) -> dict[str, Any]:
        """The config as ``/v2/models/{m}/config`` returns it (Triton's JSON)."""
        data = self.model_dump(exclude_none=True, exclude_defaults=exclude_defaults)
        for t in [*data.get("input", []), *data.get("output", [])]:
            t["data_type"] = type_name(t["data_type"])
        return data
