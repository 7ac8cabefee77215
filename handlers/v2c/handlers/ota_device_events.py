"""Lambda function `ota_device_events`: the OTA side of `device.deleted` (EventBridge rule target).

The vehicle inventory decommissions a vehicle and puts `device.deleted`
(source `v2c.vehicles`, detail `{"vehicle_id", "decommissioned_by",
"reason", ...}`) on the `EVENT_BUS`; this function cancels the vehicle's
updates that are still cancellable (idempotent: `v2c.handlers.ota.device_events`).
Other detail types are ignored. Rule pattern:
`{"source": ["v2c.vehicles"], "detail-type": ["device.deleted"]}`.
Locally the API process calls `consume` in process (`v2c.infra.local.wiring`).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from v2c.handlers.emf_counts import per_invocation
from v2c.handlers.ota.config import OtaServices, default_services
from v2c.handlers.ota.device_events import OtaVehicleUpdates, consume

logger = Logger(service="v2c-ota-device-events")


def vehicle_updates(services: OtaServices) -> OtaVehicleUpdates:
    """The updates port over a set of OTA services."""
    return OtaVehicleUpdates(
        services.deps.updates, services.campaigns.commands, services.deps.events
    )


@logger.inject_lambda_context
@per_invocation  # one EMF line per service for the invocation's counts
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return consume(event, vehicle_updates(default_services()))
