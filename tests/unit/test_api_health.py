"""/health touches no dependency; /health/detailed probes each, 503 when one is down."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from api_events import AUTH, call, make_app

from v2c.contract.errors import TransientError
from v2c.handlers.api import ApiServices
from v2c.handlers.api.routes.health import run_checks


class FakeClientError(Exception):
    """Shaped like botocore's ClientError: the code is in `response`."""

    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code}) calling DescribeTable on arn:aws:secret")
        self.response = {"Error": {"Code": code}}


def _raise(error: Exception) -> None:
    raise error


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # let a hung probe's thread end after the test


def test_health_is_ok_and_touches_no_dependency() -> None:
    calls: list[str] = []
    app = make_app(ApiServices(health_checks={"db": lambda: calls.append("db")}, version="9.9.9"))
    status, _, body = call(app, "GET", "/health")
    assert (status, body) == (200, {"status": "ok", "service": "v2c-ota-api", "version": "9.9.9"})
    assert calls == []


def test_detailed_is_200_when_every_check_passes() -> None:
    app = make_app(ApiServices(health_checks={"db": lambda: None, "s3": lambda: None}))
    status, _, body = call(app, "GET", "/health/detailed", headers=AUTH)
    assert status == 200
    assert body["status"] == "ok"
    assert {name: c["status"] for name, c in body["components"].items()} == {
        "db": "ok",
        "s3": "ok",
    }


def test_detailed_is_503_naming_the_failing_component_by_kind_only() -> None:
    checks = {
        "db": lambda: _raise(FakeClientError("ResourceNotFoundException")),
        "signing": lambda: _raise(TransientError("kms at 10.0.0.7 refused")),
        "cache": lambda: _raise(OSError("no route to 10.0.0.9")),
        "s3": lambda: None,
    }
    status, _, body = call(
        make_app(ApiServices(health_checks=checks)), "GET", "/health/detailed", headers=AUTH
    )
    assert status == 503
    assert body["status"] == "degraded"
    components = body["components"]
    assert {n: (c["status"], c["error"]) for n, c in components.items()} == {
        "cache": ("error", "OSError"),
        "db": ("error", "ResourceNotFoundException"),
        "s3": ("ok", None),
        "signing": ("error", "dependency_unavailable"),
    }
    assert "10.0.0" not in str(body)
    assert "arn:" not in str(body)


def test_a_hung_check_times_out_without_holding_the_answer(release: threading.Event) -> None:
    services = ApiServices(
        health_checks={"stuck": release.wait, "db": lambda: None}, health_timeout_s=0.05
    )
    status, _, body = call(make_app(services), "GET", "/health/detailed", headers=AUTH)
    assert status == 503
    assert body["components"]["stuck"]["status"] == "timeout"
    assert body["components"]["db"]["status"] == "ok"


def test_no_checks_is_healthy() -> None:
    assert run_checks({}, 1.0) == {}


def test_checks_run_concurrently(release: threading.Event) -> None:
    # Given two checks that each wait for the other: only concurrent runs finish.
    a_started, b_started = threading.Event(), threading.Event()

    def a() -> None:
        a_started.set()
        assert b_started.wait(5)

    def b() -> None:
        b_started.set()
        assert a_started.wait(5)

    results = run_checks({"a": a, "b": b}, timeout_s=10)
    assert [c.status for c in results.values()] == ["ok", "ok"]
