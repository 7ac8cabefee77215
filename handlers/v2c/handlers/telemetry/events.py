"""The Lambda event of an IoT topic rule, as the telemetry handlers read it.

The gateway (`v2c.gateway.event.build_event`) and AWS IoT build the same
shape: base64 payload, topic, region and vehicle id from the topic, MQTT 5
properties as JSON. Handlers may not import the gateway, so this is the
reading side of that contract. Region and vehicle id are taken from the
topic, validated by `Topic.parse`: the broker's ACL vouches for the topic,
never for the payload.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from v2c.contract.errors import InvalidInput
from v2c.contract.topics import Topic

JsonDict = dict[str, Any]
REPLAY_PROPERTY: Final = "replayed_from"  # set by the DLQ redrivers


@dataclass(frozen=True, slots=True)
class InboundEvent:
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
        return bool(self.properties.get("dup"))

    @property
    def content_type(self) -> str:
        return str(self.properties.get("content_type", ""))

    @classmethod
    def parse(cls, event: Mapping[str, Any], default_rule: str) -> InboundEvent:
        """Raises InvalidTopic / InvalidInput for an event that is not one."""
        try:
            topic = Topic.parse(str(event["topic"]))
            payload = base64.b64decode(event.get("payload", ""), validate=True)
        except KeyError as exc:
            raise InvalidInput(f"event without {exc.args[0]!r}") from None
        except (binascii.Error, ValueError, TypeError) as exc:
            raise InvalidInput(f"event payload is not base64: {exc}") from None
        properties = event.get("properties") or {}
        received = event.get("received_at")
        return cls(
            rule=str(event.get("rule") or default_rule),
            topic=topic,
            payload=payload,
            properties=dict(properties) if isinstance(properties, Mapping) else {},
            received_at_ms=int(received) if received else int(time.time() * 1000),
        )


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
