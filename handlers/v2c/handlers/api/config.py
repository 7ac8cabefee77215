"""The fleet-manager API's wiring from environment variables (the Lambda form).

The resolver (`build_app`) is built on the first request (a cold start) from
the environment and kept for the container's life (`PerContainer`); the
local HTTP adapter calls the same entry point from many threads.

| variable | default | meaning |
|---|---|---|
| FIRMWARE_TABLE | v2c-firmware | probed by /health/detailed |
| CAMPAIGNS_TABLE | v2c-campaigns | probed by /health/detailed |
| FIRMWARE_BUCKET | v2c-firmware | probed by /health/detailed |
| V2C_HEALTH_TIMEOUT_S | 2 | budget of one /health/detailed |
| V2C_API_KEYS, V2C_API_TOKENS | - | credentials and roles: `v2c.handlers.api.auth` |
| V2C_API_TRUST_AUTHORIZER | - | see `v2c.handlers.api.auth` |
| TELEMETRY_DLQ_BUCKET, OTA_DLQ_QUEUE_URL, INGEST_* | - | `/api/v1/dlq` (else 503): `dlq.config` |
| V2C_CERT_ISSUER, IOT_POLICY_NAME, ... | iot, ... | `/api/v1/vehicles`: `vehicles.config` |
| TELEMETRY_TABLE | v2c-telemetry | `/api/v1/vehicles/{id}/telemetry` (and last seen) |

and the OTA services' own (`v2c.handlers.ota.config`). `AWS_ENDPOINT_URL`
points the clients at moto locally, as for every handler.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import boto3

from v2c.contract.errors import ConfigurationError
from v2c.handlers.api import ApiAuth, ApiServices, OtaApi, build_app
from v2c.handlers.api.errors import INTERNAL_ERROR
from v2c.handlers.api.log import logger
from v2c.handlers.api.services import HealthCheck
from v2c.handlers.aws_clients import (
    DYNAMODB_CLIENT_CONFIG,
    PROBE_CLIENT_CONFIG,
    probe_client_config,
)
from v2c.handlers.dlq import config as dlq_config
from v2c.handlers.ota.config import OtaConfig, OtaServices
from v2c.handlers.ota.config import build_services as build_ota
from v2c.handlers.ota.stores import FleetDirectory
from v2c.handlers.ota.updates.campaign_page import CampaignUpdatePages
from v2c.handlers.per_container import PerContainer
from v2c.handlers.telemetry.recent import RecentTelemetry
from v2c.handlers.vehicles.config import build_vehicle_service

ENV_FIRMWARE_TABLE: Final = "FIRMWARE_TABLE"
ENV_CAMPAIGNS_TABLE: Final = "CAMPAIGNS_TABLE"
ENV_FIRMWARE_BUCKET: Final = "FIRMWARE_BUCKET"
ENV_HEALTH_TIMEOUT: Final = "V2C_HEALTH_TIMEOUT_S"
ENV_ENDPOINT: Final = "AWS_ENDPOINT_URL"
ENV_TELEMETRY_TABLE: Final = "TELEMETRY_TABLE"


def health_checks(
    environ: Mapping[str, str], session: boto3.Session | None = None
) -> dict[str, HealthCheck]:
    """One cheap probe per table and bucket the API stands on."""
    session = session or boto3.Session()
    ddb: Any = session.client("dynamodb", config=PROBE_CLIENT_CONFIG)
    local = bool(environ.get(ENV_ENDPOINT))
    s3: Any = session.client("s3", config=probe_client_config(local=local))

    def describe(table: str) -> HealthCheck:
        return lambda: ddb.describe_table(TableName=table)

    checks: dict[str, HealthCheck] = {}
    for variable, default in (
        (ENV_FIRMWARE_TABLE, "v2c-firmware"),
        (ENV_CAMPAIGNS_TABLE, "v2c-campaigns"),
    ):
        table = environ.get(variable) or default
        checks[f"dynamodb:{table}"] = describe(table)
    bucket = environ.get(ENV_FIRMWARE_BUCKET) or "v2c-firmware"
    checks[f"s3:{bucket}"] = lambda: s3.head_bucket(Bucket=bucket)
    return checks


def build_services(
    environ: Mapping[str, str] | None = None,
    session: boto3.Session | None = None,
    *,
    ota: OtaServices | None = None,
) -> ApiServices:
    """The services over real (or moto) AWS; route modules' services join here.
    `ota`: the OTA services to serve (the local API server passes the ones its
    monitor uses); by default built from `environ`."""
    env = os.environ if environ is None else environ
    try:
        timeout = float(env.get(ENV_HEALTH_TIMEOUT) or 2.0)
    except ValueError as exc:
        raise ConfigurationError(f"{ENV_HEALTH_TIMEOUT} is not a number") from exc
    if ota is None:
        ota = build_ota(OtaConfig.from_env(env), session)
    reads = dashboard_reads(ota, env, session)
    return ApiServices(
        health_checks=health_checks(env, session),
        health_timeout_s=timeout,
        campaigns=ota.campaigns,
        devices=ota.devices,
        stats=ota.stats,
        firmware=ota.firmware,
        dlq=dlq_config.build_service(env) if dlq_config.configured(env) else None,
        vehicles=build_vehicle_service(ota, env, session),
        campaign_updates=reads.campaign_updates,
        fleet=reads.fleet,
        telemetry=reads.telemetry,
    )


class DashboardReads(NamedTuple):
    """The reads behind the live dashboard's endpoints (issue #16)."""

    campaign_updates: CampaignUpdatePages
    fleet: FleetDirectory
    telemetry: RecentTelemetry


def dashboard_reads(
    ota: OtaServices, environ: Mapping[str, str] | None = None, session: boto3.Session | None = None
) -> DashboardReads:
    """A campaign's records by page, the fleet index (through the OTA
    services' registry), a vehicle's newest samples (404 for a vehicle the
    registry does not know and that sent nothing)."""
    env = os.environ if environ is None else environ
    ddb: Any = (session or boto3.Session()).client("dynamodb", config=DYNAMODB_CLIENT_CONFIG)
    fleet = ota.deps.fleet
    return DashboardReads(
        CampaignUpdatePages(ddb, OtaConfig.from_env(env).updates_table),
        fleet,
        RecentTelemetry(
            ddb,
            env.get(ENV_TELEMETRY_TABLE) or "v2c-telemetry",
            registered=lambda vehicle_id: fleet.get(vehicle_id) is not None,
        ),
    )


# The container's resolver (`PerContainer`); tests and the local server install their own.
APP: PerContainer[OtaApi] = PerContainer(lambda: build_app(build_services(), ApiAuth.from_env()))
default_app = APP.get
set_default_app = APP.install


def resolve(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One API Gateway request, answered by the container's resolver."""
    # Per thread: the local HTTP server calls this from many threads at once.
    request_id = (event.get("requestContext") or {}).get("requestId")
    logger.thread_safe_append_keys(correlation_id=request_id)
    try:
        app = default_app()
    except Exception:
        # A broken deployment (bad settings) still answers in the API's shape.
        logger.exception("the API could not be built")
        return {
            "statusCode": 500,
            "body": json.dumps({"detail": INTERNAL_ERROR, "reason": "configuration_error"}),
            "isBase64Encoded": False,
            "multiValueHeaders": {"Content-Type": ["application/json"]},
        }
    return app.resolve(event, context)
