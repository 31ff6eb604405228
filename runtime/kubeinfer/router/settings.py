"""Router settings: command-line flags over ``KUBEINFER_*`` environment variables.

The server fields (host, ports, shutdown delay, body limit, log level) are the runtime's,
so ``kubeinfer.runtime.server.lifecycle.run_servers`` runs the router unchanged.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBEINFER_", protected_namespaces=())

    ensemble: Path = Field(description="ensemble definition: YAML/JSON, or a Triton ensemble config.pbtxt")
    #: model -> http://host:port; overrides the definition's ``endpoints`` (env: JSON object)
    endpoints: dict[str, str] = Field(default_factory=dict)
    max_inflight: int | None = Field(None, ge=1, description="default: the definition's max_inflight")
    connect_timeout_seconds: float = Field(1.0, gt=0)
    step_timeout_seconds: float | None = Field(
        None, gt=0, description="seconds a step may take to answer; default: the definition's step_timeout_seconds (60)"
    )
    health_interval_seconds: float = Field(2.0, gt=0, description="how often the step models' readiness is polled")
    host: str = "0.0.0.0"
    http_port: int = Field(8000, ge=0, le=65535)
    grpc_port: int = Field(0, ge=0, le=65535, description="0 disables gRPC (the runtime's gRPC layer serves the ensemble when set)")
    metrics_port: int = Field(8002, ge=0, le=65535, description="0: /metrics on the HTTP port")
    shutdown_delay_seconds: float = Field(0.0, ge=0)
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0)
    log_level: str = "info"
