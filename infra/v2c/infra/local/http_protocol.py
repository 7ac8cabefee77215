"""uvicorn's HTTP/1.1 protocol as the local API's front door: every refusal in the API's shape.

uvicorn answers what it refuses itself (a malformed request line, a head
over the size limit) with a plain-text 400, and bounds an idle kept-alive
connection but not a request head that trickles in byte by byte. API
Gateway does neither, and a client of the API parses `{detail, reason}`
JSON on every error. `ApiProtocol` changes just that: its own refusals are
JSON, a `Content-Length` too long for h11 to parse is a 413 (a well-formed
claim of a huge body, not a malformed request), and a head that does not
arrive within `header_timeout_s` gets 408 and a closed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Final

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from v2c.infra.local.http_body import HEADER_TIMEOUT_S


def error_body(detail: str, reason: str) -> bytes:
    return json.dumps({"detail": detail, "reason": reason}).encode()


class ApiConfig(uvicorn.Config):
    header_timeout_s: float = HEADER_TIMEOUT_S


class ApiProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with two changes: its own 400 (malformed
    request) answers in the API's JSON shape, and a request line and headers
    that do not arrive within `header_timeout_s` get 408 and a closed
    connection (uvicorn bounds an idle kept-alive connection, not a slow head)."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            # h11 refuses a Content-Length of more than 20 digits as malformed
            # (400); it is a well-formed claim of a huge body: 413, like any.
            pending = self.conn.trailing_data[0] + data
            end = pending.find(b"\r\n\r\n")
            if end >= 0 and _HUGE_LENGTH.search(pending[:end]):
                self._cancel_head_timer()
                self.transport.write(
                    _raw_answer(413, "the declared Content-Length is over every limit of this API")
                )
                self.transport.close()
                return
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        timeout = float(getattr(self.config, "header_timeout_s", HEADER_TIMEOUT_S))
        self._head_timer = self.loop.call_later(timeout, self._head_timed_out, self.cycle)

    def _head_timed_out(self, cycle: RequestResponseCycle | None) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not cycle or not (cycle is None or cycle.response_complete):
            return  # a request came (its body has the application's own bounds)
        pending, _ = self.conn.trailing_data
        if pending:  # part of a request line or headers: say why
            self.transport.write(
                _raw_answer(408, "the request line and headers did not arrive in time")
            )
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._cancel_head_timer()
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.write(
            _raw_answer(
                400,
                "malformed HTTP request (request line, headers or framing), "
                "or its head is over the size limit",
            )
        )
        self.transport.close()


_HUGE_LENGTH: Final = re.compile(rb"(?im)^content-length[ \t]*:[ \t]*[0-9]{19,}[ \t]*$")


def _raw_answer(status: int, detail: str) -> bytes:
    reason = {400: "bad_request", 408: "request_timeout", 413: "payload_too_large"}[status]
    phrase = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large"}[status]
    body = error_body(detail, reason)
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
