"""What the API's routes are given: one container of services, built at the edge.

Route modules close over an `ApiServices` when they register (see
`v2c.handlers.api.routes`); they never build clients themselves, so the same
routes run over moto, AWS or in-memory fakes. A route module that needs a new
service adds an optional field here (`firmware: FirmwareService | None =
None`) and calls `require(services.firmware, "firmware")` at request time: an
API built without that service (the OpenAPI generator, a test of another
route) still registers every route, and a request to an unwired route answers
503 instead of crashing at import or build time.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from v2c.contract.errors import V2CError

if TYPE_CHECKING:
    from v2c.handlers.dlq.service import DeadLetterService
    from v2c.handlers.ota.campaigns.service import CampaignService
    from v2c.handlers.ota.devices import DeviceService
    from v2c.handlers.ota.firmware.service import FirmwareService
    from v2c.handlers.ota.stats import StatsService
    from v2c.handlers.ota.stores import FleetDirectory
    from v2c.handlers.ota.updates.campaign_page import CampaignUpdatePages
    from v2c.handlers.telemetry.recent import RecentTelemetry
    from v2c.handlers.vehicles.service import VehicleService

T = TypeVar("T")

HealthCheck = Callable[[], None]
"""A dependency probe for `/health/detailed`: returns when the dependency
answers, raises (anything) when it does not. It must be cheap (one
`DescribeTable`, one `HeadBucket`): it runs on every detailed health request."""

SERVICE_NAME = "v2c-ota-api"


def package_version() -> str:
    """The installed v2c version: the OpenAPI document's `info.version` and
    the health answers' `version`."""
    try:
        return importlib.metadata.version("v2c")
    except importlib.metadata.PackageNotFoundError:  # running from a bare checkout
        return "0.0.0"


class ServiceNotConfigured(V2CError):
    """A route's backing service was not wired into this API instance: the
    deployment is incomplete, so the route is unavailable (503), not broken."""

    reason = "service_not_configured"
    http_status = 503


@dataclass(frozen=True, slots=True)
class ApiServices:
    """Everything the routes use. Extend with optional fields, one per
    service, defaulting to None (see the module docstring)."""

    health_checks: Mapping[str, HealthCheck] = field(default_factory=dict)
    health_timeout_s: float = 2.0
    version: str = field(default_factory=package_version)
    campaigns: CampaignService | None = None
    devices: DeviceService | None = None
    stats: StatsService | None = None
    firmware: FirmwareService | None = None
    dlq: DeadLetterService | None = None
    vehicles: VehicleService | None = None
    # The dashboard's reads (issue #16): a campaign's records a page at a
    # time, the fleet index's version counts, a vehicle's newest samples.
    campaign_updates: CampaignUpdatePages | None = None
    fleet: FleetDirectory | None = None
    telemetry: RecentTelemetry | None = None


def require(service: T | None, name: str) -> T:
    """`service`, or `ServiceNotConfigured` (503) when this API has none."""
    if service is None:
        raise ServiceNotConfigured(f"the {name} service is not configured")
    return service
