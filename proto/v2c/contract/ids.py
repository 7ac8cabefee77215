"""Message identifiers: UUIDs carried as 16 raw bytes, shown as text.

A telemetry sample's id is *derived* from (vehicle id, epoch, sequence) with
UUIDv5, so a sample keeps its id whether it travels alone or inside a batch,
and whichever path delivers it second is recognised as a duplicate. Random
ids (UUIDv4) are for things that have no natural key: batches, commands.
"""

from __future__ import annotations

import uuid

from v2c.contract.errors import CodecError

# Fixed forever: changing it changes every derived id and breaks dedup.
TELEMETRY_NAMESPACE = uuid.UUID("6f0c6a55-3d44-5b8e-9a53-7632c0a1e2b4")


def telemetry_message_id(vehicle_id: str, epoch: int, sequence: int) -> bytes:
    """The 16-byte id of one telemetry sample."""
    return uuid.uuid5(TELEMETRY_NAMESPACE, f"{vehicle_id}/{epoch}/{sequence}").bytes


def new_message_id() -> bytes:
    return uuid.uuid4().bytes


def id_text(raw: bytes) -> str:
    """The canonical text form used in logs and storage keys."""
    if len(raw) != 16:
        raise CodecError(f"message id must be 16 bytes, got {len(raw)}")
    return str(uuid.UUID(bytes=raw))


def id_bytes(text: str) -> bytes:
    try:
        return uuid.UUID(text).bytes
    except ValueError as exc:
        raise CodecError(f"not a UUID: {text!r}") from exc
