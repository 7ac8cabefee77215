"""Where dead-letter records live.

Telemetry failures go to an S3 bucket (a lifecycle rule expires them after 90
days: SQS could keep them 14 days at most); OTA failures go to an SQS queue
with 14-day retention, the AWS-native redrive source. Both are behind one
small interface so the gateway, the handlers and `v2c dlq` never care which.
Vendor errors leave as the hierarchy's (`v2c.handlers.aws_errors`):
`Throttled` or `TransientError`, so a writer retries and never loses a record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.dead_letter import DeadLetterRecord
from v2c.contract.errors import CodecError, NotFound, V2CError
from v2c.handlers.aws_errors import error_code, translate

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import MessageSystemAttributeNameType

logger = logging.getLogger(__name__)

MAX_SCAN: Final = 1000
"""Messages one pass over an SQS dead-letter queue receives at most: a listing
(the dashboard's, `v2c dlq list`) hides every message it receives for up to
30 s, so an unbounded pass over a big backlog would both cost a receive per
ten messages and hide the whole queue from a concurrent replay."""


class DeadLetterStore(Protocol):
    name: str

    def put(self, record: DeadLetterRecord) -> None: ...

    def list(self) -> Iterator[DeadLetterRecord]:
        """Every record, oldest first."""
        ...

    def get(self, record_id: str) -> DeadLetterRecord: ...

    def delete(self, record_id: str) -> None:
        """Remove the record; a record that is not there is no error."""
        ...

    def replace(self, record: DeadLetterRecord) -> None:
        """Store `record` in place of the stored record with the same id (a
        failed replay's attempt count); never leaves the record absent."""
        ...

    def depth(self) -> int: ...


class InMemoryDeadLetterStore:
    """For unit tests and for a gateway run without AWS."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._records: dict[str, DeadLetterRecord] = {}
        self._lock = threading.Lock()

    def put(self, record: DeadLetterRecord) -> None:
        with self._lock:
            self._records[record.record_id] = record

    def list(self) -> Iterator[DeadLetterRecord]:
        with self._lock:
            records = sorted(self._records.values(), key=lambda r: r.record_id)
        yield from records

    def get(self, record_id: str) -> DeadLetterRecord:
        with self._lock:
            if record_id not in self._records:
                raise NotFound(f"no dead-letter record {record_id} in {self.name}")
            return self._records[record_id]

    def delete(self, record_id: str) -> None:
        with self._lock:
            self._records.pop(record_id, None)

    def replace(self, record: DeadLetterRecord) -> None:
        self.put(record)

    def depth(self) -> int:
        with self._lock:
            return len(self._records)


def _transient(action: str, exc: Exception) -> V2CError:
    return translate(f"dead-letter store {action}", exc)


class S3DeadLetterStore:
    """One JSON object per record under `prefix`, keyed by its time-ordered id,
    so a listing (1,000 keys a page, in key order) is oldest first. The bucket
    is versioned: a delete leaves a noncurrent version that the lifecycle rule
    expires later, which is what makes `purge` recoverable for a while."""

    _SUFFIX = ".json"

    def __init__(self, name: str, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.name = name
        self._s3 = client
        self._bucket = bucket
        self._prefix = prefix or f"dlq/{name}/"

    def _key(self, record_id: str) -> str:
        return f"{self._prefix}{record_id}{self._SUFFIX}"

    def put(self, record: DeadLetterRecord) -> None:
        try:
            self._s3.put_object(
                Bucket=self._bucket,
                Key=self._key(record.record_id),
                Body=record.dumps().encode(),
                ContentType="application/json",
            )
        except (BotoCoreError, ClientError) as exc:
            raise _transient("put", exc) from exc

    def _keys(self) -> Iterator[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith(self._SUFFIX):  # not ours otherwise
                        yield obj["Key"]
        except (BotoCoreError, ClientError) as exc:
            raise _transient("list", exc) from exc

    def list(self) -> Iterator[DeadLetterRecord]:
        for key in self._keys():
            record_id = key[len(self._prefix) : -len(self._SUFFIX)]
            try:
                yield self.get(record_id)
            except NotFound:
                continue  # deleted between list and get
            except CodecError as exc:
                logger.warning("dead-letter bucket %s: %s is not a record: %s", self.name, key, exc)

    def get(self, record_id: str) -> DeadLetterRecord:
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=self._key(record_id))["Body"]
            return DeadLetterRecord.loads(body.read())
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                raise NotFound(f"no dead-letter record {record_id} in {self.name}") from exc
            raise _transient("get", exc) from exc
        except BotoCoreError as exc:
            raise _transient("get", exc) from exc

    def delete(self, record_id: str) -> None:
        try:
            self._s3.delete_object(Bucket=self._bucket, Key=self._key(record_id))
        except (BotoCoreError, ClientError) as exc:
            raise _transient("delete", exc) from exc

    def replace(self, record: DeadLetterRecord) -> None:
        self.put(record)  # one PUT overwrites the object atomically

    # `v2c_dlq_depth` reads this on every scrape: a listing stops here (11 pages
    # of 1,000 keys), so the value means "at least" once it reaches the cap.
    DEPTH_CAP = 10_001

    def depth(self, cap: int = DEPTH_CAP) -> int:
        """Records under the prefix, counting stops at `cap` (the backlog
        alert's threshold is far below it; a huge prefix must not be listed
        whole on every scrape)."""
        count = 0
        for _ in self._keys():
            count += 1
            if count >= cap:
                break
        return count


def _record_body(message: Any) -> DeadLetterRecord:
    return DeadLetterRecord.loads(message["Body"])


@dataclass(slots=True)
class _Scan:
    """The messages one pass over the queue holds invisible: readable copies
    by record id (keyed by SQS message id, so a message received twice keeps
    only its newest receipt handle), their bodies as received, and unreadable
    bodies. `read` makes a record of a message (`CodecError`: not one)."""

    read: Callable[[Any], DeadLetterRecord] = _record_body
    copies: dict[str, dict[str, tuple[DeadLetterRecord, str]]] = field(default_factory=dict)
    bodies: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)

    def add(self, message: Any) -> None:
        handle, message_id = message["ReceiptHandle"], message["MessageId"]
        try:
            record = self.read(message)
        except CodecError:
            self.unreadable[message_id] = handle
            return
        self.copies.setdefault(record.record_id, {})[message_id] = (record, handle)
        self.bodies[message_id] = message["Body"]

    def newest(self, record_id: str) -> DeadLetterRecord | None:
        """Of several copies (a replace interrupted between send and delete),
        the one with the most attempts is the current one."""
        copies = self.copies.get(record_id)
        if not copies:
            return None
        return max((r for r, _ in copies.values()), key=lambda r: (r.attempts, r.last_failed_at))

    def records(self) -> list[DeadLetterRecord]:
        found = (self.newest(record_id) for record_id in sorted(self.copies))
        return [record for record in found if record is not None]

    def take(self, record_id: str) -> list[str]:
        """The handles of every copy of `record_id`, no longer ours to release."""
        return [handle for _, handle in self.copies.pop(record_id, {}).values()]

    def held(self) -> list[str]:
        readable = [h for copies in self.copies.values() for _, h in copies.values()]
        return readable + list(self.unreadable.values())


class SqsDeadLetterStore:
    """Records as SQS messages (the OTA DLQ; 14 days is SQS's longest retention).

    SQS has no browse: a scan receives messages with a visibility timeout,
    which hides them from every other reader, and makes each one it does not
    delete visible again when it ends, on error too. A scan stops early once
    it holds the record it looks for, so deleting the record a replay has
    just handled costs a receive or two instead of a pass over the queue, and
    deletes always use the newest receipt handle (SQS silently ignores a
    delete with an older one). Short polling samples a subset of SQS's
    servers and may come back empty while messages remain, so a scan that
    received fewer than the queue's visible count confirms with one long poll.
    `max_scan` bounds the messages one pass receives (`MAX_SCAN` unless told;
    None: the whole queue): a listing beyond it is partial and logged so, and
    a record beyond it is not found by that pass.
    """

    _PEEK_VISIBILITY_S = 30
    _CONFIRM_WAIT_S = 1
    # System attributes each received message carries (the ingest DLQ reads some).
    _SYSTEM_ATTRIBUTES: tuple[MessageSystemAttributeNameType, ...] = ()

    def __init__(
        self, name: str, client: SQSClient, queue_url: str, max_scan: int | None = MAX_SCAN
    ) -> None:
        self.name = name
        self._sqs = client
        self._url = queue_url
        self._max_scan = max_scan

    def _read(self, message: Any) -> DeadLetterRecord:
        """The record a received message holds; `CodecError` if it holds none."""
        return _record_body(message)

    def put(self, record: DeadLetterRecord) -> None:
        try:
            self._sqs.send_message(
                QueueUrl=self._url,
                MessageBody=record.dumps(),
                MessageAttributes={
                    "record_id": {"DataType": "String", "StringValue": record.record_id},
                    "reason": {"DataType": "String", "StringValue": record.reason},
                },
            )
        except (BotoCoreError, ClientError) as exc:
            raise _transient("put", exc) from exc

    def _receive(self, wait_s: int) -> list[Any]:
        extra: Any = (
            {"MessageSystemAttributeNames": list(self._SYSTEM_ATTRIBUTES)}
            if self._SYSTEM_ATTRIBUTES
            else {}
        )
        answer: Any = self._sqs.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=self._PEEK_VISIBILITY_S,
            WaitTimeSeconds=wait_s,
            **extra,
        )
        return list(answer.get("Messages", []))

    def _count(self, *names: str) -> int:
        attrs: Any = self._sqs.get_queue_attributes(
            QueueUrl=self._url,
            AttributeNames=list(names),  # type: ignore[arg-type]
        )["Attributes"]
        return sum(int(attrs.get(name, 0)) for name in names)

    def _fill(self, scan: _Scan, until: str | None) -> None:
        expected = self._count("ApproximateNumberOfMessages")
        received, confirmed = 0, False
        while until is None or until not in scan.copies:
            if self._max_scan is not None and received >= self._max_scan:
                logger.warning(
                    "dead-letter queue %s: stopped after %d messages of ~%d (max_scan)",
                    self.name,
                    received,
                    expected,
                )
                return
            messages = self._receive(0)
            if not messages:
                if received >= expected or confirmed:
                    return
                confirmed = True
                messages = self._receive(self._CONFIRM_WAIT_S)
                if not messages:
                    return
            received += len(messages)
            for message in messages:
                scan.add(message)

    @contextmanager
    def _scan(self, until: str | None = None) -> Iterator[_Scan]:
        scan = _Scan(read=self._read)
        try:
            try:
                self._fill(scan, until)
            except (BotoCoreError, ClientError) as exc:
                raise _transient("receive", exc) from exc
            if scan.unreadable:
                logger.warning(
                    "dead-letter queue %s holds %d messages that are not records: %s",
                    self.name,
                    len(scan.unreadable),
                    sorted(scan.unreadable),
                )
            yield scan
        finally:
            self._release(scan.held())

    def _release(self, handles: list[str]) -> None:
        """Best effort: a handle not released only hides its message until the
        visibility timeout ends, so a failure here is logged, never raised."""
        for start in range(0, len(handles), 10):
            entries: Any = [
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for i, h in enumerate(handles[start : start + 10])
            ]
            try:
                answer = self._sqs.change_message_visibility_batch(
                    QueueUrl=self._url, Entries=entries
                )
            except (BotoCoreError, ClientError) as exc:
                logger.warning("dead-letter queue %s: release failed: %s", self.name, exc)
                continue
            for failure in answer.get("Failed", []):
                logger.warning("dead-letter queue %s: release failed: %s", self.name, failure)

    def _delete_handles(self, handles: list[str]) -> None:
        try:
            for handle in handles:
                self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=handle)
        except (BotoCoreError, ClientError) as exc:
            raise _transient("delete", exc) from exc

    def list(self) -> Iterator[DeadLetterRecord]:
        with self._scan() as scan:
            records = scan.records()
        yield from records

    def get(self, record_id: str) -> DeadLetterRecord:
        with self._scan(until=record_id) as scan:
            record = scan.newest(record_id)
        if record is None:
            raise NotFound(f"no dead-letter record {record_id} in {self.name}")
        return record

    def delete(self, record_id: str) -> None:
        """Every copy of the record; a record that is not there is no error."""
        with self._scan(until=record_id) as scan:
            self._delete_handles(scan.take(record_id))

    def replace(self, record: DeadLetterRecord) -> None:
        """Send the new version first, then delete the old: an interruption
        leaves two copies (list shows the newer), never none."""
        with self._scan(until=record.record_id) as scan:
            self.put(record)  # if this fails, the scan's end releases the old copies
            self._delete_handles(scan.take(record.record_id))

    def depth(self) -> int:
        try:
            return self._count(
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            )
        except (BotoCoreError, ClientError) as exc:
            raise _transient("depth", exc) from exc
