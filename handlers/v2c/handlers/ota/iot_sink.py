"""OTA notifications through the AWS IoT data plane (the Lambda form).

IoT Core accepts QoS 0 and 1 only: the notification goes at QoS 1 and the
exactly-once effect rests on the update id and the report sequence numbers
(see the spec README). A publish that fails after botocore's retries goes
to the OTA DLQ like the local sink's, with the properties it was sent with,
so `v2c dlq replay` sends the same message again.

The data plane has no batch publish: `send_many` keeps a window of
`publish` calls in flight on a bounded thread pool (botocore clients are
thread-safe; the window should not exceed the client's connection pool,
`max_pool_connections`, or the calls queue for a connection anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.mqtt_properties import MqttProperties
from v2c.handlers.aws_errors import translate
from v2c.handlers.dlq.store import DeadLetterStore
from v2c.handlers.ota.notifier import MESSAGE_EXPIRY_S, NOTIFY_SOURCE, SinkMessage

logger = logging.getLogger(__name__)

# Publishes in flight at once: `aws_client_config`'s connection pool.
DEFAULT_WINDOW: Final = 32


class IotDataSink:
    def __init__(
        self, client: Any, dead_letters: DeadLetterStore, *, window: int = DEFAULT_WINDOW
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self._iot = client
        self._dead_letters = dead_letters
        self._window = window

    def send_many(self, messages: Sequence[SinkMessage]) -> list[bool]:
        """`send` for each message, up to the window at once; in order."""
        if len(messages) <= 1:
            return [self._send(m) for m in messages]
        workers = min(self._window, len(messages))
        with ThreadPoolExecutor(workers, thread_name_prefix="iot-notify") as pool:
            return list(pool.map(self._send, messages))

    def _send(self, m: SinkMessage) -> bool:
        return self.send(
            m.topic, m.payload, correlation_id=m.correlation_id, context=m.context, source=m.source
        )

    def send(
        self,
        topic: str,
        payload: bytes,
        *,
        correlation_id: str,
        context: dict[str, Any],
        source: str = NOTIFY_SOURCE,
    ) -> bool:
        properties = MqttProperties(
            message_expiry_interval=MESSAGE_EXPIRY_S,
            content_type="application/x-protobuf",
            correlation_data=correlation_id.encode(),
        )
        try:
            self._iot.publish(topic=topic, qos=1, payload=payload, **properties.to_iot_data())
        except (BotoCoreError, ClientError) as exc:
            record = DeadLetterRecord.for_publish(
                topic,
                payload,
                queue=self._dead_letters.name,
                direction=Direction.OUTBOUND,
                source=source,
                error=translate(f"publishing to {topic}", exc),
                attempts=3,
                properties=properties.to_json(),
                context={"qos": 1, **context},
            )
            self._dead_letters.put(record)
            logger.warning("notification dead-lettered", extra={"topic": topic, "error": str(exc)})
            return False
        return True
