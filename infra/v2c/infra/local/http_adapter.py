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

Hostile clients (`HttpLimits`; each bound is configurable): an oversized
declared body is refused from the headers (413), `Transfer-Encoding:
chunked` with 411 (every body has a length, so every limit applies before
reading), slow heads and slow bodies with 408 and a closed connection.
Waiting costs no thread: uvicorn reads every connection on one event loop,
and a handler's thread starts only once the whole body is there (streaming
routes excepted: their thread reads, within the same bounds). The body's
bounds are in `v2c.infra.local.http_body`, the head's and uvicorn's own
refusals in `v2c.infra.local.http_protocol`.

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

`metrics` (optional) answers `GET /metrics` in the adapter itself, before
any event is built: the process's Prometheus registry (`v2c api serve`
passes `v2c.infra.local.api_metrics`), which the Lambda behind API Gateway
would not have. No credential, like `/health`: the server listens on
loopback only, where Prometheus scrapes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit

import uvicorn

from v2c.contract.errors import NotAuthorized, V2CError
from v2c.infra.local.api_gateway_event import (
    Answer,
    LocalContext,
    build_event,
    header_name,
    parse_result,
)
from v2c.infra.local.http_body import (
    ByteStream,
    ClientGone,
    HttpLimits,
    Message,
    Receive,
    RequestBody,
    RequestTimeout,
    ThreadStream,
)
from v2c.infra.local.http_protocol import ApiConfig, ApiProtocol, error_body
from v2c.infra.net import LOOPBACK

log = logging.getLogger("v2c.infra.local.http_adapter")  # also when run as __main__

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
Scope = Mapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

StreamingRoute = Callable[[ByteStream, int, Mapping[str, str]], tuple[int, Any]]
StreamingAuth = Callable[[Mapping[str, Any]], object]
# `GET /metrics`: (content type, body) of the process's Prometheus registry.
MetricsSource = Callable[[], tuple[str, bytes]]

METRICS_PATH: Final = "/metrics"
PRINCIPAL_HEADER: Final = "X-V2C-Principal"
QUERY_HEADER: Final = "X-V2C-Query"
_ADAPTER_HEADERS: Final = frozenset({PRINCIPAL_HEADER.lower(), QUERY_HEADER.lower()})
API_GATEWAY_MAX_BODY: Final = 10 * 1024 * 1024
LAMBDA_MAX_RESPONSE: Final = 6 * 1024 * 1024


def _json_error(status: int, detail: str, reason: str) -> Answer:
    return status, [("Content-Type", "application/json")], error_body(detail, reason)


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
        body = RequestBody(receive, length, self.owner.limits)
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
        body: RequestBody,
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
        if path == METRICS_PATH and owner.metrics is not None:
            return await self._metrics(method, owner.metrics)
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

    async def _metrics(self, method: str, metrics: MetricsSource) -> _Reply:
        """The process's own Prometheus registry, answered here, not by the handler."""
        if method not in ("GET", "HEAD"):
            return _reply(_json_error(405, "GET /metrics only", "method_not_allowed"))
        try:
            content_type, body = await self.owner.run(metrics)
        except Exception:
            log.exception("metrics exposition failed")
            return _reply(_json_error(500, "metrics unavailable", "internal_error"))
        return _reply((200, [("Content-Type", content_type)], b"" if method == "HEAD" else body))

    async def _stream(
        self,
        method: str,
        target: str,
        raw_headers: list[tuple[str, str]],
        body: RequestBody,
        route: StreamingRoute,
    ) -> _Reply | None:
        owner = self.owner
        parts = urlsplit(target)
        headers = _Headers((n, v) for n, v in raw_headers if n.lower() not in _ADAPTER_HEADERS)
        headers[QUERY_HEADER] = parts.query
        stream = ThreadStream(body, asyncio.get_running_loop(), owner.limits, owner.stopping)
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
        metrics: MetricsSource | None = None,
    ) -> None:
        self.handler = handler
        self.metrics = metrics
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
        # An answer leaves in two writes (head, then body): with Nagle on, the body
        # waited for the client's delayed ACK, ~40 ms on every answer (measured by
        # `v2c bench dashboard`). Accepted sockets inherit the option (Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        limits = self.limits
        config = ApiConfig(
            _AsgiApp(self),
            http=ApiProtocol,
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
    from v2c.infra.local.process_logging import configure_process_logging

    configure_process_logging("v2c-api")
    from v2c.handlers.ota_api import lambda_handler

    with ApiHttpServer(lambda_handler, host=args.host, port=args.port) as server:
        print(f"serving {server.base_url}; Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
