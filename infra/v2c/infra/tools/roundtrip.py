"""One OTA notification through a real broker, vehicle library to gateway library and back.

The smallest proof that the local MQTT path works: an `OTAUpdateAvailable`
crosses mosquitto at QoS 2 between paho-mqtt (the vehicles' library) and
gmqtt (the gateway's), and its MQTT 5 properties arrive intact. `v2c
selftest` runs it against a throw-away broker; the integration tests reuse
the same code so the check a user runs is the check CI runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from v2c.contract.ids import id_text, new_message_id
from v2c.contract.topics import Domain, Topic
from v2c.infra.tools.mqtt5 import (
    CONTENT_TYPE_PROTOBUF,
    GmqttV5Client,
    Mqtt5Properties,
    PahoV5Client,
    ReceivedMessage,
)
from v2c.v1 import common_pb2, ota_pb2

SELFTEST_REGION: Final = "eu-central-1"
SELFTEST_VEHICLE: Final = "VIN-1HGBH41JXMN109186"
OTA_AVAILABLE_TOPIC: Final = str(Topic(SELFTEST_REGION, SELFTEST_VEHICLE, Domain.OTA, "available"))
OTA_STATUS_TOPIC: Final = str(Topic(SELFTEST_REGION, SELFTEST_VEHICLE, Domain.OTA, "status"))
MESSAGE_EXPIRY_S: Final = 3600


class Direction(StrEnum):
    PAHO_TO_GMQTT = "paho → gmqtt"
    GMQTT_TO_PAHO = "gmqtt → paho"


def sample_update_available(now_ms: int | None = None) -> ota_pb2.OTAUpdateAvailable:
    """A realistic notification; the signature is random bytes of a DER signature's size."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    manifest = ota_pb2.OTAManifest(
        update_id="upd-selftest-0001",
        version="2.4.1",
        type=ota_pb2.UPDATE_TYPE_FIRMWARE,
        priority=ota_pb2.UPDATE_PRIORITY_NORMAL,
        size_bytes=52_428_800,
        checksum_sha256=os.urandom(32),
        min_battery_level=40,
        estimated_install_time_sec=600,
        expires_at=now_ms + 7 * 24 * 3600 * 1000,
        target_model="model-s",
        key_id="selftest-key",
        issued_at=now_ms,
    )
    return ota_pb2.OTAUpdateAvailable(
        header=common_pb2.Header(
            message_id=new_message_id(),
            correlation_id=id_text(new_message_id()),
            timestamp=now_ms,
            schema_version="1.0",
        ),
        manifest=manifest.SerializeToString(deterministic=True),
        signature=os.urandom(71),
        key_id="selftest-key",
        download_url="http://127.0.0.1:5000/v2c-firmware/upd-selftest-0001.bin?X-Amz-Expires=900",
    )


def sample_properties(notification: ota_pb2.OTAUpdateAvailable) -> Mqtt5Properties:
    """The properties an OTA notification travels with: typed, correlated, expiring."""
    return Mqtt5Properties(
        message_expiry_interval=MESSAGE_EXPIRY_S,
        content_type=CONTENT_TYPE_PROTOBUF,
        correlation_data=notification.header.message_id,
        user_properties=(
            ("message_type", "v2c.v1.OTAUpdateAvailable"),
            ("schema_version", notification.header.schema_version),
            ("update_id", ota_pb2.OTAManifest.FromString(notification.manifest).update_id),
        ),
    )


@dataclass(frozen=True)
class RoundTrip:
    """What was published and what the other library handed over."""

    direction: Direction
    topic: str
    qos: int
    payload: bytes
    properties: Mqtt5Properties
    received: ReceivedMessage
    sent_at: float  # time.monotonic() just before the publish call

    @property
    def latency_s(self) -> float:
        return self.received.received_at - self.sent_at

    def mismatches(self) -> list[str]:
        """Every way the arrival differs from the publish; empty when it survived intact."""
        got, sent = self.received, self.properties
        problems = []
        if got.topic != self.topic:
            problems.append(f"topic: sent {self.topic!r}, got {got.topic!r}")
        if got.qos != self.qos:
            problems.append(f"QoS: sent {self.qos}, got {got.qos}")
        if got.payload != self.payload:
            problems.append(f"payload: sent {len(self.payload)} B, got {len(got.payload)} B")
        if not expiry_survived(
            sent.message_expiry_interval, got.properties.message_expiry_interval
        ):
            problems.append(
                f"message expiry interval: sent {sent.message_expiry_interval}, "
                f"got {got.properties.message_expiry_interval}"
            )
        for name in ("content_type", "correlation_data", "user_properties"):
            if getattr(sent, name) != getattr(got.properties, name):
                problems.append(
                    f"{name}: sent {getattr(sent, name)!r}, got {getattr(got.properties, name)!r}"
                )
        return problems


def expiry_survived(sent: int | None, received: int | None) -> bool:
    """MQTT 5 (3.3.2.3.3): the broker forwards the *remaining* lifetime, never more.

    mosquitto counts whole seconds, so a message that waited across a second
    boundary arrives with one second less; any positive value up to the
    original is intact.
    """
    if sent is None:
        return received is None
    return received is not None and 0 < received <= sent


async def paho_to_gmqtt(
    host: str,
    port: int,
    payload: bytes,
    properties: Mqtt5Properties,
    *,
    topic: str = OTA_AVAILABLE_TOPIC,
    qos: int = 2,
    wait_s: float = 10.0,
) -> RoundTrip:
    """A vehicle-side publish (paho) that the gateway side (gmqtt) receives.

    `wait_s` bounds each step (connect, SUBACK, QoS flow, arrival).
    """
    async with GmqttV5Client(host, port, timeout=wait_s) as receiver:
        await receiver.subscribe(topic, qos)
        with PahoV5Client(host, port, timeout=wait_s) as sender:
            sent_at = time.monotonic()
            await asyncio.to_thread(sender.publish, topic, payload, qos, properties)
            received = await receiver.receive()
    return RoundTrip(Direction.PAHO_TO_GMQTT, topic, qos, payload, properties, received, sent_at)


async def gmqtt_to_paho(
    host: str,
    port: int,
    payload: bytes,
    properties: Mqtt5Properties,
    *,
    topic: str = OTA_AVAILABLE_TOPIC,
    qos: int = 2,
    wait_s: float = 10.0,
) -> RoundTrip:
    """A gateway-side publish (gmqtt) that a vehicle-side client (paho) receives."""
    with PahoV5Client(host, port, timeout=wait_s) as receiver:
        await asyncio.to_thread(receiver.subscribe, topic, qos)
        async with GmqttV5Client(host, port, timeout=wait_s) as sender:
            sent_at = time.monotonic()
            await sender.publish(topic, payload, qos, properties)
            received = await asyncio.to_thread(receiver.receive)
    return RoundTrip(Direction.GMQTT_TO_PAHO, topic, qos, payload, properties, received, sent_at)
