"""Lambda-like events and contexts, built the way an AWS IoT topic rule with a
Lambda action would build them, so a handler runs unchanged here and on AWS.

The payload travels base64-encoded (IoT rules hand binary payloads to Lambda
with `encode(*, 'base64')`); the MQTT 5 properties are normalised once, here,
from gmqtt's shape into plain JSON.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from v2c.contract.events import build_event, event_payload

JsonDict = dict[str, Any]

__all__ = ["LambdaContext", "build_event", "event_payload", "properties_to_json"]


def properties_to_json(properties: Mapping[str, Any]) -> JsonDict:
    """gmqtt gives `{name: [value, ...]}` plus `dup`/`retain`; keep what a handler needs."""

    def first(name: str) -> Any:
        value = properties.get(name)
        if isinstance(value, list | tuple):
            return value[0] if value else None
        return value

    out: JsonDict = {}
    if (expiry := first("message_expiry_interval")) is not None:
        out["message_expiry_interval"] = int(expiry)
    if (ctype := first("content_type")) is not None:
        out["content_type"] = ctype.decode() if isinstance(ctype, bytes) else str(ctype)
    if (corr := first("correlation_data")) is not None:
        raw = corr if isinstance(corr, bytes) else str(corr).encode()
        out["correlation_data_b64"] = base64.b64encode(raw).decode("ascii")
    if (pfi := first("payload_format_indicator")) is not None:
        out["payload_format_indicator"] = int(pfi)
    pairs = properties.get("user_property") or []
    if pairs:
        out["user_properties"] = [[str(k), str(v)] for k, v in pairs]
    if properties.get("dup"):
        out["dup"] = True
    return out


@dataclass
class LambdaContext:
    """The attributes of AWS's LambdaContext that handlers and Powertools read."""

    function_name: str
    timeout_s: float
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
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
