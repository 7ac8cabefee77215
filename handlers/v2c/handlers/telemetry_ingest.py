"""Lambda function `telemetry`: one individual sample from `.../telemetry/vehicle`.

Thin on purpose: the pipeline is `v2c.handlers.telemetry.service`, built
from the environment on the first invocation (`telemetry.config`). Bad data
and failed writes are dead-lettered by the service; this returns normally
for them, so the gateway (or IoT Core) acknowledges the message. It raises
only when even the dead-letter store cannot be written, or a DLQ replay
fails again.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from v2c.handlers.telemetry import emf
from v2c.handlers.telemetry.config import default_service

logger = Logger(service="v2c-telemetry")


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    report = default_service().ingest(event)
    emf.emit(report, str(event.get("region", "")))
    if report.dead_lettered:
        logger.warning("telemetry dead-lettered", extra={"report": report.to_json()})
    return report.to_json()
