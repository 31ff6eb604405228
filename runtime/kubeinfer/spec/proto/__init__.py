"""Protobuf messages the specification parses and writes (vendored, see model_config_pb2)."""
