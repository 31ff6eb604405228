"""One HTTP/2 client connection of the gRPC server: frames, flow control, streams.

The connection parses frames as they arrive, answers SETTINGS and PING, keeps both flow
control windows (it replenishes the client's when half is used, and holds back DATA while
the client's is spent), cuts each stream's DATA into gRPC messages (5-byte prefix,
optional gzip/deflate) and hands requests to the server (``Calls``). Replies are queued
and written once per event-loop turn, so the answers of one batch leave in one
``transport.write``. A stream reset by the client, or a lost connection, cancels its call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kubeinfer.runtime.server.grpcwire import frames as f
from kubeinfer.runtime.server.grpcwire.headers import HeaderDecoder
from kubeinfer.runtime.server.grpcwire.sending import Outbox
from kubeinfer.runtime.server.grpcwire.streams import INTERNAL, Calls, MessageError, Stream, inflate, take_messages

log = logging.getLogger(__name__)

#: what this server announces: the client may send this much per stream before an update
STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME = 1024 * 1024
MAX_STREAMS = 4096
MAX_HEADER_LIST = 64 * 1024
MAX_MESSAGE_TEXT = 4096  # longest grpc-message sent


class Connection(asyncio.Protocol):
    def __init__(self, calls: Calls, on_close: Callable[[Connection], None]) -> None:
        self.calls = calls
        self._on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self._buf = bytearray()
        self._preface = False
        self._last_id = 0
        self._goaway_at: int | None = None  # last stream id accepted, once draining
        self._headers_of: Stream | None = None  # a header block continues on this stream
        self._block = bytearray()
        self._block_ends = False
        self._decoder = HeaderDecoder(MAX_HEADER_LIST)
        self._initial_send = f.DEFAULT_WINDOW
        self._recv_window = CONNECTION_WINDOW
        self._recv_used = 0
        self._blocked: dict[int, Stream] = {}  # streams with DATA held back by flow control
        self._outbox = Outbox(asyncio.get_running_loop(), self._flush)
        self.closed = False

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self._outbox.out.append(
            f.settings({
                f.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                f.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                f.MAX_FRAME_SIZE: MAX_FRAME,
                f.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            })
            + f.window_update(0, CONNECTION_WINDOW - f.DEFAULT_WINDOW)
        )
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buf = self._buf
        buf += data
        try:
            at = 0
            if not self._preface:
                if len(buf) < len(f.PREFACE):
                    if not f.PREFACE.startswith(bytes(buf)):
                        raise f.ProtocolError("not an HTTP/2 connection preface")
                    return
                if not buf.startswith(f.PREFACE):
                    raise f.ProtocolError("not an HTTP/2 connection preface")
                self._preface = True
                at = len(f.PREFACE)
            end = len(buf)
            while end - at >= 9:
                length, kind, flags, stream_id = f.parse_head(buf, at)
                if length > MAX_FRAME:
                    raise f.ProtocolError("frame larger than SETTINGS_MAX_FRAME_SIZE", f.FRAME_SIZE_ERROR)
                if end - at < 9 + length:
                    break
                payload = bytes(buf[at + 9 : at + 9 + length])
                at += 9 + length
                self._frame(kind, flags, stream_id, payload)
            del buf[:at]
            self._replenish()
        except f.ProtocolError as exc:
            self._fail(exc)
            return
        self._flush()

    def connection_lost(self, exc) -> None:
        self.closed = True
        for stream in list(self.streams.values()):
            self._forget(stream, cancel=True)
        self._on_close(self)

    def pause_writing(self) -> None:
        self.transport.pause_reading()  # no more requests while replies cannot leave

    def resume_writing(self) -> None:
        if not self.closed:
            self.transport.resume_reading()

    # -- frames -----------------------------------------------------------------------
    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._headers_of is not None and kind != f.CONTINUATION:
            raise f.ProtocolError("a header block was interrupted")
        if kind == f.DATA:
            self._data(flags, stream_id, payload)
        elif kind == f.HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == f.CONTINUATION:
            if self._headers_of is None or self._headers_of.id != stream_id:
                raise f.ProtocolError("CONTINUATION without a header block")
            self._header_fragment(self._headers_of, payload, flags)
        elif kind == f.SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == f.WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == f.PING:
            if len(payload) != 8 or stream_id:
                raise f.ProtocolError("bad PING", f.FRAME_SIZE_ERROR)
            if not flags & f.ACK:
                self._outbox.out.append(f.frame(f.PING, f.ACK, 0, payload))
        elif kind == f.RST_STREAM:
            if len(payload) != 4 or not stream_id:
                raise f.ProtocolError("bad RST_STREAM", f.FRAME_SIZE_ERROR)
            stream = self.streams.get(stream_id)
            if stream is not None:
                self._forget(stream, cancel=True)
        elif kind == f.GOAWAY:
            pass  # the client stops; its open streams still get their answers
        elif kind == f.PUSH_PROMISE:
            raise f.ProtocolError("a client cannot push")
        # PRIORITY and unknown frame types are ignored (RFC 9113 5.5)

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        self._recv_window -= size
        self._recv_used += size
        if self._recv_window < 0:
            raise f.ProtocolError("the connection's flow-control window was exceeded", f.FLOW_CONTROL_ERROR)
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_done:
            if not stream_id or stream_id > self._last_id:
                raise f.ProtocolError("DATA on a stream that was never opened")
            return  # a stream this server already finished or reset: dropped
        stream.recv_window -= size
        stream.recv_used += size
        if stream.recv_window < 0:
            self._reset(stream, f.FLOW_CONTROL_ERROR)
            return
        if not stream.done:
            limit = self.calls.max_message_bytes
            try:
                for compressed, message in take_messages(stream, f.strip_padding(flags, payload), limit):
                    if compressed:
                        message = inflate(stream.encoding, message, limit)
                    self.calls.request(self, stream, message)
                    if stream.done:
                        break
            except MessageError as exc:
                self.answer(stream, exc.code, exc.text)
        if flags & f.END_STREAM:
            self._end_of_requests(stream)
        elif stream.recv_used >= STREAM_WINDOW // 2 and not stream.remote_done:
            self._outbox.out.append(f.window_update(stream.id, stream.recv_used))  # half used
            stream.recv_window += stream.recv_used
            stream.recv_used = 0

    def _end_of_requests(self, stream: Stream) -> None:
        stream.remote_done = True
        if stream.buf and not stream.done:
            self.answer(stream, INTERNAL, "the request ended inside a message")
            return
        if not stream.done:
            self.calls.half_closed(self, stream)
        if stream.done:
            self._drop(stream)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        payload = f.strip_padding(flags, payload)
        if flags & f.PRIORITY_FLAG:
            payload = payload[5:]
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id % 2 == 0 or stream_id <= self._last_id:
                if stream_id and stream_id <= self._last_id and stream_id % 2:
                    stream = Stream(stream_id, 0, 0)  # trailers of a stream already finished
                    stream.done = stream.remote_done = True
                else:
                    raise f.ProtocolError(f"bad stream id {stream_id} for a new stream")
            else:
                self._last_id = stream_id
                stream = Stream(stream_id, self._initial_send, STREAM_WINDOW)
                self.streams[stream_id] = stream
        self._block_ends = bool(flags & f.END_STREAM)
        self._block = bytearray()
        self._header_fragment(stream, payload, flags)

    def _header_fragment(self, stream: Stream, payload: bytes, flags: int) -> None:
        self._block += payload
        if len(self._block) > MAX_HEADER_LIST:
            raise f.ProtocolError("header block too large", f.ENHANCE_YOUR_CALM)
        if not flags & f.END_HEADERS:
            self._headers_of = stream
            return
        self._headers_of = None
        headers = self._decoder.decode(bytes(self._block))
        if stream.done:  # trailers of a stream already answered
            if self._block_ends:
                self._drop(stream)
            return
        if stream.headers:  # trailers: the client's end of stream
            if not self._block_ends:
                raise f.ProtocolError("a second header block without END_STREAM")
            self._end_of_requests(stream)
            return
        stream.headers = headers
        if self._goaway_at is not None and stream.id > self._goaway_at:
            self._reset(stream, f.REFUSED_STREAM)
        elif len(self.streams) > MAX_STREAMS:
            self._reset(stream, f.REFUSED_STREAM)
        elif self.calls.open(self, stream) and self._block_ends:
            self._end_of_requests(stream)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise f.ProtocolError("SETTINGS on a stream")
        if flags & f.ACK:
            return
        for key, value in f.parse_settings(payload):
            if key == f.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise f.ProtocolError("SETTINGS_INITIAL_WINDOW_SIZE too large", f.FLOW_CONTROL_ERROR)
                delta = value - self._initial_send
                self._initial_send = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == f.MAX_FRAME_SIZE:
                if not f.DEFAULT_MAX_FRAME <= value <= 2**24 - 1:
                    raise f.ProtocolError("bad SETTINGS_MAX_FRAME_SIZE")
                self._outbox.max_frame = value
        self._outbox.out.append(f.frame(f.SETTINGS, f.ACK, 0))
        self._resume_all()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise f.ProtocolError("bad WINDOW_UPDATE", f.FRAME_SIZE_ERROR)
        increment = f.u32(payload)
        if not stream_id:
            if not increment:
                raise f.ProtocolError("WINDOW_UPDATE of 0")
            self._outbox.window += increment
            if self._outbox.window > f.MAX_WINDOW:
                raise f.ProtocolError("window above 2^31-1", f.FLOW_CONTROL_ERROR)
            self._resume_all()
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            self._resume(stream)

    def _replenish(self) -> None:
        """The connection's WINDOW_UPDATE once half its window was used (a stream's:
        ``_data``)."""
        if self._recv_used >= CONNECTION_WINDOW // 2:
            self._outbox.out.append(f.window_update(0, self._recv_used))
            self._recv_window += self._recv_used
            self._recv_used = 0

    # -- replies ----------------------------------------------------------------------
    def send_message(self, stream: Stream, message: bytes) -> None:
        """One response message (the response headers first, once)."""
        if stream.done or self.closed:
            return
        if not stream.started:
            stream.started = True
            self._outbox.out.append(f.frame(f.HEADERS, f.END_HEADERS, stream.id, f.RESPONSE_HEADERS))
        data = b"\x00" + len(message).to_bytes(4, "big") + message
        if stream.pending:
            stream.pending.append(data)
        else:
            self._outbox.data(stream, data)
            if stream.pending:
                self._blocked[stream.id] = stream
        self._outbox.soon()

    def finish(self, stream: Stream, code: int = 0, message: str = "") -> None:
        """End ``stream`` with its trailers (``grpc-status`` ``code``)."""
        if stream.done or self.closed:
            return
        stream.done = True
        block = f.trailers(code, message[:MAX_MESSAGE_TEXT])
        if not stream.started:  # trailers-only reply
            block = f.RESPONSE_HEADERS + block
        trailer = f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream.id, block)
        if stream.pending:
            stream.tail = trailer  # after the DATA still held back
        else:
            self._outbox.out.append(trailer)
            self._closed_locally(stream)
        self._outbox.soon()

    def answer(self, stream: Stream, code: int, message: str) -> None:
        """An error reply for a stream whose call never started (or must stop)."""
        self.finish(stream, code, message)
        self._cancel_call(stream)

    def refuse(self, stream: Stream, status: int) -> None:
        """A non-gRPC HTTP reply (e.g. 415 for a request that is not gRPC)."""
        stream.done = True
        self._outbox.out.append(f.frame(f.HEADERS, f.END_HEADERS | f.END_STREAM, stream.id, f.status_only(status)))
        self._closed_locally(stream)

    def _resume(self, stream: Stream) -> None:
        if self.closed:
            return
        done = self._outbox.resume(stream)
        if not stream.pending:
            self._blocked.pop(stream.id, None)
        if done:
            self._closed_locally(stream)

    def _resume_all(self) -> None:
        for stream in list(self._blocked.values()):
            if self._outbox.window <= 0:
                break
            self._resume(stream)

    def _closed_locally(self, stream: Stream) -> None:
        if stream.remote_done:
            self._drop(stream)
        elif not stream.pending:
            # the answer is complete before the request: the client need not send the rest
            self._outbox.out.append(f.rst_stream(stream.id, f.NO_ERROR))
            stream.remote_done = True
            self._drop(stream)

    def _reset(self, stream: Stream, code: int) -> None:
        self._outbox.out.append(f.rst_stream(stream.id, code))
        stream.done = stream.remote_done = True
        self._forget(stream, cancel=True)

    def _cancel_call(self, stream: Stream) -> None:
        if stream.task is not None and not stream.task.done() and stream.task is not asyncio.current_task():
            stream.task.cancel()

    def _drop(self, stream: Stream) -> None:
        if stream.done and not stream.pending and stream.tail is None:
            self._forget(stream, cancel=False)

    def _forget(self, stream: Stream, *, cancel: bool) -> None:
        self.streams.pop(stream.id, None)
        self._blocked.pop(stream.id, None)
        if stream.timer is not None:
            stream.timer.cancel()
        if cancel:
            stream.done = True
            self._cancel_call(stream)
        if self._goaway_at is not None and not self.streams:
            self._outbox.soon()

    # -- output and shutdown ----------------------------------------------------------
    def _flush(self) -> None:
        if self._outbox.out and not self.closed:
            self.transport.write(self._outbox.take())
        if self._goaway_at is not None and not self.streams and not self.closed:
            self.transport.close()

    def drain(self) -> None:
        """No new streams (GOAWAY); the connection closes once its streams are answered."""
        if self._goaway_at is None and not self.closed:
            self._goaway_at = self._last_id
            self._outbox.out.append(f.goaway(self._last_id))
            self._outbox.soon()

    def abort(self) -> None:
        if not self.closed:
            self.transport.abort()

    def _fail(self, exc: f.ProtocolError) -> None:
        log.debug("gRPC connection error: %s", exc)
        if self.transport is not None and not self.closed:
            self._outbox.out.append(f.goaway(self._last_id, exc.code, str(exc).encode()[:256]))
            self.transport.write(self._outbox.take())
            self.transport.close()
        self.closed = True
