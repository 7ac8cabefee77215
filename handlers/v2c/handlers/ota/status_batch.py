"""OTA status reports in, as the `ota_status` function is invoked: a queue batch, or one event.

Fed by its SQS queue (ADR 0009), the function gets many vehicles' reports
at once and hands them to the service together (`StatusService.ingest_batch`:
one read of the records, a few transactions, one reaction per campaign),
which answers each report on its own (exactly once in effect by sequence
number), so one bad report neither holds up the reports beside it nor takes
them to the DLQ with it.

A report that fails is sorted by whether trying again could help:

* a refusal (`retryable=False`: a malformed report, one naming another
  vehicle or an unknown update, a record that keeps changing) is
  dead-lettered here, one record with the original payload and the precise
  reason, and counts as handled. Reported as failed instead, it would come
  back twice more to fail the same way, then reach the DLQ as
  `batch_item_failure`, its reason lost (SQS's DLQ keeps a body, no reason);
* a transient failure (`TransientError`) or an exception nobody planned for
  fails that record alone (`batchItemFailures`): the queue delivers it again
  and, after `maxReceiveCount` receives, dead-letters it. A dead-letter store
  that cannot take a refusal's record fails the record the same way: the
  report was not applied, so the retry is safe and nothing is lost. An
  exception out of the batch-wide work itself (a bug, not one report's)
  fails the whole call, which the gateway answers by trying each record
  alone, as Lambda's bisection would.

Invoked directly with one IoT event (a DLQ replay: `v2c dlq replay`, the
`dlq_admin` Lambda), every error raises, as before the queue: the replay
then counts as failed and its record stays in the DLQ, instead of a second
record being written for the same message.

One processor per call, because the gateway invokes a function from many
threads at once and a processor keeps the records of its call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from prometheus_client import REGISTRY, CollectorRegistry

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import InvalidInput, V2CError
from v2c.contract.events import raw_payload, raw_topic
from v2c.contract.queue_event import is_sqs_event, record_event
from v2c.handlers.dlq.metrics import dlq_messages
from v2c.handlers.ota.config import OTA_DLQ_NAME
from v2c.handlers.ota.metrics import STATUS_REPORTS
from v2c.handlers.ota.status import StatusReport

JsonDict = dict[str, Any]

# The rule a record is dead-lettered under when its event names none (or
# there is no event): a replay of the record must come back to this function.
RULE: Final = "ota_status"

logger = logging.getLogger(__name__)


class StatusIngest(Protocol):
    def ingest(self, event: Mapping[str, Any]) -> StatusReport: ...

    def ingest_batch(
        self, events: Sequence[Mapping[str, Any]]
    ) -> list[StatusReport | Exception]: ...


class DeadLetterSink(Protocol):
    def put(self, record: DeadLetterRecord) -> None: ...


class StatusServices(Protocol):
    """What the function needs of the container's OTA services (`OtaServices`)."""

    @property
    def status(self) -> StatusIngest: ...

    @property
    def dead_letters(self) -> DeadLetterSink: ...


def handle(
    services: StatusServices,
    event: Mapping[str, Any],
    context: Any,
    *,
    registry: CollectorRegistry = REGISTRY,
) -> JsonDict:
    """The function's answer: a partial-batch response to a queue batch, or
    the report of one event (raising as the report's error)."""
    if is_sqs_event(event):
        return handle_batch(services, event, context, registry=registry)
    return ingest_one(services.status, event).to_json()


def ingest_one(status: StatusIngest, event: Mapping[str, Any]) -> StatusReport:
    """One report, counted by outcome; its error raises."""
    try:
        report = status.ingest(event)
    except Exception:
        STATUS_REPORTS.labels("error").inc()
        raise
    STATUS_REPORTS.labels(report.outcome.value).inc()
    return report


def handle_batch(
    services: StatusServices,
    event: Mapping[str, Any],
    context: Any,
    *,
    registry: CollectorRegistry = REGISTRY,
) -> JsonDict:
    """Every record of a queue batch; the response names the ones to deliver again."""
    dead_letters = _DeadLetters(services.dead_letters, registry)
    carried: dict[str, JsonDict | InvalidInput] = {}
    for raw in event["Records"]:
        try:
            carried[str(raw["messageId"])] = record_event(str(raw.get("body", "")))
        except InvalidInput as exc:
            carried[str(raw["messageId"])] = exc
    events = {mid: c for mid, c in carried.items() if not isinstance(c, InvalidInput)}
    answers = dict(zip(events, services.status.ingest_batch(list(events.values())), strict=True))

    def record_handler(record: SQSRecord) -> None:
        attempts = _receive_count(record)
        body = carried[record.message_id]
        if isinstance(body, InvalidInput):
            STATUS_REPORTS.labels("error").inc()
            dead_letters.put(RULE, "", record.body.encode(), {}, body, attempts)
            return
        answer = answers[record.message_id]
        if not isinstance(answer, Exception):
            STATUS_REPORTS.labels(answer.outcome.value).inc()
            return
        STATUS_REPORTS.labels("error").inc()
        if isinstance(answer, V2CError) and not answer.retryable:
            properties = body.get("properties")
            dead_letters.put(
                str(body.get("rule") or RULE),
                raw_topic(body),
                raw_payload(body),
                dict(properties) if isinstance(properties, Mapping) else {},
                answer,
                attempts,
            )
            return
        raise answer

    # Every record failing is a partial failure too: raising would say the
    # same with less detail, and have the gateway try each record alone.
    processor = BatchProcessor(
        event_type=EventType.SQS, raise_on_entire_batch_failure=False, logger=logger
    )
    response = process_partial_response(
        event=dict(event), record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)


class _DeadLetters:
    """The OTA DLQ as this function writes it: records as the gateway writes
    them for a handler's error, counted in the one `v2c_dlq_messages_total`."""

    def __init__(self, sink: DeadLetterSink, registry: CollectorRegistry) -> None:
        self._sink = sink
        self._counter = dlq_messages(registry)

    def put(
        self,
        source: str,
        topic: str,
        payload: bytes,
        properties: JsonDict,
        error: V2CError,
        attempts: int,
    ) -> None:
        record = DeadLetterRecord.for_publish(
            topic,
            payload,
            queue=OTA_DLQ_NAME,
            direction=Direction.INBOUND,
            source=source,
            error=error,
            attempts=attempts,
            properties=properties,
        )
        self._sink.put(record)
        self._counter.labels(
            queue=record.queue, region=record.region, message_type=source, reason=record.reason
        ).inc()
        logger.warning(
            "status report dead-lettered",
            extra={"rule": source, "topic": topic, "reason": record.reason, "error": str(error)},
        )


def _receive_count(record: SQSRecord) -> int:
    """How many times the queue has delivered the record: the DLQ record's `attempts`."""
    try:
        return max(1, int(record.attributes.approximate_receive_count))
    except (KeyError, TypeError, ValueError):
        return 1
