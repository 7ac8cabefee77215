"""The one pure piece of the local API Gateway: an HTTP request as a REST (v1)
proxy event, and a Lambda proxy answer as an HTTP answer.

Kept apart from the server (`v2c.infra.local.http_adapter`) because it is what must
match AWS exactly and is unit-tested without a socket; the server only moves
bytes and enforces limits. See the server's docstring for which fields are
set and why `requestContext.authorizer` never is.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from v2c.infra.net import LOOPBACK

Answer = tuple[int, list[tuple[str, str]], bytes]

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


def parse_result(result: Mapping[str, Any]) -> Answer:
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


def header_name(raw: str) -> str:
    """`content-type` → `Content-Type`: the server hands names lower-cased;
    API Gateway passes the client's, which is nearly always this form."""
    return "-".join(part[:1].upper() + part[1:] for part in raw.split("-"))
