"""The fleet-manager API as one Lambda function behind API Gateway (REST, proxy integration).

The resolver (`v2c.handlers.api.build_app`) is built on the first event (a
cold start) from the environment and kept for the container's life; the
local HTTP adapter calls the same `lambda_handler`.

| variable | default | meaning |
|---|---|---|
| FIRMWARE_TABLE | v2c-firmware | probed by /health/detailed |
| CAMPAIGNS_TABLE | v2c-campaigns | probed by /health/detailed |
| FIRMWARE_BUCKET | v2c-firmware | probed by /health/detailed |
| V2C_HEALTH_TIMEOUT_S | 2 | budget of one /health/detailed |
| V2C_API_KEYS, V2C_API_TOKENS | - | credentials and roles: `v2c.handlers.api.auth` |
| V2C_API_TRUST_AUTHORIZER | - | see `v2c.handlers.api.auth` |
| TELEMETRY_DLQ_BUCKET, OTA_DLQ_QUEUE_URL | - | the queues of `/api/v1/dlq` (else 503) |

`AWS_ENDPOINT_URL` points the clients at moto locally, as for every handler.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any, Final

import boto3
from botocore.config import Config

from v2c.contract.errors import ConfigurationError
from v2c.handlers.api import ApiAuth, ApiServices, OtaApi, build_app
from v2c.handlers.api.errors import INTERNAL_ERROR
from v2c.handlers.api.log import logger
from v2c.handlers.api.services import HealthCheck

ENV_FIRMWARE_TABLE: Final = "FIRMWARE_TABLE"
ENV_CAMPAIGNS_TABLE: Final = "CAMPAIGNS_TABLE"
ENV_FIRMWARE_BUCKET: Final = "FIRMWARE_BUCKET"
ENV_HEALTH_TIMEOUT: Final = "V2C_HEALTH_TIMEOUT_S"
ENV_ENDPOINT: Final = "AWS_ENDPOINT_URL"

# A probe answers within the health budget or counts as down: no retries,
# short timeouts (a retried probe only hides the outage it should report).
PROBE_CLIENT_CONFIG: Final = Config(
    retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=1, read_timeout=2
)


def health_checks(
    environ: Mapping[str, str], session: boto3.Session | None = None
) -> dict[str, HealthCheck]:
    """One cheap probe per table and bucket the API stands on."""
    session = session or boto3.Session()
    local = bool(environ.get(ENV_ENDPOINT))
    ddb: Any = session.client("dynamodb", config=PROBE_CLIENT_CONFIG)
    s3: Any = session.client(
        "s3",
        config=PROBE_CLIENT_CONFIG.merge(
            Config(s3={"addressing_style": "path"} if local else None)
        ),
    )

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
    environ: Mapping[str, str] | None = None, session: boto3.Session | None = None
) -> ApiServices:
    """The services over real (or moto) AWS; route modules' services join here."""
    env = os.environ if environ is None else environ
    try:
        timeout = float(env.get(ENV_HEALTH_TIMEOUT) or 2.0)
    except ValueError as exc:
        raise ConfigurationError(f"{ENV_HEALTH_TIMEOUT} is not a number") from exc
    from v2c.handlers.ota.config import OtaConfig
    from v2c.handlers.ota.config import build_services as build_ota

    ota = build_ota(OtaConfig.from_env(env), session)
    dlq = None
    if env.get("TELEMETRY_DLQ_BUCKET") and env.get("OTA_DLQ_QUEUE_URL"):
        from v2c.handlers.dlq_admin import build_service as build_dlq

        dlq = build_dlq(env)
    return ApiServices(
        health_checks=health_checks(env, session),
        health_timeout_s=timeout,
        campaigns=ota.campaigns,
        devices=ota.devices,
        stats=ota.stats,
        firmware=ota.firmware,
        dlq=dlq,
    )


_APP: OtaApi | None = None
_LOCK = threading.Lock()


def default_app() -> OtaApi:
    """The container's resolver, built from the environment on first use."""
    global _APP
    with _LOCK:
        if _APP is None:
            _APP = build_app(build_services(), ApiAuth.from_env())
        return _APP


def set_default_app(app: OtaApi | None) -> None:
    """Install a resolver (tests, the local stack), or None to rebuild on next use."""
    global _APP
    with _LOCK:
        _APP = app


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
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
