"""Where dead-letter records live.

Telemetry failures go to an S3 bucket (a lifecycle rule expires them after 90
days: SQS could keep them 14 days at most); OTA failures go to an SQS queue
with 14-day retention, the AWS-native redrive source. Both are behind one
small interface so the gateway, the handlers and `v2c dlq` never care which.
Vendor errors are translated here into `TransientError`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import NotFound, TransientError
from v2c.handlers.dlq.record import DeadLetterRecord

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


class DeadLetterStore(Protocol):
    name: str

    def put(self, record: DeadLetterRecord) -> None: ...

    def list(self) -> Iterator[DeadLetterRecord]:
        """Every record, oldest first."""
        ...

    def get(self, record_id: str) -> DeadLetterRecord: ...

    def delete(self, record_id: str) -> None: ...

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

    def depth(self) -> int:
        with self._lock:
            return len(self._records)


def _transient(action: str, exc: Exception) -> TransientError:
    return TransientError(f"dead-letter store {action} failed: {exc}")


class S3DeadLetterStore:
    """One JSON object per record under `prefix`, keyed by its time-ordered id."""

    def __init__(self, name: str, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.name = name
        self._s3 = client
        self._bucket = bucket
        self._prefix = prefix or f"dlq/{name}/"

    def _key(self, record_id: str) -> str:
        return f"{self._prefix}{record_id}.json"

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
                    yield obj["Key"]
        except (BotoCoreError, ClientError) as exc:
            raise _transient("list", exc) from exc

    def list(self) -> Iterator[DeadLetterRecord]:
        for key in self._keys():
            record_id = key[len(self._prefix) : -len(".json")]
            try:
                yield self.get(record_id)
            except NotFound:
                continue  # deleted between list and get

    def get(self, record_id: str) -> DeadLetterRecord:
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=self._key(record_id))["Body"]
            return DeadLetterRecord.loads(body.read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound(f"no dead-letter record {record_id} in {self.name}") from exc
            raise _transient("get", exc) from exc
        except BotoCoreError as exc:
            raise _transient("get", exc) from exc

    def delete(self, record_id: str) -> None:
        try:
            self._s3.delete_object(Bucket=self._bucket, Key=self._key(record_id))
        except (BotoCoreError, ClientError) as exc:
            raise _transient("delete", exc) from exc

    def depth(self) -> int:
        return sum(1 for _ in self._keys())


class SqsDeadLetterStore:
    """Records as SQS messages. SQS has no browse, so listing receives every
    message with a short visibility timeout and makes them visible again."""

    _PEEK_VISIBILITY_S = 30

    def __init__(self, name: str, client: SQSClient, queue_url: str) -> None:
        self.name = name
        self._sqs = client
        self._url = queue_url

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

    def _peek(self) -> list[tuple[DeadLetterRecord, str]]:
        """Receive everything once; returns (record, receipt handle) pairs."""
        seen: dict[str, tuple[DeadLetterRecord, str]] = {}
        try:
            while True:
                answer: Any = self._sqs.receive_message(
                    QueueUrl=self._url,
                    MaxNumberOfMessages=10,
                    VisibilityTimeout=self._PEEK_VISIBILITY_S,
                    WaitTimeSeconds=0,
                )
                messages = answer.get("Messages", [])
                if not messages:
                    break
                for msg in messages:
                    record = DeadLetterRecord.loads(msg["Body"])
                    seen[record.record_id] = (record, msg["ReceiptHandle"])
        except (BotoCoreError, ClientError) as exc:
            raise _transient("receive", exc) from exc
        return sorted(seen.values(), key=lambda pair: pair[0].record_id)

    def _release(self, handles: list[str]) -> None:
        for start in range(0, len(handles), 10):
            entries: Any = [
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for i, h in enumerate(handles[start : start + 10])
            ]
            try:
                self._sqs.change_message_visibility_batch(QueueUrl=self._url, Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                raise _transient("release", exc) from exc

    def list(self) -> Iterator[DeadLetterRecord]:
        pairs = self._peek()
        self._release([handle for _, handle in pairs])
        yield from (record for record, _ in pairs)

    def get(self, record_id: str) -> DeadLetterRecord:
        for record in self.list():
            if record.record_id == record_id:
                return record
        raise NotFound(f"no dead-letter record {record_id} in {self.name}")

    def delete(self, record_id: str) -> None:
        pairs = self._peek()
        keep: list[str] = []
        try:
            for record, handle in pairs:
                if record.record_id == record_id:
                    self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=handle)
                else:
                    keep.append(handle)
        except (BotoCoreError, ClientError) as exc:
            raise _transient("delete", exc) from exc
        finally:
            self._release(keep)

    def depth(self) -> int:
        try:
            attrs = self._sqs.get_queue_attributes(
                QueueUrl=self._url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
        except (BotoCoreError, ClientError) as exc:
            raise _transient("depth", exc) from exc
        return int(attrs.get("ApproximateNumberOfMessages", 0)) + int(
            attrs.get("ApproximateNumberOfMessagesNotVisible", 0)
        )
