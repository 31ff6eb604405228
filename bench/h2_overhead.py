"""CPU per gRPC call of the server's HTTP/2 layer: the ``h2`` library vs ``server/grpcwire``.

Both servers get the same client bytes (an ``h2`` client connection sends unary gRPC
calls as tritonclient does: HEADERS with the usual 8 fields, one DATA frame with the
message, END_STREAM), ``--batch`` calls per read as at that many concurrent calls, and
each answers every call at once with response headers, one message and trailers. Timed:
the server side only (parse, flow control, header decoding, the reply's frames), not the
client; the model, protobuf and the call machinery are out of both. The same for HPACK
decoding of a repeated header block with and without the cache of ``grpcwire.headers``.

    .venv/bin/python bench/h2_overhead.py [--batch 64] [--rounds 300] [--message-bytes 2060]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack

from kubeinfer.runtime.server.grpcwire.connection import CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW, Connection
from kubeinfer.runtime.server.grpcwire.headers import HeaderDecoder

HEADERS = [
    (":method", "POST"), (":scheme", "http"), (":path", "/inference.GRPCInferenceService/ModelInfer"),
    (":authority", "127.0.0.1:8001"), ("te", "trailers"), ("content-type", "application/grpc"),
    ("user-agent", "grpc-c++/1.62.1 grpc-c/39.0.0 (linux; chttp2)"), ("grpc-accept-encoding", "identity, deflate, gzip"),
]
RESPONSE = [(":status", "200"), ("content-type", "application/grpc")]
TRAILERS = [("grpc-status", "0")]


class Client:
    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()  # large windows, as grpc's client announces
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW})
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65_535)

    def calls(self, n: int, body: bytes) -> bytes:
        for _ in range(n):
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, HEADERS)
            self.conn.send_data(sid, body, end_stream=True)
        return self.conn.data_to_send()

    def take(self, data: bytes) -> bytes:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        return self.conn.data_to_send()


def bench_h2(batch: int, rounds: int, body: bytes) -> float:
    client = Client()
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()  # the same windows as grpcwire announces
    server.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME})
    server.increment_flow_control_window(CONNECTION_WINDOW - 65_535)
    server.receive_data(client.conn.data_to_send())
    server.receive_data(client.take(server.data_to_send()))
    spent = 0.0
    for _ in range(rounds):
        wire = client.calls(batch, body)
        t = time.perf_counter()
        events = server.receive_data(wire)
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                sid = event.stream_id
                server.send_headers(sid, RESPONSE)
                server.send_data(sid, body)
                server.send_headers(sid, TRAILERS, end_stream=True)
        out = server.data_to_send()
        spent += time.perf_counter() - t
        back = client.take(out)
        if back:
            server.receive_data(back)
    return spent / (batch * rounds)


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def get_extra_info(self, name, default=None):
        return default


class _Answer:
    """Calls that answer every request at once with its own bytes."""

    max_message_bytes = 64 * 1024 * 1024

    def open(self, conn, stream) -> bool:
        return True

    def request(self, conn, stream, message: bytes) -> None:
        conn.send_message(stream, message)
        conn.finish(stream)

    def half_closed(self, conn, stream) -> None:
        pass


async def bench_grpcwire(batch: int, rounds: int, body: bytes) -> float:
    client = Client()
    transport = _Transport()
    server = Connection(_Answer(), lambda c: None)
    server.connection_made(transport)
    server.data_received(client.conn.data_to_send())
    server.data_received(client.take(b"".join(transport.out)))
    server._flush()
    transport.out.clear()
    spent = 0.0
    for _ in range(rounds):
        wire = client.calls(batch, body)
        t = time.perf_counter()
        server.data_received(wire)
        server._flush()  # what the loop runs next: the replies of this read, one write
        spent += time.perf_counter() - t
        out, transport.out = b"".join(transport.out), []
        back = client.take(out)
        if back:
            server.data_received(back)
    return spent / (batch * rounds)


def bench_hpack(rounds: int) -> tuple[float, float]:
    encoder = hpack.Encoder()
    first = encoder.encode(HEADERS)
    repeated = encoder.encode(HEADERS)
    plain, cached = hpack.Decoder(), HeaderDecoder(64 * 1024)
    plain.decode(first)
    cached.decode(first)
    t = time.perf_counter()
    for _ in range(rounds):
        plain.decode(repeated, raw=True)
    t_plain = (time.perf_counter() - t) / rounds
    t = time.perf_counter()
    for _ in range(rounds):
        cached.decode(repeated)
    return t_plain, (time.perf_counter() - t) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--message-bytes", type=int, default=2060, help="2060: mlp's ModelInferRequest")
    args = parser.parse_args()
    body = b"\x00" + args.message_bytes.to_bytes(4, "big") + b"x" * args.message_bytes
    for name, run in (("h2", lambda: bench_h2(args.batch, args.rounds, body)),
                      ("grpcwire", lambda: asyncio.run(bench_grpcwire(args.batch, args.rounds, body)))):
        run()  # warm
        print(f"{name:9s} {min(run() for _ in range(3)) * 1e6:8.1f} µs per call (server side, batch {args.batch})")
    plain, cached = bench_hpack(20_000)
    print(f"hpack decode of a repeated block: {plain * 1e6:.1f} µs, with the cache {cached * 1e6:.2f} µs")


if __name__ == "__main__":
    main()
