"""Synthetic API Gateway REST (v1 proxy) events for the API's unit tests."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from v2c.handlers.api import ApiAuth, ApiServices, OtaApi, build_app
from v2c.handlers.api.routes import health

API_KEY = "test-key-0123456789"
TOKEN = "test-token-abcdef"
AUTH = {"X-API-Key": API_KEY}
# Both credentials may do everything but approve (the approver's is separate).
PRINCIPAL = "tester"
ROLES = "viewer+fleet_manager+operator"
KEY_ENTRY = f"{PRINCIPAL}:{ROLES}:{API_KEY}"
TOKEN_ENTRY = f"{PRINCIPAL}-bearer:{ROLES}:{TOKEN}"


def rest_event(
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: str | bytes | dict[str, Any] | None = None,
    query: Mapping[str, str | list[str]] | None = None,
    request_context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An event as API Gateway sends it (both header and query forms)."""
    hdrs = dict(headers or {})
    encoded = False
    text: str | None
    if isinstance(body, dict):
        text = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, bytes):
        text, encoded = base64.b64encode(body).decode(), True
    else:
        text = body
    multi_query = {k: v if isinstance(v, list) else [v] for k, v in (query or {}).items()}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": hdrs or None,
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()} or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": None,
        "requestContext": {"requestId": "req-1", "stage": "test", **(request_context or {})},
        "body": text,
        "isBase64Encoded": encoded,
    }


def call(app: OtaApi, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any], Any]:
    """Status, headers (single-valued, lower-case names) and JSON body of one event."""
    result = app.resolve(rest_event(method, path, **kwargs), None)
    headers = {k.lower(): v[-1] for k, v in (result.get("multiValueHeaders") or {}).items()}
    body = result["body"]
    if result.get("isBase64Encoded"):
        return result["statusCode"], headers, base64.b64decode(body)
    return result["statusCode"], headers, json.loads(body) if body else None


def make_app(services: ApiServices | None = None, **kwargs: Any) -> OtaApi:
    """The frame with the health routes only (not other route modules, which
    have their own tests), plus `extra=` test routes."""
    kwargs.setdefault("modules", [health])
    return build_app(services or ApiServices(), ApiAuth([KEY_ENTRY], [TOKEN_ENTRY]), **kwargs)
