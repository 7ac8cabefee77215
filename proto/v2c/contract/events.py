"""The event a Lambda-style handler receives for one MQTT message.

It has the shape an AWS IoT topic rule with a Lambda action produces (see the
rule SQL in `template.yaml`): payload base64-encoded, topic, region and
vehicle id from the topic levels, MQTT 5 properties, receive time. Built here,
in the contract, so the gateway and the dead-letter replay (local and Lambda)
make exactly the same event.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any

from v2c.contract.topics import Topic

JsonDict = dict[str, Any]


def build_event(
    *,
    rule: str,
    topic: str,
    payload: bytes,
    qos: int,
    properties: JsonDict,
    received_at_ms: int | None = None,
) -> JsonDict:
    """The event a handler receives. Region and vehicle id come from the topic,
    never from the payload: the broker's ACL vouches for the topic."""
    parsed = Topic.parse(topic)
    return {
        "rule": rule,
        "topic": topic,
        "region": parsed.region,
        "vehicle_id": parsed.vehicle_id,
        "domain": parsed.domain.value,
        "kind": parsed.kind,
        "qos": qos,
        "payload": base64.b64encode(payload).decode("ascii"),
        "properties": properties,
        "received_at": received_at_ms if received_at_ms is not None else int(time.time() * 1000),
    }


def event_payload(event: Mapping[str, Any]) -> bytes:
    """The raw payload bytes of an event (the inverse of `build_event`)."""
    return base64.b64decode(event["payload"])
