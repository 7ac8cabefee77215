"""The three signing backends for real: a software key, a SoftHSM2 token
through PKCS#11, and KMS on the moto server over HTTP. Whatever holds the
private key, a signature verifies with the public key alone, is a 70-72 byte
DER signature (not 256 bytes), and any altered bit is refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from v2c.contract.errors import ConfigurationError, SignatureInvalid, SigningUnavailable
from v2c.handlers.signing import (
    Signer,
    SigningMetrics,
    SigningPolicy,
    TrustedKey,
    TrustedKeySet,
    sign_manifest,
    verify_manifest,
    verify_notification,
)
from v2c.handlers.signing.kms import KmsSigner
from v2c.handlers.signing.pkcs11 import (
    Pkcs11Config,
    Pkcs11Signer,
    forget_login,
    generate_keypair,
)
from v2c.handlers.signing.software import SoftwareSigner
from v2c.infra.settings import AwsSettings
from v2c.v1.ota_pb2 import OTAManifest, UpdateType

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

    from v2c.handlers.signing.softhsm import SoftHsmToken


T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
FAST = SigningPolicy(timeout_s=5.0, attempts=3, backoff_initial_s=0.001, backoff_max_s=0.004)
BACKENDS = ["software", "pkcs11", "kms"]


def manifest() -> OTAManifest:
    return OTAManifest(
        update_id="upd-42",
        version="3.0.0",
        type=UpdateType.UPDATE_TYPE_FIRMWARE,
        size_bytes=1024,
        checksum_sha256=bytes(range(32)),
        target_model="Accord",
        expires_at=1_800_000_000_000,
    )


@pytest.fixture(params=BACKENDS)
def signer(request: pytest.FixtureRequest) -> Iterator[Signer]:
    if request.param == "software":
        yield SoftwareSigner.generate(policy=FAST)
    elif request.param == "pkcs11":
        hsm = Pkcs11Signer(request.getfixturevalue("hsm_key"), policy=FAST)
        yield hsm
        hsm.close()
    else:
        stack: AwsStack = request.getfixturevalue("aws_stack")
        kms = stack.aws.client("kms")
        yield KmsSigner(kms, stack.names.signing_key_alias, policy=FAST)


def flip(data: bytes, index: int) -> bytes:
    mutable = bytearray(data)
    mutable[index] ^= 0x01
    return bytes(mutable)


def test_signature_verifies_with_the_public_key_alone(signer: Signer) -> None:
    message = b"deterministic OTAManifest bytes"
    signature = signer.sign(message)

    # Only the PEM crosses over: no backend object is used to verify.
    public = serialization.load_pem_public_key(signer.public_key_pem())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    public.verify(signature.der, message, ec.ECDSA(hashes.SHA256()))
    assert signature.key_id == signer.key_id
    assert signature.algorithm == "ECDSA_P256_SHA256"


def test_signature_is_a_70_to_72_byte_der_encoding_of_r_and_s(signer: Signer) -> None:
    # r and s are 32 bytes each (+1 sign byte when the top bit is set); one
    # is a byte shorter with probability ~1/256, so 69 is legitimate but
    # rare: sign until a typical signature shows, then check every bound.
    lengths = [len(signer.sign(f"m{i}".encode()).der) for i in range(4)]
    assert all(68 <= n <= 72 for n in lengths), lengths
    assert any(70 <= n <= 72 for n in lengths), lengths
    r, s = decode_dss_signature(signer.sign(b"m").der)
    assert max(r.bit_length(), s.bit_length()) <= 256


def test_signed_manifest_verifies_and_a_flipped_bit_anywhere_is_refused(
    signer: Signer,
) -> None:
    notification = sign_manifest(signer, manifest())
    trusted = TrustedKeySet([TrustedKey.from_pem(signer.public_key_pem(), T0)])

    verified = verify_notification(notification, trusted=trusted, now=NOW)
    assert verified.key_id == signer.key_id
    assert verified.checksum_sha256 == bytes(range(32))

    for index in (0, len(notification.manifest) // 2, -1):
        with pytest.raises(SignatureInvalid):
            verify_manifest(
                flip(notification.manifest, index),
                notification.signature,
                notification.key_id,
                trusted=trusted,
                now=NOW,
            )
    for index in (4, len(notification.signature) // 2, -1):
        with pytest.raises(SignatureInvalid):
            verify_manifest(
                notification.manifest,
                flip(notification.signature, index),
                notification.key_id,
                trusted=trusted,
                now=NOW,
            )


def test_rotation_from_an_hsm_key_to_a_kms_key_overlaps_then_retires_the_old_one(
    hsm_key: Pkcs11Config, aws_stack: AwsStack
) -> None:
    # Given the HSM key trusted from T0 and the KMS key added for a week's overlap
    old = Pkcs11Signer(hsm_key, policy=FAST)
    new = KmsSigner(aws_stack.aws.client("kms"), aws_stack.names.signing_key_alias, policy=FAST)
    start, end = T0 + timedelta(days=30), T0 + timedelta(days=37)
    trusted = (
        TrustedKeySet([TrustedKey.from_pem(old.public_key_pem(), T0)])
        .with_key(TrustedKey.from_pem(new.public_key_pem(), start))
        .retire(old.key_id, end)
    )
    from_old, from_new = sign_manifest(old, manifest()), sign_manifest(new, manifest())

    # Then both verify inside the overlap, only the new one after it
    for notification in (from_old, from_new):
        verify_notification(notification, trusted=trusted, now=start + timedelta(days=1))
    verify_notification(from_new, trusted=trusted, now=end)
    with pytest.raises(SignatureInvalid):
        verify_notification(from_old, trusted=trusted, now=end)
    old.close()


def test_kms_signer_pins_the_key_behind_the_alias(aws_stack: AwsStack) -> None:
    kms = aws_stack.aws.client("kms")
    signer = KmsSigner(kms, aws_stack.names.signing_key_alias, policy=FAST)
    described = kms.describe_key(KeyId=aws_stack.names.signing_key_alias)["KeyMetadata"]
    assert signer.resolved_key_id in (described["Arn"], described["KeyId"])


def test_kms_down_answers_signing_unavailable_and_fires_the_alert(
    aws_stack: AwsStack,
) -> None:
    # Given a KMS endpoint where nothing listens (the moto server, stopped)
    dead = AwsSettings(
        endpoint_url="http://127.0.0.1:9",
        max_attempts=1,
        connect_timeout=0.5,
        read_timeout=0.5,
    )
    metrics = SigningMetrics()
    signer = KmsSigner(
        dead.client("kms"), aws_stack.names.signing_key_alias, policy=FAST, on_failure=metrics
    )
    # When signing, Then every attempt fails and one 503-class error remains
    with pytest.raises(SigningUnavailable) as caught:
        signer.sign(b"m")
    assert caught.value.http_status == 503
    assert metrics.failure_count("kms", operation="public_key") == 1


@pytest.mark.parametrize("logged_in", [True, False], ids=["login-standing", "token-checks"])
def test_hsm_with_a_wrong_pin_is_a_configuration_error_tried_once(
    hsm_key: Pkcs11Config, logged_in: bool
) -> None:
    # Given the process logged in with the right PIN, or not logged in at all
    if not logged_in:
        forget_login()
    metrics = SigningMetrics()
    wrong = Pkcs11Config(
        hsm_key.library_path, hsm_key.token_label, hsm_key.key_label, user_pin="wrong-pin"
    )
    # Then a signer with a wrong PIN is refused, without retries (an HSM may lock the PIN)
    with pytest.raises(ConfigurationError, match="refused the user PIN"):
        Pkcs11Signer(wrong, policy=FAST, on_failure=metrics).sign(b"m")
    assert metrics.failure_count("pkcs11", "public_key", "configuration_error") == 1


def test_hsm_signer_recovers_when_the_library_is_reinitialised(
    hsm_key: Pkcs11Config, softhsm_token: SoftHsmToken
) -> None:
    # Given a signer with an open session
    signer = Pkcs11Signer(hsm_key, policy=FAST)
    signer.sign(b"before")
    # When the HSM library restarts under it (every session handle dies)
    softhsm_token.activate()
    # Then the next sign reopens a session and logs in again within its retries
    assert signer.sign(b"after").key_id == signer.key_id
    signer.close()


def test_hsm_without_the_key_label_is_a_configuration_error(hsm_key: Pkcs11Config) -> None:
    missing = Pkcs11Config(
        hsm_key.library_path, hsm_key.token_label, "no-such-key", hsm_key.user_pin
    )
    with pytest.raises(ConfigurationError, match="no EC key labelled"):
        Pkcs11Signer(missing, policy=FAST).public_key()


def test_two_signers_on_one_token_coexist_and_closing_one_keeps_the_other(
    hsm_key: Pkcs11Config, softhsm_token: SoftHsmToken
) -> None:
    # Given two keys on one token, as during a rotation
    second = softhsm_token.pkcs11_config(hsm_key.key_label + "-next")
    generate_keypair(second)
    first_signer, second_signer = Pkcs11Signer(hsm_key), Pkcs11Signer(second)
    first_signer.sign(b"m")
    second_signer.sign(b"m")
    # When one closes, Then the other still signs (the process stays logged in)
    first_signer.close()
    second_signer.sign(b"m")
    second_signer.close()


def test_generating_an_existing_hsm_key_pair_keeps_it(hsm_key: Pkcs11Config) -> None:
    before = Pkcs11Signer(hsm_key, policy=FAST)
    fingerprint = before.key_id
    before.close()
    assert generate_keypair(hsm_key) is False
    assert Pkcs11Signer(hsm_key, policy=FAST).key_id == fingerprint


def test_hsm_private_key_is_sensitive_and_cannot_be_extracted(hsm_key: Pkcs11Config) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass

    token = pkcs11.lib(hsm_key.library_path).get_token(token_label=hsm_key.token_label)
    # No PIN: the process is logged in already (by `hsm_key`), and sessions share it.
    with token.open() as session:
        key = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label=hsm_key.key_label)
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
