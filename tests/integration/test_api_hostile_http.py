"""The API under hostile input and concurrency, over a real socket, on the production services
over moto: every malformed body is a 4xx in the `{detail, reason}` shape, an oversized declared
length is refused from the headers, slow clients are cut off without holding anyone, and a slow
request never holds up another.

No assertion here measures time: a slow request is made slow by holding it (a signing gate, a
body not yet sent), and the limits under test are set small so that the socket's generous
timeout is only a guard against a hang.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import urlencode

import pytest
import requests
from api_support import API_KEY, APPROVER_HEADERS, AUTH_HEADERS
from hostile_http import (
    SigningGate,
    assert_error_shape,
    campaign_spec,
    head,
    raw_connect,
    read_answer,
)
from ota_support import vin

from v2c.infra.local.http_adapter import ApiHttpServer
from v2c.infra.local.http_body import HttpLimits


@pytest.fixture
def api_server(moto_api_server: ApiHttpServer) -> ApiHttpServer:
    return moto_api_server


OTA = "/api/v1/ota"
CAMPAIGNS = f"{OTA}/campaigns"
FIRMWARE = f"{OTA}/firmware"
JSON = {**AUTH_HEADERS, "Content-Type": "application/json"}
UPLOAD_QUERY = {
    "name": "Telematics Unit",
    "version": "2.1.0",
    "device_model": "Accord",
    "manufacturer": "Acme",
    "filename": "tcu.bin",
}
# Only a refusal decided from the headers can answer while the body is missing.
PATIENT = HttpLimits(header_timeout_s=300, read_timeout_s=300, body_grace_s=300)
# Small bounds, so that slow clients meet them within the test.
QUICK = HttpLimits(header_timeout_s=1, read_timeout_s=1, body_grace_s=1, min_body_rate=1000)


@pytest.fixture
def api_limits(request: pytest.FixtureRequest) -> HttpLimits:
    limits: HttpLimits = getattr(request, "param", HttpLimits())
    return limits


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def upload_target(**extra: str) -> str:
    return f"{FIRMWARE}?{urlencode({**UPLOAD_QUERY, **extra})}"


def test_deeply_nested_json_is_a_400_on_every_json_route_and_on_the_streaming_upload(
    api_server: ApiHttpServer, deployable_firmware: str
) -> None:
    url = api_server.base_url
    routes = [
        CAMPAIGNS,
        f"{OTA}/devices/bulk/update",
        f"{OTA}/devices/{vin(0)}/update",
        f"{OTA}/firmware-uploads",
        f"{CAMPAIGNS}/{'0' * 32}/rollback",
        "/api/v1/dlq/ota/replay",
    ]
    for path in routes:
        answer = requests.post(f"{url}{path}", data=deep(10_000), headers=JSON, timeout=30)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["reason"] == "json_too_deep", path
        assert "nested deeper than 32 levels" in answer.json()["detail"]
    approve = f"{CAMPAIGNS}/{'0' * 32}/approve"
    answer = requests.post(
        f"{url}{approve}", data=deep(10_000), headers={**JSON, **APPROVER_HEADERS}, timeout=30
    )
    assert (answer.status_code, answer.json()["reason"]) == (400, "json_too_deep")

    # Past the limit but well within Python's recursion: the limit decides, not luck.
    shallow_enough_to_parse = json.dumps({**campaign_spec(deployable_firmware), "name": [[[[1]]]]})
    too_deep = shallow_enough_to_parse.replace("[[[[1]]]]", deep(40))
    answer = requests.post(f"{url}{CAMPAIGNS}", data=too_deep, headers=JSON, timeout=30)
    assert (answer.status_code, answer.json()["reason"]) == (400, "json_too_deep")
    metadata = {**UPLOAD_QUERY, "metadata": {"a": json.loads(deep(40))}}
    answer = requests.post(f"{url}{OTA}/firmware-uploads", json=metadata, headers=JSON, timeout=30)
    assert (answer.status_code, answer.json()["reason"]) == (400, "json_too_deep")

    # The streaming upload parses one JSON text, its `metadata` parameter.
    answer = requests.post(
        f"{url}{upload_target(metadata=deep(5_000))}",
        data=b"\x7fELF" + b"\0" * 4096,
        headers={**AUTH_HEADERS, "Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json() == {
        "detail": "metadata is nested deeper than 32 levels",
        "reason": "json_too_deep",
    }

    # A JSON body past 4 MiB is refused as too large, under API Gateway's 10 MB.
    huge = json.dumps({**campaign_spec(deployable_firmware), "description": "x" * (5 * 2**20)})
    answer = requests.post(f"{url}{CAMPAIGNS}", data=huge, headers=JSON, timeout=60)
    assert (answer.status_code, answer.json()["reason"]) == (413, "payload_too_large")

    # And the same server still creates a campaign from a sane body.
    created = requests.post(
        f"{url}{CAMPAIGNS}", json=campaign_spec(deployable_firmware), headers=JSON, timeout=60
    )
    assert created.status_code == 201, created.text


@pytest.mark.parametrize("api_limits", [PATIENT], indirect=True)
def test_an_oversized_declared_length_is_refused_from_the_headers(
    api_server: ApiHttpServer, deployable_firmware: str
) -> None:
    huge = 10**20  # 21 digits: the server refuses it before the application sees it
    cases = [
        (CAMPAIGNS, "application/json", huge, 413, "payload_too_large"),
        (f"{CAMPAIGNS}/{'0' * 32}/start", "application/json", huge, 413, "payload_too_large"),
        (upload_target(), "application/octet-stream", huge, 413, "payload_too_large"),
        # over API Gateway's 10 MB: the application's check, from the headers too
        (CAMPAIGNS, "application/json", 20 * 2**20, 413, "payload_too_large"),
        # the streaming upload past the registry's 500 MB: BR-OTA-001's answer
        (upload_target(), "application/octet-stream", 600 * 10**6, 400, "validation_failed"),
    ]
    for target, content_type, length, status, reason in cases:
        with raw_connect(api_server.port) as sock:
            headers = {"X-API-Key": API_KEY, "Content-Type": content_type}
            sock.sendall(head("POST", target, {**headers, "Content-Length": str(length)}))
            # Not a byte of the body is sent: only the headers can have decided.
            answer = read_answer(sock)
        assert_error_shape(answer, status, reason)
        assert answer.headers["connection"] == "close"
    assert requests.get(f"{api_server.base_url}/health", timeout=30).status_code == 200


@pytest.mark.parametrize("api_limits", [QUICK], indirect=True)
def test_slow_clients_get_408_and_a_closed_connection(
    api_server: ApiHttpServer, deployable_firmware: str
) -> None:
    port = api_server.port
    # A request line and headers that never end.
    with raw_connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api")
        answer = read_answer(sock)
        assert_error_shape(answer, 408, "request_timeout")
        assert sock.recv(1) == b""  # closed

    # Headers, then a body that stops.
    with raw_connect(port) as sock:
        sock.sendall(head("POST", CAMPAIGNS, {**JSON, "Content-Length": "100"}) + b'{"name": ')
        answer = read_answer(sock)
        assert_error_shape(answer, 408, "request_timeout")
        assert answer.headers["connection"] == "close"
        assert sock.recv(1) == b""

    # A body that trickles: a byte every 0.1 s never trips the read timeout (1 s),
    # but stays far below 1000 bytes/s, so the rate rule cuts it.
    with raw_connect(port) as sock:
        sock.sendall(head("POST", CAMPAIGNS, {**JSON, "Content-Length": "100000"}))
        stop = threading.Event()

        def trickle() -> None:
            for _ in range(600):  # bounded: 60 s at most
                if stop.wait(0.1):
                    return
                try:
                    sock.sendall(b" ")
                except OSError:
                    return

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        try:
            answer = read_answer(sock)
        finally:
            stop.set()
            sender.join(10)
        assert_error_shape(answer, 408, "request_timeout")
        assert "slower than 1000 bytes/s" in answer.json()["detail"]

    # The streaming upload too: its route reads on a worker thread, which the timeout frees.
    with raw_connect(port) as sock:
        headers = {**AUTH_HEADERS, "Content-Type": "application/octet-stream"}
        sock.sendall(head("POST", upload_target(), {**headers, "Content-Length": str(2**20)}))
        sock.sendall(b"\x7fELF" + b"\0" * 1020)
        answer = read_answer(sock)
        assert_error_shape(answer, 408, "request_timeout")
    assert requests.get(f"{api_server.base_url}{CAMPAIGNS}", headers=AUTH_HEADERS, timeout=30).ok


@pytest.mark.parametrize("api_limits", [PATIENT], indirect=True)
def test_stalled_clients_hold_no_worker_and_a_slow_creation_holds_up_nobody(
    api_server: ApiHttpServer, deployable_firmware: str, signing_gate: SigningGate
) -> None:
    url = api_server.base_url
    # 40 clients (more than the 16 worker threads) stop halfway through their bodies.
    stalled = [raw_connect(api_server.port) for _ in range(40)]
    try:
        for sock in stalled:
            sock.sendall(head("POST", CAMPAIGNS, {**JSON, "Content-Length": "1000"}) + b"{")

        # A campaign creation held inside its handler (at signing) for as long as the test likes.
        signing_gate.close()
        outcome: dict[str, requests.Response] = {}

        def create() -> None:
            outcome["created"] = requests.post(
                f"{url}{CAMPAIGNS}",
                json=campaign_spec(deployable_firmware),
                headers=JSON,
                timeout=180,
            )

        creator = threading.Thread(target=create, daemon=True)
        creator.start()
        assert signing_gate.entered.wait(60), "the creation never reached signing"

        # A streaming upload, half sent.
        upload = raw_connect(api_server.port)
        size = 3 * 2**20
        headers = {**AUTH_HEADERS, "Content-Type": "application/octet-stream"}
        upload.sendall(head("POST", upload_target(), {**headers, "Content-Length": str(size)}))
        upload.sendall(b"\x7fELF" + b"\1" * (2**20 - 4))

        # Meanwhile every other request is answered.
        listed = requests.get(f"{url}{CAMPAIGNS}", headers=AUTH_HEADERS, timeout=60)
        assert listed.status_code == 200
        assert listed.json()["items"] == []  # the creation has not finished
        assert requests.get(f"{url}/health/detailed", headers=AUTH_HEADERS, timeout=60).ok
        assert requests.get(f"{url}{FIRMWARE}", headers=AUTH_HEADERS, timeout=60).ok
        assert creator.is_alive()
        assert "created" not in outcome

        # Then the held requests finish as they would have.
        upload.sendall(b"\1" * (size - 2**20))
        uploaded = read_answer(upload)
        upload.close()
        assert uploaded.status == 201, uploaded.body
        signing_gate.release()
        creator.join(120)
        assert outcome["created"].status_code == 201, outcome["created"].text
        listed = requests.get(f"{url}{CAMPAIGNS}", headers=AUTH_HEADERS, timeout=60)
        assert [c["campaign_id"] for c in listed.json()["items"]] == [
            outcome["created"].json()["campaign_id"]
        ]
    finally:
        signing_gate.release()
        for sock in stalled:
            sock.close()
