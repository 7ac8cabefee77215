"""The dead-letter record: everything needed to understand a failure and to
send the message back through the path it failed on.

The payload is kept byte for byte (base64 in JSON), with the topic and the
MQTT 5 properties, so a replay is indistinguishable from the first delivery.

A message that could not be published or handled is recorded by
`DeadLetterRecord.for_publish`, the one place that reads the vehicle out of a
topic for a record: the gateway's inbound path, the local publisher and the
IoT data sink used to do it three ways (two by splitting the topic by hand).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from v2c.contract.errors import CodecError, InvalidTopic, V2CError
from v2c.contract.topics import Topic

JsonDict = dict[str, Any]
# The metrics label of a record whose topic names no region (it is outside the scheme).
UNKNOWN_REGION = "unknown"


def _topic(topic: str) -> Topic | None:
    try:
        return Topic.parse(topic)
    except InvalidTopic:
        return None


def topic_region(topic: str) -> str:
    """The region of a topic in the scheme, else `unknown`: the `region` label
    of the dead-letter metric, read by `Topic.parse` like every other topic."""
    parsed = _topic(topic)
    return parsed.region if parsed is not None else UNKNOWN_REGION


class Direction(StrEnum):
    """Inbound: vehicle → handler failed. Outbound: cloud → vehicle publish failed."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


def new_record_id(now_ms: int) -> str:
    """Time-ordered id: listing a store by key lists it by failure time."""
    return f"{now_ms:013d}-{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    queue: str  # "telemetry" | "ota"
    direction: Direction
    source: str  # the rule (inbound) or publisher (outbound) that failed
    topic: str
    payload: bytes
    reason: str  # machine-readable, from V2CError.reason
    error: str  # human-readable error text
    attempts: int
    first_failed_at: int  # epoch ms
    last_failed_at: int  # epoch ms
    properties: JsonDict = field(default_factory=dict)
    vehicle_id: str = ""
    context: JsonDict = field(default_factory=dict)  # batch_id, index, update_id ...
    record_id: str = ""

    def __post_init__(self) -> None:
        if not self.record_id:
            object.__setattr__(self, "record_id", new_record_id(self.first_failed_at))

    @classmethod
    def from_error(
        cls,
        *,
        queue: str,
        direction: Direction,
        source: str,
        topic: str,
        payload: bytes,
        error: BaseException,
        attempts: int,
        properties: JsonDict | None = None,
        vehicle_id: str = "",
        context: JsonDict | None = None,
        now_ms: int | None = None,
    ) -> DeadLetterRecord:
        """Build a record from an exception; foreign exceptions get reason `handler_error`."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        reason = error.reason if isinstance(error, V2CError) else "handler_error"
        text = f"{type(error).__name__}: {error}"
        return cls(
            queue=queue,
            direction=direction,
            source=source,
            topic=topic,
            payload=payload,
            reason=reason,
            error=text,
            attempts=attempts,
            first_failed_at=now,
            last_failed_at=now,
            properties=dict(properties or {}),
            vehicle_id=vehicle_id,
            context=dict(context or {}),
        )

    @classmethod
    def for_publish(
        cls,
        topic: str,
        payload: bytes,
        *,
        queue: str,
        direction: Direction,
        source: str,
        error: BaseException,
        attempts: int,
        properties: JsonDict | None = None,
        context: JsonDict | None = None,
        now_ms: int | None = None,
    ) -> DeadLetterRecord:
        """The record of one MQTT message that failed on `topic`, either way:
        a vehicle's publish its handler could not take, or a cloud publish
        that did not reach the vehicle. The vehicle is the topic's (the broker's
        ACL vouches for it); a topic outside the scheme is kept as it came,
        with no vehicle, so the record still holds what failed."""
        parsed = _topic(topic)
        return cls.from_error(
            queue=queue,
            direction=direction,
            source=source,
            topic=topic,
            payload=payload,
            error=error,
            attempts=attempts,
            properties=properties,
            vehicle_id=parsed.vehicle_id if parsed is not None else "",
            context=context,
            now_ms=now_ms,
        )

    @property
    def region(self) -> str:
        """The topic's region, the `region` label of the dead-letter metric."""
        return topic_region(self.topic)

    def with_attempt(self, error: BaseException, now_ms: int) -> DeadLetterRecord:
        """The same record after one more failed attempt (a replay that failed)."""
        return replace(
            self,
            attempts=self.attempts + 1,
            last_failed_at=now_ms,
            error=f"{type(error).__name__}: {error}",
            reason=error.reason if isinstance(error, V2CError) else "handler_error",
        )

    def to_json(self) -> JsonDict:
        return {
            "record_id": self.record_id,
            "queue": self.queue,
            "direction": self.direction.value,
            "source": self.source,
            "topic": self.topic,
            "payload_b64": base64.b64encode(self.payload).decode("ascii"),
            "payload_size": len(self.payload),
            "properties": self.properties,
            "reason": self.reason,
            "error": self.error,
            "attempts": self.attempts,
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
            "vehicle_id": self.vehicle_id,
            "context": self.context,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, data: JsonDict) -> DeadLetterRecord:
        try:
            return cls(
                record_id=str(data["record_id"]),
                queue=str(data["queue"]),
                direction=Direction(data["direction"]),
                source=str(data["source"]),
                topic=str(data["topic"]),
                payload=base64.b64decode(data["payload_b64"], validate=True),
                properties=dict(data.get("properties") or {}),
                reason=str(data["reason"]),
                error=str(data["error"]),
                attempts=int(data["attempts"]),
                first_failed_at=int(data["first_failed_at"]),
                last_failed_at=int(data["last_failed_at"]),
                vehicle_id=str(data.get("vehicle_id", "")),
                context=dict(data.get("context") or {}),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise CodecError(f"not a dead-letter record: {exc}") from exc

    @classmethod
    def loads(cls, text: str | bytes) -> DeadLetterRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CodecError(f"dead-letter record is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CodecError("dead-letter record must be a JSON object")
        return cls.from_json(data)
