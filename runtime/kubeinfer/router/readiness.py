"""The router's server readiness (``GET /v2/health/ready``), answered in front of the app.

The server layer has one readiness, the servable's; for an ensemble that is the model's
(every step model answers). A Kubernetes readiness probe must not follow it: a router
whose readiness flaps with its steps drops out of its Service, and its clients get
connection errors instead of a 503 naming the step that is down. So this ASGI wrapper
answers ``/v2/health/ready`` from ``serving`` (loaded, checked, not draining) and leaves
every other route, ``/v2/models/<ensemble>/ready`` included, to the app.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

PATH = "/v2/health/ready"


class ServerReadiness:
    def __init__(self, app, serving: Callable[[], bool]) -> None:
        self.app = app
        self.serving = serving

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] in ("GET", "HEAD"):
            if self.serving():
                status, body = 200, orjson.dumps({"ready": True})
            else:
                status, body = 503, orjson.dumps({"error": "server is not ready"})
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
            return
        await self.app(scope, receive, send)
