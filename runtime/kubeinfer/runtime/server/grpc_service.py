"""``inference.GRPCInferenceService`` (KServe v2 gRPC + Triton's extensions) on ``server.grpcwire``.

Each RPC is a thin step over the same servable the HTTP app serves: check the target
model, decode with ``protocol.grpc_codec``, ``servable.infer``, encode. Runtime errors
become gRPC statuses through ``server.errors`` (the one mapping); anything unexpected is
``INTERNAL``. Shared memory, trace and log settings are ``UNIMPLEMENTED``, as is unloading
the one model this process serves. ``ModelStreamInfer`` answers each streamed request
with one response (no decoupled models), in completion order; a failed request becomes a
response carrying ``error_message`` and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2 as pb, service_pb2_grpc

from kubeinfer.runtime import __version__
from kubeinfer.runtime.errors import InferError, NotFound, Unsupported
from kubeinfer.runtime.protocol.grpc_codec import decode_request, encode_response
from kubeinfer.runtime.servable import Servable
from kubeinfer.runtime.server.answers import (
    EXTENSIONS,
    capacity_check,
    check_target,
    model_ready,
    server_ready,
    statistics,
)
from kubeinfer.runtime.server.errors import grpc_status_name, message
from kubeinfer.runtime.server.grpcwire.server import GrpcWireServer

log = logging.getLogger(__name__)

#: how long a stopping server lets accepted RPCs finish before cancelling them
STOP_GRACE_SECONDS = 30.0


def status_code(exc: BaseException) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, grpc_status_name(exc))


async def _abort(context, exc: BaseException) -> None:
    if not isinstance(exc, InferError):
        log.exception("gRPC request failed", exc_info=exc)
    await context.abort(status_code(exc), message(exc))


def _tensor_metadata(items: list[dict]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        for t in items
    ]


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self, servable: Servable, *, server_name: str = "kubeinfer", extensions: list[str] = EXTENSIONS
    ) -> None:
        self.servable = servable
        self.server_name = server_name
        self.extensions = extensions
        self._closing = False
        self._reading: set[asyncio.Task] = set()  # streams' readers waiting for requests
        self._check_capacity = capacity_check(servable)

    def close_streams(self) -> None:
        """Shutdown: open streams stop reading, answer what they read, and end."""
        self._closing = True
        for reader in list(self._reading):
            reader.cancel()

    # -- health and metadata ------------------------------------------------------------
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=server_ready(self.servable))

    async def ModelReady(self, request, context):
        try:
            return pb.ModelReadyResponse(ready=model_ready(self.servable, request.name, request.version))
        except NotFound:
            return pb.ModelReadyResponse(ready=False)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(
            name=self.server_name, version=__version__, extensions=self.extensions
        )

    async def ModelMetadata(self, request, context):
        try:
            check_target(self.servable, request.name, request.version)
            meta = self.servable.metadata()
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=_tensor_metadata(meta["inputs"]),
                outputs=_tensor_metadata(meta["outputs"]),
            )
        except Exception as exc:
            await _abort(context, exc)

    async def ModelConfig(self, request, context):
        try:
            check_target(self.servable, request.name, request.version)
            config = json_format.ParseDict(
                self.servable.config_json(), model_config_pb2.ModelConfig(), ignore_unknown_fields=True
            )
            return pb.ModelConfigResponse(config=config)
        except Exception as exc:
            await _abort(context, exc)

    async def ModelStatistics(self, request, context):
        try:
            if request.name:
                check_target(self.servable, request.name, request.version)
            stats = json_format.ParseDict(
                {"model_stats": [await statistics(self.servable)]},
                pb.ModelStatisticsResponse(),
                ignore_unknown_fields=True,
            )
            return stats
        except Exception as exc:
            await _abort(context, exc)

    # -- repository ---------------------------------------------------------------------
    async def RepositoryIndex(self, request, context):
        ready = server_ready(self.servable)
        if request.ready and not ready:
            return pb.RepositoryIndexResponse()
        entry = pb.RepositoryIndexResponse.ModelIndex(
            name=self.servable.name,
            version=self.servable.version,
            state="READY" if ready else "UNAVAILABLE",
        )
        return pb.RepositoryIndexResponse(models=[entry])

    async def RepositoryModelLoad(self, request, context):
        try:
            check_target(self.servable, request.model_name, None)
        except Exception as exc:
            await _abort(context, exc)
        return pb.RepositoryModelLoadResponse()  # the process serves this model already

    async def RepositoryModelUnload(self, request, context):
        await _abort(
            context, Unsupported("this server serves exactly one model; it cannot be unloaded")
        )

    # -- inference ----------------------------------------------------------------------
    async def _infer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        servable = self.servable
        check_target(servable, request.model_name, request.model_version)
        self._check_capacity()  # a full queue answers UNAVAILABLE before decoding
        infer_request = decode_request(request)
        remaining = context.time_remaining()
        if remaining is not None:  # the client's deadline is the request's timeout
            deadline_us = max(int(remaining * 1e6), 1)
            if not infer_request.timeout_us or deadline_us < infer_request.timeout_us:
                infer_request.timeout_us = deadline_us
        response = await servable.infer(infer_request)
        return encode_response(
            response, infer_request, pb.ModelInferResponse(), servable.labels, servable.batched
        )

    async def ModelInfer(self, request, context):
        try:
            return await self._infer(request, context)
        except Exception as exc:
            await _abort(context, exc)

    async def ModelStreamInfer(self, request_iterator, context):
        done: asyncio.Queue = asyncio.Queue()
        running: set[asyncio.Task] = set()

        async def one(request) -> None:
            try:
                response = pb.ModelStreamInferResponse(infer_response=await self._infer(request, context))
            except Exception as exc:
                if not isinstance(exc, InferError):
                    log.exception("streamed request failed")
                response = pb.ModelStreamInferResponse(
                    error_message=message(exc),
                    infer_response=pb.ModelInferResponse(
                        id=request.id, model_name=request.model_name, model_version=request.model_version
                    ),
                )
            await done.put(response)

        async def read() -> None:
            try:
                try:
                    async for request in request_iterator:
                        task = asyncio.create_task(one(request))
                        running.add(task)
                        task.add_done_callback(running.discard)
                except asyncio.CancelledError:
                    if not self._closing:
                        raise
                finally:
                    self._reading.discard(reader)
                while running:
                    await asyncio.wait(set(running))
            finally:
                done.put_nowait(None)

        if self._closing:
            return
        reader = asyncio.create_task(read())
        self._reading.add(reader)
        try:
            while (response := await done.get()) is not None:
                yield response
            await reader  # surfaces a broken request stream
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    # -- not supported ------------------------------------------------------------------
    async def _unsupported(self, request, context):
        await _abort(context, Unsupported("not supported by this server"))

    SystemSharedMemoryStatus = _unsupported
    SystemSharedMemoryRegister = _unsupported
    SystemSharedMemoryUnregister = _unsupported
    CudaSharedMemoryStatus = _unsupported
    CudaSharedMemoryRegister = _unsupported
    CudaSharedMemoryUnregister = _unsupported
    TraceSetting = _unsupported
    LogSettings = _unsupported


class GrpcServer:
    """A started gRPC server and its servicer (whose streams shutdown must end)."""

    def __init__(self, server: GrpcWireServer, servicer: InferenceServicer) -> None:
        self.server = server
        self.servicer = servicer


async def start_grpc_server(
    servable: Servable, host: str, port: int, max_message_bytes: int, *, reuse_port: bool = False
) -> GrpcServer:
    """A started gRPC server for ``servable``; raises RuntimeError if it cannot bind.
    ``reuse_port``: bind with ``SO_REUSEPORT`` (the workers of a pod share the port);
    otherwise a port already in use is an error, not a silently shared port."""
    servicer = InferenceServicer(servable)
    server = GrpcWireServer(
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server, servicer, max_message_bytes
    )
    await server.start(host, port, reuse_port=reuse_port)
    return GrpcServer(server, servicer)


async def stop_grpc_server(server: GrpcServer | None) -> None:
    """Refuse new RPCs, end open streams once they answered what they read, let accepted
    RPCs finish (up to the grace period)."""
    if server is not None:
        server.servicer.close_streams()
        await server.server.stop(STOP_GRACE_SECONDS)
