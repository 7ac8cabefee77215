"""The vehicle service's wiring from environment variables (the Lambda form).

| variable | default | meaning |
|---|---|---|
| VEHICLE_REGISTRY_TABLE | v2c-vehicle-registry | the registry (shared with campaigns) |
| FIRMWARE_BUCKET | v2c-firmware | its fleet index |
| TELEMETRY_TABLE | v2c-telemetry | when a vehicle last sent telemetry (`GET /vehicles/{id}`) |
| EVENT_BUS | v2c-events | `device.deleted` (source `v2c.vehicles`); empty: no events |
| V2C_CERT_ISSUER | iot | `iot`: AWS IoT Core issues certificates; `none`: a CSR answers 503 |
| IOT_POLICY_NAME | v2c-vehicle | the IoT policy attached to every vehicle certificate |
| IOT_THING_TYPE | v2c-vehicle | the thing type of every vehicle's thing |
| VEHICLE_REGIONS | (all known) | comma-separated regions this deployment registers vehicles in |

The OTA services (`v2c.handlers.ota.config`) give it a vehicle's updates
and their cancel. The local API server replaces the issuer with the stack's
CA and delivers `device.deleted` in process (`v2c.infra.local.wiring`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import boto3

from v2c.contract.errors import ConfigurationError
from v2c.contract.topics import KNOWN_REGIONS
from v2c.handlers.aws_clients import DYNAMODB_CLIENT_CONFIG, aws_client_config
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.ota.device_events import VEHICLES_SOURCE
from v2c.handlers.ota.events import EventBridgePublisher
from v2c.handlers.ota.fleet_index.store import FleetIndex
from v2c.handlers.ota_device_events import vehicle_updates
from v2c.handlers.vehicles.iot_issuer import DEFAULT_POLICY, DEFAULT_THING_TYPE, IotCoreIssuer
from v2c.handlers.vehicles.ports import CertificateIssuer, EventPublisher, IssueRequest, IssueResult
from v2c.handlers.vehicles.record import Certificate
from v2c.handlers.vehicles.repository import InventoryRepository
from v2c.handlers.vehicles.service import VehicleService
from v2c.handlers.vehicles.sightings import TelemetrySightings

ENV_REGIONS = "VEHICLE_REGIONS"


class NoIssuer:
    """A deployment that issues no certificates: inventory-only registrations work."""

    def _refuse(self) -> ConfigurationError:
        return ConfigurationError("this deployment issues no vehicle certificates")

    def issue(self, requests: Sequence[IssueRequest]) -> list[IssueResult]:
        from v2c.handlers.api.services import ServiceNotConfigured

        return [ServiceNotConfigured("no certificate issuer is configured") for _ in requests]

    def revoke(self, vehicle_id: str, certificate: Certificate) -> None:
        raise self._refuse()

    def decommission(self, vehicle_id: str, certificate: Certificate | None) -> None:
        if certificate is not None:
            raise self._refuse()


def issuer_from_env(env: Mapping[str, str], session: boto3.Session) -> CertificateIssuer:
    kind = env.get("V2C_CERT_ISSUER") or "iot"
    if kind == "none":
        return NoIssuer()
    if kind != "iot":
        raise ConfigurationError(f"V2C_CERT_ISSUER must be iot or none, not {kind!r}")
    local = bool(env.get("AWS_ENDPOINT_URL"))
    iot: Any = session.client("iot", config=aws_client_config(local=local))
    return IotCoreIssuer(
        iot,
        policy_name=env.get("IOT_POLICY_NAME") or DEFAULT_POLICY,
        thing_type=env.get("IOT_THING_TYPE") or DEFAULT_THING_TYPE,
    )


def build_vehicle_service(
    ota: OtaServices,
    environ: Mapping[str, str] | None = None,
    session: boto3.Session | None = None,
    *,
    issuer: CertificateIssuer | None = None,
    events: EventPublisher | None = None,
) -> VehicleService:
    """The service over the environment's resources; `issuer` and `events`
    replace the Lambda form's (the local stack's CA, in-process delivery)."""
    env = os.environ if environ is None else environ
    session = session or boto3.Session()
    local = bool(env.get("AWS_ENDPOINT_URL"))
    ddb: Any = session.client("dynamodb", config=DYNAMODB_CLIENT_CONFIG)
    s3: Any = session.client("s3", config=aws_client_config(local=local))
    bucket = env.get("FIRMWARE_BUCKET") or "v2c-firmware"
    repository = InventoryRepository(
        ddb,
        env.get("VEHICLE_REGISTRY_TABLE") or "v2c-vehicle-registry",
        FleetIndex(s3, bucket),
    )
    if events is None:
        events_client: Any = session.client("events", config=aws_client_config(local=local))
        events = EventBridgePublisher(
            events_client, env.get("EVENT_BUS", "v2c-events"), source=VEHICLES_SOURCE
        )
    return VehicleService(
        repository,
        issuer if issuer is not None else issuer_from_env(env, session),
        vehicle_updates(ota),
        events,
        sightings=TelemetrySightings(ddb, env.get("TELEMETRY_TABLE") or "v2c-telemetry"),
        regions=deployed_regions(env),
    )


def deployed_regions(env: Mapping[str, str]) -> tuple[str, ...] | None:
    """`VEHICLE_REGIONS` (comma-separated): the regions this deployment
    registers vehicles in, each one of the contract's; unset: all of them."""
    raw = env.get(ENV_REGIONS, "").strip()
    if not raw:
        return None
    regions = tuple(r.strip() for r in raw.split(",") if r.strip())
    unknown = sorted(set(regions) - set(KNOWN_REGIONS))
    if unknown:
        raise ConfigurationError(f"{ENV_REGIONS} names unknown regions {unknown}")
    return regions
