"""Operator settings, from the environment (prefix ``KUBEINFER_OPERATOR_``) and the CLI.

Small documented groups, built once by the CLI and passed down explicitly: the handlers get
an :class:`OperatorSettings`; the render layer only sees the :class:`RenderOptions` derived
from it.
"""

from __future__ import annotations

import os
import socket

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kubeinfer.operator import __version__
from kubeinfer.operator.render.common import RenderOptions

DEFAULT_RUNTIME_IMAGE = f"ghcr.io/kubeinfer/runtime:{__version__}"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KUBEINFER_OPERATOR_", extra="ignore", populate_by_name=True)

    namespaces: list[str] = Field(default_factory=list)
    """Namespaces to watch; empty watches the whole cluster."""
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    """Image of runtime pods when an InferenceModel does not name one."""
    image_pull_policy: str = "IfNotPresent"
    cluster_domain: str = "cluster.local"
    """DNS suffix used in status.url (http://<name>.<namespace>.svc.<domain>:8000)."""
    resync_seconds: float = Field(default=300.0, gt=0)
    """Every this often each InferenceModel is re-applied, correcting drift of owned objects."""
    watch_server_timeout: int = Field(default=300, gt=0)
    """Seconds the API server keeps a watch open (kopf's watches can otherwise go silent)."""
    watch_client_timeout: int = Field(default=330, gt=0)
    field_manager: str = "kubeinfer-operator"
    prometheus_address: str = "http://prometheus-operated.monitoring.svc:9090"
    """Prometheus base URL of KEDA ScaledObjects whose model sets no
    autoscaling.prometheusAddress (the default is the Prometheus Operator's service name)."""
    max_concurrent_reconciles: int = Field(default=16, ge=1)
    """Reconcile passes running at once (all objects together); more wait their turn, so a
    burst of new objects does not swamp the API server until its requests time out."""
    log_level: str = Field(
        default="INFO", validation_alias=AliasChoices("KUBEINFER_OPERATOR_LOG_LEVEL", "KUBEINFER_LOG_LEVEL")
    )
    """DEBUG, INFO, WARNING or ERROR; also read from KUBEINFER_LOG_LEVEL, like the runtime."""
    service_monitors: bool = True
    """Create the ServiceMonitor an InferenceModel asks for (spec.monitoring.serviceMonitor);
    off when the Prometheus Operator is not installed (or not granted to the operator)."""
    keda: bool = True
    """Create KEDA ScaledObjects (spec.autoscaling.autoscaler: keda); off when KEDA is not
    installed (or not granted to the operator): such models are then an invalid spec."""

    leader_election: bool = False
    """Act only while holding the Lease ``lease_namespace``/``lease_name`` (more than one
    replica: one acts, the others wait to take over)."""
    lease_name: str = "kubeinfer-operator"
    lease_namespace: str = Field(default="default", validation_alias=AliasChoices(
        "KUBEINFER_OPERATOR_LEASE_NAMESPACE", "POD_NAMESPACE"))
    """Namespace of the Lease (in a pod: its own, from POD_NAMESPACE)."""
    lease_seconds: float = Field(default=15.0, gt=0)
    """A Lease not renewed for this long may be taken over (failover time)."""
    identity: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", validation_alias=AliasChoices(
        "KUBEINFER_OPERATOR_IDENTITY", "POD_NAME"))
    """Who holds the Lease (in a pod: its name, from POD_NAME)."""

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"log level {value!r} is not one of DEBUG, INFO, WARNING, ERROR")
        return level

    def render_options(self) -> RenderOptions:
        return RenderOptions(
            runtime_image=self.runtime_image,
            image_pull_policy=self.image_pull_policy,
            cluster_domain=self.cluster_domain,
            prometheus_address=self.prometheus_address,
            service_monitors=self.service_monitors,
            keda=self.keda,
        )
