"""A queue batch of telemetry messages in, a partial-batch response out.

The telemetry functions are fed by SQS (ADR 0009): each record's body is the
IoT event of one MQTT message. The service dead-letters bad data and failed
writes itself (one DLQ record per message, with its reason), so a record
fails, and comes back from the queue, only for what a retry can mend: a
replay that failed again, or an envelope whose processing raised. A raise
from the batch-wide work of the singles (the store itself down) fails the
whole batch; the gateway then retries each record alone, as Lambda's
bisection would, and SQS after its visibility timeout.

Powertools' `BatchProcessor` builds the response; one processor per call,
because the gateway invokes a function from many threads at once and a
processor keeps the records of its call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from v2c.contract.errors import InvalidInput
from v2c.contract.queue_event import is_sqs_event, record_event
from v2c.handlers.emf_counts import emit_counts
from v2c.handlers.telemetry import emf
from v2c.handlers.telemetry.model import Path
from v2c.handlers.telemetry.report import IngestReport
from v2c.handlers.telemetry.service import TelemetryService

JsonDict = dict[str, Any]

logger = logging.getLogger(__name__)


def handle(
    service: TelemetryService, event: Mapping[str, Any], context: Any, *, batch_path: bool
) -> JsonDict:
    """What either telemetry function does with what it was invoked with: a
    queue batch (the production path), or one IoT event (a DLQ replay)."""
    if is_sqs_event(event):
        return (handle_envelopes if batch_path else handle_singles)(service, event, context)
    report = service.ingest_batch(event) if batch_path else service.ingest(event)
    emf.emit(report, str(event.get("region", "")))
    _emit_batch_opening([report])
    if report.dead_lettered:
        logger.warning("telemetry dead-lettered", extra={"report": report.to_json()})
    return report.to_json()


def handle_singles(service: TelemetryService, event: Mapping[str, Any], context: Any) -> JsonDict:
    """Individual samples from many vehicles: validated one by one, stored together."""
    records = list(event["Records"])
    events = [_event_of(record) for record in records]
    reports = service.ingest_many(events)
    outcome = {str(r["messageId"]): report for r, report in zip(records, reports, strict=True)}
    _emit(list(zip(events, reports, strict=True)))

    def verdict(record: SQSRecord) -> None:
        report = outcome[record.message_id]
        if report.errors:  # a replay that failed again: the queue keeps it
            raise report.errors[0]

    return _respond(event, context, verdict)


def handle_envelopes(service: TelemetryService, event: Mapping[str, Any], context: Any) -> JsonDict:
    """Batch envelopes: each already one BatchWriteItem per 25 of its samples."""
    done: list[tuple[JsonDict, IngestReport]] = []

    def ingest(record: SQSRecord) -> None:
        carried = _event_of(record.raw_event)
        report = service.ingest_batch(carried)
        done.append((carried, report))
        if report.errors:
            raise report.errors[0]

    try:
        return _respond(event, context, ingest)
    finally:
        _emit(done)


def _respond(
    event: Mapping[str, Any], context: Any, record_handler: Callable[[SQSRecord], None]
) -> JsonDict:
    # Every record failing is a partial failure too: the gateway (or Lambda)
    # retries those records; raising would say the same with less detail.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    response = process_partial_response(
        event=dict(event), record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)


def _event_of(record: Mapping[str, Any]) -> JsonDict:
    """The IoT event a record carries; a body that carries none becomes an
    event the service dead-letters as unparseable (payload kept as it came)."""
    body = str(record.get("body", ""))
    try:
        return record_event(body)
    except InvalidInput:
        return {"topic": "", "payload": body}


def _emit(done: list[tuple[JsonDict, IngestReport]]) -> None:
    """One EMF line per region and path for the whole batch, not one per message."""
    totals: dict[tuple[str, Path], IngestReport] = {}
    for carried, report in done:
        region = str(carried.get("region", ""))
        total = totals.setdefault((region, report.topic), IngestReport(report.topic))
        total.received += report.received
        total.stored += report.stored
        total.duplicates += report.duplicates
        total.invalid += report.invalid
        total.failed += report.failed
        total.dead_lettered += report.dead_lettered
    for (region, _path), total in totals.items():
        emf.emit(total, region)
    _emit_batch_opening([report for _, report in done])


def _emit_batch_opening(reports: list[IngestReport]) -> None:
    """Batches handled and those that could not be opened, under the `service`
    dimension alone: the BatchDecompressionFailure alarm divides one by the
    other, and an alarm reads one metric per name, not one per region."""
    batches = [report for report in reports if report.topic is Path.BATCH]
    emit_counts(
        "telemetry",
        {
            "TelemetryBatches": len(batches),
            "BatchDecompressionErrors": sum(report.undecodable for report in batches),
        },
    )
