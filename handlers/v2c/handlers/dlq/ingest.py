"""The ingest DLQ (`v2c-ingest-dlq`) as a dead-letter store: where SQS moves a
record of a rule's ingest queue after `maxReceiveCount` receives (ADR 0009).

SQS moves the message as it was, the IoT rule's event JSON
(`v2c.contract.events`), and keeps no reason and no error: the function's
logs have those. So a message is read here into a `DeadLetterRecord` whose
reason is derived (`exhausted_receives`), whose attempts are SQS's
`ApproximateReceiveCount` (the receives that failed, plus every look a
listing took since: SQS counts those too), whose failure time is when the
rule queued it (`SentTimestamp`: SQS keeps no time of a failure or of the
move), and whose rule, topic, vehicle, payload and properties are the
event's. Its id is the SQS message id, which SQS keeps through the move.

Replay is SQS's own redrive, one message at a time: the body, byte for byte,
onto the ingest queue it came from (the `DeadLetterQueueSourceArn` SQS keeps
on a moved message, when it is an ingest queue), else onto the queue of the
body's `rule` (`INGEST_QUEUES`, from `ResourceNames.ingest_queues`); then the
message is deleted with the receipt handle of the same receive, so the
delete cannot miss. A crash between the two leaves the record in both
queues, and the handlers are idempotent. A message that is not an ingest
event is listed with reason `malformed_body` and never replayed: a replay
says why and leaves it in the queue, where only `purge` removes it.

A pass over the queue receives at most `max_scan` messages (bounded work for
a function with a timeout); a listing beyond it is partial and logged so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import ConfigurationError, InvalidInput, NotFound, TransientError, V2CError
from v2c.contract.events import InboundEvent
from v2c.contract.queue_event import record_event
from v2c.handlers.aws_errors import translate
from v2c.handlers.dlq.store import SqsDeadLetterStore

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import MessageSystemAttributeNameType

INGEST_DLQ: Final = "ingest"
EXHAUSTED: Final = "exhausted_receives"
MALFORMED: Final = "malformed_body"
MAX_SCAN: Final = 1000
# SQS message ids are UUIDs; every other store's ids are time-ordered
# (`new_record_id`), so a lookup of one of those never scans this queue.
_MESSAGE_ID: Final = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
)


def is_message_id(record_id: str) -> bool:
    return bool(_MESSAGE_ID.match(record_id))


def parse_ingest_queues(text: str) -> dict[str, str]:
    """`INGEST_QUEUES`: a JSON object, each rule's ingest queue name by rule."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"INGEST_QUEUES is not JSON: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in data.items()
    ):
        raise ConfigurationError('INGEST_QUEUES must map rules to queue names: {"rule": "queue"}')
    return dict(data)


def _queue_of_arn(arn: str) -> str:
    """`arn:aws:sqs:region:account:name` -> `name` ("" for no ARN)."""
    return arn.rsplit(":", 1)[-1] if arn else ""


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def read_message(message: Mapping[str, Any], queues: Mapping[str, str]) -> DeadLetterRecord:
    """The record of one received ingest-DLQ message (with its system
    attributes). Never raises on the body: a message that is not an ingest
    event becomes a `malformed_body` record holding the body as its payload,
    so it is listed like any other and never hidden."""
    attrs = message.get("Attributes") or {}
    message_id, body = str(message["MessageId"]), str(message["Body"])
    receives, sent = _int(attrs.get("ApproximateReceiveCount")), _int(attrs.get("SentTimestamp"))
    source_queue = _queue_of_arn(str(attrs.get("DeadLetterQueueSourceArn", "")))
    context: dict[str, Any] = {"message_id": message_id}
    if source_queue:
        context["source_queue"] = source_queue
    common: dict[str, Any] = {
        "queue": INGEST_DLQ,
        "direction": Direction.INBOUND,
        "attempts": receives,
        "first_failed_at": sent,
        "last_failed_at": sent,
        "record_id": message_id,
    }
    event: dict[str, Any] = {}
    try:
        event = record_event(body)
        parsed = InboundEvent.parse(event)
        rule = str(event.get("rule") or "") or next(
            (r for r, q in queues.items() if q == source_queue), ""
        )
        if not rule:
            raise InvalidInput("the event names no rule and SQS kept no ingest queue it came from")
    except V2CError as exc:
        topic = event.get("topic")
        return DeadLetterRecord(
            source="",
            topic=topic if isinstance(topic, str) else "",
            payload=body.encode(),
            reason=MALFORMED,
            error=f"{exc.detail}: not an ingest event, so it cannot be replayed (it stays queued)",
            context=context,
            **common,
        )
    context.update(qos=event.get("qos"), received_at=parsed.received_at_ms)
    return DeadLetterRecord(
        source=rule,
        topic=str(parsed.topic),
        payload=parsed.payload,
        properties=parsed.properties,
        reason=EXHAUSTED,
        error=(
            f"received {receives} times and never handled; SQS keeps no error: "
            f"the {rule} function's logs have it"
        ),
        vehicle_id=parsed.vehicle_id,
        context=context,
        **common,
    )


def replay_target(record: DeadLetterRecord, queues: Mapping[str, str]) -> str:
    """The ingest queue a record goes back to: the one SQS says it came from,
    else its rule's. `InvalidInput` for a record that cannot be replayed."""
    if record.reason == MALFORMED:
        raise InvalidInput(f"message {record.record_id}: {record.error}")
    known = sorted(set(queues.values()))
    source = str(record.context.get("source_queue", ""))
    if source:
        if source not in known:
            raise InvalidInput(
                f"message {record.record_id} came from queue {source!r}, which is not an "
                f"ingest queue ({', '.join(known)}): not replayed"
            )
        return source
    target = queues.get(record.source)
    if target is None:
        raise InvalidInput(
            f"message {record.record_id} names rule {record.source!r}, which has no ingest "
            f"queue (INGEST_QUEUES: {', '.join(sorted(queues))}): not replayed"
        )
    return target


class IngestDeadLetterStore(SqsDeadLetterStore):
    """The ingest DLQ: read-only but for replay and purge (only SQS's redrive
    policy writes it), and it replays its own records (`redrive`)."""

    _SYSTEM_ATTRIBUTES: tuple[MessageSystemAttributeNameType, ...] = ("All",)

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        queues: Mapping[str, str],
        *,
        name: str = INGEST_DLQ,
        max_scan: int = MAX_SCAN,
    ) -> None:
        super().__init__(name, client, queue_url, max_scan)
        self._queues = dict(queues)
        self._urls: dict[str, str] = {}

    def _read(self, message: Any) -> DeadLetterRecord:
        return read_message(message, self._queues)

    def put(self, record: DeadLetterRecord) -> None:
        raise InvalidInput(f"nothing but SQS's redrive policy writes the {self.name} DLQ")

    def list(self) -> Iterator[DeadLetterRecord]:
        """Oldest first, by when the rule queued them (message ids are random):
        about the order SQS hands them out, so replaying a listing in order
        finds each message early in its pass."""
        yield from sorted(super().list(), key=lambda r: (r.last_failed_at, r.record_id))

    def get(self, record_id: str) -> DeadLetterRecord:
        if not is_message_id(record_id):
            raise NotFound(f"no dead-letter record {record_id} in {self.name}")
        return super().get(record_id)

    def delete(self, record_id: str) -> None:
        if is_message_id(record_id):
            super().delete(record_id)

    def replace(self, record: DeadLetterRecord) -> None:
        """Nothing to store: the message stays as SQS moved it (its body must
        stay intact for a later replay), and SQS counts its receives itself."""

    def redrive_target(self, record: DeadLetterRecord) -> str:
        return replay_target(record, self._queues)

    def redrive(self, record: DeadLetterRecord) -> str:
        """Send the message's body back to its ingest queue, then delete it;
        returns the queue. Raises, leaving the message queued, when it cannot
        be replayed or the send fails."""
        if not is_message_id(record.record_id):
            raise NotFound(f"no dead-letter record {record.record_id} in {self.name}")
        with self._scan(until=record.record_id) as scan:
            current = scan.newest(record.record_id)
            if current is None:
                raise NotFound(
                    f"message {record.record_id} is not in the {self.name} DLQ (replayed or "
                    f"purged since, or beyond the {self._max_scan} messages a pass looks at)"
                )
            target = replay_target(current, self._queues)
            for message_id in scan.copies[record.record_id]:
                self._send(target, scan.bodies[message_id])
            try:
                self._delete_handles(scan.take(record.record_id))
            except V2CError as exc:
                raise TransientError(
                    f"sent to {target}, but not removed from the {self.name} DLQ: "
                    f"{exc.detail}; a later replay sends it again"
                ) from exc
        return target

    def _send(self, queue: str, body: str) -> None:
        try:
            if queue not in self._urls:
                self._urls[queue] = self._sqs.get_queue_url(QueueName=queue)["QueueUrl"]
            self._sqs.send_message(QueueUrl=self._urls[queue], MessageBody=body)
        except (BotoCoreError, ClientError) as exc:
            raise translate(f"sending to {queue}", exc) from exc
