"""kubeinfer.spec on its own: no data-plane import, the vendored model_config proto beside
tritonclient's in either import order, and the datatype names the runtime maps to numpy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

DATA_PLANE = ("numpy", "grpc", "tritonclient", "fastapi", "starlette", "uvicorn", "orjson", "httpx",
              "prometheus_client", "kubeinfer.runtime", "kubeinfer.router")

PBTXT = """
name: "m"
backend: "onnxruntime"
max_batch_size: 8
input [{ name: "x" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "y" data_type: TYPE_STRING dims: [-1] }]
dynamic_batching { max_queue_delay_microseconds: 100 }
"""


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_spec_parses_and_checks_without_the_data_plane():
    out = run_python(f"""
        import sys
        from kubeinfer.spec.config.readers import parse_pbtxt, to_pbtxt
        from kubeinfer.spec.ensemble import EnsembleDef, build_graph
        config = parse_pbtxt({PBTXT!r})
        assert parse_pbtxt(to_pbtxt(config)) == config
        build_graph(EnsembleDef.model_validate({{
            "name": "e", "inputs": [{{"name": "in", "datatype": "FP32", "dims": [4]}}],
            "outputs": [{{"name": "out", "datatype": "BYTES", "dims": [-1]}}],
            "steps": [{{"model_name": "m", "endpoint": "http://m:8000",
                        "input_map": {{"x": "in"}}, "output_map": {{"y": "out"}}}}]}}))
        print(sorted(m for m in {DATA_PLANE!r} if m in sys.modules))
    """)
    assert out.strip() == "[]"


@pytest.mark.parametrize("first", ["spec", "tritonclient"])
def test_vendored_proto_and_tritonclients_coexist_in_either_order(first):
    """The runtime's gRPC service imports tritonclient's service_pb2 (which registers
    model_config.proto in the default pool) in the process that parses config.pbtxt."""
    imports = {
        "spec": "from kubeinfer.spec.config.readers import parse_pbtxt, to_pbtxt",
        "tritonclient": "from tritonclient.grpc import model_config_pb2, service_pb2",
    }
    second = imports["tritonclient" if first == "spec" else "spec"]
    out = run_python(f"""
        {imports[first]}
        {second}
        from google.protobuf import json_format, text_format
        from kubeinfer.spec.proto import model_config_pb2 as vendored

        config = parse_pbtxt({PBTXT!r})
        # as the gRPC service answers ModelConfig: the spec's JSON into tritonclient's message
        response = service_pb2.ModelConfigResponse()
        json_format.ParseDict(config.to_json(), response.config, ignore_unknown_fields=True)
        assert response.config.input[0].data_type == model_config_pb2.TYPE_FP32
        assert response.config.output[0].data_type == model_config_pb2.TYPE_STRING
        # tritonclient's own message reads what the spec writes
        theirs = text_format.Parse(to_pbtxt(config), model_config_pb2.ModelConfig())
        assert theirs.max_batch_size == 8 and theirs.dynamic_batching.max_queue_delay_microseconds == 100
        assert vendored.ModelConfig is not model_config_pb2.ModelConfig
        print("ok")
    """)
    assert out.strip() == "ok"


def test_vendored_proto_is_tritonclients():
    """Triton's model_config.proto as the installed tritonclient carries it; after an upgrade
    that changes it, run ``python tools/vendor_model_config.py``."""
    from tritonclient.grpc import model_config_pb2

    from kubeinfer.spec.proto import model_config_pb2 as vendored

    assert vendored.SERIALIZED == model_config_pb2.DESCRIPTOR.serialized_pb, (
        "model_config.proto changed in tritonclient: run python tools/vendor_model_config.py"
    )


def test_runtime_maps_every_spec_datatype_to_numpy():
    from kubeinfer.runtime import datatypes
    from kubeinfer.spec.datatypes import DATATYPES

    assert datatypes.DATATYPES is DATATYPES
    for name in DATATYPES:
        assert datatypes.from_numpy(datatypes.to_numpy(name)) == name


def test_one_error_taxonomy():
    from kubeinfer.router.errors import EnsembleError as RouterEnsembleError
    from kubeinfer.runtime.errors import ConfigError as RuntimeConfigError
    from kubeinfer.spec.errors import ConfigError, EnsembleError

    assert RuntimeConfigError is ConfigError and RouterEnsembleError is EnsembleError
    assert issubclass(EnsembleError, ConfigError)
