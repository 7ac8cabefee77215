"""The request body of the local API, read within limits a hostile client cannot stretch.

An API Gateway in front of a Lambda function never lets a slow or endless
body reach the function; the local adapter must not either, or one client
could hold a worker thread (or the memory of a 500 MB upload) for as long as
it likes. So the body is read on the event loop, where waiting costs no
thread, and only within `HttpLimits`:

* a declared `Content-Length` over the limit is answered 413 at once, from
  the headers, before a byte of the body is read; a modest excess is read
  and dropped afterwards (`RequestBody.drain`) so the client sees the answer,
  a huge one is not;
* the request line and headers must arrive within `header_timeout_s` (the
  protocol's head timer, `v2c.infra.local.http_protocol`);
* a body must keep coming: no gap longer than `read_timeout_s`, and no
  slower on average than `min_body_rate` bytes/s once `body_grace_s` have
  passed; past either, `RequestTimeout` (408, and the connection closes).

A streaming route reads the same body from a worker thread (`ThreadStream`)
under the same bounds, so a firmware upload streams without exemption.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from v2c.contract.errors import V2CError

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]

MAX_REQUEST_LINE: Final = 64 * 1024
HEADER_TIMEOUT_S: Final = 10.0


class ByteStream(Protocol):
    """What a streaming route reads the body from."""

    def read(self, size: int = -1, /) -> bytes: ...


class RequestTimeout(V2CError):
    """The client did not send its request (headers or body) in time."""

    reason = "request_timeout"
    http_status = 408


class ClientGone(V2CError):
    """The client closed the connection before its body was complete."""

    reason = "client_closed_request"
    http_status = 400


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How long and how much a client may take (see the module docstring)."""

    header_timeout_s: float = HEADER_TIMEOUT_S
    read_timeout_s: float = 15.0
    body_grace_s: float = 30.0
    min_body_rate: int = 64 * 1024  # bytes/s, averaged, after the grace
    max_request_line: int = MAX_REQUEST_LINE
    max_head_bytes: int = 96 * 1024  # request line and headers together
    drain_factor: int = 4  # read and drop up to this many times max_body_bytes after a 413
    keep_alive_s: int = 5  # an idle kept-alive connection is closed after this


class RequestBody:
    """The request body as it arrives, within `HttpLimits` (event-loop side)."""

    def __init__(self, receive: Receive, length: int, limits: HttpLimits) -> None:
        self._receive = receive
        self._limits = limits
        self._buffer = bytearray()
        self._more = length > 0
        self.remaining = length  # declared bytes not yet handed out
        self.received = 0
        self.started = time.monotonic()

    async def _fill(self) -> None:
        """Wait for the next part of the body, within the read timeout and the
        average-rate deadline; `RequestTimeout` past either."""
        limits = self._limits
        deadline = self.started + limits.body_grace_s + self.received / limits.min_body_rate
        budget = min(limits.read_timeout_s, deadline - time.monotonic())
        slow = f"the request body arrives slower than {limits.min_body_rate} bytes/s"
        if budget <= 0:
            raise RequestTimeout(slow)
        try:
            message = await asyncio.wait_for(self._receive(), budget)
        except TimeoutError:
            stalled = budget >= limits.read_timeout_s
            raise RequestTimeout(
                f"no part of the request body came for {limits.read_timeout_s:g} s"
                if stalled
                else slow
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientGone("the client closed the connection during its body")
        chunk = message.get("body", b"")
        self._more = bool(message.get("more_body", False))
        self.received += len(chunk)
        self._buffer.extend(chunk)

    async def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes as soon as some are there (all of it for -1);
        b"" at the end."""
        if size is None or size < 0:
            while self._more:
                await self._fill()
            want = len(self._buffer)
        else:
            while not self._buffer and self._more:
                await self._fill()
            want = min(size, len(self._buffer))
        data = bytes(self._buffer[:want])
        del self._buffer[:want]
        self.remaining = max(0, self.remaining - len(data))
        return data

    async def drain(self, limit: int) -> None:
        """Read and drop up to `limit` unread bytes (so the client, still
        sending, reads the answer instead of a reset); a timeout ends it."""
        left = min(self.remaining, limit)
        with contextlib.suppress(V2CError):
            while left > 0:
                chunk = await self.read(min(left, 1024 * 1024))
                if not chunk:
                    break
                left -= len(chunk)


class ThreadStream:
    """`RequestBody` as a blocking stream for a streaming route on a worker thread."""

    def __init__(
        self,
        body: RequestBody,
        loop: asyncio.AbstractEventLoop,
        limits: HttpLimits,
        stopping: threading.Event,
    ) -> None:
        self._body = body
        self._loop = loop
        self._wait = limits.read_timeout_s + 5.0
        self._stopping = stopping

    @property
    def remaining(self) -> int:
        return self._body.remaining

    def read(self, size: int = -1, /) -> bytes:
        future = asyncio.run_coroutine_threadsafe(self._body.read(size), self._loop)
        deadline = time.monotonic() + self._wait  # `RequestBody` has its own, shorter bounds
        while True:
            try:
                return future.result(0.5)
            except TimeoutError:
                # A stopping server's loop may never finish the read: do not wait for it.
                if self._stopping.is_set() or time.monotonic() > deadline:
                    future.cancel()
                    raise RequestTimeout("the request body stopped arriving") from None

    def readable(self) -> bool:
        return True


# -- the ASGI application --------------------------------------------------------
