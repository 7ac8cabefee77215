"""Signing and verifying OTA manifests.

The signed bytes are the deterministic serialization of `OTAManifest`, which
carries the package's SHA-256: the signature binds the package through its
checksum, and the download URL (re-issued when it expires) stays outside.
`OTAUpdateAvailable.manifest` carries exactly those bytes, so a verifier
checks the signature over the bytes it received and parses them only after.

`verify_manifest` is pure (bytes, key set, now → manifest or a typed error)
and needs public keys only. It deliberately does *not* decide whether the
update applies: expiry (`expires_at`), anti-rollback, target model and
battery are the update agent's decisions, made on the returned manifest.
"""

from __future__ import annotations

from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError

from v2c.contract.errors import CodecError, SignatureInvalid, ValidationFailed
from v2c.handlers.signing.base import MAX_DER_SIGNATURE_BYTES, Signer
from v2c.handlers.signing.keyset import TrustedKeySet
from v2c.v1.ota_pb2 import OTAManifest, OTAUpdateAvailable

SHA256_BYTES = 32


def manifest_bytes(manifest: OTAManifest) -> bytes:
    """The canonical bytes of a manifest: what is signed and what is sent."""
    return manifest.SerializeToString(deterministic=True)


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


def verify_manifest(
    manifest: bytes,
    signature: bytes,
    key_id: str,
    *,
    trusted: TrustedKeySet,
    now: datetime,
) -> OTAManifest:
    """Check `signature` over the exact `manifest` bytes with the trusted key
    `key_id` valid at `now`, then parse the manifest.

    Raises `UnknownSigningKey`, `SigningKeyNotValid` or `SignatureInvalid`
    (all `SignatureInvalid`, so a caller may catch the one base), and
    `CodecError` for signed bytes that do not parse.
    """
    key = trusted.key_for(key_id, now)
    if not signature or len(signature) > MAX_DER_SIGNATURE_BYTES:
        raise SignatureInvalid(f"a {len(signature)}-byte signature is not a P-256 DER signature")
    try:
        key.public_key.verify(signature, manifest, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SignatureInvalid(f"the manifest signature does not verify with key {key_id}") from exc
    parsed = OTAManifest()
    try:
        parsed.ParseFromString(manifest)
    except DecodeError as exc:
        raise CodecError("the signed manifest does not parse") from exc
    if parsed.key_id != key_id:
        raise SignatureInvalid(
            f"the envelope names key {key_id!r}, the signed manifest {parsed.key_id!r}"
        )
    return parsed


def verify_notification(
    notification: OTAUpdateAvailable, *, trusted: TrustedKeySet, now: datetime
) -> OTAManifest:
    """`verify_manifest` on the three signed fields of a notification."""
    return verify_manifest(
        notification.manifest,
        notification.signature,
        notification.key_id,
        trusted=trusted,
        now=now,
    )
