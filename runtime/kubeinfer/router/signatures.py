"""Does an ensemble fit its step models? Checks made at startup, once every step model
answers: each tensor's producer against its consumers (datatype and shape, from the step
models' v2 metadata ``GET /v2/models/<m>``), step inputs/outputs the model lacks, model
inputs left unmapped, and -- as Triton does -- an ensemble ``max_batch_size`` larger than a
batching step model's (from its config ``GET /v2/models/<m>/config``). Pure: the servable
fetches the documents, this module only compares them (shapes with the runtime's
``protocol.signature.shapes_agree``, next to the per-request check every servable uses).
Every problem names its step.
"""

from __future__ import annotations

from kubeinfer.runtime.protocol.signature import shapes_agree
from kubeinfer.spec.ensemble import Graph


def _fmt(datatype: str, shape: list[int]) -> str:
    return f"{datatype} {list(shape)}"


def check_signatures(
    graph: Graph, metadata: dict[int, dict], max_batch_sizes: dict[int, int | None] | None = None
) -> list[str]:
    """Problems found comparing each tensor's producer with its consumers, by the step
    models' v2 metadata (``GET /v2/models/<m>``), keyed by step index. Shapes are the full
    v2 shapes (batch dimension included); the ensemble's own declared tensors get a
    leading -1 when ``max_batch_size > 0``. ``max_batch_sizes``: each step model's
    ``max_batch_size`` where known (None: its server has no config endpoint)."""
    d = graph.definition
    lead = [-1] if d.max_batch_size > 0 else []
    problems = check_batch_sizes(graph, max_batch_sizes or {})
    # tensor -> (datatype, shape, description of the producer)
    produced: dict[str, tuple[str, list[int], str]] = {
        t.name: (t.datatype, lead + t.dims, "the ensemble input") for t in d.inputs
    }
    ins: dict[int, dict[str, dict]] = {}
    for s in graph.steps:
        meta = metadata[s.index]
        ins[s.index] = {t["name"]: t for t in meta.get("inputs", [])}
        outs = {t["name"]: t for t in meta.get("outputs", [])}
        who = f"step '{s.name}' (model '{s.model}')"
        for name in s.input_map:
            if name not in ins[s.index]:
                problems.append(f"{who}: input_map names input '{name}', the model's inputs are {sorted(ins[s.index])}")
        for name in ins[s.index]:
            if name not in s.input_map:
                problems.append(f"{who}: model input '{name}' is not mapped in input_map")
        for name, tensor in s.output_map.items():
            o = outs.get(name)
            if o is None:
                problems.append(f"{who}: output_map names output '{name}', the model's outputs are {sorted(outs)}")
                continue
            produced[tensor] = (o["datatype"], list(o["shape"]), f"{who} output '{name}'")
    for s in graph.steps:
        for name, tensor in s.input_map.items():
            want, have = ins[s.index].get(name), produced.get(tensor)
            if want is None or have is None:
                continue
            consumer = f"step '{s.name}' (model '{s.model}') input '{name}'"
            if want["datatype"] != have[0] or not shapes_agree(list(want["shape"]), have[1]):
                problems.append(
                    f"tensor '{tensor}': {have[2]} gives {_fmt(have[0], have[1])} but {consumer} "
                    f"expects {_fmt(want['datatype'], want['shape'])}"
                )
    for t in d.outputs:
        have = produced.get(t.name)
        if have is None:
            continue
        if t.datatype != have[0] or not shapes_agree(lead + t.dims, have[1]):
            problems.append(
                f"tensor '{t.name}': {have[2]} gives {_fmt(have[0], have[1])} but the ensemble "
                f"output is declared {_fmt(t.datatype, lead + t.dims)}"
            )
    return problems


def check_batch_sizes(graph: Graph, max_batch_sizes: dict[int, int | None]) -> list[str]:
    """Triton's rule: a batching step model (``max_batch_size > 0``) must accept every batch
    the ensemble accepts; a non-batching one (0) takes the batch as part of its shape."""
    want = graph.definition.max_batch_size
    problems = []
    for s in graph.steps:
        have = max_batch_sizes.get(s.index)
        if have and have < want:
            problems.append(
                f"step '{s.name}' (model '{s.model}'): the ensemble allows max_batch_size {want} "
                f"but the model allows only {have}; lower the ensemble's max_batch_size or raise the model's"
            )
    return problems
