"""The dead-letter stores against a real moto server over HTTP: the SQS OTA
DLQ (which has no browse, so listing is receive-and-release) and the S3
telemetry DLQ."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import NotFound
from v2c.handlers.dlq.config import build_service
from v2c.handlers.dlq.store import MAX_SCAN, S3DeadLetterStore, SqsDeadLetterStore

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


VIN = "VIN-1HGBH41JXMN109186"
OTA_TOPIC = f"v2c/v1/eu-west-1/{VIN}/ota/available"


def _record(n: int, queue: str = "ota") -> DeadLetterRecord:
    return DeadLetterRecord.from_error(
        queue=queue,
        direction=Direction.OUTBOUND,
        source="outbound",
        topic=OTA_TOPIC,
        payload=bytes([n % 256]) + b"\x00\xff" * 8,
        error=RuntimeError(f"broker down {n}"),
        attempts=3,
        vehicle_id=VIN,
        context={"qos": 2},
        now_ms=1_800_000_000_000 + n,
    )


@pytest.fixture
def sqs_store(aws_stack: AwsStack) -> SqsDeadLetterStore:
    sqs = aws_stack.aws.client("sqs")
    url = sqs.get_queue_url(QueueName=aws_stack.names.ota_dlq_queue)["QueueUrl"]
    return SqsDeadLetterStore("ota", sqs, url)


@pytest.fixture
def s3_store(aws_stack: AwsStack) -> S3DeadLetterStore:
    return S3DeadLetterStore(
        "telemetry", aws_stack.aws.client("s3"), aws_stack.names.telemetry_dlq_bucket
    )


def _visible_now(store: SqsDeadLetterStore) -> int:
    attrs = store._sqs.get_queue_attributes(
        QueueUrl=store._url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def test_sqs_list_returns_every_record_oldest_first_and_leaves_them_visible(
    sqs_store: SqsDeadLetterStore,
) -> None:
    records = [_record(n) for n in range(25)]  # more than one receive (10 a call)
    for record in reversed(records):
        sqs_store.put(record)

    first = list(sqs_store.list())
    second = list(sqs_store.list())

    assert first == second == records  # nothing lost, bytes intact, oldest first
    assert _visible_now(sqs_store) == 25  # nothing hidden behind a visibility timeout
    assert sqs_store.depth() == 25


def test_sqs_delete_removes_only_the_named_record(sqs_store: SqsDeadLetterStore) -> None:
    records = [_record(n) for n in range(12)]
    for record in records:
        sqs_store.put(record)

    sqs_store.delete(records[7].record_id)

    assert list(sqs_store.list()) == records[:7] + records[8:]
    assert _visible_now(sqs_store) == 11


def test_sqs_delete_of_a_missing_record_changes_nothing(sqs_store: SqsDeadLetterStore) -> None:
    sqs_store.put(_record(1))

    sqs_store.delete("0000000000000-0000000000000000")

    assert len(list(sqs_store.list())) == 1
    assert _visible_now(sqs_store) == 1


def test_sqs_get_finds_a_record_and_a_missing_one_is_not_found(
    sqs_store: SqsDeadLetterStore,
) -> None:
    records = [_record(n) for n in range(15)]
    for record in records:
        sqs_store.put(record)

    assert sqs_store.get(records[13].record_id) == records[13]
    with pytest.raises(NotFound):
        sqs_store.get("0000000000000-0000000000000000")
    assert _visible_now(sqs_store) == 15


def test_sqs_replace_leaves_exactly_one_copy_with_the_new_attempt_count(
    sqs_store: SqsDeadLetterStore,
) -> None:
    record, other = _record(1), _record(2)
    sqs_store.put(record)
    sqs_store.put(other)

    sqs_store.replace(record.with_attempt(RuntimeError("still down"), 1_800_000_100_000))

    listed = {r.record_id: r for r in sqs_store.list()}
    assert listed[record.record_id].attempts == 4
    assert listed[record.record_id].payload == record.payload
    assert listed[other.record_id] == other
    assert sqs_store.depth() == 2


def test_sqs_interrupted_replace_shows_the_newer_copy_and_delete_removes_both(
    sqs_store: SqsDeadLetterStore,
) -> None:
    # Given: a replace that sent the new copy but died before deleting the old one
    record = _record(1)
    newer = record.with_attempt(RuntimeError("still down"), 1_800_000_100_000)
    sqs_store.put(record)
    sqs_store.put(newer)

    assert list(sqs_store.list()) == [newer]

    sqs_store.delete(record.record_id)

    assert list(sqs_store.list()) == []
    assert sqs_store.depth() == 0


def test_sqs_message_that_is_not_a_record_is_skipped_but_never_hidden_or_deleted(
    sqs_store: SqsDeadLetterStore,
) -> None:
    sqs_store._sqs.send_message(QueueUrl=sqs_store._url, MessageBody="not json")
    record = _record(1)
    sqs_store.put(record)

    assert list(sqs_store.list()) == [record]
    sqs_store.delete(record.record_id)

    assert _visible_now(sqs_store) == 1  # the stranger is still there, visible


def test_sqs_list_receives_at_most_max_scan_messages_and_hides_none_of_the_rest(
    sqs_store: SqsDeadLetterStore,
) -> None:
    records = [_record(n) for n in range(25)]
    for record in records:
        sqs_store.put(record)
    capped = SqsDeadLetterStore("ota", sqs_store._sqs, sqs_store._url, max_scan=10)

    listed = list(capped.list())

    # one receive (10 a call) reaches the cap: a partial listing of real records,
    # and every message visible again, the unlisted ones never received at all
    assert 0 < len(listed) < len(records)
    assert {r.record_id for r in listed} <= {r.record_id for r in records}
    assert _visible_now(sqs_store) == 25
    assert list(sqs_store.list()) == records  # the fixture's store: 1,000 a pass


def test_the_deployed_ota_store_is_capped_like_the_ingest_store() -> None:
    environ = {
        "TELEMETRY_DLQ_BUCKET": "bucket",
        "OTA_DLQ_QUEUE_URL": "https://sqs.example/ota-dlq",
        "INGEST_DLQ_QUEUE_URL": "https://sqs.example/ingest-dlq",
        "INGEST_QUEUES": '{"telemetry": "v2c-ingest-telemetry"}',
    }
    service = build_service(environ, client=lambda _service: None)  # no call is made

    stores = service._stores
    assert isinstance(stores["ota"], SqsDeadLetterStore)
    assert stores["ota"]._max_scan == MAX_SCAN == 1000
    assert isinstance(stores["ingest"], SqsDeadLetterStore)
    assert stores["ingest"]._max_scan == MAX_SCAN
    assert SqsDeadLetterStore("ota", None, "url")._max_scan == MAX_SCAN  # type: ignore[arg-type]


def test_s3_list_is_oldest_first_and_ignores_objects_that_are_not_records(
    s3_store: S3DeadLetterStore, aws_stack: AwsStack
) -> None:
    records = [_record(n, queue="telemetry") for n in (3, 1, 2)]
    for record in records:
        s3_store.put(record)
    s3 = aws_stack.aws.client("s3")
    bucket = aws_stack.names.telemetry_dlq_bucket
    s3.put_object(Bucket=bucket, Key="dlq/telemetry/README.txt", Body=b"notes")
    s3.put_object(Bucket=bucket, Key="dlq/telemetry/9999999999999-broken.json", Body=b"{")

    listed = list(s3_store.list())

    assert listed == sorted(records, key=lambda r: r.record_id)
    assert s3_store.get(records[0].record_id).payload == records[0].payload


def test_s3_delete_and_replace_touch_only_the_named_record(s3_store: S3DeadLetterStore) -> None:
    kept, doomed, bumped = (_record(n, queue="telemetry") for n in range(3))
    for record in (kept, doomed, bumped):
        s3_store.put(record)

    s3_store.delete(doomed.record_id)
    s3_store.replace(bumped.with_attempt(RuntimeError("again"), 1_800_000_100_000))

    listed = {r.record_id: r for r in s3_store.list()}
    assert set(listed) == {kept.record_id, bumped.record_id}
    assert listed[bumped.record_id].attempts == 4
    assert listed[kept.record_id] == kept
    with pytest.raises(NotFound):
        s3_store.get(doomed.record_id)
