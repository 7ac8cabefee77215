"""A CSR is accepted only when it proves its key, names the vehicle and uses a strong key."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from v2c.contract.certificate_renewal import build_csr
from v2c.contract.errors import InvalidField
from v2c.handlers.vehicles.csr import MAX_CSR_CHARS, check_csr, public_key_sha256

VIN = "VIN-1HGBH41JXMN109186"
OTHER = "VIN-2HGBH41JXMN109186"


def csr_pem(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    names: list[str],
    algorithm: hashes.HashAlgorithm | None = None,
) -> str:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, n) for n in names])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    request = builder.sign(key, algorithm or hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM).decode()


def refusal(pem: str, vehicle_id: str = VIN) -> str:
    with pytest.raises(InvalidField) as caught:
        check_csr(pem, vehicle_id)
    assert caught.value.field == "csr"
    assert caught.value.http_status == 400
    return caught.value.detail


def test_an_ec_p256_csr_for_the_vehicle_gives_its_key_identity() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    facts = check_csr(build_csr(key, VIN), VIN)
    assert facts.common_name == VIN
    assert facts.key_type == "EC P-256"
    assert facts.public_key_sha256 == public_key_sha256(key.public_key())
    assert len(facts.public_key_sha256) == 64
    # the same key signs another CSR: the same identity (registration is idempotent on it)
    assert check_csr(build_csr(key, VIN), VIN).public_key_sha256 == facts.public_key_sha256


def test_rsa_2048_is_accepted_and_rsa_1024_refused() -> None:
    strong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert check_csr(csr_pem(strong, [VIN]), VIN).key_type == "RSA 2048"
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert "2048-4096 bits" in refusal(csr_pem(weak, [VIN]))


def test_other_curves_are_refused() -> None:
    assert "P-256" in refusal(csr_pem(ec.generate_private_key(ec.SECP384R1()), [VIN]))


def test_the_common_name_must_be_the_vehicle_id_and_only_it() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert VIN in refusal(csr_pem(key, [OTHER]))
    assert "exactly one common name" in refusal(csr_pem(key, [VIN, VIN]))
    assert "exactly one common name" in refusal(csr_pem(key, []))


def test_a_csr_whose_signature_does_not_verify_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = bytearray(
        x509.load_pem_x509_csr(build_csr(key, VIN).encode()).public_bytes(
            serialization.Encoding.DER
        )
    )
    der[-3] ^= 0x01  # inside the signature's s: still parses, no longer verifies
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    assert "does not verify" in refusal(tampered.decode())


def test_weak_signature_hashes_are_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "SHA-256" in refusal(csr_pem(key, [VIN], hashes.SHA224()))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    ],
)
def test_text_that_is_no_pem_csr_is_refused(text: str) -> None:
    refusal(text)


def test_a_csr_longer_than_the_bound_is_refused_before_parsing() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    padded = build_csr(key, VIN) + " " * MAX_CSR_CHARS
    assert "longer than" in refusal(padded)


def test_only_the_checked_request_travels_on_to_the_issuer() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec as _ec

    from v2c.contract.certificate_renewal import build_csr
    from v2c.handlers.vehicles.csr import check_csr

    vin = "VIN-1HGBH41JXMN109186"
    good = build_csr(_ec.generate_private_key(_ec.SECP256R1()), vin)
    other = build_csr(_ec.generate_private_key(_ec.SECP256R1()), "VIN-5V2CFLT0000000001")
    facts = check_csr(good + "\n" + other + "\ntrailing text", vin)
    assert facts.pem.count("BEGIN CERTIFICATE REQUEST") == 1
    assert facts.pem == good if good.endswith("\n") else facts.pem == good + "\n"
