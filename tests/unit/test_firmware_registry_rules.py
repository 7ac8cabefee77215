"""The firmware registry's pure parts: ids, hashing, formats, metadata, the
status lifecycle and the one-pass ingest loop (over an in-memory sink)."""

from __future__ import annotations

import hashlib
import io
import random

import pytest

from v2c.contract.errors import (
    Conflict,
    FirmwareChecksumMismatch,
    InvalidField,
    ValidationFailed,
)
from v2c.handlers.ota.firmware.formats import (
    ALLOWED_TEXT,
    FirmwareFormat,
    check_signature,
    format_from_filename,
)
from v2c.handlers.ota.firmware.hashing import (
    Digest,
    StreamingDigest,
    normalize_checksum,
    verify_checksums,
)
from v2c.handlers.ota.firmware.ids import firmware_id, is_firmware_id
from v2c.handlers.ota.firmware.ingest import Ingested, ingest
from v2c.handlers.ota.firmware.model import (
    FirmwareStatus,
    parse_metadata,
    plan_transition,
)

S = FirmwareStatus

# -- ids (BR-OTA-004) ---------------------------------------------------------


def test_firmware_id_is_the_first_32_hex_of_sha256_of_name_version_model() -> None:
    expected = hashlib.sha256(b"Smart Frame Firmware:2.1.0:SF-100").hexdigest()[:32]
    assert firmware_id("Smart Frame Firmware", "2.1.0", "SF-100") == expected
    assert is_firmware_id(expected)


def test_firmware_id_changes_with_each_part() -> None:
    base = firmware_id("fw", "1.0.0", "M")
    assert len({base, firmware_id("fw2", "1.0.0", "M"), firmware_id("fw", "1.0.1", "M")}) == 3
    assert firmware_id("fw", "1.0.0", "N") != base


def test_metadata_is_stripped_so_padded_names_hash_to_the_same_id() -> None:
    meta = parse_metadata(
        {"name": " fw ", "version": "1.0.0", "device_model": "SF-100 ", "manufacturer": "Acme"}
    )
    assert (meta.name, meta.device_model) == ("fw", "SF-100")
    assert firmware_id(meta.name, meta.version, meta.device_model) == firmware_id(
        "fw", "1.0.0", "SF-100"
    )


# -- metadata (BR-OTA-006/007) -------------------------------------------------


def test_metadata_reports_every_bad_field_at_once() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_metadata({"name": "", "version": "2.1", "device_model": "a:b", "colour": "red"})
    detail = info.value.detail
    for part in ("name: must be 1-200 characters", "version:", "2.1", "device_model:", "':'"):
        assert part in detail
    assert "manufacturer: is required" in detail
    assert "colour: is not a known field" in detail
    assert info.value.http_status == 400


def test_metadata_accepts_tags_and_custom_json_and_drops_duplicate_tags() -> None:
    meta = parse_metadata(
        {
            "name": "fw",
            "version": "2.0.0-rc.1+build.5",
            "device_model": "Accord",
            "manufacturer": "Acme",
            "tags": ["security", "q4", "security"],
            "metadata": {"board": "rev-c", "nested": {"n": 1}},
            "min_installed_version": "1.4.0",
        }
    )
    assert meta.tags == ("security", "q4")
    assert meta.metadata["nested"] == {"n": 1}


def test_metadata_refuses_a_non_semver_minimum_version_and_non_json_metadata() -> None:
    base = {"name": "fw", "version": "1.0.0", "device_model": "M", "manufacturer": "A"}
    with pytest.raises(ValidationFailed, match="min_installed_version"):
        parse_metadata({**base, "min_installed_version": "v1"})
    with pytest.raises(ValidationFailed, match="metadata: must be a JSON object"):
        parse_metadata({**base, "metadata": {"x": float("nan")}})


# -- formats (BR-OTA-002) -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("fw.bin", FirmwareFormat.BIN),
        ("FW.HEX", FirmwareFormat.HEX),
        ("kernel.elf", FirmwareFormat.ELF),
        ("rootfs.tar.gz", FirmwareFormat.TAR_GZ),
        ("bundle.zip", FirmwareFormat.ZIP),
        ("update-bundle.swu", FirmwareFormat.SWU),
        ("C:\\builds\\fw-2.1.0.bin", FirmwareFormat.BIN),
        ("/tmp/out/fw.tar.gz", FirmwareFormat.TAR_GZ),
    ],
)
def test_format_comes_from_the_extension(name: str, fmt: FirmwareFormat) -> None:
    assert format_from_filename(name) is fmt


@pytest.mark.parametrize("name", ["fw.gz", "fw.exe", "fw", ".bin", "fw.bin.txt", "fw.tar"])
def test_unsupported_extensions_are_a_400_naming_the_allowed_formats(name: str) -> None:
    with pytest.raises(InvalidField) as info:
        format_from_filename(name)
    assert info.value.http_status == 400
    assert "unsupported firmware format" in info.value.detail
    assert ALLOWED_TEXT in info.value.detail
    assert ".tar.gz" in ALLOWED_TEXT


def test_a_quote_in_the_file_name_is_refused() -> None:
    with pytest.raises(InvalidField, match="quote"):
        format_from_filename('fw".bin')


@pytest.mark.parametrize(
    ("fmt", "head"),
    [
        (FirmwareFormat.ZIP, b"PK\x03\x04\x14\x00"),
        (FirmwareFormat.ZIP, b"PK\x05\x06" + bytes(18)),
        (FirmwareFormat.TAR_GZ, b"\x1f\x8b\x08\x00"),
        (FirmwareFormat.ELF, b"\x7fELF\x02\x01\x01"),
        (FirmwareFormat.SWU, b"070701000001"),
        (FirmwareFormat.HEX, b":10010000214601360121470136007EFE09"),
        (FirmwareFormat.HEX, b"\r\n:020000040800F2"),
        (FirmwareFormat.BIN, b"\x00\x01anything"),
    ],
)
def test_content_starting_like_its_format_passes(fmt: FirmwareFormat, head: bytes) -> None:
    check_signature(fmt, head)


@pytest.mark.parametrize(
    ("fmt", "head"),
    [
        (FirmwareFormat.ZIP, b"not a zip file at all"),
        (FirmwareFormat.TAR_GZ, b"ustar\x00"),
        (FirmwareFormat.ELF, b"MZ\x90\x00"),
        (FirmwareFormat.SWU, b"070707"),  # odc cpio: SWUpdate refuses it
        (FirmwareFormat.HEX, b"S00F000068656C6C6F"),  # Motorola S-record, not Intel HEX
        (FirmwareFormat.ZIP, b""),
    ],
)
def test_content_not_matching_its_extension_is_a_400(fmt: FirmwareFormat, head: bytes) -> None:
    with pytest.raises(InvalidField, match=f"file name ends in {fmt.extension}"):
        check_signature(fmt, head)


# -- hashing (BR-OTA-003) -----------------------------------------------------


def test_streaming_digest_equals_hashlib_over_the_whole_input() -> None:
    data = random.Random(7).randbytes(300_001)
    digest = StreamingDigest()
    for start in range(0, len(data), 4096):
        digest.update(data[start : start + 4096])
    assert digest.digest() == Digest(
        len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    )


def test_provided_checksums_are_normalized_and_malformed_ones_are_a_400() -> None:
    sha = "AB" * 32
    assert normalize_checksum("checksum_sha256", f" {sha} ", 64) == sha.lower()
    assert normalize_checksum("checksum_md5", "", 32) is None
    assert normalize_checksum("checksum_md5", None, 32) is None
    with pytest.raises(InvalidField, match="checksum_md5: expected 32 hexadecimal"):
        normalize_checksum("checksum_md5", "xyz", 32)


def test_checksum_mismatch_is_a_422_saying_which_checksum() -> None:
    digest = Digest(3, hashlib.md5(b"abc").hexdigest(), hashlib.sha256(b"abc").hexdigest())
    verify_checksums(digest, digest.md5, digest.sha256)
    verify_checksums(digest, None, None)
    with pytest.raises(FirmwareChecksumMismatch, match="SHA256 checksum mismatch") as info:
        verify_checksums(digest, digest.md5, "0" * 64)
    assert info.value.http_status == 422
    assert info.value.reason == "checksum_mismatch"
    with pytest.raises(FirmwareChecksumMismatch, match="MD5 checksum mismatch"):
        verify_checksums(digest, "0" * 32, digest.sha256)


# -- lifecycle ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.AVAILABLE, S.DEPRECATED),
        (S.AVAILABLE, S.RECALLED),
        (S.AVAILABLE, S.DELETED),
        (S.DEPRECATED, S.RECALLED),
        (S.DEPRECATED, S.DELETED),
        (S.RECALLED, S.DELETED),
    ],
)
def test_allowed_transitions_change_the_status(current: S, target: S) -> None:
    assert plan_transition("f" * 32, current, target) is True


@pytest.mark.parametrize("status", list(S))
def test_asking_for_the_current_status_is_a_no_op(status: S) -> None:
    assert plan_transition("f" * 32, status, status) is False


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.DEPRECATED, S.AVAILABLE),
        (S.RECALLED, S.AVAILABLE),
        (S.RECALLED, S.DEPRECATED),
        (S.DELETED, S.AVAILABLE),
        (S.DELETED, S.DEPRECATED),
        (S.DELETED, S.RECALLED),
    ],
)
def test_going_back_is_a_409(current: S, target: S) -> None:
    with pytest.raises(Conflict, match=f"is {current.value} and cannot become {target.value}"):
        plan_transition("f" * 32, current, target)


# -- ingest: one pass, bounded, nothing stored on failure -----------------------


class MemoryWriter:
    def __init__(self, sink: MemorySink, key: str) -> None:
        self.sink = sink
        self.key = key
        self.parts: list[bytes] = []
        self.aborted = False

    def upload_part(self, data: bytes | bytearray) -> None:
        self.parts.append(bytes(data))

    def complete(self) -> str | None:
        self.sink.objects[self.key] = b"".join(self.parts)
        return "v1"

    def abort(self) -> None:
        self.aborted = True


class MemorySink:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.writers: list[MemoryWriter] = []

    def start_multipart(self, key: str) -> MemoryWriter:
        self.writers.append(MemoryWriter(self, key))
        return self.writers[-1]

    def put(self, key: str, data: bytes | bytearray) -> str | None:
        self.objects[key] = bytes(data)
        return "v0"


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.delivered = 0

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self.delivered += len(chunk)
        return chunk


def _ingest(
    data: bytes, sink: MemorySink | None, limit: int = 10_000, check: Exception | None = None
) -> Ingested:
    def before_commit(digest: Digest) -> None:
        if check is not None:
            raise check

    return ingest(
        CountingStream(data),
        FirmwareFormat.BIN,
        limit=limit,
        part_size=1000,
        sink=sink,
        key="k",
        before_commit=before_commit,
    )


def test_ingest_splits_into_full_parts_and_a_short_last_part() -> None:
    data = random.Random(1).randbytes(2500)
    sink = MemorySink()
    result = _ingest(data, sink)
    assert [len(p) for p in sink.writers[0].parts] == [1000, 1000, 500]
    assert sink.objects["k"] == data
    assert result.version_id == "v1"
    assert result.digest.sha256 == hashlib.sha256(data).hexdigest()


def test_ingest_stores_a_package_smaller_than_a_part_in_one_put() -> None:
    sink = MemorySink()
    assert _ingest(b"tiny", sink).version_id == "v0"
    assert sink.writers == []
    assert sink.objects == {"k": b"tiny"}


def test_ingest_without_a_sink_only_hashes() -> None:
    result = _ingest(b"x" * 2500, None)
    assert result.version_id is None
    assert result.digest.size == 2500


def test_ingest_stops_reading_one_byte_past_the_limit_and_aborts() -> None:
    sink = MemorySink()
    stream = CountingStream(b"y" * 50_000)
    with pytest.raises(InvalidField, match="exceeds the maximum limit of 3000 bytes"):
        ingest(
            stream,
            FirmwareFormat.BIN,
            limit=3000,
            part_size=1000,
            sink=sink,
            key="k",
            before_commit=lambda d: None,
        )
    assert stream.delivered == 3001
    assert sink.writers[0].aborted
    assert sink.objects == {}


def test_a_failing_commit_check_aborts_the_multipart_upload() -> None:
    sink = MemorySink()
    with pytest.raises(FirmwareChecksumMismatch):
        _ingest(b"z" * 2500, sink, check=FirmwareChecksumMismatch("SHA256 checksum mismatch"))
    assert sink.writers[0].aborted
    assert sink.writers[0].parts == [b"z" * 1000, b"z" * 1000]  # the last part never went up
    assert sink.objects == {}


def test_an_empty_file_is_a_400() -> None:
    with pytest.raises(InvalidField, match="the file is empty"):
        _ingest(b"", MemorySink())


def test_a_wrong_signature_is_refused_before_the_first_part_is_stored() -> None:
    sink = MemorySink()
    with pytest.raises(InvalidField, match="not a ZIP archive"):
        ingest(
            io.BytesIO(b"plain text, not a zip" * 100),
            FirmwareFormat.ZIP,
            limit=10_000,
            part_size=1000,
            sink=sink,
            key="k",
            before_commit=lambda d: None,
        )
    assert sink.writers == []
    assert sink.objects == {}
