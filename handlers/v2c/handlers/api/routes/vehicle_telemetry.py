"""`GET /api/v1/vehicles/{vehicle_id}/telemetry`: a vehicle's newest samples, newest
first, from the operational table (`telemetry.recent`: one Query, `limit` bound).

A signal the sample did not carry (speed with the ignition off, no GPS fix)
is null. A vehicle that is registered but sent nothing yet answers an
empty list; one the registry does not know, 404.
"""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, Field

from v2c.handlers.api.app import API_PREFIX, OtaApi
from v2c.handlers.api.services import ApiServices, require
from v2c.handlers.telemetry.recent import MAX_SAMPLES
from v2c.handlers.vehicles.requests import VIN_REGEX

VehicleId = Annotated[str, Path(pattern=VIN_REGEX, description="vehicle id (VIN-...)")]
DEFAULT_LIMIT = 100


class TelemetryPoint(BaseModel):
    """One stored sample as plain numbers (what the vehicle sent, at the
    contract's resolution), plus when it arrived."""

    timestamp: str = Field(description="the vehicle's clock, RFC 3339 UTC")
    timestamp_ms: int
    sequence: int
    epoch: int | None = None
    speed_kmh: float | None = None
    rpm: int | None = None
    battery_voltage_v: float | None = None
    state_of_charge_pct: float | None = None
    coolant_temp_c: float | None = None
    fuel_level_pct: float | None = None
    odometer_km: float | None = None
    diagnostic_flags: int | None = None
    received_at_ms: int | None = Field(default=None, description="when the cloud got it")
    clock_skew_ms: int | None = Field(default=None, description="timestamp - received_at")
    gear: str | None = None
    ignition_on: bool | None = None
    charging: bool | None = None
    region: str | None = None
    path: str | None = Field(default=None, description="individual or batch")
    gps: dict[str, float] | None = Field(
        default=None, description="latitude, longitude, altitude_m, heading_deg"
    )
    tire_pressures_kpa: dict[str, float] | None = None
    dtc_codes: list[str] | None = None


class VehicleTelemetry(BaseModel):
    vehicle_id: str
    items: list[TelemetryPoint] = Field(description="newest first")


def register(app: OtaApi, services: ApiServices) -> None:
    @app.get(
        f"{API_PREFIX}/vehicles/<vehicle_id>/telemetry",
        tags=["vehicles"],
        summary="A vehicle's newest telemetry samples, newest first",
    )
    def vehicle_telemetry(
        vehicle_id: VehicleId,
        limit: Annotated[int, Query(ge=1, le=MAX_SAMPLES)] = DEFAULT_LIMIT,
    ) -> VehicleTelemetry:
        points = require(services.telemetry, "telemetry").newest(vehicle_id, limit)
        return VehicleTelemetry(
            vehicle_id=vehicle_id, items=[TelemetryPoint.model_validate(p) for p in points]
        )
