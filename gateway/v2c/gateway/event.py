"""Lambda-like events and contexts, built the way an AWS IoT topic rule with a
Lambda action would build them, so a handler runs unchanged here and on AWS.

The payload travels base64-encoded (IoT rules hand binary payloads to Lambda
with `encode(*, 'base64')`); the event itself is written by
`v2c.contract.events` (the handlers read it there) and its MQTT 5 properties
by `v2c.contract.mqtt_properties`. What is the gateway's own is the context.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from v2c.contract.events import build_event, event_payload

__all__ = ["LambdaContext", "build_event", "event_payload"]


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
