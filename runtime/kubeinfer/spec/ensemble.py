"""Ensemble definitions and the step DAG derived from them.

Where data comes from: a YAML/JSON definition file, or a Triton ensemble ``config.pbtxt``
(``platform: "ensemble"`` + ``ensemble_scheduling``), plus a mapping model -> endpoint
(``--endpoint`` flags or the definition's ``endpoints:`` section). ``load_definition``
parses either into one ``EnsembleDef``; ``build_graph`` resolves endpoints and derives the
DAG from tensor dependencies (a step depends on the steps producing its inputs), rejecting
unknown tensors, tensors produced twice, outputs never produced, unused tensors (as Triton
does: an ensemble input no step reads, a step output mapped to a tensor that nothing reads
and that is no ensemble output) and cycles, and resolves each step's timeout.
``kubeinfer.router.signatures.check_signatures`` then compares the DAG with the step models
themselves (that needs them running: the router does it, the operator cannot).
Everything here is pure: no network, no event loop. Every problem is reported with the
step and tensor it is about.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from kubeinfer.spec.config.readers import parse_pbtxt
from kubeinfer.spec.datatypes import normalize_datatype
from kubeinfer.spec.errors import ConfigError, EnsembleError, validation_problems


#: seconds a step may take to answer unless the definition or a flag says otherwise
DEFAULT_STEP_TIMEOUT = 60.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())


class TensorDef(_Strict):
    """An ensemble input or output; ``dims`` exclude the batch dimension when batching."""

    name: str
    datatype: str = Field(validation_alias=AliasChoices("datatype", "data_type"))
    dims: list[int] = Field(default_factory=list)

    _dt = field_validator("datatype")(lambda cls, v: normalize_datatype(v))

    @field_validator("dims")
    @classmethod
    def _dims(cls, dims: list[int]) -> list[int]:
        if any(d < -1 or d == 0 for d in dims):
            raise ValueError(f"dims must be positive or -1, got {dims}")
        return dims


class StepDef(_Strict):
    """One step: a model at an endpoint, with Triton's input_map / output_map.

    ``input_map``: step model input -> ensemble tensor it reads;
    ``output_map``: step model output -> ensemble tensor it writes.
    """

    name: str = ""
    model_name: str
    model_version: str = ""
    endpoint: str | None = Field(None, description="http://host:port of the step model's server")
    input_map: dict[str, str]
    output_map: dict[str, str]
    #: seconds this step may take to answer; default the ensemble's ``step_timeout_seconds``
    timeout_seconds: float | None = Field(None, gt=0)

    @field_validator("model_version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> str:
        v = "" if v is None else str(v)
        return "" if v == "-1" else v  # Triton: -1 = latest


class EnsembleDef(_Strict):
    name: str
    version: str = "1"
    max_batch_size: int = Field(0, ge=0)
    inputs: list[TensorDef]
    outputs: list[TensorDef]
    steps: list[StepDef] = Field(min_length=1)
    #: model name -> http://host:port (a step's own ``endpoint`` wins)
    endpoints: dict[str, str] = Field(default_factory=dict)
    #: requests executing at once; more are rejected with 503 (QueueFull)
    max_inflight: int = Field(256, ge=1)
    #: seconds a step may take to answer (from connecting to the last response byte);
    #: beyond it the request fails with 503 naming the step. A step's own
    #: ``timeout_seconds`` wins; ``--step-timeout-seconds`` overrides this default.
    step_timeout_seconds: float = Field(DEFAULT_STEP_TIMEOUT, gt=0)

    @field_validator("version", mode="before")
    @classmethod
    def _v(cls, v: Any) -> str:
        return str(v)


# -- loading ---------------------------------------------------------------------------


def _validate(data: Any, source: str) -> EnsembleDef:
    if not isinstance(data, dict):
        raise EnsembleError(f"{source}: the ensemble definition must be a mapping")
    try:
        return EnsembleDef.model_validate(data)
    except ValidationError as exc:
        raise EnsembleError(f"{source}: invalid ensemble definition: {validation_problems(exc)}") from None


def from_triton_config(text: str, source: str = "config.pbtxt") -> EnsembleDef:
    """A Triton ensemble ``config.pbtxt``, unchanged; steps get no endpoints (see ``endpoints``)."""
    try:
        config = parse_pbtxt(text, source)
    except EnsembleError:
        raise
    except ConfigError as exc:
        raise EnsembleError(str(exc)) from None
    if config.platform != "ensemble":
        raise EnsembleError(f"{source}: platform is '{config.platform}', an ensemble needs platform: \"ensemble\"")
    steps = (config.ensemble_scheduling or {}).get("step", [])
    if not steps:
        raise EnsembleError(f"{source}: ensemble_scheduling has no step")
    return _validate(
        {
            "name": config.name or Path(source).parent.name,
            "max_batch_size": config.max_batch_size,
            "inputs": [{"name": t.name, "datatype": t.data_type, "dims": t.dims} for t in config.input],
            "outputs": [{"name": t.name, "datatype": t.data_type, "dims": t.dims} for t in config.output],
            "steps": [
                {
                    "model_name": s.get("model_name", ""),
                    "model_version": s.get("model_version", ""),
                    "input_map": s.get("input_map", {}),
                    "output_map": s.get("output_map", {}),
                }
                for s in steps
            ],
        },
        source,
    )


def load_definition(path: str | Path) -> EnsembleDef:
    """YAML (``.yaml``/``.yml``), JSON (``.json``) or Triton ``config.pbtxt``; a directory
    means its ``config.pbtxt`` (a Triton ensemble model directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.pbtxt"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EnsembleError(f"cannot read ensemble definition {path}: {exc.strerror}") from None
    if path.suffix == ".pbtxt":
        return from_triton_config(text, str(path))
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise EnsembleError(f"{path}: {exc}") from None
    return _validate(data, str(path))


def parse_endpoints(pairs: list[str]) -> dict[str, str]:
    """``["model=http://host:port", ...]`` -> {model: url}."""
    out = {}
    for pair in pairs:
        model, sep, url = pair.partition("=")
        if not sep or not model or not url:
            raise EnsembleError(f"--endpoint '{pair}': expected MODEL=http://host:port")
        out[model] = url
    return out


# -- the DAG ---------------------------------------------------------------------------

#: the producer of an ensemble input
ENSEMBLE_INPUT = -1


@dataclass(frozen=True, slots=True)
class Step:
    index: int
    name: str
    model: str
    version: str
    url: str  # base URL, no trailing slash
    input_map: dict[str, str]
    output_map: dict[str, str]
    #: indices of the steps whose outputs this step reads
    deps: tuple[int, ...]
    #: seconds the step may take to answer
    timeout: float = DEFAULT_STEP_TIMEOUT

    @property
    def model_path(self) -> str:
        v = f"/versions/{self.version}" if self.version else ""
        return f"/v2/models/{self.model}{v}"


@dataclass(frozen=True, slots=True)
class Graph:
    definition: EnsembleDef
    steps: tuple[Step, ...]
    #: ensemble tensor -> producing step index (ENSEMBLE_INPUT for ensemble inputs)
    producer: dict[str, int]
    #: step index -> indices of steps that read one of its outputs
    dependents: tuple[tuple[int, ...], ...]
    #: a topological order of the step indices
    order: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.definition.name


def _step_names(steps: list[StepDef]) -> tuple[list[str], list[str]]:
    names, problems, seen = [], [], {}
    for s in steps:
        if s.name:
            name = s.name
        else:
            seen[s.model_name] = seen.get(s.model_name, 0) + 1
            k = seen[s.model_name]
            name = s.model_name if k == 1 else f"{s.model_name}#{k}"
        if name in names:
            problems.append(f"step name '{name}' is used twice")
        names.append(name)
    return names, problems


def build_graph(
    definition: EnsembleDef, endpoints: dict[str, str] | None = None, step_timeout: float | None = None
) -> Graph:
    """Resolve endpoints and timeouts and derive the DAG; raise ``EnsembleError`` listing
    every problem.

    ``endpoints`` (e.g. from ``--endpoint`` flags) override the definition's section;
    ``step_timeout`` (``--step-timeout-seconds``) the definition's ``step_timeout_seconds``.
    """
    d = definition
    problems: list[str] = []
    eps = {**d.endpoints, **(endpoints or {})}
    names, name_problems = _step_names(d.steps)
    problems += name_problems

    producer: dict[str, int] = {}
    where: dict[str, str] = {}
    for t in d.inputs:
        if t.name in producer:
            problems.append(f"ensemble input '{t.name}' is declared twice")
        producer[t.name] = ENSEMBLE_INPUT
        where[t.name] = "the ensemble input"
    out_names = [t.name for t in d.outputs]
    for n in {n for n in out_names if out_names.count(n) > 1}:
        problems.append(f"ensemble output '{n}' is declared twice")
    for i, s in enumerate(d.steps):
        for out, tensor in s.output_map.items():
            here = f"step '{names[i]}' (output '{out}')"
            if tensor in producer:
                problems.append(f"tensor '{tensor}' is produced twice: by {where[tensor]} and by {here}")
                continue
            producer[tensor] = i
            where[tensor] = here

    deps: list[tuple[int, ...]] = []
    for i, s in enumerate(d.steps):
        if not s.input_map:
            problems.append(f"step '{names[i]}': input_map is empty")
        mine = set()
        for inp, tensor in s.input_map.items():
            p = producer.get(tensor)
            if p is None:
                problems.append(
                    f"step '{names[i]}': input '{inp}' reads tensor '{tensor}', which is neither "
                    "an ensemble input nor produced by any step"
                )
            elif p == i:
                problems.append(f"step '{names[i]}': input '{inp}' reads tensor '{tensor}' that the step itself produces (cycle)")
            elif p != ENSEMBLE_INPUT:
                mine.add(p)
        if not s.output_map:
            problems.append(f"step '{names[i]}': output_map is empty")
        deps.append(tuple(sorted(mine)))
    for t in d.outputs:
        if t.name not in producer:
            problems.append(f"ensemble output '{t.name}' is never produced by any step")
    problems += _unused_tensors(d, producer, where)

    steps = []
    for i, s in enumerate(d.steps):
        url = s.endpoint or eps.get(s.model_name)
        if not url:
            problems.append(
                f"step '{names[i]}': no endpoint for model '{s.model_name}'; pass "
                f"--endpoint {s.model_name}=http://host:port or add it under 'endpoints'"
            )
            url = ""
        elif "://" not in url:
            url = "http://" + url
        timeout = s.timeout_seconds or step_timeout or d.step_timeout_seconds
        steps.append(Step(i, names[i], s.model_name, s.model_version, url.rstrip("/"),
                          dict(s.input_map), dict(s.output_map), deps[i], timeout))

    dependents: list[list[int]] = [[] for _ in steps]
    for s in steps:
        for p in s.deps:
            dependents[p].append(s.index)
    order = _topological(steps, dependents, problems)
    if problems:
        raise EnsembleError(f"ensemble '{d.name}': " + "; ".join(problems))
    return Graph(d, tuple(steps), producer, tuple(tuple(x) for x in dependents), tuple(order))


def _unused_tensors(d: EnsembleDef, producer: dict[str, int], where: dict[str, str]) -> list[str]:
    """Triton refuses an ensemble with tensors that lead nowhere: they are almost always a
    typo in a map (the tensor meant to be read is then reported as unknown, too)."""
    read = {tensor for s in d.steps for tensor in s.input_map.values()}
    outputs = {t.name for t in d.outputs}
    problems = []
    for tensor, p in producer.items():
        if tensor in read or tensor in outputs:
            continue
        if p == ENSEMBLE_INPUT:
            problems.append(f"ensemble input '{tensor}' is not used: no step reads it")
        else:
            problems.append(
                f"tensor '{tensor}' from {where[tensor]} is unused: no step reads it and it is "
                "not an ensemble output (leave the output out of output_map if it is not needed)"
            )
    return problems


def _topological(steps: list[Step], dependents: list[list[int]], problems: list[str]) -> list[int]:
    """Kahn's algorithm; what is left over lies on or behind a cycle, reported by name."""
    missing = [len(s.deps) for s in steps]
    ready = [s.index for s in steps if not s.deps]
    order = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for j in dependents[i]:
            missing[j] -= 1
            if missing[j] == 0:
                ready.append(j)
    if len(order) < len(steps):
        left = {s.index for s in steps} - set(order)
        cycle = _find_cycle(steps, left)
        if cycle:
            path = " -> ".join(f"'{steps[i].name}'" for i in cycle)
            tensors = []
            for a, b in zip(cycle, cycle[1:]):
                shared = set(steps[a].output_map.values()) & set(steps[b].input_map.values())
                tensors.append(sorted(shared)[0] if shared else "?")
            problems.append(f"steps form a cycle: {path} (through tensors {', '.join(repr(t) for t in tensors)})")
    return order


def _find_cycle(steps: list[Step], nodes: set[int]) -> list[int]:
    start = min(nodes)
    seen: dict[int, int] = {}
    path: list[int] = []
    node = start
    while node not in seen:  # walk backwards along deps that stay inside ``nodes``
        seen[node] = len(path)
        path.append(node)
        node = next((p for p in steps[node].deps if p in nodes), None)
        if node is None:
            return []
    loop = path[seen[node]:]
    loop.reverse()  # deps point backwards; show the data flow direction
    k = loop.index(min(loop))  # start at the first declared step: a stable message
    loop = loop[k:] + loop[:k]
    return [*loop, loop[0]]
