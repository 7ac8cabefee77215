"""API Gateway on loopback: HTTP requests in, REST proxy events to a Lambda handler, answers out.

The fleet-manager API is a Lambda function behind API Gateway (REST, proxy
integration). Locally, this thin server plays API Gateway's part, so the
handler runs the production code path and a test talks plain HTTP to it:

* each request becomes a v1 proxy event as API Gateway builds it: `path` as
  received (still percent-encoded), `headers` (last value of each) and
  `multiValueHeaders`, decoded `queryStringParameters` (last value) and
  `multiValueQueryStringParameters`, `body` as text, or base64 with
  `isBase64Encoded` when it is not UTF-8, and a `requestContext` with a fresh
  `requestId` and the stage. `requestContext.authorizer` is never set: only a
  real API Gateway authorizer may vouch for a caller;
* the answer's `statusCode`, `headers`, `multiValueHeaders` and (base64)
  `body` become the HTTP answer;
* API Gateway's limits: a request body over `max_body_bytes` (10 MB) is
  refused with 413 before the handler runs, an answer over Lambda's 6 MB
  payload limit or a handler that raises becomes 502; errors are JSON with a
  `detail`, like the API's own.

Powertools keeps the current event on a class attribute, so handler calls
are serialized, as one Lambda container serializes its invocations.

`streaming_routes` is the one deliberate difference from API Gateway: a
(method, exact path) listed there skips the event and gets the socket's
body stream instead (`route(stream, content_length, headers) -> (status,
json body)`), unbounded by `max_body_bytes` and read without buffering, so
a 500 MB firmware upload works locally. In AWS such uploads go to S3 by
presigned URL instead. A streaming route is authenticated by
`streaming_auth` (given the request's headers as an event; raising a
`V2CError` refuses it; the `id` of what it returns reaches the route as the
`X-V2C-Principal` header, which a client cannot set) and runs concurrently
with other requests. The request's query string (raw, percent-encoded)
reaches it as the `X-V2C-Query` header, also set only by the adapter. Its
`V2CError`s answer like the API's.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Protocol, Self
from urllib.parse import parse_qsl, urlsplit

from v2c.contract.errors import NotAuthorized, V2CError
from v2c.infra.net import LOOPBACK

log = logging.getLogger("v2c.infra.http_adapter")  # also when run as __main__

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


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
_CHUNK: Final = 1024 * 1024
_HOP_BY_HOP: Final = frozenset(
    {"connection", "content-length", "keep-alive", "transfer-encoding", "upgrade"}
)


@dataclass(frozen=True, slots=True)
class LocalContext:
    """The parts of a Lambda context object handlers and Powertools read."""

    aws_request_id: str
    function_name: str = "v2c-ota-api"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:v2c-ota-api"
    memory_limit_in_mb: int = 512
    deadline_ms: int = 0

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


def build_event(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    request_id: str,
    stage: str = "local",
    source_ip: str = LOOPBACK,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """The API Gateway REST (v1) proxy event of one HTTP request."""
    parts = urlsplit(target)
    path = parts.path or "/"
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    query_single: dict[str, str] = {}
    query_multi: dict[str, list[str]] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query_single[key] = value
        query_multi.setdefault(key, []).append(value)
    text: str | None = None
    encoded = False
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
    when = int(time.time() * 1000) if now_ms is None else now_ms
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": query_single or None,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "requestId": request_id,
            "requestTimeEpoch": when,
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": source_ip, "userAgent": single.get("User-Agent")},
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def parse_result(result: Mapping[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body bytes of a Lambda proxy answer."""
    status = int(result.get("statusCode", 200))
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, values in (result.get("multiValueHeaders") or {}).items():
        seen.add(name.lower())
        headers.extend((name, str(v)) for v in values)
    for name, value in (result.get("headers") or {}).items():
        if name.lower() not in seen:
            headers.append((name, str(value)))
    raw = result.get("body") or ""
    if result.get("isBase64Encoded"):
        body = base64.b64decode(raw)
    else:
        body = raw.encode() if isinstance(raw, str) else bytes(raw)
    headers = [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP]
    return status, headers, body


def _json_error(status: int, detail: str, reason: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"detail": detail, "reason": reason}).encode()
    return status, [("Content-Type", "application/json")], body


def _v2c_error(error: V2CError) -> tuple[int, list[tuple[str, str]], bytes]:
    from v2c.handlers.api.auth import challenge
    from v2c.handlers.api.errors import v2c_error_response

    response = v2c_error_response(error)
    headers = [(k, str(v)) for k, v in response.headers.items()]
    if isinstance(error, NotAuthorized) and error.http_status == 401:
        headers.append(("WWW-Authenticate", challenge(error)))
    return response.status_code, headers, str(response.body).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ApiHttpServer


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    timeout = 60  # a client silent this long loses its connection
    # Headers and body leave in two writes: without TCP_NODELAY the second
    # waits for the client's delayed ACK (~40 ms a request on keep-alive).
    disable_nagle_algorithm = True

    def __getattr__(self, name: str) -> Any:
        # http.server dispatches to `do_<METHOD>`: every method goes to the
        # handler, which answers 405 for the ones no route serves (http.server
        # alone would answer 501, a server error, to an unknown method).
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, URI or headers too
        long) in the API's JSON shape instead of an HTML page."""
        self.close_connection = True
        if code == HTTPStatus.REQUEST_URI_TOO_LONG:
            # A query past http.server's 64 KiB line is invalid input like any
            # other over-long parameter: the API answers those 400 (its OpenAPI
            # document lists 400, and clients handle it), not a bare 414.
            code, message = 400, "request line too long: the query exceeds 64 KiB"
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        body = json.dumps({"detail": message or phrase, "reason": "bad_request"}).encode()
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def _serve(self) -> None:
        owner = self.server.owner
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        method = self.command
        status, headers, body = self._answer(owner, method, request_id)
        headers.append(("X-Request-Id", request_id))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)
        log.info(
            '%s "%s %s" %d %d %.1fms %s',
            self.client_address[0],
            method,
            self.path[:200],
            status,
            len(body),
            (time.perf_counter() - started) * 1000,
            request_id,
        )

    def _answer(
        self, owner: ApiHttpServer, method: str, request_id: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            return _json_error(
                411, "send a Content-Length; chunked bodies are not accepted", "length_required"
            )
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            return _json_error(400, "invalid Content-Length", "invalid_input")
        route = owner.streaming_routes.get((method, urlsplit(self.path).path))
        if route is not None:
            return self._stream(owner, route, length)
        if length > owner.max_body_bytes:
            self._discard(length, owner.max_body_bytes * 4)
            return _json_error(
                413, f"request body over {owner.max_body_bytes} bytes", "payload_too_large"
            )
        body = self.rfile.read(length) if length else b""
        event = build_event(
            method,
            self.path,
            self.headers.items(),
            body,
            request_id=request_id,
            stage=owner.stage,
            source_ip=self.client_address[0],
        )
        context = LocalContext(
            aws_request_id=request_id,
            deadline_ms=int(time.time() * 1000) + owner.timeout_ms,
        )
        try:
            with owner.handler_lock:
                result = owner.handler(event, context)
            status, headers, payload = parse_result(result)
        except Exception:
            log.exception("handler failed: %s %s", method, self.path[:200])
            return _json_error(502, "the API handler failed", "bad_gateway")
        if len(payload) > LAMBDA_MAX_RESPONSE:
            log.error("answer of %s bytes exceeds Lambda's payload limit", len(payload))
            return _json_error(502, "the answer exceeds the Lambda payload limit", "bad_gateway")
        return status, headers, payload

    def _stream(
        self, owner: ApiHttpServer, route: StreamingRoute, length: int
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {
            name: value
            for name, value in self.headers.items()
            if name.lower() not in _ADAPTER_HEADERS  # only the adapter sets them
        }
        headers[QUERY_HEADER] = urlsplit(self.path).query
        reader = _BoundedReader(self.rfile, length)
        try:
            if owner.streaming_auth is not None:
                event = {"headers": headers, "path": urlsplit(self.path).path}
                principal_id = getattr(owner.streaming_auth(event), "id", None)
                if isinstance(principal_id, str):
                    headers[PRINCIPAL_HEADER] = principal_id
            status, answer = route(reader, length, headers)
            result = status, [("Content-Type", "application/json")], json.dumps(answer).encode()
        except V2CError as error:
            result = _v2c_error(error)
        except Exception:
            log.exception("streaming route failed: %s %s", self.command, self.path[:200])
            result = _json_error(500, "internal server error", "internal_error")
        if reader.remaining:
            # Unread body bytes would be parsed as the next request: drain a
            # little so the client sees the answer, then close.
            self._discard(reader.remaining, owner.max_body_bytes)
        return result

    def _discard(self, length: int, limit: int) -> None:
        """Read and drop up to `limit` of `length` unread body bytes, then
        close: closing with unread bytes would reset the connection before
        the client reads the answer."""
        self.close_connection = True
        left = min(length, limit)
        with contextlib.suppress(OSError):
            while left > 0:
                chunk = self.rfile.read(min(_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)


class _BoundedReader:
    """The request body as a stream that ends at Content-Length."""

    def __init__(self, raw: ByteStream, length: int) -> None:
        self._raw = raw
        self.remaining = length

    def read(self, size: int = -1, /) -> bytes:
        if self.remaining <= 0:
            return b""
        want = self.remaining if size is None or size < 0 else min(size, self.remaining)
        data = self._raw.read(want)
        self.remaining -= len(data)
        return data

    def readable(self) -> bool:
        return True


class ApiHttpServer:
    """The adapter on a loopback port; a context manager, or `start()`/`stop()`."""

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
        self.handler_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the API server is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        """Bind (port 0: the kernel picks, no race with parallel tests) and serve."""
        if self._server is not None:
            return self
        server = _Server((self.host, self._port), _RequestHandler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="api-http", daemon=True
        )
        self._thread.start()
        log.info("API listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop accepting, finish the request loop, close the socket; safe twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

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
    """`python -m v2c.infra.http_adapter`: the API from this environment, until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m v2c.infra.http_adapter")
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
