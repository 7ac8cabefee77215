"""A vehicle's certificate signing request, checked before any certificate is issued: pure.

The request must prove possession of the key it names (its self-signature
verifies) and name the vehicle it is for (exactly one common name, equal to
the vehicle id), because the broker and AWS IoT both take the certificate's
CN as the vehicle's identity: a CSR whose CN is another VIN would get a
certificate for that other vehicle's topics. Keys are the ones AWS IoT
Core's CreateCertificateFromCsr and the local broker both accept and that
are still considered strong: EC P-256 (what the local PKI issues) or RSA of
2048 to 4096 bits; signatures with SHA-256 or better. The text is bounded
(`MAX_CSR_CHARS`) before it is parsed.

`public_key_sha256` (SHA-256 of the DER SubjectPublicKeyInfo) is the key's
identity: registration compares it to decide whether a second registration
of a VIN is the same device again or another key taking the VIN over.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from v2c.contract.errors import InvalidField

MAX_CSR_CHARS: Final = 8 * 1024
PEM_HEADER: Final = "-----BEGIN CERTIFICATE REQUEST-----"
RSA_MIN_BITS: Final = 2048
RSA_MAX_BITS: Final = 4096  # bounds the verification cost of a hostile request
_STRONG_HASHES: Final = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


@dataclass(frozen=True, slots=True)
class CsrFacts:
    """A checked CSR: its PEM text, its subject and its key's identity."""

    pem: str
    common_name: str
    key_type: str  # "EC P-256", "RSA 2048", ...
    public_key_sha256: str


def _bad(problem: str) -> InvalidField:
    return InvalidField("csr", problem)


def public_key_sha256(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    """SHA-256 (hex) of the key's DER SubjectPublicKeyInfo."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _key_type(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise _bad(f"an EC key must be on P-256, not {key.curve.name}")
        return "EC P-256"
    if isinstance(key, rsa.RSAPublicKey):
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            raise _bad(
                f"an RSA key must have {RSA_MIN_BITS}-{RSA_MAX_BITS} bits, not {key.key_size}"
            )
        return f"RSA {key.key_size}"
    raise _bad("the key must be EC P-256 or RSA (2048-4096 bits)")


def _common_name(csr: x509.CertificateSigningRequest) -> str:
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise _bad(f"the subject must have exactly one common name, not {len(names)}")
    value = names[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def check_csr(pem: str, vehicle_id: str) -> CsrFacts:
    """The CSR's facts, if it is one this service issues a certificate for
    `vehicle_id` from; `InvalidField("csr", ...)` (400) otherwise."""
    if len(pem) > MAX_CSR_CHARS:
        raise _bad(f"longer than {MAX_CSR_CHARS} characters")
    text = pem.strip()
    if not text.startswith(PEM_HEADER):
        raise _bad(f"not a PEM certificate signing request (expected {PEM_HEADER!r})")
    try:
        csr = x509.load_pem_x509_csr(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise _bad("not a parseable PEM certificate signing request") from exc
    try:
        algorithm = csr.signature_hash_algorithm
        key = csr.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise _bad("its key or signature algorithm is not supported") from exc
    key_type = _key_type(key)
    if not isinstance(algorithm, _STRONG_HASHES):
        raise _bad("the signature must use SHA-256, SHA-384 or SHA-512")
    try:
        verified = csr.is_signature_valid
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise _bad("its signature cannot be verified") from exc
    if not verified:
        raise _bad("its signature does not verify: it does not prove possession of its key")
    common_name = _common_name(csr)
    if common_name != vehicle_id:
        raise _bad(f"the common name must be the vehicle id {vehicle_id}")
    assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)  # `_key_type` said so
    # The request re-encoded from what was checked: nothing after its PEM block
    # (a second request, any text) travels on to the issuer.
    checked = csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return CsrFacts(checked, common_name, key_type, public_key_sha256(key))
