"""The OTA firmware registry's write side and queries (issue #6): streamed
and presigned uploads with MD5/SHA-256 verification, deterministic ids,
idempotent re-upload, deprecate / recall / soft delete.

The campaign side reads the same table through `v2c.handlers.ota.firmware_catalog`.
"""

from v2c.handlers.ota.firmware.formats import FirmwareFormat
from v2c.handlers.ota.firmware.ids import firmware_id
from v2c.handlers.ota.firmware.model import FirmwareMetadata, FirmwareRecord, FirmwareStatus
from v2c.handlers.ota.firmware.repository import FirmwareRepository
from v2c.handlers.ota.firmware.service import (
    MAX_FIRMWARE_BYTES,
    FirmwareDownload,
    FirmwarePage,
    FirmwareService,
    FirmwareUsage,
    UploadResult,
    UploadTicket,
)
from v2c.handlers.ota.firmware.storage import PackageStore, StoredObject

__all__ = [
    "MAX_FIRMWARE_BYTES",
    "FirmwareDownload",
    "FirmwareFormat",
    "FirmwareMetadata",
    "FirmwarePage",
    "FirmwareRecord",
    "FirmwareRepository",
    "FirmwareService",
    "FirmwareStatus",
    "FirmwareUsage",
    "PackageStore",
    "StoredObject",
    "UploadResult",
    "UploadTicket",
    "firmware_id",
]
