"""Model configuration: Triton's ModelConfig as one typed pydantic model, and its readers."""

from kubeinfer.spec.config.model import ModelConfig
from kubeinfer.spec.config.readers import load_config, parse_pbtxt

__all__ = ["ModelConfig", "load_config", "parse_pbtxt"]
