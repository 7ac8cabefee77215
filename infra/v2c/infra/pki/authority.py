"""The local PKI on disk: one CA directory and the certificates the local stack needs.

Layout of a PKI directory (certificates 0644, private keys 0600 from creation)::

    <pki>/ca.pem, ca.key            the fleet CA (self-signed, path length 0): vehicles
                                    and the broker's server certificate
    <pki>/service-ca.pem, .key      the service CA: cloud identities only
    <pki>/server.pem, server.key    the broker: serverAuth, SAN DNS:localhost, IP:127.0.0.1
    <pki>/service.pem, service.key  the gateway and cloud services: clientAuth, CN v2c-gateway
    <pki>/admin.pem, admin.key      registers vehicles in the running broker: CN v2c-admin
    <pki>/vehicles/<vehicle id>.pem, .key   vehicle client certificates (default `out_dir`)
    <pki>/services/<name>.pem, .key         further service identities (default `out_dir`)

Every client trusts `ca.pem` for the broker. The broker's vehicle listener
trusts the fleet CA, its service listener the service CA only, so neither
kind of client certificate opens the other's listener. A directory made
before the service CA existed is upgraded in place by `init_pki`: the
service CA is added and the service identity reissued under it.

The certificates themselves are built by `v2c.infra.pki.certs` (pure, clock
injected); this module decides what is persisted and what an existing
directory keeps. The names callers need from `certs` are re-exported here.

Private keys are PKCS#8 PEM without a passphrase: this CA is for a developer
machine and CI, never for production (there the keys live in an HSM or AWS IoT).
No function here logs or prints key material, and no `repr` shows it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from v2c.contract.errors import NotFound, ValidationFailed
from v2c.contract.topics import VIN_PATTERN, validate_vin
from v2c.infra.pki.certs import (
    ADMIN_COMMON_NAME,
    BROKER_COMMON_NAME,
    CA_COMMON_NAME,
    FOREIGN_CA_COMMON_NAME,
    LEAF_VALID_DAYS,
    SERVICE_CA_COMMON_NAME,
    SERVICE_COMMON_NAME,
    CertificateAuthority,
    Identity,
    build_server_certificate,
    build_service_certificate,
    build_vehicle_certificate,
    common_name,
    create_ca,
    utc_time,
)

__all__ = [
    "ADMIN_COMMON_NAME",
    "CA_COMMON_NAME",
    "FOREIGN_CA_COMMON_NAME",
    "LEAF_VALID_DAYS",
    "SERVICE_CA_COMMON_NAME",
    "SERVICE_COMMON_NAME",
    "CertPaths",
    "CertificateAuthority",
    "Identity",
    "PkiPaths",
    "build_server_certificate",
    "build_service_certificate",
    "build_vehicle_certificate",
    "common_name",
    "create_ca",
    "init_ca",
    "init_foreign_ca",
    "init_pki",
    "issue_service_cert",
    "issue_vehicle_cert",
    "load_ca",
    "load_service_ca",
    "write_identity",
]

KEY_MODE: Final = 0o600
CERT_MODE: Final = 0o644


@dataclass(frozen=True, slots=True)
class CertPaths:
    """Where one issued identity lives, and the CA certificate that verifies it."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True, slots=True)
class PkiPaths:
    """The file layout of a PKI directory; building one touches no file."""

    root: Path
    ca_cert: Path
    ca_key: Path
    service_ca_cert: Path
    service_ca_key: Path
    server: CertPaths
    service: CertPaths  # `ca`: the service CA that verifies it
    admin: CertPaths
    vehicles_dir: Path
    services_dir: Path

    @classmethod
    def for_dir(cls, root: Path) -> PkiPaths:
        ca, service_ca = root / "ca.pem", root / "service-ca.pem"
        return cls(
            root=root,
            ca_cert=ca,
            ca_key=root / "ca.key",
            service_ca_cert=service_ca,
            service_ca_key=root / "service-ca.key",
            server=CertPaths(root / "server.pem", root / "server.key", ca),
            service=CertPaths(root / "service.pem", root / "service.key", service_ca),
            admin=CertPaths(root / "admin.pem", root / "admin.key", service_ca),
            vehicles_dir=root / "vehicles",
            services_dir=root / "services",
        )

    def vehicle_ids(self) -> list[str]:
        """The vehicles with a certificate in `vehicles/` (by file name), sorted."""
        if not self.vehicles_dir.is_dir():
            return []
        found = (p.stem for p in self.vehicles_dir.glob("VIN-*.pem"))
        return sorted(v for v in found if VIN_PATTERN.fullmatch(v))


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file and `os.replace`, so a reader never sees half a PEM.

    `mkstemp` creates the file 0600 (O_EXCL), so a key is never readable by
    others, not even for an instant; certificates are widened to 0644 after.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_identity(identity: Identity, cert_path: Path, key_path: Path) -> None:
    key_pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(key_path, key_pem, KEY_MODE)
    cert_pem = identity.certificate.public_bytes(serialization.Encoding.PEM)
    write_atomic(cert_path, cert_pem, CERT_MODE)


def _read_identity(cert_path: Path, key_path: Path) -> Identity:
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise NotFound(f"missing {exc.filename}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The parser's message may quote the file; never echo key bytes.
        raise ValidationFailed(f"unreadable certificate or key: {cert_path}, {key_path}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValidationFailed(f"{key_path} is not an EC private key")
    if key.public_key() != certificate.public_key():
        raise ValidationFailed(f"{key_path} does not belong to {cert_path}")
    return Identity(certificate, key)


def _load_ca_pair(pki_dir: Path, cert_path: Path, key_path: Path) -> CertificateAuthority:
    present = [p for p in (cert_path, key_path) if p.exists()]
    if not present:
        raise NotFound(f"no CA in {pki_dir}: run `v2c pki init --dir {pki_dir}` first")
    if len(present) == 1:
        raise NotFound(f"only {present[0]} of the CA is there: restore the other or use --force")
    identity = _read_identity(cert_path, key_path)
    constraints = identity.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    if not constraints.value.ca:
        raise ValidationFailed(f"{cert_path} is not a CA certificate")
    return CertificateAuthority(identity.certificate, identity.private_key)


def load_ca(pki_dir: Path) -> CertificateAuthority:
    """The (fleet) CA of an existing PKI directory, checked to be a CA whose key matches."""
    paths = PkiPaths.for_dir(pki_dir)
    return _load_ca_pair(pki_dir, paths.ca_cert, paths.ca_key)


def load_service_ca(pki_dir: Path) -> CertificateAuthority:
    """The service CA of an existing PKI directory (`init_pki` creates it)."""
    paths = PkiPaths.for_dir(pki_dir)
    return _load_ca_pair(pki_dir, paths.service_ca_cert, paths.service_ca_key)


def _init_ca_pair(
    pki_dir: Path,
    cert_path: Path,
    key_path: Path,
    *,
    common: str,
    now: datetime | None,
    force: bool,
) -> CertificateAuthority:
    if not force and (cert_path.exists() or key_path.exists()):
        ca = _load_ca_pair(pki_dir, cert_path, key_path)
        at = utc_time(now)
        if not ca.certificate.not_valid_before_utc <= at < ca.certificate.not_valid_after_utc:
            raise ValidationFailed(f"the CA in {pki_dir} is not valid now: replace it with force")
        return ca
    ca = create_ca(common=common, now=now)
    write_identity(ca, cert_path, key_path)
    return ca


def init_ca(
    pki_dir: Path,
    *,
    common: str = CA_COMMON_NAME,
    now: datetime | None = None,
    force: bool = False,
) -> CertificateAuthority:
    """Create the CA in `pki_dir`, or load the one there: an existing CA is kept unless `force`.

    A half-present CA (only the certificate or only the key) is an error
    rather than a silent replacement: everything it issued would stop verifying.
    """
    paths = PkiPaths.for_dir(pki_dir)
    return _init_ca_pair(pki_dir, paths.ca_cert, paths.ca_key, common=common, now=now, force=force)


def init_foreign_ca(pki_dir: Path, *, now: datetime | None = None) -> PkiPaths:
    """A second, unrelated CA for tests: certificates it issues must be refused by the stack."""
    init_ca(pki_dir, common=FOREIGN_CA_COMMON_NAME, now=now, force=True)
    return PkiPaths.for_dir(pki_dir)


def _still_good(ca: CertificateAuthority, paths: CertPaths, common: str, now: datetime) -> bool:
    """Whether an existing pair is `common`'s, issued by `ca`, matches its key and is valid now."""
    try:
        cert = _read_identity(paths.cert, paths.key).certificate
        cert.verify_directly_issued_by(ca.certificate)
        same_name = common_name(cert) == common
    except (NotFound, ValidationFailed, ValueError, TypeError, InvalidSignature):
        return False
    return same_name and cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def init_pki(
    pki_dir: Path,
    *,
    now: datetime | None = None,
    force: bool = False,
    service_name: str = SERVICE_COMMON_NAME,
) -> PkiPaths:
    """Make `pki_dir` hold both CAs, the broker's certificate and the service identities.

    Idempotent: existing CAs are kept unless `force`, and so are the broker,
    service and admin certificates while they still verify against their CA,
    carry the expected name and are in their validity window; missing,
    foreign, renamed or expired ones are reissued (a service certificate from
    before the service CA existed is foreign now). With `force` everything is
    new, and certificates issued by the old CAs stop verifying.
    """
    paths = PkiPaths.for_dir(pki_dir)
    at = utc_time(now)
    ca = init_ca(pki_dir, now=at, force=force)
    service_ca = _init_ca_pair(
        pki_dir,
        paths.service_ca_cert,
        paths.service_ca_key,
        common=SERVICE_CA_COMMON_NAME,
        now=at,
        force=force,
    )
    if force or not _still_good(ca, paths.server, BROKER_COMMON_NAME, at):
        write_identity(build_server_certificate(ca, now=at), paths.server.cert, paths.server.key)
    for where, name in ((paths.service, service_name), (paths.admin, ADMIN_COMMON_NAME)):
        if force or not _still_good(service_ca, where, name, at):
            identity = build_service_certificate(service_ca, name, now=at)
            write_identity(identity, where.cert, where.key)
    paths.vehicles_dir.mkdir(parents=True, exist_ok=True)
    return paths


def issue_vehicle_cert(
    pki_dir: Path,
    vin: str,
    out_dir: Path | None = None,
    *,
    valid_from: datetime | None = None,
    valid_days: int = LEAF_VALID_DAYS,
    now: datetime | None = None,
) -> CertPaths:
    """Issue `<out_dir>/<vehicle id>.pem` and `.key` (default `<pki>/vehicles/`), replacing any."""
    vehicle_id = validate_vin(vin)
    ca = load_ca(pki_dir)
    identity = build_vehicle_certificate(
        ca, vehicle_id, now=now, valid_from=valid_from, valid_days=valid_days
    )
    layout = PkiPaths.for_dir(pki_dir)
    target = out_dir if out_dir is not None else layout.vehicles_dir
    paths = CertPaths(target / f"{vehicle_id}.pem", target / f"{vehicle_id}.key", layout.ca_cert)
    write_identity(identity, paths.cert, paths.key)
    return paths


def issue_service_cert(
    pki_dir: Path,
    name: str = SERVICE_COMMON_NAME,
    out_dir: Path | None = None,
    *,
    valid_from: datetime | None = None,
    valid_days: int = LEAF_VALID_DAYS,
    now: datetime | None = None,
) -> CertPaths:
    """Issue `<out_dir>/<name>.pem` and `.key` (default `<pki>/services/`) for another service.

    Signed by the service CA: it opens the broker's service listener only.
    """
    ca = load_service_ca(pki_dir)
    identity = build_service_certificate(
        ca, name, now=now, valid_from=valid_from, valid_days=valid_days
    )
    layout = PkiPaths.for_dir(pki_dir)
    target = out_dir if out_dir is not None else layout.services_dir
    paths = CertPaths(target / f"{name}.pem", target / f"{name}.key", layout.service_ca_cert)
    write_identity(identity, paths.cert, paths.key)
    return paths
