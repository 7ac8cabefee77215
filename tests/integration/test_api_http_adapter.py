"""The API over real HTTP on loopback: events in, answers out, API Gateway's limits, streaming."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import requests
from api_support import API_KEY, AUTH_HEADERS, PRINCIPAL, TOKEN

from v2c.contract.errors import Conflict
from v2c.handlers.api import ApiAuth, ApiServices, OtaApi, build_app
from v2c.infra.local.http_adapter import PRINCIPAL_HEADER, ApiHttpServer, StreamingRoute
from v2c.infra.local.http_body import ByteStream

MB = 1024 * 1024
UPLOAD = "/api/v1/ota/firmware"


def hashing_upload(stream: ByteStream, length: int, headers: Mapping[str, str]) -> tuple[int, Any]:
    """A streaming route as the firmware upload will be: reads in chunks, never the whole body."""
    if headers.get("X-Fail") == "conflict":
        stream.read(1024)  # fails part-way through the body
        raise Conflict("firmware 1.2.3 for SF-100 exists")
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(256 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return 201, {
        "sha256": digest.hexdigest(),
        "size": size,
        "declared": length,
        "by": headers.get(PRINCIPAL_HEADER),
    }


def _echo_routes(app: OtaApi) -> None:
    @app.route("/test/echo", method=["GET", "POST"])
    def echo() -> dict[str, Any]:
        event = app.current_event
        raw = (
            base64.b64decode(event.body) if event.is_base64_encoded else (event.body or "").encode()
        )
        return {
            "path": event.path,
            "query": event.multi_value_query_string_parameters,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "base64": event.is_base64_encoded,
            "request_id": event.request_context.request_id,
        }


@pytest.fixture
def api_streaming_routes() -> Mapping[tuple[str, str], StreamingRoute]:
    return {("POST", UPLOAD): hashing_upload}


@pytest.fixture
def echo_server(api_auth: ApiAuth) -> Iterator[ApiHttpServer]:
    app = build_app(ApiServices(), api_auth, extra=_echo_routes)
    with ApiHttpServer(app.resolve, max_body_bytes=1 * MB) as server:
        yield server


def test_health_answers_over_http(api_server: ApiHttpServer) -> None:
    answer = requests.get(f"{api_server.base_url}/health", timeout=5)
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["X-Request-Id"]


def test_detailed_health_needs_a_key_or_a_token(api_server: ApiHttpServer) -> None:
    url = f"{api_server.base_url}/health/detailed"
    refused = requests.get(url, timeout=5)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.json()["detail"]
    assert requests.get(url, headers=AUTH_HEADERS, timeout=5).status_code == 200
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(url, headers=bearer, timeout=5).json()["components"] == {
        "memory": {"status": "ok", "latency_ms": pytest.approx(0, abs=1000), "error": None}
    }


def test_one_connection_carries_many_requests(api_server: ApiHttpServer) -> None:
    with requests.Session() as session:
        for _ in range(5):
            assert session.get(f"{api_server.base_url}/health", timeout=5).status_code == 200
            assert session.get(f"{api_server.base_url}/nope", timeout=5).status_code == 401


def test_an_unknown_method_is_405_not_a_server_error(api_server: ApiHttpServer) -> None:
    answer = requests.request("PROPFIND", f"{api_server.base_url}/health", timeout=5)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET"


def test_query_path_and_text_body_reach_the_handler(echo_server: ApiHttpServer) -> None:
    answer = requests.post(
        f"{echo_server.base_url}/test/echo%20x/../echo?tag=a&tag=b%20c",
        data=b'{"k": "v"}',
        headers={**AUTH_HEADERS, "Content-Type": "application/json"},
        timeout=5,
    )
    # requests normalizes the dot segment; the encoded space stays encoded in `path`
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["path"] == "/test/echo"
    assert body["query"] == {"tag": ["a", "b c"]}
    assert body["sha256"] == hashlib.sha256(b'{"k": "v"}').hexdigest()
    assert body["base64"] is False
    assert body["request_id"] == answer.headers["X-Request-Id"]


def test_a_binary_body_travels_base64(echo_server: ApiHttpServer) -> None:
    raw = os.urandom(64 * 1024)
    answer = requests.post(
        f"{echo_server.base_url}/test/echo",
        data=raw,
        headers={**AUTH_HEADERS, "Content-Type": "application/octet-stream"},
        timeout=5,
    )
    assert answer.json()["sha256"] == hashlib.sha256(raw).hexdigest()
    assert answer.json()["base64"] is True


def test_a_body_over_the_limit_is_413_before_the_handler(echo_server: ApiHttpServer) -> None:
    answer = requests.post(
        f"{echo_server.base_url}/test/echo",
        data=b"x" * (MB + 1),
        headers=AUTH_HEADERS,
        timeout=10,
    )
    assert answer.status_code == 413
    assert answer.json() == {
        "detail": f"request body over {MB} bytes",
        "reason": "payload_too_large",
    }
    # the server is still there for the next request
    assert requests.get(f"{echo_server.base_url}/health", timeout=5).status_code == 200


def test_the_default_limit_is_api_gateways_10_mb(api_server: ApiHttpServer) -> None:
    answer = requests.post(
        f"{api_server.base_url}/health", data=b"x" * (10 * MB + 1), headers=AUTH_HEADERS, timeout=30
    )
    assert answer.status_code == 413


def test_a_chunked_body_is_refused_with_411(echo_server: ApiHttpServer) -> None:
    answer = requests.post(
        f"{echo_server.base_url}/test/echo",
        data=iter([b"a", b"b"]),  # a generator: requests sends it chunked
        headers=AUTH_HEADERS,
        timeout=5,
    )
    assert answer.status_code == 411
    assert answer.json()["reason"] == "length_required"


def test_a_streaming_route_hashes_a_large_upload_without_the_event(
    api_server: ApiHttpServer,
) -> None:
    # 12 MB: over API Gateway's event limit, which a streaming route does not have.
    payload = os.urandom(12 * MB)
    # a client cannot name the principal: the adapter sets it from the key
    headers = {**AUTH_HEADERS, PRINCIPAL_HEADER: "api-key:forged"}
    answer = requests.post(
        f"{api_server.base_url}{UPLOAD}", data=payload, headers=headers, timeout=30
    )
    assert answer.status_code == 201, answer.text
    expected_by = PRINCIPAL
    assert answer.json() == {
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
        "declared": len(payload),
        "by": expected_by,
    }


def test_a_streaming_route_is_authenticated(api_server: ApiHttpServer) -> None:
    answer = requests.post(f"{api_server.base_url}{UPLOAD}", data=b"x" * 4096, timeout=5)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["reason"] == "missing_credentials"
    wrong = requests.post(
        f"{api_server.base_url}{UPLOAD}", data=b"x", headers={"X-API-Key": "bad"}, timeout=5
    )
    assert wrong.status_code == 401


def test_a_streaming_routes_error_answers_like_the_api(api_server: ApiHttpServer) -> None:
    answer = requests.post(
        f"{api_server.base_url}{UPLOAD}",
        data=b"y" * (2 * MB),
        headers={**AUTH_HEADERS, "X-Fail": "conflict"},
        timeout=10,
    )
    assert answer.status_code == 409
    assert answer.json() == {"detail": "firmware 1.2.3 for SF-100 exists", "reason": "conflict"}
    assert requests.get(f"{api_server.base_url}/health", timeout=5).status_code == 200


def test_other_methods_on_a_streaming_path_go_to_the_handler(api_server: ApiHttpServer) -> None:
    answer = requests.get(f"{api_server.base_url}{UPLOAD}", headers=AUTH_HEADERS, timeout=5)
    # The resolver's answer: its firmware list route, with no firmware service wired here.
    assert answer.status_code == 503
    assert answer.json()["reason"] == "service_not_configured"


def test_a_failing_handler_is_502_and_a_huge_answer_too() -> None:
    def raising(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("handler crashed")

    def huge(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"statusCode": 200, "body": "x" * (6 * MB + 1)}

    for handler in (raising, huge):
        with ApiHttpServer(handler) as server:
            answer = requests.get(f"{server.base_url}/anything", timeout=10)
            assert answer.status_code == 502
            assert answer.json()["reason"] == "bad_gateway"


def test_a_malformed_request_line_gets_a_json_error(api_server: ApiHttpServer) -> None:
    with socket.create_connection((api_server.host, api_server.port), timeout=5) as sock:
        sock.sendall(b"GET /a b HTTP/1.1\r\n\r\n")  # a space in the target
        reply = sock.makefile("rb").read()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["detail"]


def test_streaming_routes_without_auth_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="streaming_auth"):
        ApiHttpServer(lambda e, c: {}, streaming_routes={("POST", UPLOAD): hashing_upload})


def test_the_key_is_the_only_way_in(api_server: ApiHttpServer) -> None:
    assert API_KEY not in requests.get(f"{api_server.base_url}/nope", timeout=5).text


def test_a_query_past_the_request_line_limit_is_a_400_in_the_api_shape(
    api_server: ApiHttpServer,
) -> None:
    answer = requests.get(f"{api_server.base_url}/health", params={"q": "x" * 70_000}, timeout=10)
    assert answer.status_code == 400
    assert "request line too long" in answer.json()["detail"]
