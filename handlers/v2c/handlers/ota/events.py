"""Domain events in the AWS style: EventBridge `PutEvents` on the v2c bus.

`firmware.uploaded`, `campaign.created`, `campaign.started`,
`update.cancelled`, `rollback.initiated` (and a few more) are facts other
systems may react to; none of them is needed for the operation that raised
it. So publishing never blocks or fails an operation: an error is logged and
counted (`v2c_ota_event_failures_total`), and the operation goes on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Counter

logger = logging.getLogger(__name__)

SOURCE: Final = "v2c.ota"
EVENT_FAILURES: Final = Counter(
    "v2c_ota_event_failures", "Domain events that could not be published", ["detail_type"]
)


class EventBridgePublisher:
    def __init__(self, client: Any, bus_name: str, source: str = SOURCE) -> None:
        self._client = client
        self._bus = bus_name
        self._source = source

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        if not self._bus:
            return
        entry = {
            "Source": self._source,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, default=str),
            "EventBusName": self._bus,
        }
        try:
            answer = self._client.put_events(Entries=[entry])
        except (BotoCoreError, ClientError) as exc:
            self._failed(detail_type, str(exc))
            return
        if answer.get("FailedEntryCount"):
            entries = answer.get("Entries") or [{}]
            self._failed(detail_type, str(entries[0].get("ErrorMessage", "rejected")))

    def _failed(self, detail_type: str, error: str) -> None:
        EVENT_FAILURES.labels(detail_type).inc()
        logger.warning("event not published", extra={"detail_type": detail_type, "error": error})


@dataclass
class RecordingEventPublisher:
    """Keeps events in memory: unit tests, and a stack without a bus."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        self.events.append((detail_type, detail))
