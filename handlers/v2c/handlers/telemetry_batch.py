"""Lambda function `telemetry_batch`: one ZSTD batch envelope from `.../telemetry/batch`.

The envelope is checked before it is decompressed (size, declared sample
count against the cap, checksum, declared size, frame header;
`v2c.contract.batch_codec`), then every sample is validated and deduplicated
on its own: the valid ones are written with BatchWriteItem (25) and
time-series writes (100), and the samples not stored (invalid, or a write
that failed) make one DLQ record for the batch, with every index and reason.
A batch that cannot be opened (a sample bomb included) goes to the DLQ
whole, with the precise reason, and counts `v2c_batch_decompression_errors_total`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from v2c.handlers.telemetry import emf
from v2c.handlers.telemetry.config import default_service

logger = Logger(service="v2c-telemetry-batch")


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    report = default_service().ingest_batch(event)
    emf.emit(report, str(event.get("region", "")))
    if report.dead_lettered:
        logger.warning("telemetry batch dead-lettered", extra={"report": report.to_json()})
    return report.to_json()
