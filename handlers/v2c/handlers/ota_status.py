"""Lambda function `ota_status`: vehicles' reports from `.../ota/status`.

Thin on purpose: `v2c.handlers.ota.status.StatusService` applies a batch
of reports (one read, a few transactions, exactly once in effect by
sequence number) and each campaign touched reacts once. Fed
by its SQS queue (ADR 0009), the function gets a batch of reports and
answers with a partial-batch response (`ota.status_batch`): a report that
cannot be applied (malformed, naming another vehicle or an unknown update)
is dead-lettered to the OTA DLQ with its payload and reason, and only what
a retry can mend comes back from the queue. Invoked directly (a DLQ
replay), it gets one IoT event and raises the report's error, so the DLQ
keeps its record.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from v2c.handlers.emf_counts import per_invocation
from v2c.handlers.ota.config import default_services
from v2c.handlers.ota.status_batch import handle

logger = Logger(service="v2c-ota-status")


@logger.inject_lambda_context
@per_invocation  # one EMF line per service for the invocation's counts
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(default_services(), event, context)
