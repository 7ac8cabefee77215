"""The firmware registry's records and lifecycle, as values and pure rules.

    available ──deprecate──▶ deprecated ──recall──▶ recalled
        │  └──────────────recall───────────────────▲    │
        └──────────────── delete (soft) ◀──────────┴────┘ (from any state)

* available: uploaded and deployable (spec 003 "Available").
* deprecated: older, not recommended for new deployments; still readable
  and downloadable, so vehicles of a running campaign can finish.
* recalled: withdrawn for a critical issue: not deployable, not downloadable.
* deleted: soft delete (BR-CON-004): the record stays for audit, reads answer
  404 unless asked for deleted records, and its id is never reused.

Every change out of a state is one way: a recalled package is never made
available again under the same id (upload a new version instead). Asking for
the state a record is already in is a no-op, so retries are harmless.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from v2c.contract.errors import Conflict, ValidationFailed
from v2c.contract.semver import SemVer
from v2c.handlers.ota.domain.validation import rule_error, validate
from v2c.handlers.ota.firmware.formats import FirmwareFormat

MAX_METADATA_JSON: Final = 16 * 1024
MAX_TAGS: Final = 50


class FirmwareStatus(StrEnum):
    AVAILABLE = "available"
    DEPRECATED = "deprecated"
    RECALLED = "recalled"
    DELETED = "deleted"


S = FirmwareStatus
TRANSITIONS: Final[dict[FirmwareStatus, frozenset[FirmwareStatus]]] = {
    S.AVAILABLE: frozenset({S.DEPRECATED, S.RECALLED, S.DELETED}),
    S.DEPRECATED: frozenset({S.RECALLED, S.DELETED}),
    S.RECALLED: frozenset({S.DELETED}),
    S.DELETED: frozenset(),
}
DEPLOYABLE: Final = frozenset({S.AVAILABLE})
DOWNLOADABLE: Final = frozenset({S.AVAILABLE, S.DEPRECATED})


def plan_transition(firmware_id: str, current: FirmwareStatus, target: FirmwareStatus) -> bool:
    """Whether moving `current` to `target` changes anything: False when the
    record is already there (a retry), True when the move is allowed;
    `Conflict` (409) when the lifecycle forbids it."""
    if current == target:
        return False
    if target not in TRANSITIONS[current]:
        raise Conflict(
            f"firmware {firmware_id} is {current.value} and cannot become {target.value}"
            + ("" if current != S.RECALLED else "; upload a fixed package as a new version")
        )
    return True


def _no_control(text: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise rule_error("must not contain control characters")
    return text


def _semver(text: str) -> str:
    try:
        SemVer.parse(text)
    except ValidationFailed as exc:
        raise rule_error(str(exc)) from None
    return text


Tag = Annotated[str, Field(min_length=1, max_length=64)]


class FirmwareMetadata(BaseModel):
    """What the uploader says about a package (BR-OTA-006/007/008/009).

    Strings are stripped before anything else, so `" SF-100"` and `"SF-100"`
    name the same model and hash to the same firmware id."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=50)
    device_model: str = Field(min_length=1, max_length=100)
    manufacturer: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    is_beta: bool = False
    is_security_update: bool = False
    tags: tuple[Tag, ...] = Field(default=(), max_length=MAX_TAGS)
    metadata: dict[str, Any] = Field(default_factory=dict)
    hardware_id: str = Field(default="", max_length=100)
    min_installed_version: str = Field(default="", max_length=50)

    @field_validator("name", "manufacturer", "hardware_id")
    @classmethod
    def _printable(cls, value: str) -> str:
        return _no_control(value)

    @field_validator("device_model")
    @classmethod
    def _model(cls, value: str) -> str:
        # ':' separates the parts of the firmware id's hash input.
        if ":" in value:
            raise rule_error("must not contain ':'")
        return _no_control(value)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return _semver(value)

    @field_validator("min_installed_version")
    @classmethod
    def _optional_semver(cls, value: str) -> str:
        return _semver(value) if value else value

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(value))

    @field_validator("metadata")
    @classmethod
    def _small_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise rule_error(f"must be a JSON object: {exc}") from None
        if len(text) > MAX_METADATA_JSON:
            raise rule_error(f"must be at most {MAX_METADATA_JSON} bytes as JSON")
        return value


class FirmwareRecord(FirmwareMetadata):
    """A registered package: the metadata plus what the registry computed.

    Field names follow the PRD's response (`file_size`, `checksum_md5`,
    `checksum_sha256`); the repository maps them to the item attributes
    the campaign side's catalog reads (`size_bytes`, `sha256`)."""

    firmware_id: str
    filename: str = ""
    file_format: FirmwareFormat
    file_size: int = Field(ge=0)
    checksum_md5: str
    checksum_sha256: str
    s3_key: str
    status: FirmwareStatus = FirmwareStatus.AVAILABLE
    status_reason: str = ""
    created_at: datetime
    updated_at: datetime
    created_by: str = ""
    download_count: int = 0

    @property
    def deployable(self) -> bool:
        return self.status in DEPLOYABLE

    @property
    def downloadable(self) -> bool:
        return self.status in DOWNLOADABLE


METADATA_LIMITS: Final = {
    "name": "1-200 characters (BR-OTA-006)",
    "version": "a semantic version of 1-50 characters (BR-OTA-006)",
    "device_model": "1-100 characters",
    "manufacturer": "1-200 characters (BR-OTA-006)",
    "description": "at most 2000 characters",
    "tags": f"at most {MAX_TAGS} tags of 1-64 characters",
    "hardware_id": "at most 100 characters",
    "min_installed_version": "a semantic version of at most 50 characters",
}


def parse_metadata(data: object) -> FirmwareMetadata:
    """`data` (a mapping, JSON-like) as metadata, or `FieldValidationFailed`
    (400) naming every bad field at once."""
    if isinstance(data, FirmwareMetadata):
        return data
    return validate(FirmwareMetadata, data, subject="firmware metadata", limits=METADATA_LIMITS)
