"""Domain events in the AWS style: EventBridge `PutEvents` on the v2c bus.

`firmware.uploaded`, `campaign.created`, `campaign.started`,
`update.cancelled`, `rollback.initiated` (and a few more) are facts other
systems may react to; none of them is needed for the operation that raised
it. So publishing never blocks or fails an operation: an error is logged and
counted (`v2c_ota_event_failures_total`), and the operation goes on.

The payloads carry every field spec 003 ("Domain Events") lists under the
spec's names (BR-EVT-003: consumers correlate by id, and a consumer that
only reads the event must not need to call back): the builders below are
the one place each shape is made, pure, so a unit test pins each one. The
names v2c used before the spec's (`vehicle_id`, `version`, `target_count`)
stay beside them for existing consumers. `timestamp` is ISO 8601 UTC of the
change the event reports, taken from the record (never a second clock read).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Counter

if TYPE_CHECKING:
    from v2c.handlers.ota.campaigns.record import Campaign
    from v2c.handlers.ota.updates.record import VehicleUpdate

logger = logging.getLogger(__name__)

SOURCE: Final = "v2c.ota"
EVENT_FAILURES: Final = Counter(
    "v2c_ota_event_failures", "Domain events that could not be published", ["detail_type"]
)


def iso_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with `Z` (the firmware records' style)."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def campaign_detail(campaign: Campaign, **extra: Any) -> dict[str, Any]:
    """Every `campaign.*` event's payload: spec 003's campaign.created and
    campaign.started fields (the latter are a subset), then `extra`."""
    return {
        "campaign_id": campaign.campaign_id,
        "name": campaign.name,
        "status": campaign.status.value,
        "firmware_id": campaign.firmware_id,
        "firmware_version": campaign.version,
        "version": campaign.version,
        "target_device_count": campaign.target_count,
        "target_count": campaign.target_count,
        "deployment_strategy": campaign.spec.deployment_strategy.value,
        "priority": campaign.spec.priority.value,
        "created_by": campaign.created_by,
        "timestamp": iso_ms(campaign.updated_at_ms),
        **extra,
    }


def update_cancelled_detail(update: VehicleUpdate, *, reason: str = "") -> dict[str, Any]:
    """`update.cancelled`: `update`, the record as cancelled. `update_id` is
    the API's per-vehicle id (`GET /updates/{update_id}`)."""
    detail: dict[str, Any] = {
        "update_id": update.device_update_id,
        "device_id": update.vehicle_id,
        "vehicle_id": update.vehicle_id,
        "firmware_id": update.firmware_id,
        "firmware_version": update.to_version,
        "campaign_id": update.campaign_id,
        "timestamp": iso_ms(update.updated_at_ms),
    }
    if reason:
        detail["reason"] = reason
    return detail


def rollback_initiated_detail(
    rollback: VehicleUpdate, *, campaign_id: str, trigger: str
) -> dict[str, Any]:
    """`rollback.initiated` for one vehicle: `rollback`, the rollback's own
    update record (its id is the rollback's); `trigger` one of BR-OTA-031's
    names (`manual`, `failure_rate`, ...). `from_version` is the version the
    vehicle leaves ("" when unknown)."""
    return {
        "rollback_id": rollback.update_id,
        "device_id": rollback.vehicle_id,
        "vehicle_id": rollback.vehicle_id,
        "campaign_id": campaign_id,
        "from_version": rollback.from_version,
        "to_version": rollback.to_version,
        "trigger": trigger,
        "reason": rollback.reason,
        "timestamp": iso_ms(rollback.created_at_ms or rollback.updated_at_ms),
    }


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
