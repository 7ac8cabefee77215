"""The campaign monitor as `v2c api serve` runs it: the Lambda handler gets the
scheduled event and the Lambda-like context EventBridge and Lambda give it in
AWS, and a failing pass is logged once per distinct error, never ends the loop."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from v2c.handlers import ota_monitor
from v2c.handlers.ota.config import set_default_services
from v2c.infra.cli.commands.api import MonitorSchedule, monitor_context, scheduled_event


class FakeCampaigns:
    def __init__(self) -> None:
        self.passes = 0

    def monitor(self) -> dict[str, Any]:
        self.passes += 1
        return {"campaigns": 1, "notified": 2, "stalled": 0}


class FakeServices:
    def __init__(self) -> None:
        self.campaigns = FakeCampaigns()

    def close(self) -> None:
        pass


@pytest.fixture
def services() -> Iterator[FakeServices]:
    fake = FakeServices()
    set_default_services(fake)  # type: ignore[arg-type]
    yield fake
    set_default_services(None)


def test_the_monitor_handler_runs_with_the_local_scheduled_event_and_context(
    services: FakeServices,
) -> None:
    summary = ota_monitor.lambda_handler(scheduled_event(), monitor_context())

    assert summary == {"campaigns": 1, "notified": 2, "stalled": 0}
    assert services.campaigns.passes == 1


def test_without_a_context_the_handler_fails_which_is_why_serve_builds_one(
    services: FakeServices,
) -> None:
    with pytest.raises(AttributeError):
        ota_monitor.lambda_handler({}, None)
    assert services.campaigns.passes == 0


def test_the_event_is_eventbridges_scheduled_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    event = scheduled_event(datetime(2026, 12, 2, 16, 5, 0, 123_000, tzinfo=UTC))

    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["time"] == "2026-12-02T16:05:00Z"
    assert event["region"] == "eu-west-1"
    assert event["detail"] == {}
    (rule,) = event["resources"]
    assert re.fullmatch(r"arn:aws:events:eu-west-1:\d{12}:rule/[\w-]+", rule)
    assert scheduled_event()["id"] != scheduled_event()["id"]


def test_each_pass_gets_a_fresh_context_with_the_templates_timeout() -> None:
    first, second = monitor_context(), monitor_context()

    assert first.aws_request_id != second.aws_request_id
    assert 59_000 < first.get_remaining_time_in_millis() <= 60_000
    assert first.invoked_function_arn.endswith(f":function:{first.function_name}")


def test_a_failing_pass_is_logged_once_per_distinct_error_and_the_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes: list[Exception | None] = [
        ConnectionError("moto is down"),
        ConnectionError("moto is down"),
        ConnectionError("moto is down"),
        TimeoutError("slow"),
        None,
        None,
    ]

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        assert event["detail-type"] == "Scheduled Event"
        assert context.function_name
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return {"campaigns": 0}

    schedule = MonitorSchedule(handler)
    with caplog.at_level(logging.DEBUG, logger="v2c.api"):
        results = [schedule.run_pass() for _ in range(6)]

    assert results == [None, None, None, None, {"campaigns": 0}, {"campaigns": 0}]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(" (")[0] for r in errors] == [
        "monitor pass failed: ConnectionError: moto is down",
        "monitor pass failed: TimeoutError: slow",
    ]
    assert all(r.exc_info for r in errors)  # the traceback, once per error
    recovered = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert recovered == ["monitor passes work again after 4 failed"]
    assert schedule.failed_passes == 0
