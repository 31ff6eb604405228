"""The HTTP application: FastAPI for the control routes, a raw ASGI handler for infer.

Routes follow the KServe v2 protocol plus Triton's extensions (model configuration,
statistics, model repository index, binary tensors, classification). Every error body is
``{"error": "..."}`` with the status from ``server.errors``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from kubeinfer.runtime import __version__
from kubeinfer.runtime.errors import InferError, ModelNotReady, Unsupported
from kubeinfer.runtime.protocol.rest import error_body
from kubeinfer.runtime.servable import Servable
from kubeinfer.runtime.server.errors import http_status, message
from kubeinfer.runtime.server.answers import EXTENSIONS, check_target, model_ready, server_ready, statistics
from kubeinfer.runtime.server.infer_route import InferRoute

import orjson



def _json(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _error(status: int, text: str) -> Response:
    return Response(error_body(text), status_code=status, media_type="application/json")


def create_app(
    servable: Servable,
    *,
    server_name: str = "kubeinfer",
    extensions: list[str] = EXTENSIONS,
    metrics_route=None,
    max_body_bytes: int = 64 * 1024 * 1024,
) -> InferRoute:
    """The ASGI app serving ``servable``. ``metrics_route`` optionally adds ``/metrics``."""
    app = FastAPI(title=server_name, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(InferError)
    async def _infer_error(_: Request, exc: InferError) -> Response:
        return _error(http_status(exc), message(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return _error(400, str(exc))

    @app.get("/v2/health/live")
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        if not server_ready(servable):
            return _error(503, "server is not ready")
        return _json({"ready": True})

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json({"name": server_name, "version": __version__, "extensions": extensions})

    def model_routes(suffix: str, method: str = "GET"):
        paths = [f"/v2/models/{{model}}{suffix}", f"/v2/models/{{model}}/versions/{{version}}{suffix}"]

        def register(fn):
            for path in paths:
                app.add_api_route(path, fn, methods=[method])
            return fn

        return register

    @model_routes("")
    async def model_metadata(model: str, version: str | None = None) -> Response:
        check_target(servable, model, version)
        return _json(servable.metadata())

    @model_routes("/ready")
    async def model_readiness(model: str, version: str | None = None) -> Response:
        if not model_ready(servable, model, version):
            raise ModelNotReady(f"model '{model}' is not ready")
        return _json({"name": servable.name, "ready": True})

    @model_routes("/config")
    async def model_config(model: str, version: str | None = None) -> Response:
        check_target(servable, model, version)
        return _json(servable.config_json())

    @model_routes("/stats")
    async def model_stats(model: str, version: str | None = None) -> Response:
        check_target(servable, model, version)
        return _json({"model_stats": [await statistics(servable)]})

    @app.get("/v2/models/stats")
    async def all_stats() -> Response:
        return _json({"model_stats": [await statistics(servable)]})

    @app.post("/v2/repository/index")
    async def repository_index() -> Response:
        state = "READY" if server_ready(servable) else "UNAVAILABLE"
        return _json([{"name": servable.name, "version": servable.version, "state": state, "reason": ""}])

    @app.post("/v2/repository/models/{model}/load")
    async def repository_load(model: str) -> Response:
        check_target(servable, model, None)
        return _json({})  # the process serves this model already

    @app.post("/v2/repository/models/{model}/unload")
    async def repository_unload(model: str) -> Response:
        check_target(servable, model, None)
        raise Unsupported("this server serves exactly one model; it cannot be unloaded")

    if metrics_route is not None:
        app.add_route("/metrics", metrics_route, methods=["GET"])

    return InferRoute(servable, app, max_body_bytes)
