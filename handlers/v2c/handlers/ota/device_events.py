"""The OTA side of a vehicle's lifecycle: its updates read and cancelled, `device.deleted` consumed.

Decommissioning a vehicle (`v2c.handlers.vehicles`) cancels its active
updates itself and then puts `device.deleted` on the event bus; the OTA
side consumes that event (`v2c.handlers.ota_device_events`, an EventBridge
rule's target in AWS; called in process by the local API) and cancels
again. Cancelling is idempotent, so the second pass normally finds nothing
left; it exists for what the first could not see: an update created by a
campaign wave between the decommission's read and its write, or a
decommission whose own cancel failed half-way.

An update being installed (`INSTALL_PHASE`) cannot be cancelled by the
cloud: only the vehicle ends it. It is reported as not cancellable and left
to the campaign's timeouts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from v2c.contract.errors import InvalidInput, InvalidTopic, V2CError
from v2c.contract.topics import validate_vin
from v2c.handlers.ota.domain.update_state import CANCELLABLE, TERMINAL, Command
from v2c.handlers.ota.events import update_cancelled_detail
from v2c.handlers.ota.stores import UpdateStore
from v2c.handlers.ota.updates.commands import UpdateCommands
from v2c.handlers.ota.updates.record import VehicleUpdate

logger = logging.getLogger(__name__)

DEVICE_DELETED: Final = "device.deleted"
VEHICLES_SOURCE: Final = "v2c.vehicles"


class Events(Protocol):
    def publish(self, detail_type: str, detail: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What cancelling a vehicle's updates did."""

    cancelled: tuple[str, ...]  # device update ids cancelled now
    not_cancellable: tuple[str, ...]  # being installed: only the vehicle ends them

    def to_json(self) -> dict[str, Any]:
        return {"cancelled": list(self.cancelled), "not_cancellable": list(self.not_cancellable)}


class OtaVehicleUpdates:
    """A vehicle's updates as the inventory needs them, over the OTA stores."""

    def __init__(self, updates: UpdateStore, commands: UpdateCommands, events: Events) -> None:
        self._updates = updates
        self._commands = commands
        self._events = events

    def active(self, vehicle_id: str) -> list[VehicleUpdate]:
        return [u for u in self._updates.for_vehicle(vehicle_id) if u.state not in TERMINAL]

    def last_report_ms(self, vehicle_id: str) -> int:
        """The newest update record a report of the vehicle moved (0: none)."""
        reported = [
            u.updated_at_ms for u in self._updates.for_vehicle(vehicle_id) if u.last_sequence
        ]
        return max(reported, default=0)

    def cancel_all(self, vehicle_id: str, reason: str) -> Cancelled:
        cancelled: list[str] = []
        left: list[str] = []
        for update in self.active(vehicle_id):
            if update.state not in CANCELLABLE:
                left.append(update.device_update_id)
                continue
            applied = self._commands.apply(update, Command.CANCEL, reason=reason)
            if not applied.changed:
                if applied.update.state not in TERMINAL:  # moved on to installing meanwhile
                    left.append(update.device_update_id)
                continue
            cancelled.append(update.device_update_id)
            self._events.publish(
                "update.cancelled", update_cancelled_detail(applied.update, reason=reason)
            )
        return Cancelled(tuple(cancelled), tuple(left))


def deleted_vehicle(event: Mapping[str, Any]) -> str | None:
    """The vehicle a `device.deleted` EventBridge event names; None for
    another detail type (a rule may deliver more); `InvalidInput` for a
    `device.deleted` without a valid vehicle id."""
    if event.get("detail-type") != DEVICE_DELETED:
        return None
    detail = event.get("detail")
    vehicle_id = detail.get("vehicle_id") if isinstance(detail, Mapping) else None
    if not isinstance(vehicle_id, str):
        raise InvalidInput("device.deleted without a vehicle_id in its detail")
    try:
        return validate_vin(vehicle_id)
    except InvalidTopic as exc:
        raise InvalidInput(f"device.deleted for {exc.detail}") from exc


def consume(event: Mapping[str, Any], updates: OtaVehicleUpdates) -> dict[str, Any]:
    """Handle one EventBridge event: cancel a deleted vehicle's updates."""
    try:
        vehicle_id = deleted_vehicle(event)
    except V2CError as exc:
        logger.warning("device event refused", extra={"error": exc.detail})
        return {"handled": False, "reason": exc.reason}
    if vehicle_id is None:
        return {"handled": False, "reason": "ignored", "detail_type": event.get("detail-type")}
    done = updates.cancel_all(vehicle_id, "vehicle decommissioned")
    logger.info("device deleted", extra={"vehicle_id": vehicle_id, **done.to_json()})
    return {"handled": True, "vehicle_id": vehicle_id, **done.to_json()}
