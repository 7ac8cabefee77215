"""The signed OTA manifest: its canonical bytes and how a verifier checks them.

This is the half of manifest signing that both sides of the wire need: the
cloud signs the bytes `manifest_bytes` returns (`v2c.handlers.signing.manifest`),
a vehicle verifies them here with public keys only. It lives in the contract
because the format *is* the contract: a vehicle must not import cloud code to
read what the cloud sends.

`verify_manifest` is pure (bytes, key set, now -> manifest or a typed error).
It deliberately does *not* decide whether the update applies: expiry
(`expires_at`), anti-rollback, target model and battery are the update agent's
decisions, made on the returned manifest.
"""

from __future__ import annotations

from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError

from v2c.contract.errors import CodecError, SignatureInvalid
from v2c.contract.keyset import TrustedKeySet
from v2c.v1.ota_pb2 import OTAManifest, OTAUpdateAvailable

SHA256_BYTES = 32
MAX_DER_SIGNATURE_BYTES = 72
"""A P-256 ECDSA signature is 64 bytes raw (r||s) and at most 72 bytes DER."""


def manifest_bytes(manifest: OTAManifest) -> bytes:
    """The canonical bytes of a manifest: what is signed and what is sent."""
    return manifest.SerializeToString(deterministic=True)


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
