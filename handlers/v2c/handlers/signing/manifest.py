"""Signing OTA manifests (the cloud's half; verification is in `v2c.contract.manifest`).

The signed bytes are the deterministic serialization of `OTAManifest`, which
carries the package's SHA-256: the signature binds the package through its
checksum, and the download URL (re-issued when it expires) stays outside.
`OTAUpdateAvailable.manifest` carries exactly those bytes, so a verifier
checks the signature over the bytes it received and parses them only after.
"""

from __future__ import annotations

from v2c.contract.errors import ValidationFailed
from v2c.contract.manifest import SHA256_BYTES, manifest_bytes, verify_manifest, verify_notification
from v2c.handlers.signing.base import Signer
from v2c.v1.ota_pb2 import OTAManifest, OTAUpdateAvailable

__all__ = ["manifest_bytes", "sign_manifest", "verify_manifest", "verify_notification"]


def sign_manifest(signer: Signer, manifest: OTAManifest) -> OTAUpdateAvailable:
    """Sign `manifest` and return a notification with `manifest`, `signature`
    and `key_id` set; the caller adds the header and the download URL.

    The signer's key id is written into the manifest before signing, so the
    id is covered by the signature as well as carried in the envelope. The
    caller's message is not modified. Raises `ValidationFailed` for a
    manifest without a 32-byte package checksum or with another key's id,
    and the signer's `SigningUnavailable` when the backend is down.
    """
    if len(manifest.checksum_sha256) != SHA256_BYTES:
        raise ValidationFailed("the manifest must carry the package's 32-byte SHA-256")
    key_id = signer.key_id
    if manifest.key_id and manifest.key_id != key_id:
        raise ValidationFailed(
            f"the manifest names key {manifest.key_id!r}, the signer holds {key_id!r}"
        )
    signed = OTAManifest()
    signed.CopyFrom(manifest)
    signed.key_id = key_id
    data = manifest_bytes(signed)
    signature = signer.sign(data)
    return OTAUpdateAvailable(manifest=data, signature=signature.der, key_id=signature.key_id)
