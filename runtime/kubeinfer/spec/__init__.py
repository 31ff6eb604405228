"""The model and ensemble specification, shared by the runtime, the router and the operator.

Triton's ``ModelConfig`` as pydantic models with its readers (``config.pbtxt``, YAML, JSON)
and writer (``to_pbtxt``), the router's ensemble definition with its DAG check, and the
errors they raise. Only pydantic, protobuf and PyYAML: no numpy, no web or RPC framework,
no tritonclient (``.importlinter`` keeps it so), which is what lets the operator check an
inline config or a pipeline exactly as the data plane will without carrying the data plane.
"""
