"""Ensemble definitions, the DAG and its validation: pure, no processes."""

from __future__ import annotations

import pytest

from kubeinfer.router.errors import EnsembleError
from kubeinfer.spec.ensemble import (
    DEFAULT_STEP_TIMEOUT, EnsembleDef, build_graph, from_triton_config, load_definition, parse_endpoints,
)
from kubeinfer.router.signatures import check_signatures


def t(name, dims=(4,), datatype="FP32"):
    return {"name": name, "datatype": datatype, "dims": list(dims)}


def s(model, inputs, outputs, **kw):
    return {"model_name": model, "input_map": inputs, "output_map": outputs, **kw}


def definition(steps, inputs=("x",), outputs=("y",), **kw) -> EnsembleDef:
    return EnsembleDef.model_validate({
        "name": "ens", "max_batch_size": 8, "inputs": [t(n) for n in inputs],
        "outputs": [t(n) for n in outputs], "steps": steps,
        "endpoints": {m: f"http://{m}:8000" for m in "abcdef"}, **kw,
    })


def graph(steps, **kw):
    return build_graph(definition(steps, **kw))


def problems_of(steps, **kw) -> str:
    with pytest.raises(EnsembleError) as err:
        graph(steps, **kw)
    return str(err.value)


def test_chain_order_and_dependencies():
    g = graph([s("c", {"I": "t2"}, {"O": "y"}), s("a", {"I": "x"}, {"O": "t1"}), s("b", {"I": "t1"}, {"O": "t2"})])
    assert [g.steps[i].name for i in g.order] == ["a", "b", "c"]
    assert g.steps[0].deps == (2,) and g.steps[1].deps == () and g.steps[2].deps == (1,)
    assert g.dependents[1] == (2,)
    assert g.steps[0].url == "http://c:8000" and g.steps[0].model_path == "/v2/models/c"


def test_fan_out_fan_in():
    g = graph([
        s("a", {"I": "x"}, {"O": "l"}), s("b", {"I": "x"}, {"O": "r"}),
        s("c", {"I0": "l", "I1": "r"}, {"O": "y"}),
    ])
    assert g.steps[2].deps == (0, 1)
    assert g.order[:2] == (0, 1) and g.order[2] == 2
    assert g.producer == {"x": -1, "l": 0, "r": 1, "y": 2}


def test_same_model_twice_gets_distinct_step_names_and_versions():
    g = graph([s("a", {"I": "x"}, {"O": "t"}), s("a", {"I": "t"}, {"O": "y"}, model_version=2)])
    assert [st.name for st in g.steps] == ["a", "a#2"]
    assert g.steps[1].model_path == "/v2/models/a/versions/2"
    assert graph([s("a", {"I": "x"}, {"O": "y"}, model_version=-1)]).steps[0].version == ""


def test_unknown_tensor():
    msg = problems_of([s("a", {"I": "x"}, {"O": "t"}), s("b", {"I": "nope"}, {"O": "y"})])
    assert "step 'b': input 'I' reads tensor 'nope', which is neither an ensemble input nor produced by any step" in msg


def test_tensor_produced_twice():
    msg = problems_of([s("a", {"I": "x"}, {"O": "y"}), s("b", {"I": "x"}, {"P": "y"})])
    assert "tensor 'y' is produced twice: by step 'a' (output 'O') and by step 'b' (output 'P')" in msg
    msg = problems_of([s("a", {"I": "x"}, {"O": "y", "P": "x"})])
    assert "tensor 'x' is produced twice: by the ensemble input and by step 'a' (output 'P')" in msg


def test_output_never_produced():
    msg = problems_of([s("a", {"I": "x"}, {"O": "t"})])
    assert "ensemble output 'y' is never produced by any step" in msg


def test_cycle_names_steps_and_tensors():
    msg = problems_of([
        s("a", {"I": "x", "J": "t3"}, {"O": "t1"}),
        s("b", {"I": "t1"}, {"O": "t2"}),
        s("c", {"I": "t2"}, {"O": "t3", "P": "y"}),
    ])
    assert "steps form a cycle: 'a' -> 'b' -> 'c' -> 'a' (through tensors 't1', 't2', 't3')" in msg
    assert "reads tensor 't' that the step itself produces" in problems_of(
        [s("a", {"I": "x", "J": "t"}, {"O": "t", "P": "y"})])


def test_missing_endpoint_and_every_problem_reported_at_once():
    d = definition([s("zz", {"I": "x"}, {"O": "t"}), s("a", {"I": "t"}, {"O": "t"})])
    with pytest.raises(EnsembleError) as err:
        build_graph(d)
    msg = str(err.value)
    assert "step 'zz': no endpoint for model 'zz'; pass --endpoint zz=http://host:port" in msg
    assert "tensor 't' is produced twice" in msg and "never produced" in msg
    # flags override (and complete) the definition's endpoints; a bare host:port gets http://
    g = build_graph(definition([s("zz", {"I": "x"}, {"O": "y"})]), {"zz": "10.0.0.1:9000/"})
    assert g.steps[0].url == "http://10.0.0.1:9000"


def test_duplicate_names_and_empty_maps():
    msg = problems_of([s("a", {"I": "x"}, {"O": "y"}, name="n"), s("b", {"I": "x"}, {"O": "z"}, name="n")])
    assert "step name 'n' is used twice" in msg
    assert "step 'a': input_map is empty" in problems_of([s("a", {}, {"O": "y"})])


def test_unused_tensors_are_rejected_as_triton_does():
    # a step output mapped to a tensor nothing reads and that is no ensemble output
    msg = problems_of([s("a", {"I": "x"}, {"O": "y", "P": "spare"})])
    assert ("tensor 'spare' from step 'a' (output 'P') is unused: no step reads it and it is not an "
            "ensemble output") in msg
    # a declared ensemble input that no step reads
    msg = problems_of([s("a", {"I": "x"}, {"O": "y"})], inputs=("x", "extra"))
    assert "ensemble input 'extra' is not used: no step reads it" in msg
    # the usual typo: the tensor written is not the one read -- both ends are reported
    msg = problems_of([s("a", {"I": "x"}, {"O": "tt"}), s("b", {"I": "t"}, {"O": "y"})])
    assert "reads tensor 't', which is neither" in msg and "tensor 'tt' from step 'a'" in msg
    # a tensor that is both read by a step and an ensemble output is used
    g = graph([s("a", {"I": "x"}, {"O": "y"}), s("b", {"I": "y"}, {"O": "z"})], outputs=("y", "z"))
    assert [st.name for st in g.steps] == ["a", "b"]


def test_step_timeouts_resolve_step_then_flag_then_definition():
    steps = [s("a", {"I": "x"}, {"O": "t"}, timeout_seconds=0.5), s("b", {"I": "t"}, {"O": "y"})]
    g = graph(steps)
    assert [st.timeout for st in g.steps] == [0.5, DEFAULT_STEP_TIMEOUT]
    g = graph(steps, step_timeout_seconds=7)
    assert [st.timeout for st in g.steps] == [0.5, 7]
    g = build_graph(definition(steps, step_timeout_seconds=7), step_timeout=3)
    assert [st.timeout for st in g.steps] == [0.5, 3]
    with pytest.raises(ValueError, match="greater than 0"):
        definition([s("a", {"I": "x"}, {"O": "y"}, timeout_seconds=0)])


def test_parse_endpoints():
    assert parse_endpoints(["a=http://h:1", "b=h2:2"]) == {"a": "http://h:1", "b": "h2:2"}
    with pytest.raises(EnsembleError, match="expected MODEL=http"):
        parse_endpoints(["nope"])


# -- signatures -------------------------------------------------------------------------


def meta(inputs, outputs):
    return {"inputs": [{"name": n, "datatype": d, "shape": sh} for n, d, sh in inputs],
            "outputs": [{"name": n, "datatype": d, "shape": sh} for n, d, sh in outputs]}


CHAIN = [s("a", {"I": "x"}, {"O": "t"}), s("b", {"I": "t"}, {"O": "y"})]


def test_signatures_fit():
    g = graph(CHAIN)
    good = meta([("I", "FP32", [-1, 4])], [("O", "FP32", [-1, 4])])
    assert check_signatures(g, {0: good, 1: good}) == []
    # variable dims fit anything
    var = meta([("I", "FP32", [-1, -1])], [("O", "FP32", [-1, -1])])
    assert check_signatures(g, {0: var, 1: var}) == []


def test_datatype_mismatch_between_producer_and_consumer():
    g = graph(CHAIN)
    a = meta([("I", "FP32", [-1, 4])], [("O", "INT64", [-1, 4])])
    b = meta([("I", "FP32", [-1, 4])], [("O", "FP32", [-1, 4])])
    (p,) = check_signatures(g, {0: a, 1: b})
    assert p == ("tensor 't': step 'a' (model 'a') output 'O' gives INT64 [-1, 4] but step 'b' (model 'b') "
                 "input 'I' expects FP32 [-1, 4]")


def test_shape_mismatches_ensemble_input_and_output():
    g = graph(CHAIN)
    a = meta([("I", "FP32", [-1, 5])], [("O", "FP32", [-1, 4])])
    b = meta([("I", "FP32", [-1, 4])], [("O", "FP32", [-1, 4, 1])])
    problems = check_signatures(g, {0: a, 1: b})
    assert ("tensor 'x': the ensemble input gives FP32 [-1, 4] but step 'a' (model 'a') input 'I' "
            "expects FP32 [-1, 5]") in problems
    assert ("tensor 'y': step 'b' (model 'b') output 'O' gives FP32 [-1, 4, 1] but the ensemble output "
            "is declared FP32 [-1, 4]") in problems


def test_unknown_and_unmapped_step_tensors():
    g = graph(CHAIN)
    a = meta([("I", "FP32", [-1, 4]), ("EXTRA", "FP32", [-1, 4])], [("O", "FP32", [-1, 4])])
    b = meta([("J", "FP32", [-1, 4])], [("P", "FP32", [-1, 4])])
    problems = check_signatures(g, {0: a, 1: b})
    assert "step 'a' (model 'a'): model input 'EXTRA' is not mapped in input_map" in problems
    assert "step 'b' (model 'b'): input_map names input 'I', the model's inputs are ['J']" in problems
    assert "step 'b' (model 'b'): output_map names output 'O', the model's outputs are ['P']" in problems


def test_ensemble_batch_larger_than_a_step_models_is_a_problem():
    g = graph(CHAIN)  # max_batch_size 8
    good = meta([("I", "FP32", [-1, 4])], [("O", "FP32", [-1, 4])])
    # b allows 4 < 8; a non-batching model (0) and an unknown size (None) are not checked
    (p,) = check_signatures(g, {0: good, 1: good}, {0: 8, 1: 4})
    assert p == ("step 'b' (model 'b'): the ensemble allows max_batch_size 8 but the model allows only 4; "
                 "lower the ensemble's max_batch_size or raise the model's")
    assert check_signatures(g, {0: good, 1: good}, {0: 0, 1: None}) == []
    assert check_signatures(g, {0: good, 1: good}, {0: 16, 1: 8}) == []


# -- loaders ----------------------------------------------------------------------------

PBTXT = """
name: "pipe"
platform: "ensemble"
max_batch_size: 8
input [ { name: "RAW" data_type: TYPE_UINT8 dims: [ 64 ] } ]
output [ { name: "SCORES" data_type: TYPE_FP32 dims: [ 3 ] } ]
ensemble_scheduling {
  step [
    { model_name: "pre" model_version: -1 input_map { key: "raw" value: "RAW" } output_map { key: "image" value: "img" } },
    { model_name: "cls" model_version: 2 input_map { key: "image" value: "img" } output_map { key: "scores" value: "SCORES" } }
  ]
}
"""


def test_triton_ensemble_config(tmp_path):
    d = from_triton_config(PBTXT)
    assert d.name == "pipe" and d.max_batch_size == 8
    assert d.inputs[0].datatype == "UINT8" and d.inputs[0].dims == [64]
    assert [(st.model_name, st.model_version) for st in d.steps] == [("pre", ""), ("cls", "2")]
    g = build_graph(d, {"pre": "http://p:8000", "cls": "http://c:8000"})
    assert g.steps[1].deps == (0,)
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "config.pbtxt").write_text(PBTXT)
    assert load_definition(tmp_path / "pipe") == d


def test_triton_config_errors():
    with pytest.raises(EnsembleError, match="needs platform: \"ensemble\""):
        from_triton_config('name: "m" platform: "onnxruntime_onnx"')
    with pytest.raises(EnsembleError, match="has no step"):
        from_triton_config('name: "m" platform: "ensemble"')
    with pytest.raises(EnsembleError, match="config.pbtxt"):
        from_triton_config('name: "m" platform: "ensemble" bogus: 1')


def test_yaml_and_json_definitions(tmp_path):
    import json

    doc = {"name": "e", "version": 3, "inputs": [t("x")], "outputs": [t("y", datatype="TYPE_FP32")],
           "steps": [s("a", {"I": "x"}, {"O": "y"})], "endpoints": {"a": "http://a:1"}}
    (tmp_path / "e.json").write_text(json.dumps(doc))
    d = load_definition(tmp_path / "e.json")
    assert d.version == "3" and d.outputs[0].datatype == "FP32" and d.max_inflight == 256
    import yaml

    (tmp_path / "e.yaml").write_text(yaml.safe_dump(doc))
    assert load_definition(tmp_path / "e.yaml") == d
    doc["steps"][0]["bogus"] = 1
    doc["inputs"][0]["datatype"] = "FP99"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(EnsembleError) as err:
        load_definition(tmp_path / "bad.yaml")
    assert "steps.0.bogus" in str(err.value) and "inputs.0.datatype" in str(err.value)
    with pytest.raises(EnsembleError, match="cannot read"):
        load_definition(tmp_path / "missing.yaml")
