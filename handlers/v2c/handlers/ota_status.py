"""Lambda function `ota_status`: a vehicle's report from `.../ota/status`.

Thin on purpose: `v2c.handlers.ota.status.StatusService` applies the report
(exactly once in effect, by sequence number) and the campaign reacts. A
malformed report, one naming another vehicle or an unknown update raises a
typed error, which the gateway (or the IoT rule's error action) dead-letters
to the OTA DLQ with the payload and the reason.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from v2c.handlers.ota.config import default_services
from v2c.handlers.ota.metrics import STATUS_REPORTS

logger = Logger(service="v2c-ota-status")


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        report = default_services().status.ingest(event)
    except Exception:
        STATUS_REPORTS.labels("error").inc()
        raise
    STATUS_REPORTS.labels(report.outcome.value).inc()
    return report.to_json()
