"""A stream of the gRPC server's HTTP/2 connection, and the gRPC message framing on it.

A gRPC message on the wire is a 1-byte compressed flag, a 4-byte big-endian length and
the message; with ``grpc-encoding: gzip`` or ``deflate`` a flagged message is compressed.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kubeinfer.runtime.server.grpcwire.connection import Connection

INTERNAL, RESOURCE_EXHAUSTED = 13, 8


class MessageError(Exception):
    """The stream ends with gRPC status ``code``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Stream:
    __slots__ = (
        "id", "headers", "encoding", "buf", "remote_done", "task", "send_window", "pending",
        "tail", "started", "recv_window", "recv_used", "inbox", "handler", "timer", "done",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.headers: list[tuple[bytes, bytes]] = []
        self.encoding = b""  # grpc-encoding of the requests
        self.buf = bytearray()  # DATA not yet cut into messages
        self.remote_done = False  # the client sent END_STREAM (or the stream was reset)
        self.task: asyncio.Task | None = None  # the call
        self.send_window = send_window
        self.pending: list[bytes] = []  # DATA payloads held back by flow control
        self.tail: bytes | None = None  # the trailers frame, held until the DATA left
        self.started = False  # response headers sent
        self.recv_window = recv_window
        self.recv_used = 0  # received since this stream's last WINDOW_UPDATE
        self.inbox: asyncio.Queue | None = None  # requests of a client-streaming call
        self.handler = None  # (method handler, context), set by the server
        self.timer: asyncio.TimerHandle | None = None  # the deadline
        self.done = False  # trailers (or a reset) sent: nothing more goes out

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Calls(Protocol):
    """The server side of a connection: what a stream's request becomes."""

    max_message_bytes: int

    def open(self, conn: Connection, stream: Stream) -> bool:
        """Headers of a new stream arrived; False if already answered (bad method...)."""

    def request(self, conn: Connection, stream: Stream, message: bytes) -> None:
        """A complete request message of ``stream``."""

    def half_closed(self, conn: Connection, stream: Stream) -> None:
        """The client sent everything on ``stream``."""


def take_messages(stream: Stream, data: bytes, limit: int) -> list[tuple[int, bytes]]:
    """The complete (flag, message) pairs once ``data`` arrived on ``stream``; the rest
    of a message stays buffered. Raises MessageError for one larger than ``limit``."""
    if not stream.buf and len(data) >= 5 and int.from_bytes(data[1:5], "big") == len(data) - 5:
        _check_size(len(data) - 5, limit)  # the common case: exactly one whole message
        return [(data[0], data[5:])]
    buf = stream.buf
    buf += data
    out = []
    while len(buf) >= 5:
        size = int.from_bytes(buf[1:5], "big")
        _check_size(size, limit)
        if len(buf) < 5 + size:
            break
        out.append((buf[0], bytes(buf[5 : 5 + size])))
        del buf[: 5 + size]
    return out


def inflate(encoding: bytes, message: bytes, limit: int) -> bytes:
    """A message sent with the compressed flag, decompressed (at most ``limit`` bytes)."""
    if encoding in (b"", b"identity"):
        raise MessageError(INTERNAL, "a compressed message without grpc-encoding")
    inflater = zlib.decompressobj(31 if encoding == b"gzip" else 15)
    try:
        out = inflater.decompress(message, limit + 1)
    except zlib.error as exc:
        raise MessageError(INTERNAL, f"cannot decompress the message: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise MessageError(RESOURCE_EXHAUSTED, f"decompressed message larger than max ({limit})")
    return out


def _check_size(size: int, limit: int) -> None:
    if size > limit:  # the words of grpc's own limit
        raise MessageError(RESOURCE_EXHAUSTED, f"received message larger than max ({size} vs. {limit})")
