"""The vehicle service as a local process hosts it: the stack's CA issues, events arrive in process.

In AWS, `device.deleted` goes to the EventBridge bus and a rule invokes
`ota_device_events` with it. Locally there is no rule engine behind moto's
bus, so the publisher the local service gets is both: it still puts every
event on the stack's bus (what a deployment's other consumers would see),
and it hands `device.deleted` to the same consumer function (`consume`),
shaped as EventBridge delivers it, in this process, before the call returns.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from v2c.handlers.ota.device_events import DEVICE_DELETED, VEHICLES_SOURCE, Cancelled, consume
from v2c.handlers.ota.updates.record import VehicleUpdate
from v2c.handlers.vehicles.ports import EventPublisher
from v2c.infra.settings import StackSettings

if TYPE_CHECKING:
    from v2c.handlers.ota.config import OtaServices
    from v2c.handlers.ota.device_events import OtaVehicleUpdates
    from v2c.handlers.vehicles.service import VehicleService

log = logging.getLogger(__name__)

LOCAL_ACCOUNT: Final = "000000000000"


def eventbridge_event(
    detail_type: str, detail: dict[str, Any], *, source: str = VEHICLES_SOURCE, region: str
) -> dict[str, Any]:
    """An event as an EventBridge rule hands it to its Lambda target."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": LOCAL_ACCOUNT,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [],
        "detail": detail,
    }


class InProcessEvents:
    """Publishes to the bus and delivers `device.deleted` to the OTA consumer."""

    def __init__(self, bus: EventPublisher, updates: OtaVehicleUpdates, region: str) -> None:
        self._bus = bus
        self._updates = updates
        self._region = region
        self.delivered: list[dict[str, Any]] = []  # the consumer's answers, for tests

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        self._bus.publish(detail_type, detail)
        if detail_type != DEVICE_DELETED:
            return
        event = eventbridge_event(detail_type, detail, region=self._region)
        answer = consume(event, self._updates)
        self.delivered.append(answer)
        log.info("device.deleted delivered in process: %s", answer)


def local_vehicle_service(settings: StackSettings, ota: OtaServices) -> VehicleService:
    """The vehicle service of the local API process: certificates from the
    stack's CA (none for a stack without TLS vehicles: a CSR answers 503),
    `device.deleted` delivered to the OTA consumer in process. Configured
    from the handlers' environment (`wiring.handler_environment`)."""
    from v2c.handlers.ota.events import EventBridgePublisher
    from v2c.handlers.ota_device_events import vehicle_updates
    from v2c.handlers.vehicles.config import NoIssuer, build_vehicle_service
    from v2c.infra.local.vehicle_issuer import stack_issuer

    bus = EventBridgePublisher(
        settings.aws.client("events"), settings.resources.event_bus, source=VEHICLES_SOURCE
    )
    events = InProcessEvents(bus, vehicle_updates(ota), settings.aws.region)
    issuer = stack_issuer(settings)
    return build_vehicle_service(ota, issuer=issuer or NoIssuer(), events=events)


class NoUpdates:
    """No OTA services in this process: registering needs none of them."""

    def active(self, vehicle_id: str) -> list[VehicleUpdate]:
        return []

    def last_report_ms(self, vehicle_id: str) -> int:
        return 0

    def cancel_all(self, vehicle_id: str, reason: str) -> Cancelled:
        return Cancelled((), ())


def registration_service(settings: StackSettings) -> VehicleService:
    """The registration service over a stack description, in this process:
    what `fleet_onboarding` uses for a stack without an API process."""
    from v2c.handlers.ota.events import EventBridgePublisher
    from v2c.handlers.ota.fleet_index.store import FleetIndex
    from v2c.handlers.vehicles.config import NoIssuer
    from v2c.handlers.vehicles.repository import InventoryRepository
    from v2c.handlers.vehicles.service import VehicleService
    from v2c.infra.local.vehicle_issuer import stack_issuer

    aws, names = settings.aws, settings.resources
    repository = InventoryRepository(
        aws.client("dynamodb"),
        names.vehicle_registry_table,
        FleetIndex(aws.client("s3"), names.firmware_bucket),
    )
    bus = EventBridgePublisher(aws.client("events"), names.event_bus, source=VEHICLES_SOURCE)
    return VehicleService(repository, stack_issuer(settings) or NoIssuer(), NoUpdates(), bus)
