"""Trace headers from the ensemble request to the step calls, without touching the
server layer: an ASGI wrapper around the app copies ``traceparent``/``tracestate`` into a
context variable for the request's task; the servable reads it when it builds the step
calls' context (asyncio tasks inherit the variable, so parallel steps see it too).
"""

from __future__ import annotations

from contextvars import ContextVar

FORWARDED = (b"traceparent", b"tracestate")

_headers: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("kubeinfer_router_forwarded", default=())


def current() -> tuple[tuple[str, str], ...]:
    """The forwarded headers of the request being served (empty outside one)."""
    return _headers.get()


class ForwardHeaders:
    """ASGI middleware: remember the headers the step calls forward."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            found = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k in FORWARDED)
            if found:
                token = _headers.set(found)
                try:
                    await self.app(scope, receive, send)
                finally:
                    _headers.reset(token)
                return
        await self.app(scope, receive, send)
