"""Talking to step models: pooled keep-alive connections per step endpoint.

Requests go out as Triton binary-tensor bodies (a JSON header + raw tensor bytes, with
``binary_data_output`` so the answer comes back binary as well), framed and read by the
runtime's own REST codec (``rest.encode_request``/``rest.decode_response``, the mirror of
what the step model's server decodes and encodes), and ask only for the outputs the step's
``output_map`` uses. Inference calls to ``http://`` endpoints go over ``http1.Pool``; the
control plane (readiness, metadata, config) and ``https://`` endpoints over httpx. The ensemble request's ``id``, the time left of
its ``timeout`` and the trace headers travel along. A non-200 answer or a transport
failure becomes one of the router's step errors (``router.errors``), naming the step, its
model and the model's own message.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson

from kubeinfer.runtime.errors import InvalidInput
from kubeinfer.runtime.protocol import rest
from kubeinfer.runtime.types import InferRequest, RequestedOutput
from kubeinfer.router import http1
from kubeinfer.router.errors import StepFailed, StepRejected, StepUnavailable
from kubeinfer.spec.ensemble import Step

_HEADER_LEN = "inference-header-content-length"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """How the router connects to step models."""

    #: seconds to open a connection; an unreachable model fails fast with 503
    connect_timeout: float = 1.0
    #: pooled connections per step endpoint, and how many stay open when idle
    max_connections: int = 256
    max_keepalive: int = 64
    keepalive_expiry: float = 60.0


@dataclass(slots=True)
class CallContext:
    """What one ensemble request passes on to every step call."""

    request_id: str | None = None
    #: the ensemble request's deadline on the event loop clock (None: no timeout)
    deadline: float | None = None
    headers: tuple[tuple[str, str], ...] = ()


class StepClient:
    def __init__(self, settings: ClientSettings = ClientSettings()) -> None:
        self.settings = settings
        self.http = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_keepalive,
                keepalive_expiry=settings.keepalive_expiry,
            ),
            timeout=httpx.Timeout(None, connect=settings.connect_timeout),
            follow_redirects=False,
        )
        #: step index -> the outputs its calls ask for (those its output_map uses)
        self._outputs: dict[int, list[RequestedOutput]] = {}
        #: step URL -> fast pool (plain http); https endpoints go through httpx
        self._pools: dict[str, http1.Pool | None] = {}

    async def aclose(self) -> None:
        for pool in self._pools.values():
            if pool is not None:
                pool.close()
        await self.http.aclose()

    def _pool(self, url: str) -> http1.Pool | None:
        if url not in self._pools:
            u = urlsplit(url)
            self._pools[url] = (
                http1.Pool(
                    u.hostname, u.port or 80, self.settings.connect_timeout,
                    self.settings.max_keepalive, self.settings.max_connections,
                )
                if u.scheme == "http" and u.hostname else None
            )
        return self._pools[url]

    # -- control plane -----------------------------------------------------------------
    async def check_ready(self, step: Step, timeout: float = 5.0) -> None:
        """Return if the step model answers its readiness with 200; raise ``StepError``."""
        ready = await self._get(step, step.model_path + "/ready", timeout)
        if ready.status_code != 200:
            raise _status_error(step, ready)

    async def metadata(self, step: Step) -> dict:
        """The step model's v2 metadata once it is ready; raises ``StepError`` otherwise."""
        await self.check_ready(step)
        meta = await self._get(step, step.model_path)
        if meta.status_code != 200:
            raise _status_error(step, meta)
        try:
            doc = orjson.loads(meta.content)
        except orjson.JSONDecodeError:
            raise StepFailed(step.name, step.model, 200, "metadata is not JSON") from None
        return doc

    async def max_batch_size(self, step: Step) -> int | None:
        """The step model's ``max_batch_size`` from its model configuration (Triton's
        ``GET .../config``); None when its server does not have that extension."""
        response = await self._get(step, step.model_path + "/config")
        if response.status_code != 200:
            return None
        try:
            value = orjson.loads(response.content).get("max_batch_size", 0)
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return value if isinstance(value, int) else None

    async def _get(self, step: Step, path: str, timeout: float = 5.0) -> httpx.Response:
        try:
            return await self.http.get(step.url + path, timeout=httpx.Timeout(timeout, connect=self.settings.connect_timeout))
        except httpx.HTTPError as exc:
            raise _transport_error(step, exc) from None

    # -- data plane --------------------------------------------------------------------
    async def infer(
        self, step: Step, feed: dict[str, np.ndarray], ctx: CallContext, timeout_us: int = 0
    ) -> dict[str, np.ndarray]:
        outputs = self._outputs.get(step.index)
        if outputs is None:
            outputs = self._outputs[step.index] = [RequestedOutput(o, True) for o in step.output_map]
        request = InferRequest(feed, ctx.request_id, outputs=outputs, binary_output=True, timeout_us=timeout_us)
        body, header_len = rest.encode_request(request)
        headers = [("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(header_len)), *ctx.headers]
        path = step.model_path + "/infer"
        pool = self._pool(step.url)
        if pool is not None:
            try:
                status, rheaders, content = await pool.post(path, body, headers)
            except http1.ConnectError as exc:
                raise StepUnavailable(step.name, step.model, None, f"cannot connect to {step.url}: {exc}") from None
            except http1.ConnectionLost as exc:
                raise StepUnavailable(step.name, step.model, None, f"talking to {step.url}: {exc}") from None
            length = rheaders.get(b"inference-header-content-length")
        else:
            try:
                response = await self.http.post(step.url + path, content=body, headers=headers)
            except httpx.HTTPError as exc:
                raise _transport_error(step, exc) from None
            status, content = response.status_code, response.content
            length = response.headers.get(_HEADER_LEN)
        if status != 200:
            raise _error(step, status, content)
        return _decode(step, content, length)


def _decode(step: Step, body: bytes, length) -> dict[str, np.ndarray]:
    try:
        out = rest.decode_response(body, None if length is None else int(length)).outputs
    except (ValueError, InvalidInput) as exc:
        detail = exc.message if isinstance(exc, InvalidInput) else f"{type(exc).__name__}: {exc}"
        raise StepFailed(step.name, step.model, 200, f"malformed response: {detail}") from None
    for o in step.output_map:
        if o not in out:
            raise StepFailed(step.name, step.model, 200, f"the response has no output '{o}'")
    return out


def _model_message(content: bytes) -> str:
    try:
        doc = orjson.loads(content)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return doc["error"]
    except orjson.JSONDecodeError:
        pass
    return content[:300].decode("utf-8", "replace") or "(empty body)"


def _error(step: Step, status: int, content: bytes):
    text = f"{_model_message(content)} (HTTP {status} from {step.url})"
    if status == 503:
        return StepUnavailable(step.name, step.model, status, text)
    if 400 <= status < 500:
        return StepRejected(step.name, step.model, status, text)
    return StepFailed(step.name, step.model, status, text)


def _status_error(step: Step, response: httpx.Response):
    return _error(step, response.status_code, response.content)


def _transport_error(step: Step, exc: httpx.HTTPError):
    what = type(exc).__name__
    detail = str(exc) or what
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return StepUnavailable(step.name, step.model, None, f"cannot connect to {step.url}: {detail}")
    if isinstance(exc, httpx.TransportError):
        return StepUnavailable(step.name, step.model, None, f"{what} talking to {step.url}: {detail}")
    return StepFailed(step.name, step.model, None, f"{what} talking to {step.url}: {detail}")
