"""The send side of a gRPC connection: frames queued per loop turn, DATA under flow control.

Frames queue in ``out`` and leave in one ``transport.write`` when the loop next runs
(``soon``), so the replies of one batch share one syscall. DATA goes out as far as both
windows (the connection's and the stream's, set by the client) allow; the rest waits on
the stream until a WINDOW_UPDATE, and the stream's trailers wait behind it.
"""

from __future__ import annotations

import asyncio

from kubeinfer.runtime.server.grpcwire import frames as f
from kubeinfer.runtime.server.grpcwire.streams import Stream


class Outbox:
    def __init__(self, loop: asyncio.AbstractEventLoop, flush) -> None:
        self.out: list[bytes] = []
        self.window = f.DEFAULT_WINDOW  # the connection's send window
        self.max_frame = f.DEFAULT_MAX_FRAME
        self._loop = loop
        self._flush = flush
        self._scheduled = False

    def soon(self) -> None:
        """Have the queued frames written when the loop next runs."""
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run_flush)

    def _run_flush(self) -> None:
        self._scheduled = False
        self._flush()

    def take(self) -> bytes:
        out, self.out = self.out, []
        return b"".join(out)

    def data(self, stream: Stream, data: bytes) -> None:
        """Queue as much of ``data`` as both windows allow; hold the rest on the stream."""
        allowed = min(self.window, stream.send_window)
        n = len(data)
        if n <= allowed and n <= self.max_frame:  # the common case: one frame
            self.out.append(f.frame(f.DATA, 0, stream.id, data))
            self.window -= n
            stream.send_window -= n
            return
        at = 0
        while at < n and allowed > 0:
            size = min(allowed, self.max_frame, n - at)
            self.out.append(f.frame(f.DATA, 0, stream.id, data[at : at + size]))
            at += size
            allowed -= size
            self.window -= size
            stream.send_window -= size
        if at < n:
            stream.pending.insert(0, data[at:])

    def resume(self, stream: Stream) -> bool:
        """Send what a window update allows; True once the stream's trailers left too."""
        while stream.pending and min(self.window, stream.send_window) > 0:
            self.data(stream, stream.pending.pop(0))
        self.soon()
        if not stream.pending and stream.tail is not None:
            self.out.append(stream.tail)
            stream.tail = None
            return True
        return False
