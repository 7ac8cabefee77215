"""Lambda function `telemetry_batch`: ZSTD batch envelopes from `.../telemetry/batch`.

Each envelope is checked before it is decompressed (size, declared sample
count against the cap, checksum, declared size, frame header;
`v2c.contract.batch_codec`), then every sample is validated and deduplicated
on its own: the valid ones are written with BatchWriteItem (25) and
time-series writes (100), and the samples not stored (invalid, or a write
that failed) make one DLQ record for the envelope, with every index and
reason. An envelope that cannot be opened (a sample bomb included) goes to
the DLQ whole, with the precise reason, and counts
`v2c_batch_decompression_errors_total`. Fed by its SQS queue (ADR 0009) it
answers a batch with a partial-batch response; invoked directly (a DLQ
replay) it takes one IoT event.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from v2c.handlers.telemetry.config import default_service
from v2c.handlers.telemetry.queue_batch import handle

logger = Logger(service="v2c-telemetry-batch")


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(default_service(), event, context, batch_path=True)
