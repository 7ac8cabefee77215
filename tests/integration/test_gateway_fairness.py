"""Fairness between vehicles against a real mosquitto: one vehicle floods the
gateway with 5,000 QoS 1 messages at full speed, another then publishes a few;
the second vehicle's messages are handled while the whole flood still waits,
and every message of both ends handled exactly once and acknowledged.

The flooder's handler calls are held until the innocent vehicle's messages were
handled: the flood then occupies every slot it may take, on a fast machine or a
loaded one, so the verdict depends on the scheduler alone. (Letting the flood
drain at full speed meanwhile made the verdict a race with the machine's load.)
Verdicts are on the order of events (the handler records each call in order),
never on elapsed time: the delays themselves are measured by
`v2c bench gateway` (its fairness phase)."""

from __future__ import annotations

from pathlib import Path

import gateway_handlers
import pytest
from gateway_handlers import HELD_RULES, HeldVehicles, read_records
from gateway_support import publish_all, running_gateway, vehicle_client, wait_until

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.infra.local.broker import MosquittoBroker

FLOODER = "VIN-1HGBH41JXMN109186"
INNOCENT = "VIN-5YJ3E1EA7KF317000"
FLOOD = 5000
INNOCENT_MESSAGES = 10
PER_VEHICLE = 4


def _topic(vin: str) -> str:
    return f"v2c/v1/eu-west-1/{vin}/telemetry/vehicle"


@pytest.fixture
def held_flooder(monkeypatch: pytest.MonkeyPatch) -> HeldVehicles:
    held = HeldVehicles(FLOODER)
    monkeypatch.setattr(gateway_handlers, "HELD", held)
    return held


@pytest.fixture
def record_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "records.jsonl")
    monkeypatch.setenv("V2C_TEST_RECORD_FILE", path)
    return path


@pytest.mark.parametrize("per_vehicle", [PER_VEHICLE, 1], ids=["default-cap", "strict-order"])
def test_a_vehicle_flooding_5000_messages_does_not_hold_back_another_vehicles_messages(
    mosquitto: MosquittoBroker, record_file: str, held_flooder: HeldVehicles, per_vehicle: int
) -> None:
    endpoint = MqttEndpoint(mosquitto.host, mosquitto.port)
    flood = [(_topic(FLOODER), f"flood-{i}".encode()) for i in range(FLOOD)]
    innocent = [(_topic(INNOCENT), f"innocent-{i}".encode()) for i in range(INNOCENT_MESSAGES)]
    with (
        running_gateway(
            endpoint,
            HELD_RULES,
            client_id="gw-fairness",
            receive_maximum=64,
            workers=16,
            per_vehicle_in_flight=per_vehicle,
        ) as gateway,
        vehicle_client(endpoint, FLOODER) as flooder,
        vehicle_client(endpoint, INNOCENT) as vehicle,
    ):
        # Given a vehicle whose 5,000 messages the broker has all taken (PUBACKed)
        publish_all(flooder, flood)
        # When another vehicle publishes after it, the flood not yet drained a bit
        try:
            publish_all(vehicle, innocent)
        finally:
            held_flooder.release.set()
        wait_until(
            lambda: len(read_records(record_file)) >= FLOOD + INNOCENT_MESSAGES,
            timeout=300,
            what="every message handled",
        )
        wait_until(lambda: gateway.in_flight == 0, what="the window to empty")
        # Both vehicles together never had more than their caps in flight
        assert gateway.max_in_flight <= 2 * per_vehicle
        assert gateway.max_waiting > 0  # the flood did wait, in its own queue

    order = [r["vehicle_id"] for r in read_records(record_file)]
    payloads = [r["payload"] for r in read_records(record_file)]
    # Then every message of both vehicles was handled exactly once
    assert sorted(payloads) == sorted(p.decode() for _, p in flood + innocent)
    if per_vehicle == 1:  # one at a time per vehicle: each handled in the order it was sent
        assert [p for p in payloads if p.startswith("innocent-")] == [
            f"innocent-{i}" for i in range(INNOCENT_MESSAGES)
        ]
        assert [p for p in payloads if p.startswith("flood-")] == [
            f"flood-{i}" for i in range(FLOOD)
        ]
    # ... and each of them while most of the flood was still waiting: not behind it
    last_innocent = max(i for i, vin in enumerate(order) if vin == INNOCENT)
    flood_after = sum(1 for vin in order[last_innocent:] if vin == FLOODER)
    print(f"\nflood messages handled after the innocent vehicle's last: {flood_after} of {FLOOD}")
    assert flood_after >= FLOOD // 2
