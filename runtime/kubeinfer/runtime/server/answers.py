"""What the HTTP app and the gRPC service both answer about the one model they serve.

The protocol layers (``app``/``infer_route`` for HTTP, ``grpc_service`` for gRPC) are thin
over these: the target check (unknown model or version is ``NotFound``), the readiness of
the server and of the model, the cheap capacity check run before a request is decoded,
and the model's statistics — the pod's sum when the servable is one of several workers
(``server.pod``), which must be gathered, hence ``async``. Neither protocol imports the
other.
"""

from __future__ import annotations

from collections.abc import Callable

from kubeinfer.runtime.errors import NotFound
from kubeinfer.runtime.servable import Servable

#: the Triton protocol extensions both protocols announce (server metadata)
EXTENSIONS = [
    "classification",
    "model_repository",
    "schedule_policy",
    "model_configuration",
    "binary_tensor_data",
    "parameters",
    "statistics",
]


def check_target(servable: Servable, model: str, version: str | None) -> None:
    if model != servable.name:
        raise NotFound(f"Request for unknown model: '{model}' is not found")
    if version not in (None, "", servable.version):
        raise NotFound(f"Request for unknown model: '{model}' version {version} is not found")


def server_ready(servable: Servable) -> bool:
    return servable.is_ready()


def model_ready(servable: Servable, model: str, version: str | None) -> bool:
    """Whether ``model`` (``version``) is ready; ``NotFound`` if this is not its server."""
    check_target(servable, model, version)
    return servable.is_ready()


def capacity_check(servable: Servable) -> Callable[[], None]:
    """The servable's "queue full?" check, raising ``QueueFull`` (a no-op if it has none)."""
    return getattr(servable, "check_capacity", None) or (lambda: None)


async def statistics(servable: Servable) -> dict:
    """The model's entry of Triton's ``model_stats``: the pod's when the servable gathers
    its workers' (``pod_statistics``), else its own."""
    gather = getattr(servable, "pod_statistics", None)
    if gather is not None:
        return await gather()
    return servable.statistics()
