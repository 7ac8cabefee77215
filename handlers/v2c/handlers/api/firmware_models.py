"""What the firmware endpoints read and answer, shared by the Lambda routes
(`routes/firmware.py`) and the local streaming upload (`v2c.infra.local.firmware_streaming`).

The raw upload, `POST /api/v1/ota/firmware`, is one request shape in both
places: the package bytes are the body (`Content-Type:
application/octet-stream`, or none), the metadata is in query parameters
(`UploadQuery`). Behind API Gateway the route takes bodies up to
`INLINE_MAX_BYTES` (a Lambda event is at most 6 MB and API Gateway
base64-encodes binary bodies); bigger packages take the two-step path
(`UploadRequest`, then a presigned PUT, then `UploadComplete`). Locally the
HTTP adapter streams the same request of any size up to 500 MB straight into
`FirmwareService.upload`. Both answer `FirmwareUploaded`: 201 when
registered, 200 with `created: false` when the same package was already.

The PRD's example uploads as `multipart/form-data`; a raw body is used
instead because it streams without a parser (and without buffering a 500 MB
form part), and the same request works against the Lambda and the local
adapter. Metadata too large for a URL (`metadata` over a few KB) goes
through the two-step path's JSON body.

The request models state every rule of `FirmwareMetadata` a JSON Schema can
(lengths, no control characters, semantic versions, file extensions), so the
OpenAPI document says what is accepted; the service validates again (it
strips whitespace first, so it accepts a little more than the document).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from v2c.contract.errors import InvalidField
from v2c.handlers.api import json_limits
from v2c.handlers.api.app import OTA_PREFIX
from v2c.handlers.api.models import RequestModel
from v2c.handlers.ota.firmware.formats import FirmwareFormat
from v2c.handlers.ota.firmware.ingest import Readable
from v2c.handlers.ota.firmware.model import (
    MAX_METADATA_JSON,
    MAX_TAGS,
    FirmwareRecord,
    FirmwareStatus,
)
from v2c.handlers.ota.firmware.repository import iso
from v2c.handlers.ota.firmware.service import FirmwareDownload, FirmwareService
from v2c.handlers.ota.firmware.uploads import UploadResult, UploadTicket

FIRMWARE_PATH: Final = f"{OTA_PREFIX}/firmware"
UPLOADS_PATH: Final = f"{OTA_PREFIX}/firmware-uploads"
"""Not `/firmware/uploads`: that would also match `/firmware/{firmware_id}`."""
RAW_CONTENT_TYPE: Final = "application/octet-stream"
INLINE_MAX_BYTES: Final = 4 * 1024 * 1024
"""The Lambda form's raw upload cap: 4 MiB is 5.6 MB base64, under Lambda's
6 MB event with room for the headers."""

# -- field rules, as JSON Schema patterns (ECMA, Python and Rust agree on these) --

_CONTROL = r"\x00-\x1f\x7f"
_NUM = r"(0|[1-9][0-9]*)"
_PRE = r"(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD = r"[0-9A-Za-z-]+"
SEMVER: Final = rf"{_NUM}\.{_NUM}\.{_NUM}(-{_PRE}(\.{_PRE})*)?(\+{_BUILD}(\.{_BUILD})*)?"


def _printable(forbidden: str = "") -> str:
    """At least one visible character, no control characters (nor `forbidden`)."""
    bad = _CONTROL + forbidden
    return rf"^[^{bad}]*[^\s{bad}][^{bad}]*$"


def _any_case(text: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in text)


_EXTENSIONS = "|".join(_any_case(f.extension) for f in FirmwareFormat)
FILENAME_PATTERN: Final = rf'^[^"\\/{_CONTROL}]*[^\s"\\/{_CONTROL}]({_EXTENSIONS})$'
HEX_MD5: Final = "^[0-9a-fA-F]{32}$"
HEX_SHA256: Final = "^[0-9a-fA-F]{64}$"

Name = Annotated[
    str, Field(min_length=1, max_length=200, pattern=_printable(), description="BR-OTA-006")
]
Version = Annotated[
    str,
    Field(
        min_length=5,
        max_length=50,
        pattern=f"^{SEMVER}$",
        description="a semantic version (MAJOR.MINOR.PATCH[-pre][+build])",
    ),
]
DeviceModel = Annotated[
    str, Field(min_length=1, max_length=100, pattern=_printable(":"), description="no ':'")
]
Manufacturer = Annotated[str, Field(min_length=1, max_length=200, pattern=_printable())]
Description = Annotated[str, Field(max_length=2000)]
HardwareId = Annotated[str, Field(max_length=100, pattern=f"^[^{_CONTROL}]*$")]
MinVersion = Annotated[
    str,
    Field(
        max_length=50,
        pattern=f"^({SEMVER})?$",
        description="the lowest installed version this package applies to; empty: any",
    ),
]
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=_printable())]
Filename = Annotated[
    str,
    Field(
        min_length=5,
        max_length=255,
        pattern=FILENAME_PATTERN,
        description=(
            "the package's file name; its extension is the format: "
            + ", ".join(f.extension for f in FirmwareFormat)
        ),
    ),
]
Md5 = Annotated[str, Field(pattern=HEX_MD5, description="MD5 to verify (hex)")]
Sha256 = Annotated[str, Field(pattern=HEX_SHA256, description="SHA-256 to verify (hex)")]
Reason = Annotated[str, Field(max_length=500, description="recorded with the change")]

# -- requests ----------------------------------------------------------------


class UploadRequest(RequestModel):
    """Step 1 of the two-step upload: the package's metadata and file name."""

    name: Name
    version: Version
    device_model: DeviceModel
    manufacturer: Manufacturer
    filename: Filename
    description: Description = ""
    is_beta: bool = False
    is_security_update: bool = False
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description=f"free-form JSON, at most {MAX_METADATA_JSON} bytes"
    )
    hardware_id: HardwareId = ""
    min_installed_version: MinVersion = ""

    def firmware_metadata(self) -> dict[str, Any]:
        return self.model_dump(exclude={"filename"})


class UploadComplete(RequestModel):
    """Step 3 of the two-step upload: checksums to verify, both optional."""

    checksum_md5: Md5 | None = None
    checksum_sha256: Sha256 | None = None


class StatusChange(RequestModel):
    """Deprecate or recall: why, and whether to override running campaigns."""

    reason: Reason = ""
    force: bool = Field(default=False, description="also while an active campaign uses it")


class UploadQuery(BaseModel):
    """The raw upload's query parameters (strings on the wire: lax types).

    The Lambda route declares the same parameters one by one (Powertools
    documents a parameter model without its constraints); a unit test keeps
    the two in step."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: Name
    version: Version
    device_model: DeviceModel
    manufacturer: Manufacturer
    filename: Filename
    description: Description = ""
    is_beta: bool = False
    is_security_update: bool = False
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    metadata: str = Field(default="", max_length=MAX_METADATA_JSON)
    hardware_id: HardwareId = ""
    min_installed_version: MinVersion = ""
    checksum_md5: Md5 | None = None
    checksum_sha256: Sha256 | None = None

    def firmware_metadata(self) -> dict[str, Any]:
        data = self.model_dump(exclude={"filename", "checksum_md5", "checksum_sha256"})
        data["metadata"] = _json_object(self.metadata)
        return data


def _json_object(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json_limits.loads(text, what="metadata")  # depth-limited: never a RecursionError
    except ValueError as exc:
        raise InvalidField("metadata", f"must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidField("metadata", "must be a JSON object")
    return value


def accepts_raw(content_type: str | None) -> bool:
    """Whether a raw upload's `Content-Type` is one it takes: the body is the
    package itself, so only `application/octet-stream` (or none) is."""
    if not content_type:
        return True
    return content_type.split(";", 1)[0].strip().lower() == RAW_CONTENT_TYPE


def upload_raw(
    service: FirmwareService, stream: Readable, query: UploadQuery, uploaded_by: str
) -> UploadResult:
    """Stream a raw upload's body into the registry."""
    return service.upload(
        stream,
        query.firmware_metadata(),
        filename=query.filename,
        provided_md5=query.checksum_md5,
        provided_sha256=query.checksum_sha256,
        uploaded_by=uploaded_by,
    )


# -- answers -----------------------------------------------------------------

Timestamp = Annotated[
    datetime,
    PlainSerializer(iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""UTC to the millisecond, as stored (`2025-12-18T10:00:00.000Z`): an upload's
answer and a later read of the record show the same text."""


class FirmwareOut(BaseModel):
    """A registered package, with the PRD's field names (E1-US1, E1-US2)."""

    firmware_id: str
    name: str
    version: str
    device_model: str
    manufacturer: str
    description: str
    is_beta: bool
    is_security_update: bool
    tags: list[str]
    metadata: dict[str, Any]
    hardware_id: str
    min_installed_version: str
    filename: str
    file_format: FirmwareFormat
    file_size: int
    file_url: str = Field(description="the API path that hands out a download URL")
    checksum_md5: str
    checksum_sha256: str
    status: FirmwareStatus
    status_reason: str
    download_count: int
    created_at: Timestamp
    updated_at: Timestamp
    created_by: str


class FirmwareUploaded(FirmwareOut):
    created: bool = Field(description="false: this package was already registered (HTTP 200)")


class FirmwareList(BaseModel):
    items: list[FirmwareOut]
    total: int = Field(description="matches of the filters, over all pages")
    limit: int
    next_cursor: str | None = Field(description="the next page's cursor; null on the last page")


class DownloadOut(BaseModel):
    """A time-limited URL of the package and what to verify it against (E1-US4)."""

    firmware_id: str
    download_url: str
    expires_at: Timestamp
    file_size: int
    checksum_md5: str
    checksum_sha256: str
    filename: str


class UploadTicketOut(BaseModel):
    """Where to PUT the package (step 2), and where to complete it (step 3)."""

    upload_token: str
    upload_url: str = Field(description="presigned: PUT the file here, no API credential")
    method: str
    firmware_id: str
    expires_at: Timestamp
    max_size: int
    complete_url: str = Field(description="the API path to POST when the PUT is done")


def firmware_out(record: FirmwareRecord) -> FirmwareOut:
    data = record.model_dump(exclude={"s3_key"})
    return FirmwareOut(**data, file_url=f"{FIRMWARE_PATH}/{record.firmware_id}/download")


def uploaded_out(result: UploadResult) -> FirmwareUploaded:
    return FirmwareUploaded(**firmware_out(result.record).model_dump(), created=result.created)


def uploaded_status(result: UploadResult) -> int:
    return 201 if result.created else 200


def download_out(download: FirmwareDownload) -> DownloadOut:
    return DownloadOut(
        firmware_id=download.firmware_id,
        download_url=download.url,
        expires_at=download.expires_at,
        file_size=download.file_size,
        checksum_md5=download.checksum_md5,
        checksum_sha256=download.checksum_sha256,
        filename=download.filename,
    )


def ticket_out(ticket: UploadTicket) -> UploadTicketOut:
    return UploadTicketOut(
        upload_token=ticket.upload_token,
        upload_url=ticket.upload_url,
        method=ticket.method,
        firmware_id=ticket.firmware_id,
        expires_at=ticket.expires_at,
        max_size=ticket.max_size,
        complete_url=f"{UPLOADS_PATH}/{ticket.upload_token}/complete",
    )
