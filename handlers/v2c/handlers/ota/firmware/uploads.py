"""Firmware uploads (issue #6; spec 003 BR-OTA-001..005, spec 004 E1-US1).

Two ways in, one core. API Gateway and Lambda cannot take a 500 MB body, so
in AWS a client asks `begin_upload` for a presigned PUT URL to a staging key,
uploads there, and calls `complete_upload`, which reads the staged object
back, verifies it and copies it to its final key. A process that holds the
request stream itself (the local HTTP adapter, the CLI) calls `upload`, which
streams into S3 by multipart upload while hashing. Both end in the same
conditional registry write, and both leave nothing in the bucket when a check
fails.

Order of a new package (BR-CON-001): the bytes are stored first, then the
record is written in one conditional transaction, then `firmware.uploaded` is
published. A record therefore never points at a missing object, and an
object whose record write lost is removed by the upload that wrote it.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from v2c.contract.errors import Conflict, InvalidField, NotFound, TransientError, V2CError
from v2c.handlers.ota.firmware.formats import (
    FirmwareFormat,
    clean_filename,
    format_from_filename,
)
from v2c.handlers.ota.firmware.hashing import (
    MD5_HEX_LENGTH,
    SHA256_HEX_LENGTH,
    Digest,
    normalize_checksum,
    verify_checksums,
)
from v2c.handlers.ota.firmware.ids import firmware_id
from v2c.handlers.ota.firmware.ingest import Readable, ingest, too_large
from v2c.handlers.ota.firmware.model import (
    FirmwareMetadata,
    FirmwareRecord,
    FirmwareStatus,
    parse_metadata,
)
from v2c.handlers.ota.firmware.repository import (
    FirmwareIdTaken,
    FirmwareRepository,
    ModelVersionTaken,
    iso,
)
from v2c.handlers.ota.firmware.storage import (
    PackageStore,
    StoredObject,
    package_key,
    staging_prefix,
)
from v2c.handlers.ota.ports import EventPublisher

logger = logging.getLogger(__name__)

MAX_FIRMWARE_BYTES: Final = 500 * 1024 * 1024  # BR-OTA-001
PART_SIZE: Final = 8 * 1024 * 1024  # S3 needs >= 5 MiB for every part but the last
URL_TTL_S: Final = 3600  # presigned URLs: one hour (E1-US4 AC1)
_TOKEN: Final = re.compile(r"[0-9a-f]{32}")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class UploadResult:
    record: FirmwareRecord
    created: bool  # False: an identical package was already registered (HTTP 200, not 201)


@dataclass(frozen=True, slots=True)
class UploadTicket:
    """Where to PUT the package, and the token that completes the upload."""

    upload_token: str
    upload_url: str
    firmware_id: str
    expires_at: datetime
    max_size: int
    method: str = "PUT"


@dataclass(frozen=True, slots=True)
class _Plan:
    """An upload's metadata checked and its id's current record looked up."""

    metadata: FirmwareMetadata
    filename: str
    fmt: FirmwareFormat
    firmware_id: str
    existing: FirmwareRecord | None


def _uploaded_detail(record: FirmwareRecord) -> dict[str, Any]:
    return {
        "firmware_id": record.firmware_id,
        "name": record.name,
        "version": record.version,
        "device_model": record.device_model,
        "manufacturer": record.manufacturer,
        "file_size": record.file_size,
        "checksum_sha256": record.checksum_sha256,
        "is_security_update": record.is_security_update,
        "is_beta": record.is_beta,
        "uploaded_by": record.created_by,
        "timestamp": iso(record.created_at),
    }


class FirmwareUploads:
    """Both upload paths; `FirmwareService` exposes them."""

    def __init__(
        self,
        repository: FirmwareRepository,
        store: PackageStore,
        *,
        events: EventPublisher,
        clock: Clock = utc_now,
        max_size: int = MAX_FIRMWARE_BYTES,
        part_size: int = PART_SIZE,
        upload_url_ttl_s: int = URL_TTL_S,
        new_token: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.repository = repository
        self.store = store
        self._events = events
        self._clock = clock
        self.max_size = max_size
        self._part_size = part_size
        self._upload_ttl_s = upload_url_ttl_s
        self._new_token = new_token

    # -- upload, streamed --------------------------------------------------

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
        """Register the package read from `stream` (read once, to its end or
        to the size cap). 400 bad metadata, format or size; 422 checksum
        mismatch; 409 same id or model+version with other content; 503 when
        S3 or DynamoDB fail. On any failure nothing is left in the bucket."""
        md5, sha256 = self._provided(provided_md5, provided_sha256)
        plan = self._plan(metadata, filename)
        upload_id = self._new_token()
        key = package_key(plan.firmware_id, upload_id)

        def before_commit(digest: Digest) -> None:
            verify_checksums(digest, md5, sha256)
            if plan.existing is not None:
                self._require_same_content(plan.existing, digest)

        # A registered id only needs hashing to tell a retry from a conflict:
        # its bytes are never written again.
        ingested = ingest(
            stream,
            plan.fmt,
            limit=self.max_size,
            part_size=self._part_size,
            sink=None if plan.existing is not None else self.store,
            key=key,
            before_commit=before_commit,
        )
        if plan.existing is not None:
            return UploadResult(plan.existing, created=False)
        return self._register(plan, ingested.digest, key, ingested.version_id, uploaded_by)

    # -- upload, two steps through a presigned URL ------------------------

    def begin_upload(
        self,
        metadata: FirmwareMetadata | Mapping[str, Any],
        *,
        filename: str,
        uploaded_by: str = "",
    ) -> UploadTicket:
        """Check the metadata and the file name now (so a client does not
        upload 500 MB to hear that its version exists), then hand out a
        presigned PUT URL to a staging key, valid `upload_url_ttl_s`."""
        plan = self._plan(metadata, filename)
        token = self._new_token()
        prefix = staging_prefix(token)
        now = self._clock()
        expires_at = now + timedelta(seconds=self._upload_ttl_s)
        self.store.put_json(
            f"{prefix}ticket.json",
            {
                "upload_token": token,
                "firmware_id": plan.firmware_id,
                "metadata": plan.metadata.model_dump(mode="json"),
                "filename": plan.filename,
                "uploaded_by": uploaded_by,
                "created_at": iso(now),
                "expires_at": iso(expires_at),
                "max_size": self.max_size,
            },
        )
        url = self.store.presign_put(f"{prefix}package", self._upload_ttl_s)
        return UploadTicket(token, url, plan.firmware_id, expires_at, self.max_size)

    def complete_upload(
        self,
        upload_token: str,
        *,
        provided_md5: str | None = None,
        provided_sha256: str | None = None,
    ) -> UploadResult:
        """Verify the staged package and register it. 404 unknown token; 400
        nothing uploaded, too large, bad format; 422 checksum mismatch; 409
        conflicting content. A rejected package is removed from staging (the
        token is then spent); after a 503 the staged file stays for a retry,
        and completing a token twice answers the registered record."""
        token = upload_token.strip().lower()
        if _TOKEN.fullmatch(token) is None:
            raise InvalidField("upload_token", "expected the 32-character token of begin_upload")
        md5, sha256 = self._provided(provided_md5, provided_sha256)
        prefix = staging_prefix(token)
        ticket = self.store.get_json(f"{prefix}ticket.json")
        if ticket is None:
            raise NotFound(f"upload {token} is unknown or expired; begin a new upload")
        if ticket.get("completed"):
            record = self.repository.get(str(ticket["firmware_id"]))
            if record is None:
                raise NotFound(f"firmware {ticket['firmware_id']} not found")
            return UploadResult(record, created=False)
        staged = self.store.head(f"{prefix}package")
        if staged is None:
            raise InvalidField(
                "file", f"nothing was uploaded for upload {token}: PUT the file to its URL first"
            )
        try:
            if staged.size > self.max_size:
                raise too_large(self.max_size)
            plan = self._plan(ticket["metadata"], str(ticket["filename"]))
            digest = self._hash_staged(staged, plan, md5, sha256)
        except V2CError as exc:
            if not exc.retryable:
                self._discard_staging(prefix)
            raise
        if plan.existing is not None:
            self._finish_staging(prefix, ticket)
            return UploadResult(plan.existing, created=False)
        key = package_key(plan.firmware_id, token)
        version_id = self.store.copy(staged, key)
        try:
            result = self._register(
                plan, digest, key, version_id, str(ticket.get("uploaded_by", ""))
            )
        except V2CError as exc:
            if not exc.retryable:  # lost a race to other content: the token is spent
                self._discard_staging(prefix)
            raise
        self._finish_staging(prefix, ticket)
        return result

    def _hash_staged(
        self, staged: StoredObject, plan: _Plan, md5: str | None, sha256: str | None
    ) -> Digest:
        def before_commit(digest: Digest) -> None:
            verify_checksums(digest, md5, sha256)
            if plan.existing is not None:
                self._require_same_content(plan.existing, digest)

        reader = self.store.open(staged)
        try:
            return ingest(
                reader,
                plan.fmt,
                limit=self.max_size,
                part_size=self._part_size,
                sink=None,
                key=staged.key,
                before_commit=before_commit,
            ).digest
        finally:
            reader.close()

    def _discard_staging(self, prefix: str) -> None:
        try:
            self.store.purge(prefix)
        except TransientError as exc:
            logger.warning("staged firmware not removed", extra={"prefix": prefix, "error": exc})

    def _finish_staging(self, prefix: str, ticket: dict[str, Any]) -> None:
        """Drop the staged bytes, keep a completed ticket: a client retrying
        `complete_upload` after a lost answer gets the record, not a 404."""
        try:
            self.store.purge(f"{prefix}package")
            self.store.put_json(f"{prefix}ticket.json", {**ticket, "completed": True})
        except TransientError as exc:
            logger.warning("staged firmware not removed", extra={"prefix": prefix, "error": exc})

    # -- the shared core ---------------------------------------------------

    @staticmethod
    def _provided(md5: str | None, sha256: str | None) -> tuple[str | None, str | None]:
        return (
            normalize_checksum("checksum_md5", md5, MD5_HEX_LENGTH),
            normalize_checksum("checksum_sha256", sha256, SHA256_HEX_LENGTH),
        )

    def _plan(self, metadata: FirmwareMetadata | Mapping[str, Any], filename: str) -> _Plan:
        meta = parse_metadata(metadata)
        fmt = format_from_filename(filename)
        fid = firmware_id(meta.name, meta.version, meta.device_model)
        existing = self.repository.get(fid)
        if existing is not None and existing.status is FirmwareStatus.DELETED:
            raise self._deleted_conflict(existing)
        if existing is None:
            owner = self.repository.model_version_owner(meta.device_model, meta.version)
            if owner is not None and owner != fid:
                raise ModelVersionTaken(meta.device_model, meta.version, owner)
        return _Plan(meta, clean_filename(filename), fmt, fid, existing)

    @staticmethod
    def _deleted_conflict(record: FirmwareRecord) -> Conflict:
        return Conflict(
            f"firmware {record.firmware_id} ({record.name} {record.version} for "
            f"{record.device_model}) was deleted; deleted firmware is kept for audit and its "
            "id is not reused: upload the package as a new version"
        )

    def _require_same_content(self, existing: FirmwareRecord, digest: Digest) -> None:
        if existing.status is FirmwareStatus.DELETED:
            raise self._deleted_conflict(existing)
        if existing.checksum_sha256 != digest.sha256:
            raise Conflict(
                f"firmware {existing.firmware_id} ({existing.name} {existing.version} for "
                f"{existing.device_model}) is already registered with other content "
                f"(SHA256 {existing.checksum_sha256}, this upload {digest.sha256}); "
                "a registered package is never replaced: upload it as a new version"
            )

    def _register(
        self,
        plan: _Plan,
        digest: Digest,
        key: str,
        version_id: str | None,
        uploaded_by: str,
    ) -> UploadResult:
        """Write the record for the object just stored at `key`; on losing
        the write, remove that object and answer as the winner dictates."""
        now = self._clock()
        record = FirmwareRecord(
            **plan.metadata.model_dump(),
            firmware_id=plan.firmware_id,
            filename=plan.filename,
            file_format=plan.fmt,
            file_size=digest.size,
            checksum_md5=digest.md5,
            checksum_sha256=digest.sha256,
            s3_key=key,
            created_at=now,
            updated_at=now,
            created_by=uploaded_by,
        )
        try:
            self.repository.put_new(record)
        except FirmwareIdTaken:
            winner = self.repository.get(plan.firmware_id)
            if winner is not None and winner.s3_key == key:
                return self._created(winner)  # our own write, retried by botocore
            self._remove_object(key, version_id)
            if winner is None:  # records are never hard-deleted: this cannot happen
                raise TransientError(f"firmware {plan.firmware_id} vanished; retry") from None
            self._require_same_content(winner, digest)
            return UploadResult(winner, created=False)
        except TransientError:
            # The write may have happened even though the answer was lost.
            self._settle_unknown_write(record, version_id)
            raise
        except BaseException:
            self._remove_object(key, version_id)
            raise
        return self._created(record)

    def _settle_unknown_write(self, record: FirmwareRecord, version_id: str | None) -> None:
        try:
            stored = self.repository.get(record.firmware_id)
        except TransientError:
            logger.warning(
                "firmware object kept: registry state unknown", extra={"key": record.s3_key}
            )
            return
        if stored is None or stored.s3_key != record.s3_key:
            self._remove_object(record.s3_key, version_id)

    def _remove_object(self, key: str, version_id: str | None) -> None:
        try:
            self.store.delete(key, version_id)
        except TransientError as exc:
            logger.warning("orphan firmware object not removed", extra={"key": key, "error": exc})

    def _created(self, record: FirmwareRecord) -> UploadResult:
        self._events.publish("firmware.uploaded", _uploaded_detail(record))
        return UploadResult(record, created=True)
