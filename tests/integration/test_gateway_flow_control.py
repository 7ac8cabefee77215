"""Flow control against a real mosquitto: a slow handler never sees more
messages at once than the gateway's Receive Maximum, and nothing is lost.

mosquitto 2.0.11 (Debian 12) overruns a client's Receive Maximum once messages
queue for it, so this also proves the gateway's own window holds when the
broker's does not."""

from __future__ import annotations

from pathlib import Path

import gateway_handlers
import pytest
from gateway_handlers import SLOW_RULES, read_records
from gateway_support import publish_all, running_gateway, vehicle_client, wait_until

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.infra.local.broker import MosquittoBroker, MosquittoConfig

VIN = "VIN-1HGBH41JXMN109186"
TOPIC = f"v2c/v1/eu-west-1/{VIN}/telemetry/vehicle"
RECEIVE_MAXIMUM = 5
COUNT = 100


@pytest.fixture
def endpoint(tmp_path: Path) -> MqttEndpoint:
    with MosquittoBroker(MosquittoConfig(data_dir=tmp_path / "broker")) as broker:
        yield MqttEndpoint(broker.host, broker.port)


@pytest.fixture
def record_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "records.jsonl")
    monkeypatch.setenv("V2C_TEST_RECORD_FILE", path)
    return path


def test_slow_handler_sees_at_most_receive_maximum_messages_and_all_are_handled(
    endpoint: MqttEndpoint, record_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a handler that takes 50 ms and more worker threads than the window
    calls = gateway_handlers.Concurrency()
    monkeypatch.setattr(gateway_handlers, "SLOW_CALLS", calls)
    with (
        running_gateway(
            endpoint,
            SLOW_RULES,
            client_id="gw-flow",
            receive_maximum=RECEIVE_MAXIMUM,
            workers=4 * RECEIVE_MAXIMUM,
            # One vehicle publishes here: let it use the whole window, which is
            # what is tested (the per-vehicle cap: test_gateway_fairness.py).
            per_vehicle_in_flight=RECEIVE_MAXIMUM,
        ) as gateway,
        vehicle_client(endpoint, VIN) as vehicle,
    ):
        # When a vehicle publishes 100 QoS 1 messages as fast as the broker takes them
        publish_all(vehicle, [(TOPIC, f"m{i}".encode()) for i in range(COUNT)])
        wait_until(lambda: len(read_records(record_file)) >= COUNT, what=f"{COUNT} handled")

        # Then the window was used to the full, never beyond
        assert gateway.max_in_flight == RECEIVE_MAXIMUM
        assert calls.peak <= RECEIVE_MAXIMUM
        wait_until(lambda: gateway.in_flight == 0, what="the window to empty")
        assert gateway.metrics.in_flight._value.get() == 0

    payloads = sorted(r["payload"] for r in read_records(record_file))
    assert payloads == sorted(f"m{i}" for i in range(COUNT))  # every message, once
