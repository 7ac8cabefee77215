"""OTA notifications through the AWS IoT data plane (the Lambda form).

IoT Core accepts QoS 0 and 1 only: the notification goes at QoS 1 and the
exactly-once effect rests on the update id and the report sequence numbers
(see the spec README). A publish that fails after botocore's retries goes
to the OTA DLQ like the local sink's.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.handlers.dlq.store import DeadLetterStore
from v2c.handlers.ota.notifier import MESSAGE_EXPIRY_S, NOTIFY_SOURCE

logger = logging.getLogger(__name__)


class IotDataSink:
    def __init__(self, client: Any, dead_letters: DeadLetterStore) -> None:
        self._iot = client
        self._dead_letters = dead_letters

    def send(
        self, topic: str, payload: bytes, *, correlation_id: str, context: dict[str, Any]
    ) -> bool:
        try:
            self._iot.publish(
                topic=topic,
                qos=1,
                payload=payload,
                contentType="application/x-protobuf",
                correlationData=correlation_id,
                messageExpiry=MESSAGE_EXPIRY_S,
            )
        except (BotoCoreError, ClientError) as exc:
            record = DeadLetterRecord.from_error(
                queue=self._dead_letters.name,
                direction=Direction.OUTBOUND,
                source=NOTIFY_SOURCE,
                topic=topic,
                payload=payload,
                error=exc,
                attempts=3,
                properties={"message_expiry_interval": MESSAGE_EXPIRY_S},
                vehicle_id=str(context.get("vehicle_id", "")),
                context={"qos": 1, **context},
                now_ms=int(time.time() * 1000),
            )
            self._dead_letters.put(record)
            logger.warning("notification dead-lettered", extra={"topic": topic, "error": str(exc)})
            return False
        return True
