"""What `KmsSigner` asks KMS, checked with botocore's Stubber (no network).

The moto server ignores MessageType (it always hashes what it is sent), so
the DIGEST path, which real KMS signs as a prehashed SHA-256, is checked
here against AWS's documented semantics; the RAW path runs against the
real moto server in tests/integration/test_signer_backends.py."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from v2c.contract.errors import ConfigurationError
from v2c.handlers.signing import SigningPolicy
from v2c.handlers.signing.kms import RAW_MESSAGE_LIMIT, KmsSigner

KEY = ec.generate_private_key(ec.SECP256R1())
ARN = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ALIAS = "alias/v2c-ota-signing"
POLICY = SigningPolicy(timeout_s=None, attempts=3, backoff_initial_s=0, sleep=lambda _: None)


def public_key_reply(spec: str = "ECC_NIST_P256") -> dict[str, Any]:
    return {
        "KeyId": ARN,
        "PublicKey": KEY.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "KeySpec": spec,
        "KeyUsage": "SIGN_VERIFY",
        "SigningAlgorithms": ["ECDSA_SHA_256"],
    }


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "kms",
        region_name="eu-central-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_digest_mode_sends_our_sha256_to_the_pinned_key_arn(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    message = b"manifest bytes"
    digest = hashlib.sha256(message).digest()
    stubber.add_response("get_public_key", public_key_reply(), {"KeyId": ALIAS})
    stubber.add_response(
        "sign",
        {
            "KeyId": ARN,
            "Signature": KEY.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))),
            "SigningAlgorithm": "ECDSA_SHA_256",
        },
        {
            "KeyId": ARN,
            "Message": digest,
            "MessageType": "DIGEST",
            "SigningAlgorithm": "ECDSA_SHA_256",
        },
    )
    signer = KmsSigner(client, ALIAS, message_type="DIGEST", policy=POLICY)
    signature = signer.sign(message)  # sign-then-verify passed: the digest semantics hold
    assert signer.resolved_key_id == ARN
    assert signature.der[0] == 0x30


def test_raw_mode_switches_to_digest_above_the_kms_raw_limit(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    message = b"x" * (RAW_MESSAGE_LIMIT + 1)
    digest = hashlib.sha256(message).digest()
    stubber.add_response("get_public_key", public_key_reply(), {"KeyId": ALIAS})
    stubber.add_response(
        "sign",
        {"Signature": KEY.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))},
        {
            "KeyId": ARN,
            "Message": digest,
            "MessageType": "DIGEST",
            "SigningAlgorithm": "ECDSA_SHA_256",
        },
    )
    KmsSigner(client, ALIAS, policy=POLICY).sign(message)


def test_disabled_key_is_a_configuration_error_not_retried(
    stubbed: tuple[Any, Stubber],
) -> None:
    client, stubber = stubbed
    stubber.add_response("get_public_key", public_key_reply(), {"KeyId": ALIAS})
    stubber.add_client_error("sign", "DisabledException", "key is disabled")
    signer = KmsSigner(client, ALIAS, policy=POLICY)
    with pytest.raises(ConfigurationError, match="DisabledException"):
        signer.sign(b"m")


def test_throttling_is_retried(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    message = b"m"
    stubber.add_response("get_public_key", public_key_reply(), {"KeyId": ALIAS})
    stubber.add_client_error("sign", "ThrottlingException", "slow down")
    stubber.add_response(
        "sign",
        {"Signature": KEY.sign(message, ec.ECDSA(hashes.SHA256()))},
        {
            "KeyId": ARN,
            "Message": message,
            "MessageType": "RAW",
            "SigningAlgorithm": "ECDSA_SHA_256",
        },
    )
    KmsSigner(client, ALIAS, policy=POLICY).sign(message)


def test_a_key_of_the_wrong_spec_is_refused(stubbed: tuple[Any, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_response("get_public_key", public_key_reply("RSA_2048"), {"KeyId": ALIAS})
    with pytest.raises(ConfigurationError, match="RSA_2048"):
        KmsSigner(client, ALIAS, policy=POLICY).public_key()
