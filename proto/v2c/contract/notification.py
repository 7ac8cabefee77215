"""The identity of a notification's signed part, shared by vehicle and cloud.

A vehicle that cannot verify an `OTAUpdateAvailable` reports it with
`OTAStatus.notification_unverified` and this digest. The cloud computes the
same digest over what it signed for the update the report names: equal
digests mean the vehicle received the cloud's own manifest, signature and
key id (its key store or clock is at fault, and the rejection is about the
real update); anything else is a notification the cloud never sent, which
must not change the real update's record.

The header and the download URL are outside the digest, as they are outside
the signature: a re-sent notification (new message id, fresh URL) has the
same signed part.
"""

from __future__ import annotations

import hashlib

from v2c.v1.ota_pb2 import OTAUpdateAvailable

__all__ = ["signed_part_sha256"]


def signed_part_sha256(manifest: bytes, signature: bytes, key_id: str) -> bytes:
    """SHA-256 (32 raw bytes) of `OTAUpdateAvailable(manifest, signature, key_id)`,
    deterministically serialized."""
    part = OTAUpdateAvailable(manifest=manifest, signature=signature, key_id=key_id)
    return hashlib.sha256(part.SerializeToString(deterministic=True)).digest()
