"""Runtime settings: command-line flags over ``KUBEINFER_*`` environment variables."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RuntimeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBEINFER_", protected_namespaces=())

    model_repository: Path = Field(description="Triton-style model repository")
    model: str | None = Field(None, description="model to serve (default: the only one)")
    model_version: int | None = Field(None, description="pin a version (default: latest)")
    host: str = "0.0.0.0"
    http_port: int = Field(8000, ge=0, le=65535)
    grpc_port: int = Field(8001, ge=0, le=65535, description="0 disables gRPC")
    metrics_port: int = Field(8002, ge=0, le=65535, description="0: /metrics on the HTTP port")
    shutdown_delay_seconds: float = Field(
        0.0, ge=0, description="keep serving this long after SIGTERM with readiness false"
    )
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_header_bytes: int = Field(
        32 * 1024, gt=0, description="request line and headers beyond this get 431"
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="a request's headers must arrive within this (else 408)"
    )
    body_timeout_seconds: float = Field(
        60.0, gt=0, description="a request's body must arrive within this after its headers"
    )
    workers: int = Field(
        1, ge=1, le=64,
        description="serving processes in the pod sharing the ports (each loads the model)",
    )
    log_level: str = "info"


def cli_overrides(args: Namespace, *skip: str) -> dict[str, Any]:
    """The flags a user gave (None: not given), to lay over the environment's settings."""
    return {
        k: v
        for k, v in vars(args).items()
        if not k.startswith("_") and k != "command" and k not in skip and v is not None
    }
