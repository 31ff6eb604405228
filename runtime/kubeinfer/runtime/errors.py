"""The runtime's error taxonomy.

Every failure the runtime can report to a client is one of these classes. They carry a
message meant for the client and nothing about transport: the single mapping from error
kind to HTTP and gRPC status lives in ``kubeinfer.runtime.server.errors``. ``ConfigError``
(a startup problem, never sent to a client) is the specification's, re-exported here.
"""

from __future__ import annotations

from kubeinfer.spec.errors import ConfigError

__all__ = [
    "BackendError", "Cancelled", "ConfigError", "DeadlineExceeded", "InferError", "InvalidInput",
    "ModelNotReady", "NotFound", "QueueFull", "Unsupported",
]


class InferError(Exception):
    """Base class: a failure reported to the client as ``{"error": message}``."""

    #: Triton's failure reason label for ``nv_inference_request_failure``.
    reason = "OTHER"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(InferError):
    """The request is malformed or does not match the model's signature."""


class NotFound(InferError):
    """Unknown model, version or route."""


class Unsupported(InferError):
    """A feature the request asks for is not implemented."""


class ModelNotReady(InferError):
    """The model is loading, warming up or draining."""

    reason = "REJECTED"


class QueueFull(InferError):
    """The scheduler's bounded queue is full; the request was rejected at once."""

    reason = "REJECTED"


class DeadlineExceeded(InferError):
    """The request's timeout expired before it was executed."""

    reason = "REJECTED"


class Cancelled(InferError):
    """The client went away before the request executed."""

    reason = "CANCELED"


class BackendError(InferError):
    """The backend failed while executing the request."""

    reason = "BACKEND"
