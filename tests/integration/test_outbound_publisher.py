"""The outbound (cloud → vehicle) publisher against a real mosquitto, and its
failure path into the real SQS OTA DLQ on moto: QoS 2 with MQTT 5 properties
arrives; with the broker down, 3 attempts with exponential backoff end in an
outbound record; after the broker is back, `v2c dlq replay` delivers it. The
pipelined form (`publish_many`) keeps the same guarantees per message."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from gateway_support import wait_until
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from typer.testing import CliRunner

from v2c.contract.dead_letter import Direction
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.gateway.publisher import OutboundMessage, OutboundPublisher
from v2c.handlers.dlq.store import DeadLetterStore
from v2c.infra.cli.main import app
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.local.wiring import dead_letter_stores
from v2c.infra.settings import load_settings

VIN = "VIN-1HGBH41JXMN109186"
OTA_TOPIC = f"v2c/v1/eu-west-1/{VIN}/ota/available"
USER_PROPERTIES = (("message_type", "v2c.v1.OTAUpdateAvailable"), ("campaign", "c-42"))


@dataclass(frozen=True)
class Arrived:
    topic: str
    payload: bytes
    qos: int
    properties: Any


class Vehicle:
    """A subscribing vehicle on a persistent session that also re-subscribes on
    every connect, so it hears OTA messages across a broker restart."""

    def __init__(self, endpoint: MqttEndpoint) -> None:
        self.arrived: list[Arrived] = []
        self.subscriptions = 0  # SUBACKs: counted, so a test never publishes before one
        self._lock = threading.Lock()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=VIN, protocol=mqtt.MQTTv5)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        client.connect(endpoint.host, endpoint.port, clean_start=False, properties=props)
        client.loop_start()
        self.client = client
        wait_until(lambda: self.subscriptions >= 1, timeout=10, what="the vehicle subscribed")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            client.subscribe(OTA_TOPIC, qos=2)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        if all(not code.is_failure for code in codes):
            with self._lock:
                self.subscriptions += 1

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.arrived.append(
                Arrived(message.topic, message.payload, message.qos, message.properties)
            )

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [a.payload for a in self.arrived]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def endpoint(mosquitto: MosquittoBroker) -> MqttEndpoint:
    return MqttEndpoint(mosquitto.host, mosquitto.port)


@pytest.fixture
def ota_dlq(stack_dir: Path) -> DeadLetterStore:
    return dead_letter_stores(load_settings(stack_dir))["ota"]


@pytest.fixture
def vehicle(endpoint: MqttEndpoint) -> Iterator[Vehicle]:
    subscriber = Vehicle(endpoint)
    yield subscriber
    subscriber.close()


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def publisher(
    endpoint: MqttEndpoint, ota_dlq: DeadLetterStore, waits: list[float]
) -> Iterator[OutboundPublisher]:
    import time

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    outbound = OutboundPublisher(
        endpoint, "v2c-test-publisher", ota_dlq, backoff_s=0.2, ack_timeout_s=5, sleep=sleep
    )
    outbound.start()
    assert outbound.connected
    yield outbound
    outbound.stop()


def _publish(publisher: OutboundPublisher, payload: bytes) -> Any:
    return publisher.publish(
        OTA_TOPIC,
        payload,
        expiry_s=3600,
        correlation_data=b"\x00update-7",
        user_properties=USER_PROPERTIES,
        context={"update_id": "u-7"},
    )


def test_qos2_publish_arrives_with_expiry_correlation_content_type_and_user_properties(
    publisher: OutboundPublisher, vehicle: Vehicle
) -> None:
    payload = b"\x08\x01\x12\x00\xff"

    result = _publish(publisher, payload)

    assert (result.delivered, result.attempts, result.dead_letter_id) == (True, 1, None)
    wait_until(lambda: vehicle.payloads() == [payload], what="the notification")
    (arrived,) = vehicle.arrived
    assert (arrived.topic, arrived.qos) == (OTA_TOPIC, 2)
    props = arrived.properties
    assert 0 < props.MessageExpiryInterval <= 3600
    assert props.CorrelationData == b"\x00update-7"
    assert props.ContentType == "application/x-protobuf"
    assert tuple(props.UserProperty) == USER_PROPERTIES


def test_broker_down_dead_letters_after_three_attempts_and_replay_delivers_after_restart(
    mosquitto: MosquittoBroker,
    publisher: OutboundPublisher,
    vehicle: Vehicle,
    ota_dlq: DeadLetterStore,
    stack_dir: Path,
    waits: list[float],
) -> None:
    # Given: the broker is down and the publisher knows it
    mosquitto.stop()
    wait_until(lambda: not publisher.connected, what="the publisher to see the broker gone")
    payload = b"\x0a\x03fw2\x00\xfe"

    # When: a notification is published
    result = _publish(publisher, payload)

    # Then: three attempts, exponential backoff between them, then one outbound record
    assert (result.delivered, result.attempts) == (False, 3)
    assert waits == [0.2, 0.4]
    (record,) = list(ota_dlq.list())
    assert record.record_id == result.dead_letter_id
    assert record.direction is Direction.OUTBOUND
    assert (record.queue, record.topic, record.vehicle_id) == ("ota", OTA_TOPIC, VIN)
    assert (record.attempts, record.reason) == (3, "dependency_unavailable")
    assert record.payload == payload
    assert record.context == {"qos": 2, "update_id": "u-7"}
    assert record.properties["user_properties"] == [list(p) for p in USER_PROPERTIES]

    # When: the broker is back and an engineer replays the OTA queue
    subscriptions = vehicle.subscriptions
    mosquitto.start()
    wait_until(lambda: vehicle.subscriptions > subscriptions, what="the vehicle back")
    replay = CliRunner().invoke(
        app,
        ["dlq", "replay", "--all", "--queue", "ota", "--stack", str(stack_dir)],
        env={"COLUMNS": "200"},
    )

    # Then: the vehicle receives it, with its properties, and the queue is empty
    assert replay.exit_code == 0, replay.output
    assert "1 replayed, 0 failed" in replay.output
    wait_until(lambda: payload in vehicle.payloads(), what="the replayed notification")
    (arrived,) = [a for a in vehicle.arrived if a.payload == payload]
    assert arrived.qos == 2
    assert arrived.properties.CorrelationData == b"\x00update-7"
    assert tuple(arrived.properties.UserProperty) == USER_PROPERTIES
    assert list(ota_dlq.list()) == []
    assert ota_dlq.depth() == 0


# -- pipelined publishes (`publish_many`) -----------------------------------------------


def _many(payloads: list[bytes]) -> list[OutboundMessage]:
    return [
        OutboundMessage(
            OTA_TOPIC,
            payload,
            expiry_s=3600,
            correlation_data=b"corr-" + payload,
            user_properties=USER_PROPERTIES,
            context={"update_id": payload.decode()},
        )
        for payload in payloads
    ]


def test_publish_many_delivers_every_message_with_a_window_in_flight(
    publisher: OutboundPublisher, vehicle: Vehicle
) -> None:
    # more than one window (100) of QoS 2 flows
    payloads = [f"n-{i:04d}".encode() for i in range(250)]

    results = publisher.publish_many(_many(payloads))

    assert [(r.delivered, r.attempts, r.dead_letter_id) for r in results] == [(True, 1, None)] * 250
    wait_until(lambda: len(vehicle.payloads()) >= 250, what="every notification")
    assert sorted(vehicle.payloads()) == payloads  # each once, whatever the order
    for arrived in vehicle.arrived:
        assert arrived.qos == 2
        assert arrived.properties.CorrelationData == b"corr-" + arrived.payload
        assert tuple(arrived.properties.UserProperty) == USER_PROPERTIES


def test_publish_many_with_the_broker_down_dead_letters_each_message_alone(
    mosquitto: MosquittoBroker,
    publisher: OutboundPublisher,
    vehicle: Vehicle,
    ota_dlq: DeadLetterStore,
    waits: list[float],
) -> None:
    # Given: the broker is down and the publisher knows it
    mosquitto.stop()
    wait_until(lambda: not publisher.connected, what="the publisher to see the broker gone")
    payloads = [f"down-{i}".encode() for i in range(5)]

    # When: a chunk of notifications is published
    results = publisher.publish_many(_many(payloads))

    # Then: three attempts each (in rounds: one backoff for all, not one per
    # message), then one outbound record per message, answered per message
    assert [(r.delivered, r.attempts) for r in results] == [(False, 3)] * 5
    assert waits == [0.2, 0.4]
    records = {r.record_id: r for r in ota_dlq.list()}
    assert set(records) == {r.dead_letter_id for r in results}
    for result, payload in zip(results, payloads, strict=True):
        record = records[result.dead_letter_id]  # type: ignore[index]
        assert record.payload == payload
        assert (record.topic, record.attempts, record.reason) == (
            OTA_TOPIC,
            3,
            "dependency_unavailable",
        )
        assert record.context == {"qos": 2, "update_id": payload.decode()}
        assert (
            record.properties["correlation_data_b64"]
            == base64.b64encode(b"corr-" + payload).decode()
        )
