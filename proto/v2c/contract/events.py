"""The event a Lambda-style handler receives for one MQTT message, written and read here.

It has the shape an AWS IoT topic rule with a Lambda action produces (see the
rule SQL in `template.yaml`): payload base64-encoded, topic, region and
vehicle id from the topic levels, MQTT 5 properties as JSON
(`v2c.contract.mqtt_properties`), receive time. The gateway writes it, AWS IoT
writes it, and a dead-letter replay (local or Lambda) writes it again; the
telemetry and OTA status handlers read it. Writer and reader live in one
module so the two sides cannot drift, and so a handler never needs the
gateway to understand its own input.

Region and vehicle id are always taken from the topic, validated by
`Topic.parse`, never from the payload: the broker's ACL vouches for the topic.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from v2c.contract.dead_letter import DeadLetterRecord
from v2c.contract.errors import InvalidInput
from v2c.contract.mqtt_properties import CONTENT_TYPE, DUP
from v2c.contract.topics import Topic

JsonDict = dict[str, Any]
# Set by every redriver: the dead-letter record an event replays. A replay
# that fails again must raise (the record stays queued) instead of writing a
# second record for the same message.
REPLAY_PROPERTY: Final = "replayed_from"


def _now_ms() -> int:
    return int(time.time() * 1000)


def build_event(
    *,
    rule: str,
    topic: str,
    payload: bytes,
    qos: int,
    properties: JsonDict,
    received_at_ms: int | None = None,
) -> JsonDict:
    """The event a handler receives. Raises `InvalidTopic` for a topic outside
    the scheme: no rule routes such a message."""
    return event_head(rule, topic) | message_fields(payload, qos, properties, received_at_ms)


def event_head(rule: str, topic: str) -> JsonDict:
    """The event's fields that depend on the rule and topic alone: the same
    for every message on a topic, so the gateway builds them once per topic.
    Raises `InvalidTopic` as `build_event` does."""
    parsed = Topic.parse(topic)
    return {
        "rule": rule,
        "topic": topic,
        "region": parsed.region,
        "vehicle_id": parsed.vehicle_id,
        "domain": parsed.domain.value,
        "kind": parsed.kind,
    }


def message_fields(
    payload: bytes, qos: int, properties: JsonDict, received_at_ms: int | None = None
) -> JsonDict:
    """The event's fields of one message, after its `event_head`."""
    return {
        "qos": qos,
        "payload": base64.b64encode(payload).decode("ascii"),
        "properties": properties,
        "received_at": received_at_ms if received_at_ms is not None else _now_ms(),
    }


def replay_event(
    record: DeadLetterRecord, *, qos: int | None = None, received_at_ms: int | None = None
) -> JsonDict:
    """The event the rule named by an inbound `record` received the first time,
    marked as a replay of it. `qos` defaults to the topic's (the QoS table)."""
    return build_event(
        rule=record.source,
        topic=record.topic,
        payload=record.payload,
        qos=Topic.parse(record.topic).qos if qos is None else qos,
        properties={**record.properties, REPLAY_PROPERTY: record.record_id},
        received_at_ms=received_at_ms,
    )


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One IoT-rule event, checked: what every inbound handler works from.

    `properties` stays the event's JSON object as it came (a replay's marker
    included), so a dead-letter record written from it keeps everything.
    """

    rule: str
    topic: Topic
    payload: bytes
    properties: JsonDict = field(default_factory=dict)
    received_at_ms: int = 0

    @property
    def region(self) -> str:
        return self.topic.region

    @property
    def vehicle_id(self) -> str:
        return self.topic.vehicle_id

    @property
    def replay_of(self) -> str:
        """The DLQ record this event replays, or "" for a first delivery."""
        return str(self.properties.get(REPLAY_PROPERTY, ""))

    @property
    def redelivered(self) -> bool:
        """The broker set DUP: a QoS 1 redelivery of an unacknowledged message."""
        return bool(self.properties.get(DUP))

    @property
    def content_type(self) -> str:
        return str(self.properties.get(CONTENT_TYPE, ""))

    @classmethod
    def parse(cls, event: Mapping[str, Any], default_rule: str = "") -> InboundEvent:
        """Raises `InvalidTopic` for a topic outside the scheme, `InvalidInput`
        for an event that is not one (no topic, a payload that is not base64)."""
        if "topic" not in event:
            raise InvalidInput("event without 'topic'")
        topic = Topic.parse(str(event["topic"]))
        try:
            payload = base64.b64decode(event.get("payload", ""), validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise InvalidInput(f"event payload is not base64: {exc}") from None
        properties = event.get("properties") or {}
        received = event.get("received_at")
        return cls(
            rule=str(event.get("rule") or default_rule),
            topic=topic,
            payload=payload,
            properties=dict(properties) if isinstance(properties, Mapping) else {},
            received_at_ms=int(received) if received else _now_ms(),
        )


def is_replay(event: Mapping[str, Any]) -> bool:
    """Whether a raw event, even one too broken to parse, is a DLQ replay."""
    properties = event.get("properties")
    return isinstance(properties, Mapping) and bool(properties.get(REPLAY_PROPERTY))


def raw_topic(event: Mapping[str, Any]) -> str:
    """The topic of an event that could not be parsed, for its DLQ record."""
    return str(event.get("topic", ""))


def raw_payload(event: Mapping[str, Any]) -> bytes:
    """The payload of an event that could not be parsed: decoded if possible,
    else the text as it came, so the DLQ record keeps what there was."""
    value = event.get("payload", "")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return str(value).encode()


def event_payload(event: Mapping[str, Any]) -> bytes:
    """The raw payload bytes of an event (the inverse of `build_event`)."""
    return base64.b64decode(event["payload"])
