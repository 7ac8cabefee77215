"""Building `OTAStatus` reports.

A report's message id is derived (UUIDv5 of vehicle, update and sequence),
not random: the same report re-sent after a restart carries the same id and
the same sequence, so the cloud recognises it whichever way it dedups. The
agent stays pure (no random source, no clock).

A report about a notification that failed verification is numbered by the
vehicle's own count of such reports and its id derived from (vehicle, that
count) in a namespace of its own: whatever update id a forged manifest claims,
the report can never carry the id or the number of a genuine report.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Final

from v2c.v1.ota_pb2 import OTAStatus

# Fixed forever: changing it changes every derived report id.
REPORT_NAMESPACE: Final = uuid.UUID("3c1d0f8e-52a4-5b6e-8f21-6a9d4e7b0c35")
UNVERIFIED_NAMESPACE: Final = uuid.uuid5(REPORT_NAMESPACE, "unverified-notification")
SCHEMA_VERSION: Final = "1.0"
UINT32_MAX: Final = 2**32 - 1
MAX_DETAIL_CHARS: Final = 240  # the cloud keeps 500; reports stay far below 4 KiB


_REPORT_PREFIX: Final = REPORT_NAMESPACE.bytes
_UNVERIFIED_PREFIX: Final = UNVERIFIED_NAMESPACE.bytes


def uuid5_bytes(namespace: bytes, name: str) -> bytes:
    """`uuid.uuid5(UUID(bytes=namespace), name).bytes`, without the round trip
    through an int that `uuid.UUID` makes (one per report): SHA-1 of namespace
    and name, first 16 bytes, version 5 and the RFC 4122 variant set."""
    digest = bytearray(hashlib.sha1(namespace + name.encode(), usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return bytes(digest[:16])


# The enums' names by number, looked up once per report (`Name` is slower).
STATE_NAMES: Final = {number: name for name, number in reversed(OTAStatus.State.items())}
REASON_NAMES: Final = {number: name for name, number in reversed(OTAStatus.Reason.items())}


def named_state(status: OTAStatus) -> tuple[str, str]:
    """(state, reason) of a report by name, reason "" when it has none; a
    number the maps lack goes to `Name`, as before."""
    state = STATE_NAMES.get(status.state) or OTAStatus.State.Name(status.state)
    reason = REASON_NAMES.get(status.reason) or OTAStatus.Reason.Name(status.reason)
    return (state, reason if status.reason else "")


def report_message_id(vehicle_id: str, update_id: str, sequence: int) -> bytes:
    return uuid5_bytes(_REPORT_PREFIX, f"{vehicle_id}/{update_id}/{sequence}")


def unverified_message_id(vehicle_id: str, sequence: int) -> bytes:
    return uuid5_bytes(_UNVERIFIED_PREFIX, f"{vehicle_id}/{sequence}")


def duration_ms(start_ms: int, end_ms: int) -> int:
    """A duration for a uint32 field: 0 when unknown, clamped at ~49 days."""
    if start_ms <= 0 or end_ms < start_ms:
        return 0
    return min(UINT32_MAX, end_ms - start_ms)


def stamp(status: OTAStatus, vehicle_id: str, sequence: int, now_ms: int) -> OTAStatus:
    """`status` numbered `sequence`, with the header that goes with it."""
    status.sequence = sequence
    status.header.message_id = report_message_id(vehicle_id, status.update_id, sequence)
    status.header.timestamp = now_ms
    status.header.schema_version = SCHEMA_VERSION
    return status


def stamp_unverified(status: OTAStatus, vehicle_id: str, sequence: int, now_ms: int) -> OTAStatus:
    """`status` as the vehicle's `sequence`-th report of an unverified notification."""
    status.notification_unverified = True
    status.sequence = sequence
    status.header.message_id = unverified_message_id(vehicle_id, sequence)
    status.header.timestamp = now_ms
    status.header.schema_version = SCHEMA_VERSION
    return status


def joined(*parts: str) -> str:
    """Several things to say in one `error_detail`, the empty ones left out."""
    return "; ".join(part for part in parts if part)


def clip(detail: str) -> str:
    return detail if len(detail) <= MAX_DETAIL_CHARS else detail[: MAX_DETAIL_CHARS - 3] + "..."
