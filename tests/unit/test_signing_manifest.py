"""Signing and verifying OTA manifests with a software key: what is signed,
what travels with it, and that any altered bit is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from signing_helpers import T0, flip_bit, make_manifest

from v2c.contract.errors import (
    CodecError,
    SignatureInvalid,
    SigningUnavailable,
    ValidationFailed,
)
from v2c.handlers.signing import (
    TrustedKey,
    TrustedKeySet,
    manifest_bytes,
    sign_manifest,
    verify_manifest,
    verify_notification,
)
from v2c.handlers.signing.software import SoftwareSigner
from v2c.v1.ota_pb2 import OTAManifest


@pytest.fixture(scope="module")
def signer() -> SoftwareSigner:
    return SoftwareSigner.generate()


@pytest.fixture(scope="module")
def trusted(signer: SoftwareSigner) -> TrustedKeySet:
    return TrustedKeySet([TrustedKey.from_pem(signer.public_key_pem(), T0)])


NOW = T0 + timedelta(days=1)


def test_manifest_bytes_are_deterministic_and_parse_back() -> None:
    manifest = make_manifest()
    assert manifest_bytes(manifest) == manifest_bytes(make_manifest())
    assert OTAManifest.FromString(manifest_bytes(manifest)) == manifest


def test_signed_manifest_verifies_with_the_public_key_alone(
    signer: SoftwareSigner, trusted: TrustedKeySet
) -> None:
    notification = sign_manifest(signer, make_manifest())

    public = serialization.load_pem_public_key(signer.public_key_pem())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(notification.signature, notification.manifest, ec.ECDSA(hashes.SHA256()))
    manifest = verify_notification(notification, trusted=trusted, now=NOW)
    assert manifest.version == "2.4.1"
    assert manifest.checksum_sha256 == make_manifest().checksum_sha256


def test_key_id_travels_in_the_envelope_and_inside_the_signed_bytes(
    signer: SoftwareSigner,
) -> None:
    original = make_manifest()
    notification = sign_manifest(signer, original)

    assert notification.key_id == signer.key_id
    assert OTAManifest.FromString(notification.manifest).key_id == signer.key_id
    assert original.key_id == ""  # the caller's message is left alone


def test_signature_is_der_not_256_bytes(signer: SoftwareSigner) -> None:
    signature = signer.sign(b"manifest")
    assert signature.algorithm == "ECDSA_P256_SHA256"
    assert signature.der[0] == 0x30  # a DER SEQUENCE of r and s
    assert len(signature.der) <= 72


@pytest.mark.parametrize("index", [0, 5, -1])
def test_flipped_bit_in_the_manifest_fails_verification(
    signer: SoftwareSigner, trusted: TrustedKeySet, index: int
) -> None:
    notification = sign_manifest(signer, make_manifest())
    with pytest.raises(SignatureInvalid):
        verify_manifest(
            flip_bit(notification.manifest, index),
            notification.signature,
            notification.key_id,
            trusted=trusted,
            now=NOW,
        )


@pytest.mark.parametrize("index", [0, 10, -1])
def test_flipped_bit_in_the_signature_fails_verification(
    signer: SoftwareSigner, trusted: TrustedKeySet, index: int
) -> None:
    notification = sign_manifest(signer, make_manifest())
    with pytest.raises(SignatureInvalid):
        verify_manifest(
            notification.manifest,
            flip_bit(notification.signature, index),
            notification.key_id,
            trusted=trusted,
            now=NOW,
        )


def test_signature_by_another_key_under_a_trusted_id_is_refused(
    signer: SoftwareSigner, trusted: TrustedKeySet
) -> None:
    impostor = SoftwareSigner.generate(key_id=signer.key_id)
    notification = sign_manifest(impostor, make_manifest())
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify_notification(notification, trusted=trusted, now=NOW)


def test_envelope_key_id_differing_from_the_signed_one_is_refused() -> None:
    # Given one key trusted under two ids
    signer = SoftwareSigner.generate(key_id="ota-2026")
    pem = signer.public_key_pem()
    both = TrustedKeySet(
        [TrustedKey.from_pem(pem, T0, key_id="ota-2026"), TrustedKey.from_pem(pem, T0, key_id="x")]
    )
    notification = sign_manifest(signer, make_manifest())
    # When the envelope is relabelled, Then the signed id no longer matches
    with pytest.raises(SignatureInvalid, match="envelope names key"):
        verify_manifest(notification.manifest, notification.signature, "x", trusted=both, now=NOW)


def test_empty_or_oversized_signature_is_refused_before_any_crypto(
    signer: SoftwareSigner, trusted: TrustedKeySet
) -> None:
    notification = sign_manifest(signer, make_manifest())
    for bad in (b"", b"\x30" * 256):
        with pytest.raises(SignatureInvalid):
            verify_manifest(notification.manifest, bad, signer.key_id, trusted=trusted, now=NOW)


def test_signed_garbage_is_a_codec_error_not_a_manifest(
    signer: SoftwareSigner, trusted: TrustedKeySet
) -> None:
    garbage = b"\xff\xff\xff"
    signature = signer.sign(garbage)
    with pytest.raises(CodecError):
        verify_manifest(garbage, signature.der, signer.key_id, trusted=trusted, now=NOW)


def test_manifest_without_a_package_checksum_is_not_signed(signer: SoftwareSigner) -> None:
    with pytest.raises(ValidationFailed, match="SHA-256"):
        sign_manifest(signer, make_manifest(checksum_sha256=b"short"))


def test_manifest_naming_another_key_is_not_signed(signer: SoftwareSigner) -> None:
    with pytest.raises(ValidationFailed, match="names key"):
        sign_manifest(signer, make_manifest(key_id="someone-else"))


def test_signing_errors_are_transient_503() -> None:
    assert SigningUnavailable.http_status == 503
    assert SigningUnavailable.retryable
    assert SignatureInvalid.http_status == 400


def test_software_key_never_appears_in_repr_or_str(signer: SoftwareSigner) -> None:
    secret = signer.private_key_pem()
    body = b"".join(secret.splitlines()[1:-1]).decode()
    assert body[:24] not in repr(signer)
    assert body[:24] not in str(signer)
    assert signer.key_id in repr(signer)


def test_software_key_survives_a_pem_round_trip_with_a_password(signer: SoftwareSigner) -> None:
    pem = signer.private_key_pem(password=b"dev-secret")
    assert b"ENCRYPTED" in pem
    again = SoftwareSigner.from_pem(pem, password=b"dev-secret")
    assert again.key_id == signer.key_id
