"""HTTP request → API Gateway REST proxy event, Lambda answer → HTTP: the adapter's pure halves."""

from __future__ import annotations

import base64

from v2c.infra.local.api_gateway_event import build_event, header_name, parse_result


def test_the_event_has_api_gateway_rest_shape() -> None:
    event = build_event(
        "POST",
        "/api/v1/ota/firmware%20x?tag=a&tag=b%20c&empty=",
        [("Content-Type", "application/json"), ("X-Multi", "1"), ("X-Multi", "2")],
        b'{"name": "fw"}',
        request_id="req-9",
        stage="local",
        source_ip="127.0.0.1",
        now_ms=1000,
    )
    assert event["httpMethod"] == "POST"
    assert event["path"] == "/api/v1/ota/firmware%20x"  # REST APIs keep the encoding
    assert event["headers"] == {"Content-Type": "application/json", "X-Multi": "2"}
    assert event["multiValueHeaders"]["X-Multi"] == ["1", "2"]
    assert event["queryStringParameters"] == {"tag": "b c", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {"tag": ["a", "b c"], "empty": [""]}
    assert (event["body"], event["isBase64Encoded"]) == ('{"name": "fw"}', False)
    context = event["requestContext"]
    assert (context["requestId"], context["stage"], context["requestTimeEpoch"]) == (
        "req-9",
        "local",
        1000,
    )
    assert context["path"] == "/local/api/v1/ota/firmware%20x"
    assert "authorizer" not in context


def test_a_binary_body_is_base64_and_an_empty_one_is_none() -> None:
    raw = bytes(range(256))
    event = build_event("PUT", "/x", [], raw, request_id="r")
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw
    empty = build_event("GET", "/x", [], b"", request_id="r")
    assert (empty["body"], empty["queryStringParameters"], empty["headers"]) == (None, None, None)


def test_the_answer_merges_header_forms_and_decodes_base64() -> None:
    status, headers, body = parse_result(
        {
            "statusCode": 201,
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "Content-Type": ["text/plain"]},
            "headers": {"content-type": "ignored/dup", "X-One": "1", "Content-Length": "999"},
            "body": base64.b64encode(b"\x00\xff").decode(),
            "isBase64Encoded": True,
        }
    )
    assert status == 201
    assert headers == [
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Content-Type", "text/plain"),
        ("X-One", "1"),
    ]
    assert body == b"\x00\xff"
    assert parse_result({"statusCode": 204}) == (204, [], b"")


def test_header_names_come_back_in_their_usual_case() -> None:
    assert header_name("content-type") == "Content-Type"
    assert header_name("x-api-key") == "X-Api-Key"
    assert header_name("idempotency-key") == "Idempotency-Key"
