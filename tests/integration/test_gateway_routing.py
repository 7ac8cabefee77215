"""Gateway against a real mosquitto: routing, Lambda-like events, dead-lettering,
shared subscriptions."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from gateway_handlers import FLAKY_RULES, RECORDING_RULES, read_records
from gateway_support import memory_dlqs, publish_all, running_gateway, vehicle_client, wait_until

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.infra.local.broker import MosquittoBroker, MosquittoConfig

VIN = "VIN-1HGBH41JXMN109186"
TELEMETRY_TOPIC = f"v2c/v1/eu-west-1/{VIN}/telemetry/vehicle"


@pytest.fixture
def broker(tmp_path: Path) -> MosquittoBroker:
    with MosquittoBroker(MosquittoConfig(data_dir=tmp_path / "broker")) as b:
        yield b


@pytest.fixture
def endpoint(broker: MosquittoBroker) -> MqttEndpoint:
    return MqttEndpoint(broker.host, broker.port)


@pytest.fixture
def record_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "records.jsonl")
    monkeypatch.setenv("V2C_TEST_RECORD_FILE", path)
    return path


def test_message_reaches_the_rule_handler_with_region_and_vehicle_from_topic(
    endpoint: MqttEndpoint, record_file: str
) -> None:
    with (
        running_gateway(endpoint, RECORDING_RULES, client_id="gw-routing") as gateway,
        vehicle_client(endpoint, VIN) as vehicle,
    ):
        vehicle.publish(TELEMETRY_TOPIC, b"sample-1", qos=1).wait_for_publish(10)
        vehicle.publish(f"v2c/v1/eu-west-1/{VIN}/ota/status", b"status-1", qos=2)
        wait_until(lambda: len(read_records(record_file)) == 2, what="two handled messages")
        assert gateway.metrics.handled.labels("telemetry")._value.get() == 1

    by_rule = {r["rule"]: r for r in read_records(record_file)}
    assert by_rule["telemetry"]["region"] == "eu-west-1"
    assert by_rule["telemetry"]["vehicle_id"] == VIN
    assert by_rule["telemetry"]["payload"] == "sample-1"
    assert 0 < by_rule["telemetry"]["remaining_ms"] <= 30_000
    assert by_rule["ota_status"]["payload"] == "status-1"


def test_failing_handler_dead_letters_with_payload_and_gateway_keeps_serving(
    endpoint: MqttEndpoint, record_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = tmp_path / "fail"
    flag.touch()
    monkeypatch.setenv("V2C_TEST_FAIL_FLAG", str(flag))
    dlqs = memory_dlqs()
    payload = bytes(range(256))  # binary, to prove bytes survive intact
    with (
        running_gateway(endpoint, FLAKY_RULES, dlqs, client_id="gw-dlq") as gateway,
        vehicle_client(endpoint, VIN) as vehicle,
    ):
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/x-protobuf"
        props.UserProperty = [("schema_version", "1.0")]
        vehicle.publish(TELEMETRY_TOPIC, payload, qos=1, properties=props).wait_for_publish(10)
        wait_until(lambda: dlqs["telemetry"].depth() == 1, what="a DLQ record")

        flag.unlink()  # the store recovers: the gateway still serves
        vehicle.publish(TELEMETRY_TOPIC, b"after-recovery", qos=1).wait_for_publish(10)
        wait_until(lambda: len(read_records(record_file)) == 1, what="the next message handled")
        assert gateway.metrics.failed.labels("telemetry", "handler_error")._value.get() == 1

    (record,) = list(dlqs["telemetry"].list())
    assert record.payload == payload
    assert record.topic == TELEMETRY_TOPIC
    assert record.vehicle_id == VIN
    assert record.source == "telemetry"
    assert record.reason == "handler_error"
    assert "store unavailable" in record.error
    assert record.attempts == 1
    assert record.properties["content_type"] == "application/x-protobuf"
    assert record.properties["user_properties"] == [["schema_version", "1.0"]]


def test_two_gateways_on_one_shared_subscription_handle_each_message_once(
    endpoint: MqttEndpoint, record_file: str
) -> None:
    count = 400
    with (
        running_gateway(endpoint, RECORDING_RULES, client_id="gw-a"),
        running_gateway(endpoint, RECORDING_RULES, client_id="gw-b"),
        vehicle_client(endpoint, VIN) as vehicle,
    ):
        publish_all(vehicle, [(TELEMETRY_TOPIC, f"m{i}".encode()) for i in range(count)])
        wait_until(lambda: len(read_records(record_file)) >= count, what=f"{count} messages")

    records = read_records(record_file)
    payloads = [r["payload"] for r in records]
    assert sorted(payloads) == sorted(f"m{i}" for i in range(count))  # each exactly once
    shares = {g: sum(1 for r in records if r["gateway"] == g) for g in ("gw-a", "gw-b")}
    assert all(n > 0 for n in shares.values()), shares  # the broker split the load


def test_event_payload_is_base64_as_an_iot_rule_sends_it() -> None:
    from v2c.gateway.event import build_event, event_payload

    event = build_event(
        rule="telemetry", topic=TELEMETRY_TOPIC, payload=b"\x00\xff", qos=1, properties={}
    )
    assert event["payload"] == base64.b64encode(b"\x00\xff").decode()
    assert event_payload(event) == b"\x00\xff"
    assert (event["region"], event["vehicle_id"], event["domain"], event["kind"]) == (
        "eu-west-1",
        VIN,
        "telemetry",
        "vehicle",
    )
