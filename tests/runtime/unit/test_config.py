"""config.pbtxt / YAML / JSON into the one ModelConfig; errors name the field."""

from __future__ import annotations

import json

import pytest

from kubeinfer.spec.config import load_config, parse_pbtxt
from kubeinfer.spec.config.readers import to_pbtxt
from kubeinfer.runtime.errors import ConfigError

PBTXT = """
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [{ name: "data" data_type: TYPE_FP32 dims: [3, 224, 224] }]
output [{ name: "out" data_type: TYPE_STRING dims: [-1] label_filename: "labels.txt" }]
dynamic_batching {
  preferred_batch_size: [4, 8]
  max_queue_delay_microseconds: 100
  priority_levels: 2
  default_priority_level: 1
  default_queue_policy { max_queue_size: 5 timeout_action: DELAY }
}
instance_group [{ count: 2 kind: KIND_CPU }, { count: 1 kind: KIND_CPU }]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


def test_pbtxt_parses_into_typed_config():
    c = parse_pbtxt(PBTXT)
    assert c.max_batch_size == 8
    assert c.inputs()[0].shape == (3, 224, 224) and c.inputs()[0].datatype == "FP32"
    assert c.outputs()[0].datatype == "BYTES"
    assert c.outputs()[0].label_filename == "labels.txt"
    db = c.dynamic_batching
    assert db.preferred_batch_size == [4, 8] and db.max_queue_delay_microseconds == 100
    assert db.default_queue_policy.max_queue_size == 5
    assert db.default_queue_policy.timeout_action == "DELAY"
    assert c.instance_count == 3
    assert c.parameters["intra_op_thread_count"]["string_value"] == "1"


def test_round_trip_through_pbtxt_and_json(tmp_path):
    c = parse_pbtxt(PBTXT)
    assert parse_pbtxt(to_pbtxt(c)) == c
    (tmp_path / "config.json").write_text(json.dumps(c.to_json()))
    assert load_config(tmp_path) == c
    assert c.to_json()["output"][0]["data_type"] == "TYPE_STRING"


def test_yaml_config(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "max_batch_size: 4\ninput:\n- {name: x, data_type: TYPE_INT64, dims: [2]}\n"
        "dynamic_batching: {max_queue_delay_microseconds: 50}\n"
    )
    c = load_config(tmp_path)
    assert c.inputs()[0].datatype == "INT64" and c.dynamic_batching.max_queue_delay_microseconds == 50


@pytest.mark.parametrize(
    "text,needle",
    [
        ('name: "x" bogus_field: 1', "bogus_field"),
        ('max_batch_size: 2 dynamic_batching { preferred_batch_size: [4] }', "preferred_batch_size"),
        ('input [{ name: "a" data_type: TYPE_FP32 dims: [0] }]', "dims"),
        ('input [{ name: "a" data_type: TYPE_FP32 }] output [{ name: "a" data_type: TYPE_FP32 }]', "declared twice"),
        ('dynamic_batching {} sequence_batching {}', "sequence_batching"),
        ('model_transaction_policy { decoupled: true }', "decoupled"),
        ('max_batch_size: -1', "max_batch_size"),
    ],
)
def test_bad_configs_name_the_field(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_pbtxt(text)


def test_unknown_yaml_field_is_rejected(tmp_path):
    (tmp_path / "config.yaml").write_text("max_batch_size: 4\nmax_batchsize: 3\n")
    with pytest.raises(ConfigError, match="max_batchsize"):
        load_config(tmp_path)


def test_two_config_files_are_ambiguous(tmp_path):
    (tmp_path / "config.yaml").write_text("max_batch_size: 4\n")
    (tmp_path / "config.pbtxt").write_text("max_batch_size: 4\n")
    with pytest.raises(ConfigError, match="more than one"):
        load_config(tmp_path)
