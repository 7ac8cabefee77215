"""X.509 identities for v2c, built in memory: the CA, vehicles, services and the broker.

Vehicles authenticate to the broker with client certificates (ECC P-256,
CN = vehicle id), the way AWS IoT Core does; the broker (mosquitto with
`require_certificate true`, `use_identity_as_username true` and, for vehicles,
`use_username_as_clientid true`) takes the CN as the user name (and the
vehicle's client id) its per-VIN policy is written against. Cloud services
get their certificates from a second CA (`SERVICE_CA_COMMON_NAME`), the only
one the broker's service listener trusts. Each client certificate also
carries its name as a URI SAN, because RFC 5280 verifiers (cryptography's
`build_client_verifier`) want one.

Everything here is pure: keys and certificates in memory and the clock passed
in, so tests make expired and not-yet-valid certificates without waiting. What
is written where, and what an existing directory keeps, is `v2c.infra.pki.authority`'s job.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from v2c.contract.errors import InvalidInput, ValidationFailed
from v2c.contract.topics import validate_vin

CA_COMMON_NAME: Final = "v2c local CA"
# Issues the cloud side's client certificates only: the broker's service listener
# trusts this CA alone, so a vehicle certificate cannot even complete a handshake there.
SERVICE_CA_COMMON_NAME: Final = "v2c local service CA"
FOREIGN_CA_COMMON_NAME: Final = "v2c foreign CA (not trusted by the stack)"
SERVICE_COMMON_NAME: Final = "v2c-gateway"
ADMIN_COMMON_NAME: Final = "v2c-admin"  # registers vehicles in a running broker
BROKER_COMMON_NAME: Final = "v2c-broker"
BROKER_DNS_NAMES: Final = ("localhost",)
BROKER_IP_ADDRESSES: Final = ("127.0.0.1",)
CA_VALID_DAYS: Final = 3650
LEAF_VALID_DAYS: Final = 365  # the spec's vehicle certificate lifetime (rotation at 11 months)
ORGANIZATION: Final = "v2c"
VEHICLE_URN_PREFIX: Final = "urn:v2c:vehicle:"
SERVICE_URN_PREFIX: Final = "urn:v2c:service:"
# A service's CN is its broker user name and its file name: no '/', '+', '#' or spaces.
SERVICE_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Identity:
    """A certificate and its private key; the key never appears in `repr`."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def common_name(self) -> str:
        return common_name(self.certificate)

    def __repr__(self) -> str:
        # Written out rather than generated, so a field added later cannot
        # carry key material into a log line or a traceback.
        fingerprint = self.certificate.fingerprint(hashes.SHA256()).hex()
        return f"{type(self).__name__}(cn={self.common_name!r}, sha256={fingerprint[:16]}…)"


class CertificateAuthority(Identity):
    """A CA is an identity whose certificate may sign others (checked by `load_ca`)."""

    __slots__ = ()


def common_name(certificate: x509.Certificate) -> str:
    attributes = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attributes) != 1:
        raise ValidationFailed(f"certificate has {len(attributes)} common names, expected one")
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode()


def utc_time(now: datetime | None) -> datetime:
    """`now` in UTC (the wall clock if None); a naive time is refused rather than guessed."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput(f"time {now.isoformat()} is naive: certificate times need a zone")
    return now.astimezone(UTC)


def _window(
    now: datetime | None, valid_from: datetime | None, valid_days: int
) -> tuple[datetime, datetime]:
    if valid_days <= 0:
        raise InvalidInput(f"valid_days must be positive, got {valid_days}")
    start = utc_time(valid_from) if valid_from is not None else utc_time(now)
    start = start.replace(microsecond=0)  # X.509 times have whole seconds
    return start, start + timedelta(days=valid_days)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; a leaf's ECDSA key only signs TLS handshakes."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def create_ca(
    *,
    common: str = CA_COMMON_NAME,
    now: datetime | None = None,
    valid_days: int = CA_VALID_DAYS,
) -> CertificateAuthority:
    """A new self-signed P-256 CA that may sign leaf certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window(now, None, valid_days)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    name = _name(common)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(certificate, key)


def _build_leaf(
    ca: CertificateAuthority,
    common: str,
    usage: x509.ObjectIdentifier,
    *,
    now: datetime | None,
    valid_from: datetime | None,
    valid_days: int,
    san: Sequence[x509.GeneralName] = (),
) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window(now, valid_from, valid_days)
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    return Identity(builder.sign(ca.private_key, hashes.SHA256()), key)


def build_vehicle_certificate(
    ca: CertificateAuthority,
    vin: str,
    *,
    now: datetime | None = None,
    valid_from: datetime | None = None,
    valid_days: int = LEAF_VALID_DAYS,
) -> Identity:
    """A vehicle's client certificate: CN = vehicle id (`VIN-` + 17 characters), clientAuth.

    `valid_from` defaults to `now`; move it back (expired) or forward (not yet
    valid) to test the broker's and the simulator's handling of bad certificates.
    """
    vehicle_id = validate_vin(vin)
    return _build_leaf(
        ca,
        vehicle_id,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now=now,
        valid_from=valid_from,
        valid_days=valid_days,
        san=[x509.UniformResourceIdentifier(f"{VEHICLE_URN_PREFIX}{vehicle_id}")],
    )


def build_service_certificate(
    ca: CertificateAuthority,
    name: str = SERVICE_COMMON_NAME,
    *,
    now: datetime | None = None,
    valid_from: datetime | None = None,
    valid_days: int = LEAF_VALID_DAYS,
) -> Identity:
    """A cloud-side client identity (the gateway, a fleet service); its CN is its broker user."""
    if not SERVICE_NAME_PATTERN.fullmatch(name) or name.startswith("VIN-"):
        # A service named like a vehicle would inherit that vehicle's ACL.
        raise InvalidInput(f"invalid service name {name!r}: [A-Za-z0-9._-], not 'VIN-…'")
    return _build_leaf(
        ca,
        name,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now=now,
        valid_from=valid_from,
        valid_days=valid_days,
        san=[x509.UniformResourceIdentifier(f"{SERVICE_URN_PREFIX}{name}")],
    )


def build_server_certificate(
    ca: CertificateAuthority,
    *,
    dns_names: Sequence[str] = BROKER_DNS_NAMES,
    ip_addresses: Sequence[str] = BROKER_IP_ADDRESSES,
    now: datetime | None = None,
    valid_days: int = LEAF_VALID_DAYS,
) -> Identity:
    """The broker's certificate: clients check the SAN, so both `localhost` and 127.0.0.1 work."""
    san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    return _build_leaf(
        ca,
        BROKER_COMMON_NAME,
        ExtendedKeyUsageOID.SERVER_AUTH,
        now=now,
        valid_from=None,
        valid_days=valid_days,
        san=san,
    )
