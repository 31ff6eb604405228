"""The one place where runtime errors become HTTP and gRPC statuses."""

from __future__ import annotations

from kubeinfer.runtime import errors as e

# Triton's mapping: 400 invalid request, 404 not found, 500 internal, 501 unsupported,
# 503 unavailable (not ready, queue full, timed out in the queue).
_HTTP = {
    e.InvalidInput: 400,
    e.NotFound: 404,
    e.Unsupported: 501,
    e.ModelNotReady: 503,
    e.QueueFull: 503,
    e.DeadlineExceeded: 503,
    e.Cancelled: 499,
    e.BackendError: 500,
}

# names of grpc.StatusCode members (the gRPC layer resolves them; no grpc import here)
_GRPC = {
    e.InvalidInput: "INVALID_ARGUMENT",
    e.NotFound: "NOT_FOUND",
    e.Unsupported: "UNIMPLEMENTED",
    e.ModelNotReady: "UNAVAILABLE",
    e.QueueFull: "UNAVAILABLE",
    e.DeadlineExceeded: "DEADLINE_EXCEEDED",
    e.Cancelled: "CANCELLED",
    e.BackendError: "INTERNAL",
}


def http_status(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in _HTTP:
            return _HTTP[cls]
    return 500


def grpc_status_name(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        if cls in _GRPC:
            return _GRPC[cls]
    return "INTERNAL"


def message(exc: BaseException) -> str:
    if isinstance(exc, e.InferError):
        return exc.message
    return f"internal error: {type(exc).__name__}: {exc}"
