"""Builders shared by the signing unit tests (pure: no I/O)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from v2c.v1.ota_pb2 import OTAManifest, UpdatePriority, UpdateType

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_manifest(**overrides: object) -> OTAManifest:
    fields: dict[str, object] = {
        "update_id": "upd-1",
        "version": "2.4.1",
        "type": UpdateType.UPDATE_TYPE_FIRMWARE,
        "priority": UpdatePriority.UPDATE_PRIORITY_HIGH,
        "size_bytes": 52_428_800,
        "checksum_sha256": hashlib.sha256(b"package").digest(),
        "min_battery_level": 50,
        "estimated_install_time_sec": 600,
        "expires_at": 1_800_000_000_000,
        "target_model": "Accord",
        "campaign_id": "camp-1",
        "firmware_id": "f" * 32,
        "issued_at": 1_700_000_000_000,
    }
    fields.update(overrides)
    return OTAManifest(**fields)  # type: ignore[arg-type]


def flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    """`data` with one bit inverted at byte `index` (negative counts from the end)."""
    mutable = bytearray(data)
    mutable[index] ^= 1 << bit
    return bytes(mutable)
