"""Lambda function `telemetry`: individual samples from `.../telemetry/vehicle`.

Thin on purpose: the pipeline is `v2c.handlers.telemetry.service`, built
from the environment on the first invocation (`telemetry.config`). Fed by
its SQS queue (ADR 0009), it gets a batch of records and answers with a
partial-batch response (`telemetry.queue_batch`); invoked directly (a DLQ
replay), it gets one IoT event. Bad data and failed writes are
dead-lettered by the service, so they are not failures of the call; a
replay that fails again raises, so the DLQ keeps its record.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from v2c.handlers.telemetry.config import default_service
from v2c.handlers.telemetry.queue_batch import handle

logger = Logger(service="v2c-telemetry")


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(default_service(), event, context, batch_path=False)
