"""The firmware registry over a real moto server: streamed and presigned
uploads, checksum and size refusals that leave nothing behind, idempotent
and conflicting re-uploads, the lifecycle against active campaigns, download
URLs and the `firmware.uploaded` event on a real EventBridge bus."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import requests
from prometheus_client import REGISTRY

from v2c.contract.errors import (
    Conflict,
    FirmwareChecksumMismatch,
    InvalidField,
    NotFound,
    ValidationFailed,
)
from v2c.handlers.ota.events import EventBridgePublisher, RecordingEventPublisher
from v2c.handlers.ota.firmware import (
    MAX_FIRMWARE_BYTES,
    FirmwareService,
    FirmwareStatus,
    firmware_id,
)
from v2c.handlers.ota.firmware.uploads import PART_SIZE
from v2c.handlers.ota.firmware_catalog import FirmwareCatalog
from v2c.handlers.ota.ports import EventPublisher

if TYPE_CHECKING:
    from moto_fixtures import AwsStack
    from mypy_boto3_s3 import S3Client


MIB = 1024 * 1024
T0 = datetime(2025, 12, 18, 10, 0, tzinfo=UTC)


class GeneratedStream:
    """`size` deterministic pseudo-random bytes, produced as they are read:
    the test never holds the file either."""

    def __init__(self, size: int, seed: int = 1, prefix: bytes = b"") -> None:
        self._left = size
        self._rng = random.Random(seed)
        self._prefix = prefix

    def read(self, n: int = -1, /) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        head, self._prefix = self._prefix[:n], self._prefix[n:]
        chunk = head + self._rng.randbytes(n - len(head))
        self._left -= len(chunk)
        return chunk


def digests_of(size: int, seed: int = 1) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    stream = GeneratedStream(size, seed)
    while chunk := stream.read(MIB):
        md5.update(chunk)
        sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


class BytesStream:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def read(self, n: int = -1, /) -> bytes:
        n = len(self._data) if n < 0 else n
        chunk, self._data = bytes(self._data[:n]), self._data[n:]
        return chunk


class FakeUsage:
    def __init__(self) -> None:
        self.campaigns: dict[str, list[str]] = {}

    def active_campaigns_using(self, firmware_id: str) -> list[str]:
        return list(self.campaigns.get(firmware_id, []))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def meta(version: str = "2.1.0", **extra: Any) -> dict[str, Any]:
    return {
        "name": "Smart Frame Firmware",
        "version": version,
        "device_model": "SF-100",
        "manufacturer": "Acme",
        **extra,
    }


def make_service(
    aws_stack: AwsStack,
    *,
    usage: FakeUsage | None = None,
    events: EventPublisher | None = None,
    **options: Any,
) -> FirmwareService:
    return FirmwareService.from_clients(
        aws_stack.aws.client("dynamodb"),
        aws_stack.aws.client("s3"),
        table=aws_stack.names.firmware_table,
        bucket=aws_stack.names.firmware_bucket,
        usage=usage or FakeUsage(),
        events=events or RecordingEventPublisher(),
        clock=Clock(),
        **options,
    )


@pytest.fixture
def usage() -> FakeUsage:
    return FakeUsage()


@pytest.fixture
def events() -> RecordingEventPublisher:
    return RecordingEventPublisher()


@pytest.fixture
def service(
    aws_stack: AwsStack, usage: FakeUsage, events: RecordingEventPublisher
) -> FirmwareService:
    return make_service(aws_stack, usage=usage, events=events)


def bucket_leftovers(s3: S3Client, bucket: str, prefix: str = "firmware") -> dict[str, Any]:
    """Every object version, delete marker and open multipart upload under `prefix`."""
    versions = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return {
        "versions": [v["Key"] for v in versions.get("Versions", [])],
        "markers": [m["Key"] for m in versions.get("DeleteMarkers", [])],
        "uploads": [u["Key"] for u in uploads.get("Uploads", [])],
    }


NOTHING: dict[str, list[str]] = {"versions": [], "markers": [], "uploads": []}


def firmware_items(aws_stack: AwsStack) -> list[dict[str, Any]]:
    ddb = aws_stack.aws.client("dynamodb")
    return list(ddb.scan(TableName=aws_stack.names.firmware_table).get("Items", []))


# -- streamed upload ------------------------------------------------------------


def test_a_40_mb_stream_is_stored_by_multipart_with_memory_bounded_by_the_part_size(
    aws_stack: AwsStack, service: FirmwareService, events: RecordingEventPublisher
) -> None:
    size = 40 * MIB + 12345
    md5, sha = digests_of(size)

    tracemalloc.start()
    try:
        result = service.upload(
            GeneratedStream(size),
            meta(),
            filename="firmware_v2.1.0.bin",
            provided_md5=md5,
            provided_sha256=sha.upper(),
            uploaded_by="admin_user_123",
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    record = result.record
    assert result.created
    assert peak < 3 * PART_SIZE, f"peak {peak / MIB:.1f} MiB for a {size / MIB:.0f} MiB upload"
    assert record.firmware_id == firmware_id("Smart Frame Firmware", "2.1.0", "SF-100")
    assert (record.file_size, record.checksum_md5, record.checksum_sha256) == (size, md5, sha)
    assert record.status is FirmwareStatus.AVAILABLE
    assert record.created_by == "admin_user_123"
    s3 = aws_stack.aws.client("s3")
    stored = s3.head_object(Bucket=aws_stack.names.firmware_bucket, Key=record.s3_key)
    assert stored["ContentLength"] == size
    assert stored["ETag"].strip('"').endswith("-6")  # 5 full 8 MiB parts and a short one
    assert events.events == [
        (
            "firmware.uploaded",
            {
                "firmware_id": record.firmware_id,
                "name": "Smart Frame Firmware",
                "version": "2.1.0",
                "device_model": "SF-100",
                "manufacturer": "Acme",
                "file_size": size,
                "checksum_sha256": sha,
                "is_security_update": False,
                "is_beta": False,
                "uploaded_by": "admin_user_123",
                "timestamp": record.created_at.isoformat(timespec="milliseconds").replace(
                    "+00:00", "Z"
                ),
            },
        )
    ]


def test_the_campaign_catalog_reads_what_the_registry_wrote(
    aws_stack: AwsStack, service: FirmwareService
) -> None:
    data = b"\x7fELF" + bytes(range(256)) * 40
    record = service.upload(BytesStream(data), meta(hardware_id="hw-a"), filename="k.elf").record
    catalog = FirmwareCatalog(
        aws_stack.aws.client("dynamodb"),
        aws_stack.aws.client("s3"),
        aws_stack.names.firmware_table,
        aws_stack.names.firmware_bucket,
    )

    package = catalog.package(record.firmware_id)
    assert (package.sha256_hex, package.size_bytes, package.available) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
        True,
    )
    assert package.hardware_id == "hw-a"
    assert catalog.find_version("SF-100", "2.1.0") == package
    assert catalog.package_exists(record.firmware_id)
    assert requests.get(catalog.download_url(record.firmware_id), timeout=10).content == data
    service.deprecate(record.firmware_id)
    assert catalog.package(record.firmware_id).available is False


def test_a_checksum_mismatch_is_a_422_and_leaves_no_object_upload_or_record(
    aws_stack: AwsStack, service: FirmwareService, events: RecordingEventPublisher
) -> None:
    size = 20 * MIB
    md5, _ = digests_of(size)

    with pytest.raises(FirmwareChecksumMismatch) as info:
        service.upload(
            GeneratedStream(size),
            meta(),
            filename="fw.bin",
            provided_md5=md5,
            provided_sha256="0" * 64,
        )

    assert info.value.http_status == 422
    assert "SHA256 checksum mismatch" in info.value.detail
    s3 = aws_stack.aws.client("s3")
    assert bucket_leftovers(s3, aws_stack.names.firmware_bucket) == NOTHING
    assert firmware_items(aws_stack) == []
    assert events.events == []


def test_the_default_size_cap_is_500_mib(service: FirmwareService) -> None:
    assert MAX_FIRMWARE_BYTES == 500 * 1024 * 1024
    assert service.max_size == MAX_FIRMWARE_BYTES


def test_an_over_limit_stream_is_a_400_read_no_further_than_the_cap_and_leaves_nothing(
    aws_stack: AwsStack,
) -> None:
    service = make_service(aws_stack, max_size=12 * MIB)

    class Counting(GeneratedStream):
        delivered = 0

        def read(self, n: int = -1, /) -> bytes:
            chunk = super().read(n)
            self.delivered += len(chunk)
            return chunk

    stream = Counting(64 * MIB)
    with pytest.raises(InvalidField) as info:
        service.upload(stream, meta(), filename="fw.bin")

    assert info.value.http_status == 400
    assert "file size exceeds the maximum limit of 12 MB" in info.value.detail
    assert stream.delivered == 12 * MIB + 1
    s3 = aws_stack.aws.client("s3")
    assert bucket_leftovers(s3, aws_stack.names.firmware_bucket) == NOTHING
    assert firmware_items(aws_stack) == []


@pytest.mark.parametrize(
    ("filename", "content", "detail"),
    [
        ("fw.exe", b"MZ\x90\x00" * 10, "'fw.exe': the file name must end in .bin, .hex, .elf"),
        ("fw.zip", b"this is not a zip archive", "is not a ZIP archive"),
        ("rootfs.tar.gz", b"ustar\x00 plain tar" * 3, "is not gzip data"),
    ],
)
def test_a_bad_format_is_a_400_and_stores_nothing(
    aws_stack: AwsStack, service: FirmwareService, filename: str, content: bytes, detail: str
) -> None:
    with pytest.raises(InvalidField) as info:
        service.upload(BytesStream(content), meta(), filename=filename)

    assert info.value.http_status == 400
    assert detail in info.value.detail
    assert bucket_leftovers(aws_stack.aws.client("s3"), aws_stack.names.firmware_bucket) == NOTHING


def test_bad_metadata_is_a_400_before_any_byte_is_read(service: FirmwareService) -> None:
    stream = GeneratedStream(10)
    with pytest.raises(ValidationFailed) as info:
        service.upload(stream, meta(version="2.1"), filename="fw.bin")
    assert "version:" in info.value.detail
    assert stream.read(10) != b""  # untouched


# -- re-upload ----------------------------------------------------------------------


def test_re_uploading_the_same_package_returns_the_existing_record_without_writing(
    aws_stack: AwsStack, service: FirmwareService, events: RecordingEventPublisher
) -> None:
    data = random.Random(3).randbytes(3 * MIB)
    first = service.upload(BytesStream(data), meta(), filename="fw.bin")
    second = service.upload(
        BytesStream(data), meta(description="other words"), filename="again.bin"
    )

    assert (first.created, second.created) == (True, False)
    assert second.record == first.record
    versions = bucket_leftovers(aws_stack.aws.client("s3"), aws_stack.names.firmware_bucket)
    assert versions["versions"] == [first.record.s3_key]
    assert [t for t, _ in events.events] == ["firmware.uploaded"]


def test_re_uploading_other_content_under_the_same_id_is_a_409(
    aws_stack: AwsStack, service: FirmwareService
) -> None:
    first = service.upload(BytesStream(b"one" * 1000), meta(), filename="fw.bin")

    with pytest.raises(Conflict) as info:
        service.upload(BytesStream(b"two" * 1000), meta(), filename="fw.bin")

    assert info.value.http_status == 409
    assert "already registered with other content" in info.value.detail
    assert service.get(first.record.firmware_id) == first.record
    versions = bucket_leftovers(aws_stack.aws.client("s3"), aws_stack.names.firmware_bucket)
    assert versions["versions"] == [first.record.s3_key]


def test_the_same_model_and_version_under_another_name_is_a_409(
    service: FirmwareService,
) -> None:
    service.upload(BytesStream(b"a" * 100), meta(), filename="fw.bin")
    with pytest.raises(
        Conflict, match=r"device model 'SF-100' already has firmware version 2\.1\.0"
    ):
        service.upload(BytesStream(b"a" * 100), meta(name="Renamed"), filename="fw.bin")


def test_two_concurrent_uploads_of_one_id_with_different_content_cannot_both_win(
    aws_stack: AwsStack, service: FirmwareService
) -> None:
    # Given two uploads that both looked up the id before either wrote it
    barrier = threading.Barrier(2, timeout=20)

    class Racing(BytesStream):
        started = False

        def read(self, n: int = -1, /) -> bytes:
            if not self.started:
                self.started = True
                barrier.wait()
            return super().read(n)

    outcomes: dict[int, object] = {}

    def run(i: int) -> None:
        try:
            outcomes[i] = service.upload(Racing(bytes([i]) * 2000), meta(), filename="fw.bin")
        except Conflict as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    # Then exactly one is registered and the loser removed its own object
    won = [o for o in outcomes.values() if not isinstance(o, Conflict)]
    lost = [o for o in outcomes.values() if isinstance(o, Conflict)]
    assert (len(won), len(lost)) == (1, 1)
    record = service.get(firmware_id("Smart Frame Firmware", "2.1.0", "SF-100"))
    leftovers = bucket_leftovers(aws_stack.aws.client("s3"), aws_stack.names.firmware_bucket)
    assert leftovers["versions"] == [record.s3_key]


# -- the presigned two-step path ------------------------------------------------------


def test_presigned_upload_then_complete_registers_the_package_and_clears_staging(
    aws_stack: AwsStack, service: FirmwareService, events: RecordingEventPublisher
) -> None:
    data = b"PK\x03\x04" + random.Random(5).randbytes(6 * MIB)
    ticket = service.begin_upload(meta(is_security_update=True), filename="bundle.zip")
    assert ticket.method == "PUT"
    assert ticket.expires_at == T0 + timedelta(seconds=1 + 3600)
    assert ticket.firmware_id == firmware_id("Smart Frame Firmware", "2.1.0", "SF-100")

    put = requests.put(ticket.upload_url, data=data, timeout=30)
    assert put.status_code == 200, put.text
    result = service.complete_upload(
        ticket.upload_token,
        provided_md5=hashlib.md5(data).hexdigest(),
        provided_sha256=hashlib.sha256(data).hexdigest(),
    )

    assert result.created
    assert result.record.file_size == len(data)
    assert result.record.is_security_update
    s3 = aws_stack.aws.client("s3")
    body = s3.get_object(Bucket=aws_stack.names.firmware_bucket, Key=result.record.s3_key)
    assert body["Body"].read() == data
    staged = bucket_leftovers(s3, aws_stack.names.firmware_bucket, "firmware-staging/")
    assert [k for k in staged["versions"] if k.endswith("/package")] == []
    assert [t for t, _ in events.events] == ["firmware.uploaded"]
    # a retried complete (its answer was lost) gets the same record back
    again = service.complete_upload(ticket.upload_token)
    assert (again.created, again.record) == (False, result.record)


def test_a_presigned_re_upload_of_a_registered_package_is_idempotent(
    aws_stack: AwsStack, service: FirmwareService
) -> None:
    data = b"same bytes" * 500
    first = service.upload(BytesStream(data), meta(), filename="fw.bin")
    ticket = service.begin_upload(meta(), filename="fw.bin")
    requests.put(ticket.upload_url, data=data, timeout=30).raise_for_status()

    again = service.complete_upload(ticket.upload_token)

    assert (again.created, again.record) == (False, first.record)
    s3 = aws_stack.aws.client("s3")
    leftovers = bucket_leftovers(s3, aws_stack.names.firmware_bucket)
    assert [k for k in leftovers["versions"] if not k.endswith("ticket.json")] == [
        first.record.s3_key
    ]


def test_completing_with_a_wrong_checksum_is_a_422_and_deletes_the_staged_file(
    aws_stack: AwsStack, service: FirmwareService
) -> None:
    ticket = service.begin_upload(meta(), filename="fw.bin")
    requests.put(ticket.upload_url, data=b"payload" * 1000, timeout=30).raise_for_status()

    with pytest.raises(FirmwareChecksumMismatch, match="MD5 checksum mismatch"):
        service.complete_upload(ticket.upload_token, provided_md5="f" * 32)

    s3 = aws_stack.aws.client("s3")
    assert bucket_leftovers(s3, aws_stack.names.firmware_bucket, "firmware") == NOTHING
    assert firmware_items(aws_stack) == []
    with pytest.raises(NotFound, match="unknown or expired"):
        service.complete_upload(ticket.upload_token)


def test_completing_before_the_put_is_a_400_and_keeps_the_ticket(
    service: FirmwareService,
) -> None:
    ticket = service.begin_upload(meta(), filename="fw.bin")
    with pytest.raises(InvalidField, match="nothing was uploaded") as info:
        service.complete_upload(ticket.upload_token)
    assert info.value.http_status == 400
    requests.put(ticket.upload_url, data=b"late" * 10, timeout=30).raise_for_status()
    assert service.complete_upload(ticket.upload_token).created


def test_a_staged_file_over_the_cap_is_a_400_and_is_deleted(aws_stack: AwsStack) -> None:
    service = make_service(aws_stack, max_size=1000)
    ticket = service.begin_upload(meta(), filename="fw.bin")
    requests.put(ticket.upload_url, data=b"x" * 1001, timeout=30).raise_for_status()

    with pytest.raises(InvalidField, match="exceeds the maximum limit of 1000 bytes"):
        service.complete_upload(ticket.upload_token)

    s3 = aws_stack.aws.client("s3")
    assert bucket_leftovers(s3, aws_stack.names.firmware_bucket) == NOTHING


def test_begin_upload_refuses_a_version_taken_by_another_name_before_any_upload(
    service: FirmwareService,
) -> None:
    service.upload(BytesStream(b"a" * 100), meta(), filename="fw.bin")
    with pytest.raises(Conflict, match="already has firmware version"):
        service.begin_upload(meta(name="Other"), filename="fw.bin")


def test_an_unknown_or_malformed_token_is_refused(service: FirmwareService) -> None:
    with pytest.raises(NotFound):
        service.complete_upload("a" * 32)
    with pytest.raises(InvalidField, match="upload_token"):
        service.complete_upload("../../etc/passwd")


# -- lifecycle against active campaigns ---------------------------------------------


@pytest.mark.parametrize("action", ["deprecate", "recall", "delete"])
def test_lifecycle_changes_are_refused_while_an_active_campaign_uses_the_firmware(
    service: FirmwareService, usage: FakeUsage, events: RecordingEventPublisher, action: str
) -> None:
    record = service.upload(BytesStream(b"fw" * 100), meta(), filename="fw.bin").record
    usage.campaigns[record.firmware_id] = ["camp-b", "camp-a"]

    with pytest.raises(Conflict) as info:
        getattr(service, action)(record.firmware_id)
    assert "used by 2 active campaign(s) (camp-a, camp-b)" in info.value.detail
    assert service.get(record.firmware_id).status is FirmwareStatus.AVAILABLE

    forced = getattr(service, action)(record.firmware_id, force=True, reason="CVE-2025-1")
    assert forced.status.value == {"deprecate": "deprecated", "recall": "recalled"}.get(
        action, "deleted"
    )
    assert forced.status_reason == "CVE-2025-1"
    kind, detail = events.events[-1]
    assert kind == f"firmware.{forced.status.value}"
    assert (detail["forced"], detail["active_campaigns"]) == (True, ["camp-a", "camp-b"])


def test_lifecycle_without_campaigns_and_its_effect_on_reads(
    service: FirmwareService,
) -> None:
    data = b"fw" * 100
    record = service.upload(BytesStream(data), meta(), filename="fw.bin").record
    fid = record.firmware_id

    assert service.deprecate(fid).status is FirmwareStatus.DEPRECATED
    assert service.deprecate(fid).status is FirmwareStatus.DEPRECATED  # a retry: no-op
    assert requests.get(service.download_url(fid), timeout=10).content == data
    recalled = service.recall(fid, reason="bricks the display")
    assert recalled.status is FirmwareStatus.RECALLED
    with pytest.raises(Conflict, match=r"recalled \(bricks the display\): it can no longer"):
        service.download(fid)
    with pytest.raises(Conflict, match="cannot become deprecated"):
        service.deprecate(fid)
    service.delete(fid)
    with pytest.raises(NotFound):
        service.get(fid)
    assert service.get(fid, include_deleted=True).status is FirmwareStatus.DELETED
    assert service.delete(fid).status is FirmwareStatus.DELETED  # idempotent
    with pytest.raises(NotFound):
        service.recall(fid)
    # a deleted id is never reused, whatever the content
    with pytest.raises(Conflict, match="was deleted"):
        service.upload(BytesStream(data), meta(), filename="fw.bin")


# -- queries ----------------------------------------------------------------------


def test_download_url_serves_the_exact_bytes_and_counts_downloads(
    service: FirmwareService,
) -> None:
    data = b"\x1f\x8b" + random.Random(9).randbytes(200_000)
    record = service.upload(BytesStream(data), meta(), filename="rootfs.tar.gz").record

    download = service.download(record.firmware_id, expires_s=600)
    answer = requests.get(download.url, timeout=10)

    assert answer.content == data
    assert 'filename="rootfs.tar.gz"' in answer.headers["Content-Disposition"]
    assert download.checksum_sha256 == hashlib.sha256(data).hexdigest()
    assert download.expires_at - timedelta(seconds=600) > T0
    service.download_url(record.firmware_id)
    assert service.get(record.firmware_id).download_count == 2


def test_head_package_and_package_exists_follow_the_object(
    aws_stack: AwsStack, service: FirmwareService
) -> None:
    record = service.upload(BytesStream(b"x" * 500), meta(), filename="fw.bin").record
    assert service.head_package(record.firmware_id).size == 500
    assert service.package_exists(record.firmware_id)

    s3 = aws_stack.aws.client("s3")
    s3.delete_object(Bucket=aws_stack.names.firmware_bucket, Key=record.s3_key)
    assert not service.package_exists(record.firmware_id)
    with pytest.raises(NotFound, match="missing from bucket"):
        service.head_package(record.firmware_id)
    assert not service.package_exists("0" * 32)


def test_listing_is_newest_first_filtered_paginated_and_hides_deleted(
    service: FirmwareService,
) -> None:
    ids = {}
    for i, version in enumerate(["1.0.0", "1.1.0", "1.2.0", "2.0.0"]):
        extra = {"is_beta": version == "2.0.0", "device_model": "SF-100" if i < 3 else "SF-200"}
        rec = service.upload(BytesStream(bytes([i]) * 64), meta(version, **extra), filename="f.bin")
        ids[version] = rec.record.firmware_id
    service.delete(ids["1.0.0"])

    page = service.list("SF-100", limit=1, offset=0)
    assert ([r.version for r in page.items], page.total) == (["1.2.0"], 2)
    assert [r.version for r in service.list("SF-100", limit=5, offset=1).items] == ["1.1.0"]
    assert [r.version for r in service.list().items] == ["2.0.0", "1.2.0", "1.1.0"]
    assert [r.version for r in service.list(is_beta=True).items] == ["2.0.0"]
    assert [r.version for r in service.list(include_deleted=True).items][-1] == "1.0.0"
    assert [r.version for r in service.list(status=FirmwareStatus.DELETED).items] == ["1.0.0"]
    with pytest.raises(InvalidField, match="limit: must be 1-200"):
        service.list(limit=500)


# -- events on a real bus -----------------------------------------------------------


@pytest.fixture
def bus_queue(aws_stack: AwsStack) -> str:
    """An SQS queue receiving every `v2c.ota` event of the v2c bus."""
    sqs, bus = aws_stack.aws.client("sqs"), aws_stack.aws.client("events")
    url = sqs.create_queue(QueueName="firmware-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    name = aws_stack.names.event_bus
    bus.put_rule(Name="ota-events", EventBusName=name, EventPattern='{"source": ["v2c.ota"]}')
    bus.put_targets(Rule="ota-events", EventBusName=name, Targets=[{"Id": "q", "Arn": arn}])
    return url


def test_firmware_uploaded_arrives_on_the_event_bus(aws_stack: AwsStack, bus_queue: str) -> None:
    publisher = EventBridgePublisher(aws_stack.aws.client("events"), aws_stack.names.event_bus)
    service = make_service(aws_stack, events=publisher)
    record = service.upload(BytesStream(b"e" * 100), meta(), filename="fw.bin").record

    sqs = aws_stack.aws.client("sqs")
    messages: list[Any] = []
    deadline = time.monotonic() + 10
    while not messages and time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=bus_queue, WaitTimeSeconds=1).get("Messages", [])
    assert len(messages) == 1
    event = json.loads(messages[0]["Body"])
    assert (event["source"], event["detail-type"]) == ("v2c.ota", "firmware.uploaded")
    assert event["detail"]["firmware_id"] == record.firmware_id
    assert event["detail"]["file_size"] == 100


def _failures() -> float:
    labels = {"detail_type": "firmware.uploaded"}
    return REGISTRY.get_sample_value("v2c_ota_event_failures_total", labels) or 0.0


def test_a_failing_event_bus_never_blocks_the_upload(aws_stack: AwsStack) -> None:
    publisher = EventBridgePublisher(aws_stack.aws.client("events"), "no-such-bus")
    before = _failures()
    service = make_service(aws_stack, events=publisher)

    result = service.upload(BytesStream(b"q" * 100), meta(), filename="fw.bin")

    assert result.created
    assert service.get(result.record.firmware_id).status is FirmwareStatus.AVAILABLE
    assert _failures() == before + 1
