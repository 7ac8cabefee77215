"""The firmware registry (issue #6; spec 003 BR-OTA-001..010, spec 004 E1):
uploads, queries and the lifecycle behind one service the API calls.

Uploads live in `uploads.py` (both ways in). Queries hide soft-deleted
records (404) unless asked for them. The lifecycle (`model.py`) refuses to
deprecate, recall or delete a package that an active campaign still uses,
unless forced: the issue asks this of all three, recall included, so a recall
during a rollout is a deliberate, logged override (the event says `forced`
and names the campaigns), not a side effect. Every change publishes
`firmware.<status>` for audit; publishing never blocks the change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

from v2c.contract.errors import Conflict, InvalidField, NotFound
from v2c.handlers.ota.firmware.ids import is_firmware_id
from v2c.handlers.ota.firmware.ingest import Readable
from v2c.handlers.ota.firmware.model import (
    FirmwareMetadata,
    FirmwareRecord,
    FirmwareStatus,
    plan_transition,
)
from v2c.handlers.ota.firmware.repository import FirmwareRepository, iso
from v2c.handlers.ota.firmware.storage import PackageStore, StoredObject
from v2c.handlers.ota.firmware.uploads import (
    MAX_FIRMWARE_BYTES,
    URL_TTL_S,
    Clock,
    FirmwareUploads,
    UploadResult,
    UploadTicket,
    utc_now,
)
from v2c.handlers.ota.ports import EventPublisher

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

MAX_URL_TTL_S: Final = 7 * 24 * 3600  # SigV4 presigned URLs last at most 7 days
MAX_LIST_LIMIT: Final = 200  # E1-US3 AC3
_SHOWN_CAMPAIGNS: Final = 10

__all__ = [
    "MAX_FIRMWARE_BYTES",
    "FirmwareDownload",
    "FirmwarePage",
    "FirmwareService",
    "FirmwareUsage",
    "UploadResult",
    "UploadTicket",
]


class FirmwareUsage(Protocol):
    """Which campaigns still need a package: the lifecycle refuses to pull it
    from under them unless forced. Implemented by the campaign side."""

    def active_campaigns_using(self, firmware_id: str) -> list[str]:
        """Ids of the campaigns in an active state (created, in progress,
        paused, rolling back) whose firmware is `firmware_id`."""
        ...


@dataclass(frozen=True, slots=True)
class FirmwareDownload:
    """A presigned GET plus what a vehicle verifies after downloading (E1-US4)."""

    firmware_id: str
    url: str
    expires_at: datetime
    file_size: int
    checksum_md5: str
    checksum_sha256: str
    filename: str


@dataclass(frozen=True, slots=True)
class FirmwarePage:
    items: list[FirmwareRecord]
    total: int
    limit: int
    offset: int


class FirmwareService:
    def __init__(
        self,
        repository: FirmwareRepository,
        store: PackageStore,
        *,
        usage: FirmwareUsage,
        events: EventPublisher,
        clock: Clock = utc_now,
        **upload_options: Any,
    ) -> None:
        """`upload_options`: `max_size`, `part_size`, `upload_url_ttl_s`,
        `new_token` of `FirmwareUploads` (tests shrink the size cap)."""
        self.repository = repository
        self.store = store
        self._usage = usage
        self._events = events
        self._clock = clock
        self.uploads = FirmwareUploads(
            repository, store, events=events, clock=clock, **upload_options
        )

    @classmethod
    def from_clients(
        cls,
        ddb: DynamoDBClient,
        s3: S3Client,
        *,
        table: str,
        bucket: str,
        usage: FirmwareUsage,
        events: EventPublisher,
        **options: Any,
    ) -> FirmwareService:
        """The service over boto3 clients the caller built (handlers never build their own)."""
        return cls(
            FirmwareRepository(ddb, table),
            PackageStore(s3, bucket),
            usage=usage,
            events=events,
            **options,
        )

    @property
    def max_size(self) -> int:
        return self.uploads.max_size

    # -- uploads (see uploads.py) ------------------------------------------

    def upload(
        self,
        stream: Readable,
        metadata: FirmwareMetadata | Mapping[str, Any],
        *,
        filename: str,
        provided_md5: str | None = None,
        provided_sha256: str | None = None,
        uploaded_by: str = "",
    ) -> UploadResult:
        """Stream a package into the registry (local adapter, CLI)."""
        return self.uploads.upload(
            stream,
            metadata,
            filename=filename,
            provided_md5=provided_md5,
            provided_sha256=provided_sha256,
            uploaded_by=uploaded_by,
        )

    def begin_upload(
        self,
        metadata: FirmwareMetadata | Mapping[str, Any],
        *,
        filename: str,
        uploaded_by: str = "",
    ) -> UploadTicket:
        """Step 1 of the Lambda path: a presigned PUT URL to a staging key."""
        return self.uploads.begin_upload(metadata, filename=filename, uploaded_by=uploaded_by)

    def complete_upload(
        self,
        upload_token: str,
        *,
        provided_md5: str | None = None,
        provided_sha256: str | None = None,
    ) -> UploadResult:
        """Step 2 of the Lambda path: verify the staged package and register it."""
        return self.uploads.complete_upload(
            upload_token, provided_md5=provided_md5, provided_sha256=provided_sha256
        )

    # -- queries -----------------------------------------------------------

    def get(self, firmware_id: str, *, include_deleted: bool = False) -> FirmwareRecord:
        """The record; `NotFound` (404) when unknown, or deleted unless `include_deleted`."""
        record = self.repository.get(firmware_id) if is_firmware_id(firmware_id) else None
        if record is None or (record.status is FirmwareStatus.DELETED and not include_deleted):
            raise NotFound(f"firmware {firmware_id!r} not found")
        return record

    def list(
        self,
        device_model: str | None = None,
        *,
        manufacturer: str | None = None,
        is_beta: bool | None = None,
        is_security_update: bool | None = None,
        status: FirmwareStatus | None = None,
        include_deleted: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> FirmwarePage:
        """One page of firmware, newest first (E1-US3), deleted ones left out
        unless asked for. A device model is served by the by-device-model
        index; without one the table is scanned. Both read every match to
        sort by creation time and count the total: a registry holds
        hundreds to a few thousand packages, not millions."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidField("limit", f"must be 1-{MAX_LIST_LIMIT}, got {limit}")
        if offset < 0:
            raise InvalidField("offset", f"must be 0 or more, got {offset}")
        source = (
            self.repository.by_device_model(device_model) if device_model else self.repository.all()
        )
        show_deleted = include_deleted or status is FirmwareStatus.DELETED
        matches = [
            r
            for r in source
            if (show_deleted or r.status is not FirmwareStatus.DELETED)
            and (status is None or r.status is status)
            and (manufacturer is None or r.manufacturer == manufacturer)
            and (is_beta is None or r.is_beta == is_beta)
            and (is_security_update is None or r.is_security_update == is_security_update)
        ]
        matches.sort(key=lambda r: (r.created_at, r.firmware_id), reverse=True)
        return FirmwarePage(matches[offset : offset + limit], len(matches), limit, offset)

    def download(self, firmware_id: str, *, expires_s: int = URL_TTL_S) -> FirmwareDownload:
        """A presigned GET of the package (E1-US4), counted as a download
        (BR-OTA-010). 404 unknown or deleted; 409 recalled."""
        if not 1 <= expires_s <= MAX_URL_TTL_S:
            raise InvalidField("expires_s", f"must be 1-{MAX_URL_TTL_S} seconds, got {expires_s}")
        record = self.get(firmware_id)
        if not record.downloadable:
            raise Conflict(
                f"firmware {firmware_id} is {record.status.value}"
                + (f" ({record.status_reason})" if record.status_reason else "")
                + ": it can no longer be downloaded"
            )
        url = self.store.presign_get(record.s3_key, expires_s, record.filename)
        self.repository.count_download(firmware_id)
        return FirmwareDownload(
            firmware_id=firmware_id,
            url=url,
            expires_at=self._clock() + timedelta(seconds=expires_s),
            file_size=record.file_size,
            checksum_md5=record.checksum_md5,
            checksum_sha256=record.checksum_sha256,
            filename=record.filename,
        )

    def download_url(self, firmware_id: str, expires_s: int = URL_TTL_S) -> str:
        return self.download(firmware_id, expires_s=expires_s).url

    def head_package(self, firmware_id: str) -> StoredObject:
        """The package object as S3 has it; `NotFound` (404) when the record
        or the object is missing (campaign creation answers 400 on that)."""
        record = self.get(firmware_id)
        stored = self.store.head(record.s3_key)
        if stored is None:
            raise NotFound(
                f"the package of firmware {firmware_id} is missing from bucket "
                f"{self.store.bucket} (key {record.s3_key})"
            )
        return stored

    def package_exists(self, firmware_id: str) -> bool:
        try:
            self.head_package(firmware_id)
        except NotFound:
            return False
        return True

    # -- lifecycle ---------------------------------------------------------

    def deprecate(
        self, firmware_id: str, *, reason: str = "", force: bool = False, actor: str = ""
    ) -> FirmwareRecord:
        """Not recommended for new deployments; still downloadable."""
        return self._move(firmware_id, FirmwareStatus.DEPRECATED, reason, force, actor)

    def recall(
        self, firmware_id: str, *, reason: str = "", force: bool = False, actor: str = ""
    ) -> FirmwareRecord:
        """Withdrawn for a critical issue: neither deployable nor downloadable."""
        return self._move(firmware_id, FirmwareStatus.RECALLED, reason, force, actor)

    def delete(
        self, firmware_id: str, *, reason: str = "", force: bool = False, actor: str = ""
    ) -> FirmwareRecord:
        """Soft delete (BR-CON-004): the record and the object stay for audit;
        reads answer 404. Deleting a deleted record is a no-op."""
        return self._move(firmware_id, FirmwareStatus.DELETED, reason, force, actor)

    def _move(
        self, fid: str, target: FirmwareStatus, reason: str, force: bool, actor: str
    ) -> FirmwareRecord:
        record = self.get(fid, include_deleted=target is FirmwareStatus.DELETED)
        if not plan_transition(fid, record.status, target):
            return record
        campaigns = sorted(self._usage.active_campaigns_using(fid))
        if campaigns and not force:
            shown = ", ".join(campaigns[:_SHOWN_CAMPAIGNS])
            more = len(campaigns) - _SHOWN_CAMPAIGNS
            raise Conflict(
                f"firmware {fid} is used by {len(campaigns)} active campaign(s) "
                f"({shown}{f' and {more} more' if more > 0 else ''}); finish or cancel them "
                f"first, or force the change"
            )
        updated = self.repository.change_status(fid, record.status, target, reason, self._clock())
        if campaigns:
            logger.warning(
                "firmware status forced while campaigns use it",
                extra={"firmware_id": fid, "status": target.value, "campaigns": campaigns},
            )
        self._events.publish(
            f"firmware.{target.value}",
            {
                "firmware_id": fid,
                "name": updated.name,
                "version": updated.version,
                "device_model": updated.device_model,
                "previous_status": record.status.value,
                "status": target.value,
                "reason": reason,
                "forced": bool(campaigns),
                "active_campaigns": campaigns,
                "actor": actor,
                "timestamp": iso(updated.updated_at),
            },
        )
        return updated
