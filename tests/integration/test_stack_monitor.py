"""The campaign monitor runs in the local stack, as its EventBridge schedule runs it in AWS.

A scheduled campaign is created and started through the API of a running
stack (`LocalStack`, what `v2c stack up` runs) with its start a few seconds
ahead. Nothing else touches it (no vehicle is connected, so no report drives
it): only the API process's monitor pass can dispatch it once the time has
come. The test waits on the campaign's counters through the API, with a
deadline far above the monitor's 10-second period.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from v2c.handlers.ota.fleet import FleetRegistry, Vehicle
from v2c.infra.cli.api_client import ApiClient
from v2c.infra.cli.demo_view import BASE, target_for, upload_package
from v2c.infra.local.stack import LocalStack
from v2c.infra.settings import StackSettings

VEHICLES = [f"VIN-5V2CMNT{i:010d}" for i in range(3)]
START_IN_S = 8.0
DEADLINE_S = 120.0  # a bound for a loaded machine: the monitor passes every 10 s


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[StackSettings]:
    with LocalStack(tmp_path / "stack") as running:
        yield running.settings


def poll(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {value}")
        time.sleep(0.5)


def test_a_scheduled_campaign_starts_by_itself_on_a_running_stack(
    stack: StackSettings, tmp_path: Path
) -> None:
    # Given a running stack, three registered vehicles on 1.0.0 and a 2.0.0 package
    registry = FleetRegistry(stack.aws.client("dynamodb"), stack.resources.vehicle_registry_table)
    registry.put(
        Vehicle(vin, "Accord", "eu-west-1", 2024, "Honda", "", "1.0.0") for vin in VEHICLES
    )
    assert stack.api is not None
    client = ApiClient(target_for(stack.api.url, stack.api.key_file))
    firmware_id = upload_package(client, "Accord", "2.0.0", tmp_path / "packages")

    # When a scheduled campaign is created and started, its start a few seconds ahead
    start_at = datetime.now(UTC) + timedelta(seconds=START_IN_S)
    created = client.post(
        f"{BASE}/campaigns",
        {
            "name": "scheduled",
            "firmware_id": firmware_id,
            "target_devices": VEHICLES,
            "deployment_strategy": "scheduled",
            "scheduled_start": start_at.isoformat(),
        },
    )
    campaign_id = created["campaign_id"]
    client.post(f"{BASE}/campaigns/{campaign_id}/start")
    campaign = client.get(f"{BASE}/campaigns/{campaign_id}")
    read_at = datetime.now(UTC)

    # Then nobody is notified before its time (checked only if we looked early enough)
    assert campaign["status"] == "in_progress"
    assert campaign["target_count"] == len(VEHICLES)
    if read_at < start_at:
        assert campaign["counters"]["in_progress"] == 0, campaign

    # And after it, the monitor dispatches it by itself: every vehicle notified
    def read() -> dict[str, Any]:
        answer: dict[str, Any] = client.get(f"{BASE}/campaigns/{campaign_id}")
        return answer

    dispatched = poll(
        read,
        lambda c: c["counters"]["in_progress"] == len(VEHICLES),
        DEADLINE_S,
        "the monitor to dispatch the scheduled campaign",
    )
    assert dispatched["counters"]["pending"] == 0
    assert datetime.now(UTC) >= start_at
    for vin in VEHICLES:
        history = client.get(f"{BASE}/devices/{vin}/updates")
        assert [u["campaign_id"] for u in history["items"]] == [campaign_id], history
