"""Lambda-like events and contexts, built the way an AWS IoT topic rule with a
Lambda action would build them, so a handler runs unchanged here and on AWS.

The payload travels base64-encoded (IoT rules hand binary payloads to Lambda
with `encode(*, 'base64')`); the event itself is written by
`v2c.contract.events` (the handlers read it there) and its MQTT 5 properties
by `v2c.contract.mqtt_properties`. What is the gateway's own is the context,
the ids it hands out, and `EventFactory` (that event, per topic, cheaper).
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from v2c.contract.events import build_event, event_head, event_payload, message_fields

__all__ = ["EventFactory", "LambdaContext", "build_event", "event_payload", "unique_id"]

_NODE_MASK = (1 << 48) - 1


class _UniqueIds:
    """UUID-4-shaped ids without a syscall each: one random UUID 4 per process,
    its last 48 bits (the node field, random in a UUID 4) counting up.

    Why: the gateway names every message (an SQS messageId) and every handler
    call (a request id). `uuid.uuid4()` reads os.urandom each time, and that
    call releases the GIL: on the event loop thread, with the handler pool's
    workers waiting for the GIL, each id cost a thread handoff (py-spy: a
    fifth of the gateway's per-message time in `uuid4`). Unique within the
    process for 2**48 ids; between processes, 74 random bits of prefix.
    """

    __slots__ = ("_count", "_node", "_prefix")

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        """A fresh random prefix (at start, and in a forked child, which would
        otherwise repeat its parent's ids)."""
        text = str(uuid.uuid4())
        self._prefix = text[:24]  # "xxxxxxxx-xxxx-4xxx-yxxx-"
        self._node = int(text[24:], 16)
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{(self._node + next(self._count)) & _NODE_MASK:012x}"


unique_id = _UniqueIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=unique_id.reseed)


@dataclass(slots=True)
class LambdaContext:
    """The attributes of AWS's LambdaContext that handlers and Powertools read."""

    function_name: str
    timeout_s: float
    aws_request_id: str = field(default_factory=unique_id)
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    log_group_name: str = "/v2c/local"
    log_stream_name: str = "gateway"
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:local:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class EventFactory:
    """`build_event` for one rule and topic, with the topic's part done once.

    Why: the topic's fields (region, vehicle, domain, kind: a `Topic.parse`
    with its validations) are the same for every message on a topic, and
    parsing them was the largest part of building an event (~3 us of ~4).
    Both parts are the contract's own (`event_head`, `message_fields`, which
    `build_event` joins the same way), so the event cannot drift from it.
    """

    __slots__ = ("_head",)

    def __init__(self, rule: str, topic: str) -> None:
        """Raises what `build_event` raises for the topic (`InvalidTopic`)."""
        self._head = event_head(rule, topic)

    def __call__(
        self, payload: bytes, qos: int, properties: dict[str, Any], received_at_ms: int
    ) -> dict[str, Any]:
        return self._head | message_fields(payload, qos, properties, received_at_ms)
