"""API Gateway on loopback: HTTP requests in, REST proxy events to a Lambda handler, answers out.

The fleet-manager API is a Lambda function behind API Gateway (REST, proxy
integration). Locally, this server plays API Gateway's part, so the handler
runs the production code path and a test talks plain HTTP to it. The HTTP
itself is uvicorn's (an ASGI server, h11 underneath: connection handling,
keep-alive, framing, flow control); this module is the ASGI application
between it and the handler, plus the one pure piece, the translation:

* `build_event`: each request becomes a v1 proxy event as API Gateway builds
  it: `path` as received (still percent-encoded), `headers` (last value of
  each) and `multiValueHeaders`, decoded `queryStringParameters` (last value)
  and `multiValueQueryStringParameters`, `body` as text, or base64 with
  `isBase64Encoded` when it is not UTF-8, and a `requestContext` with a fresh
  `requestId` and the stage. `requestContext.authorizer` is never set: only a
  real API Gateway authorizer may vouch for a caller;
* `parse_result`: the answer's `statusCode`, `headers`, `multiValueHeaders`
  and (base64) `body` become the HTTP answer.

API Gateway's limits: a request body over `max_body_bytes` (10 MB) is
refused with 413 before the handler runs, an answer over Lambda's 6 MB
payload limit or a handler that raises becomes 502. Every refusal, the
server's own included (a malformed request line, a request line over 64 KiB,
a slow client), is JSON in the API's `{detail, reason}` shape.

Hostile clients (`HttpLimits`; each bound is configurable):

* a declared `Content-Length` over the limit is answered 413 at once, from
  the headers, before a byte of the body is read; a modest excess is read
  and dropped afterwards so the client sees the answer, a huge one is not;
* `Transfer-Encoding: chunked` is refused with 411 (every body has a length,
  so every limit applies before reading);
* slow clients: the request line and headers must arrive within
  `header_timeout_s` (else 408 and the connection is closed); a body must
  keep coming: no gap longer than `read_timeout_s`, and no slower on
  average than `min_body_rate` bytes/s once `body_grace_s` have passed
  (else 408, closed). Waiting costs no thread: uvicorn reads every
  connection on one event loop, and a handler's thread starts only once the
  whole body is there (streaming routes excepted: their thread reads, within
  the same bounds).

Concurrency: requests run concurrently, each handler call on a thread of a
pool of `workers`, so one slow request (a 100,000-target campaign being
created, an upload) never holds up another. The handler must be thread-safe
(`v2c.handlers.api.OtaApi` is: it keeps Powertools' per-request state per
thread).

`streaming_routes` is the one deliberate difference from API Gateway: a
(method, exact path) listed there skips the event and gets the body stream
instead (`route(stream, content_length, headers) -> (status, json body)`),
unbounded by `max_body_bytes` and read as it arrives (uvicorn's flow
control pauses the socket while the route is behind: memory stays at a
chunk), so a 500 MB firmware upload works locally. In AWS such uploads go
to S3 by presigned URL instead. A streaming route is authenticated by
`streaming_auth` (given the request's `headers`, `path` and `httpMethod` as
an event; raising a `V2CError` refuses it; the `id` of what it returns
reaches the route as the `X-V2C-Principal` header, which a client cannot
set). The request's query string (raw, percent-encoded) reaches it as the
`X-V2C-Query` header, also set only by the adapter. Its `V2CError`s answer
like the API's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Final, Protocol, Self
from urllib.parse import urlsplit

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from v2c.contract.errors import NotAuthorized, V2CError
from v2c.infra.local.api_gateway_event import (
    Answer,
    LocalContext,
    build_event,
    header_name,
    parse_result,
)
from v2c.infra.net import LOOPBACK

log = logging.getLogger("v2c.infra.local.http_adapter")  # also when run as __main__

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
Scope = Mapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ByteStream(Protocol):
    """What a streaming route reads the body from."""

    def read(self, size: int = -1, /) -> bytes: ...


StreamingRoute = Callable[[ByteStream, int, Mapping[str, str]], tuple[int, Any]]
StreamingAuth = Callable[[Mapping[str, Any]], object]

PRINCIPAL_HEADER: Final = "X-V2C-Principal"
QUERY_HEADER: Final = "X-V2C-Query"
_ADAPTER_HEADERS: Final = frozenset({PRINCIPAL_HEADER.lower(), QUERY_HEADER.lower()})
API_GATEWAY_MAX_BODY: Final = 10 * 1024 * 1024
LAMBDA_MAX_RESPONSE: Final = 6 * 1024 * 1024
MAX_REQUEST_LINE: Final = 64 * 1024


class RequestTimeout(V2CError):
    """The client did not send its request (headers or body) in time."""

    reason = "request_timeout"
    http_status = 408


class ClientGone(V2CError):
    """The client closed the connection before its body was complete."""

    reason = "client_closed_request"
    http_status = 400


HEADER_TIMEOUT_S: Final = 10.0


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


def _error_body(detail: str, reason: str) -> bytes:
    return json.dumps({"detail": detail, "reason": reason}).encode()


def _json_error(status: int, detail: str, reason: str) -> Answer:
    return status, [("Content-Type", "application/json")], _error_body(detail, reason)


def _v2c_error(error: V2CError) -> Answer:
    from v2c.handlers.api.auth import challenge
    from v2c.handlers.api.errors import v2c_error_response

    response = v2c_error_response(error)
    headers = [(k, str(v)) for k, v in response.headers.items()]
    if isinstance(error, NotAuthorized) and error.http_status == 401:
        headers.append(("WWW-Authenticate", challenge(error)))
    return response.status_code, headers, str(response.body).encode()


class _Headers(Mapping[str, str]):
    """Request headers for a streaming route: looked up case-insensitively."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            self._items[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: str) -> None:
        self._items[name.lower()] = (name, value)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


# -- the body, read within the limits ------------------------------------------


class _Body:
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


class _ThreadStream:
    """`_Body` as a blocking stream for a streaming route on a worker thread."""

    def __init__(
        self,
        body: _Body,
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
        deadline = time.monotonic() + self._wait  # `_Body` has its own, shorter bounds
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


@dataclass(slots=True)
class _Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    close: bool = False
    drain: int = 0  # unread body bytes to read and drop after answering


def _reply(answer: Answer, *, close: bool = False, drain: int = 0) -> _Reply:
    return _Reply(*answer, close=close, drain=drain)


class _AsgiApp:
    """One HTTP request → (streaming route | handler event) → one answer."""

    def __init__(self, owner: ApiHttpServer) -> None:
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; no websockets here
            return
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        method = str(scope["method"])
        target = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + bytes(scope["query_string"]).decode("latin-1")
        headers = [
            (header_name(name.decode("latin-1")), value.decode("latin-1"))
            for name, value in scope["headers"]
        ]
        length = 0
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value)  # h11 has checked it is a number
        body = _Body(receive, length, self.owner.limits)
        reply = await self._answer(scope, method, target, headers, body, request_id)
        if reply is None:  # the client left: nobody to answer
            return
        reply.headers.append(("X-Request-Id", request_id))
        reply.headers.append(("Content-Length", str(len(reply.body))))
        if reply.close or body.remaining:
            reply.headers.append(("Connection", "close"))
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in reply.headers],
            }
        )
        # The whole answer leaves now; the response ends after any drain.
        await send({"type": "http.response.body", "body": reply.body, "more_body": True})
        if reply.drain and body.remaining:
            await body.drain(reply.drain)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        client = scope.get("client") or ("-", 0)
        log.info(
            '%s "%s %s" %d %d %.1fms %s',
            client[0],
            method,
            target[:200],
            reply.status,
            len(reply.body),
            (time.perf_counter() - started) * 1000,
            request_id,
        )

    async def _answer(
        self,
        scope: Scope,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: _Body,
        request_id: str,
    ) -> _Reply | None:
        owner, limits = self.owner, self.owner.limits
        if len(target) > limits.max_request_line:
            # A query past 64 KiB is invalid input like any other over-long
            # parameter: the API answers those 400 (its OpenAPI document
            # lists 400, and clients handle it), not a bare 414.
            return _reply(
                _json_error(400, "request line too long: the query exceeds 64 KiB", "bad_request"),
                close=True,
            )
        if any(n.lower() == "transfer-encoding" for n, _ in headers):
            return _reply(
                _json_error(
                    411, "send a Content-Length; chunked bodies are not accepted", "length_required"
                ),
                close=True,
            )
        path = urlsplit(target).path
        route = owner.streaming_routes.get((method, path))
        if route is not None:
            return await self._stream(method, target, headers, body, route)
        if body.remaining > owner.max_body_bytes:
            return _reply(
                _json_error(
                    413, f"request body over {owner.max_body_bytes} bytes", "payload_too_large"
                ),
                close=True,
                drain=owner.max_body_bytes * limits.drain_factor,
            )
        try:
            data = await body.read()
        except RequestTimeout as error:
            return _reply(_v2c_error(error), close=True)
        except ClientGone:
            return None
        client = scope.get("client") or (LOOPBACK, 0)
        event = build_event(
            method,
            target,
            headers,
            data,
            request_id=request_id,
            stage=owner.stage,
            source_ip=str(client[0]),
        )
        context = LocalContext(
            aws_request_id=request_id,
            deadline_ms=int(time.time() * 1000) + owner.timeout_ms,
        )
        try:
            result = await owner.run(partial(owner.handler, event, context))
            answer = parse_result(result)
        except Exception:
            log.exception("handler failed: %s %s", method, target[:200])
            return _reply(_json_error(502, "the API handler failed", "bad_gateway"))
        if len(answer[2]) > LAMBDA_MAX_RESPONSE:
            log.error("answer of %s bytes exceeds Lambda's payload limit", len(answer[2]))
            return _reply(
                _json_error(502, "the answer exceeds the Lambda payload limit", "bad_gateway")
            )
        return _reply(answer)

    async def _stream(
        self,
        method: str,
        target: str,
        raw_headers: list[tuple[str, str]],
        body: _Body,
        route: StreamingRoute,
    ) -> _Reply | None:
        owner = self.owner
        parts = urlsplit(target)
        headers = _Headers((n, v) for n, v in raw_headers if n.lower() not in _ADAPTER_HEADERS)
        headers[QUERY_HEADER] = parts.query
        stream = _ThreadStream(body, asyncio.get_running_loop(), owner.limits, owner.stopping)
        auth = owner.streaming_auth

        def run() -> tuple[int, Any]:
            if auth is not None:
                event = {"headers": dict(headers), "path": parts.path, "httpMethod": method}
                principal_id = getattr(auth(event), "id", None)
                if isinstance(principal_id, str):
                    headers[PRINCIPAL_HEADER] = principal_id
            return route(stream, body.remaining, headers)

        try:
            status, answer = await owner.run(run)
            reply = _reply(
                (status, [("Content-Type", "application/json")], json.dumps(answer).encode())
            )
        except ClientGone:
            return None
        except RequestTimeout as error:
            return _reply(_v2c_error(error), close=True)
        except V2CError as error:
            reply = _reply(_v2c_error(error))
        except Exception:
            log.exception("streaming route failed: %s %s", method, target[:200])
            reply = _reply(_json_error(500, "internal server error", "internal_error"))
        if body.remaining:
            # Unread body bytes would be parsed as the next request: drain a
            # little so the client sees the answer, then close.
            reply.close, reply.drain = True, owner.max_body_bytes
        return reply


# -- the server: uvicorn, with JSON refusals and a deadline on request heads --------


class _Config(uvicorn.Config):
    header_timeout_s: float = HEADER_TIMEOUT_S


class _Protocol(H11Protocol):
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
    body = _error_body(detail, reason)
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class ApiHttpServer:
    """The API on a loopback port; a context manager, or `start()`/`stop()`."""

    def __init__(
        self,
        handler: LambdaHandler,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        stage: str = "local",
        max_body_bytes: int = API_GATEWAY_MAX_BODY,
        timeout_s: float = 29.0,
        streaming_routes: Mapping[tuple[str, str], StreamingRoute] | None = None,
        streaming_auth: StreamingAuth | None = None,
        limits: HttpLimits | None = None,
        workers: int = 16,
    ) -> None:
        self.handler = handler
        self.host = host
        self._port = port
        self.stage = stage
        self.max_body_bytes = max_body_bytes
        self.timeout_ms = int(timeout_s * 1000)  # API Gateway's integration timeout
        self.streaming_routes = dict(streaming_routes or {})
        if self.streaming_routes and streaming_auth is None:
            raise ValueError(
                "streaming routes bypass the handler's authentication: pass streaming_auth "
                "(`lambda event: None` serves them to anyone)"
            )
        self.streaming_auth = streaming_auth
        self.limits = limits or HttpLimits()
        self.workers = workers
        self.stopping = threading.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the API server is not running")
        return int(self._socket.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def run(self, call: Callable[[], Any]) -> Any:
        """`call()` on a worker thread, awaited on the event loop."""
        if self._executor is None:
            raise RuntimeError("the API server is not running")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def start(self) -> Self:
        """Bind (port 0: the kernel picks, no race with parallel tests) and serve."""
        if self._server is not None:
            return self
        self.stopping.clear()
        sock = socket.create_server((self.host, self._port), backlog=1024)
        limits = self.limits
        config = _Config(
            _AsgiApp(self),
            http=_Protocol,
            lifespan="off",
            log_config=None,
            access_log=False,  # the application logs its own access line
            server_header=False,
            timeout_keep_alive=limits.keep_alive_s,
            timeout_graceful_shutdown=5,
            h11_max_incomplete_event_size=limits.max_head_bytes,
        )
        config.header_timeout_s = limits.header_timeout_s
        server = uvicorn.Server(config)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="api-worker")
        self._socket, self._server = sock, server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="api-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the API server did not start")
            time.sleep(0.01)
        log.info("API listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop accepting, let answers in flight finish (5 s at most), close; safe twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.should_exit = True
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """`python -m v2c.infra.local.http_adapter`: the API from this environment, until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m v2c.infra.local.http_adapter")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=8216)  # the PRD's development port
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from v2c.handlers.ota_api import lambda_handler

    with ApiHttpServer(lambda_handler, host=args.host, port=args.port) as server:
        print(f"serving {server.base_url}; Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
