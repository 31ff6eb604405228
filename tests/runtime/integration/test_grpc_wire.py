"""The gRPC server's own HTTP/2 layer (``server/grpcwire``) against real clients on loopback.

grpc's own client (``grpc.aio``, C core) proves interoperability — compression, deadlines,
many calls on one connection, GOAWAY at shutdown; the ``h2`` library as a second,
independent client drives what grpc's client never does on purpose: tiny flow-control
windows, resets, pings, split header blocks, a non-gRPC request, garbage. The servicer is
the generated ``GRPCInferenceService`` with test behaviour in ``ModelInfer`` (keyed by the
request id); everything under it is the server as it runs.
"""

from __future__ import annotations

import asyncio
import socket

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from tritonclient.grpc import service_pb2 as pb, service_pb2_grpc

from kubeinfer.runtime.server.grpcwire import frames
from kubeinfer.runtime.server.grpcwire.server import GrpcWireServer

PATH = "/inference.GRPCInferenceService/ModelInfer"


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.cancelled = 0

    async def ModelInfer(self, request, context):
        kind, _, arg = request.id.partition(":")
        if kind == "big":
            return pb.ModelInferResponse(id=request.id, raw_output_contents=[b"x" * int(arg)])
        if kind == "wait":
            self.entered.set()
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if kind == "abort":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad ünïcode % input")
        if kind == "raise":
            raise RuntimeError("boom")
        if kind == "len":
            return pb.ModelInferResponse(id=str(len(request.raw_input_contents[0])))
        if kind == "deadline":
            remaining = context.time_remaining()
            return pb.ModelInferResponse(id=f"{remaining:.3f}")
        return pb.ModelInferResponse(id=request.id, model_name=request.model_name)


@pytest.fixture
async def served():
    servicer = Servicer()
    server = GrpcWireServer(service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server, servicer, 1 << 20)
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]
    yield server, servicer, port
    servicer.gate.set()
    await server.stop(5)


def _stub(port: int, **kw):
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", **kw)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


# -- grpc's own client ----------------------------------------------------------------
async def test_many_concurrent_calls_on_one_connection_each_get_their_answer(served):
    _, _, port = served
    channel, stub = _stub(port)
    async with channel:
        replies = await asyncio.gather(*(stub.ModelInfer(pb.ModelInferRequest(id=str(i))) for i in range(300)))
        big = await stub.ModelInfer(pb.ModelInferRequest(id="big:3000000"))  # > the client's window
    assert [r.id for r in replies] == [str(i) for i in range(300)]
    assert big.raw_output_contents[0] == b"x" * 3_000_000


async def test_requests_larger_than_the_stream_window_are_received_whole():
    """A 9 MB request: more than the 4 MiB stream window and half the connection's, so
    the client needs this server's WINDOW_UPDATEs for the stream and the connection."""
    server = GrpcWireServer(service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server, Servicer(), 16 << 20)
    await server.start("127.0.0.1", 0)
    channel, stub = _stub(server._server.sockets[0].getsockname()[1],
                          options=[("grpc.max_send_message_length", -1)])
    try:
        async with channel:
            replies = await asyncio.gather(*(
                stub.ModelInfer(pb.ModelInferRequest(id="len", raw_input_contents=[b"r" * 9_000_000]), timeout=30)
                for _ in range(2)
            ))
    finally:
        await server.stop(5)
    assert [r.id for r in replies] == ["9000000", "9000000"]


async def test_gzip_and_deflate_requests_are_decompressed(served):
    _, _, port = served
    for compression in (grpc.Compression.Gzip, grpc.Compression.Deflate):
        channel, stub = _stub(port, compression=compression)
        async with channel:
            reply = await stub.ModelInfer(pb.ModelInferRequest(id="z" * 5000, model_name="m"))
        assert (reply.id, reply.model_name) == ("z" * 5000, "m")


async def test_statuses_unknown_methods_and_limits(served):
    _, _, port = served
    channel, stub = _stub(port, options=[("grpc.max_send_message_length", -1)])
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ModelInfer(pb.ModelInferRequest(id="abort"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "bad ünïcode % input"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ModelInfer(pb.ModelInferRequest(id="raise"))
        assert err.value.code() == grpc.StatusCode.UNKNOWN and "boom" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary("/inference.GRPCInferenceService/Nope")(b"")
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ModelInfer(pb.ModelInferRequest(id="x" * (1 << 20)))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(PATH)(b"\xff\xff\xff")  # not a ModelInferRequest
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert (await stub.ModelInfer(pb.ModelInferRequest(id="still fine"))).id == "still fine"


async def test_deadline_is_the_calls_timeout_and_cancels_the_handler(served):
    _, servicer, port = served
    channel, stub = _stub(port)
    async with channel:
        remaining = float((await stub.ModelInfer(pb.ModelInferRequest(id="deadline"), timeout=30)).id)
        assert 25 < remaining <= 31  # grpc may round the timeout it sends up
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ModelInfer(pb.ModelInferRequest(id="wait"), timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    while servicer.cancelled != 1:  # the server's own deadline cancels the handler too
        await asyncio.sleep(0.01)


async def test_stop_finishes_accepted_calls_and_refuses_new_ones(served):
    server, servicer, port = served
    channel, stub = _stub(port)
    async with channel:
        assert (await stub.ModelInfer(pb.ModelInferRequest(id="warm"))).id == "warm"
        running = asyncio.ensure_future(stub.ModelInfer(pb.ModelInferRequest(id="wait")))
        await servicer.entered.wait()
        stopping = asyncio.ensure_future(server.stop(10))
        await asyncio.sleep(0)  # GOAWAY is out; the accepted call still runs
        assert not running.done()
        servicer.gate.set()
        assert (await running).id == "wait"
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ModelInfer(pb.ModelInferRequest(id="late"), timeout=2)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert servicer.cancelled == 0


# -- the h2 library as a client -------------------------------------------------------
class H2Client:
    def __init__(self, port: int, settings: dict | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def call(self, request: pb.ModelInferRequest, *, ack: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", PATH), (":authority", "x"),
                   ("te", "trailers"), ("content-type", "application/grpc")]
        body = request.SerializeToString()
        self.conn.send_headers(sid, headers)
        self.conn.send_data(sid, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
        self.flush()
        return sid

    def events(self, until, *, ack: bool = True) -> list:
        seen = []
        while not until(seen):
            data = self.sock.recv(1 << 16)
            if not data:
                seen.append("closed")
                break
            for event in self.conn.receive_data(data):
                seen.append(event)
                if isinstance(event, h2.events.DataReceived) and ack:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.flush()
        return seen

    def close(self) -> None:
        self.sock.close()


def _ended(sid):
    return lambda seen: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in seen)


def _trailers(seen, sid) -> dict:
    for e in seen:
        if isinstance(e, h2.events.TrailersReceived) and e.stream_id == sid:
            return dict(e.headers)
        if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid and e.stream_ended:
            return dict(e.headers)
    return {}


def _body(seen, sid) -> bytes:
    return b"".join(e.data for e in seen if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)


async def _in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def test_replies_wait_for_the_clients_flow_control_window(served):
    _, _, port = served
    client = H2Client(port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})

    def run():
        sid = client.call(pb.ModelInferRequest(id="big:200000"))
        seen = client.events(_ended(sid))
        frames_ = [e for e in seen if isinstance(e, h2.events.DataReceived)]
        return sid, seen, frames_

    sid, seen, data_events = await _in_thread(run)
    client.close()
    reply = pb.ModelInferResponse.FromString(_body(seen, sid)[5:])
    assert reply.raw_output_contents[0] == b"x" * 200_000
    assert max(len(e.data) for e in data_events) <= 1000  # never more than the window allowed
    assert _trailers(seen, sid)[b"grpc-status"] == b"0"


async def test_a_reset_stream_cancels_its_call_and_the_connection_goes_on(served):
    _, servicer, port = served
    client = H2Client(port)
    sid = await _in_thread(client.call, pb.ModelInferRequest(id="wait"))
    await servicer.entered.wait()
    client.conn.reset_stream(sid)
    client.flush()
    while servicer.cancelled != 1:
        await asyncio.sleep(0.01)
    client.conn.ping(b"12345678")
    client.flush()
    seen = await _in_thread(client.events, lambda s: any(isinstance(e, h2.events.PingAckReceived) for e in s))
    assert any(isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"12345678" for e in seen)
    sid2 = await _in_thread(client.call, pb.ModelInferRequest(id="after"))
    seen = await _in_thread(client.events, _ended(sid2))
    client.close()
    assert pb.ModelInferResponse.FromString(_body(seen, sid2)[5:]).id == "after"


async def test_a_lost_connection_cancels_its_calls(served):
    _, servicer, port = served
    client = H2Client(port)
    await _in_thread(client.call, pb.ModelInferRequest(id="wait"))
    await servicer.entered.wait()
    client.close()
    while servicer.cancelled != 1:
        await asyncio.sleep(0.01)


async def test_header_block_split_over_continuation_frames(served):
    _, _, port = served
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    block = hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", PATH),
                                    (":authority", "x"), ("content-type", "application/grpc")])
    body = pb.ModelInferRequest(id="split").SerializeToString()
    message = b"\x00" + len(body).to_bytes(4, "big") + body
    sock.sendall(
        frames.PREFACE + frames.settings({})
        + frames.frame(frames.HEADERS, 0, 1, block[:5])
        + frames.frame(frames.CONTINUATION, frames.END_HEADERS, 1, block[5:])
        + frames.frame(frames.DATA, 0, 1, message[:3])  # a message over two DATA frames
        + frames.frame(frames.DATA, frames.END_STREAM, 1, message[3:])
    )

    def read():
        data, body, at = b"", b"", 0
        while True:
            data += sock.recv(1 << 16)
            while at + 9 <= len(data):
                length, kind, flags, sid = frames.parse_head(data, at)
                if at + 9 + length > len(data):
                    break
                if sid == 1 and kind == frames.DATA:
                    body += data[at + 9 : at + 9 + length]
                if sid == 1 and kind == frames.HEADERS and flags & frames.END_STREAM:
                    return body
                at += 9 + length

    body = await _in_thread(read)
    sock.close()
    assert pb.ModelInferResponse.FromString(body[5:]).id == "split"


async def test_non_grpc_requests_and_garbage(served):
    _, _, port = served
    client = H2Client(port)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "x")],
                             end_stream=True)
    client.flush()
    seen = await _in_thread(client.events, _ended(sid))
    client.close()
    assert dict(next(e for e in seen if isinstance(e, h2.events.ResponseReceived)).headers)[b":status"] == b"415"

    def http1():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(1 << 16):
                data += chunk
            return data

    reply = await _in_thread(http1)  # not HTTP/2: GOAWAY(PROTOCOL_ERROR), then the server closes
    kinds, at = [], 0
    while at + 9 <= len(reply):
        length, kind, _, _ = frames.parse_head(reply, at)
        kinds.append((kind, reply[at + 9 + 4 : at + 9 + 8] if kind == frames.GOAWAY else b""))
        at += 9 + length
    assert (frames.GOAWAY, frames.PROTOCOL_ERROR.to_bytes(4, "big")) in kinds, kinds


def test_frame_encodings_decode_as_http2():
    decoder = hpack.Decoder()
    block = frames.RESPONSE_HEADERS + frames.trailers(3, "naïve 100%\n")
    assert decoder.decode(block) == [
        (":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "3"),
        ("grpc-message", "na%C3%AFve 100%25%0A"),
    ]
    assert decoder.decode(frames.status_only(415)) == [(":status", "415")]
    assert frames.parse_timeout("200m") == pytest.approx(0.2)
    assert frames.parse_timeout("3S") == 3.0 and frames.parse_timeout("1H") == 3600.0
    assert frames.parse_timeout("123456789S") is None and frames.parse_timeout("5x") is None
    long = frames.literal(b"k", b"v" * 300)
    assert hpack.Decoder().decode(long) == [("k", "v" * 300)]
