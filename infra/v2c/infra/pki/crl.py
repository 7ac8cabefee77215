"""The fleet CA's certificate revocation list: what the local broker refuses besides expiry.

AWS IoT Core refuses a revoked certificate at the next handshake; mosquitto
does the same when its vehicle listener reads a CRL (`crlfile`, checked
against the client's certificate only, not the CA's: OpenSSL's
`X509_V_FLAG_CRL_CHECK`). So the stack keeps one, `<pki>/crl.pem`, signed by
the fleet CA:

* `init_crl` makes an empty one when none is there, or when the one there
  is not the current CA's (a `pki init --force` made a new CA);
* `revoke` adds a certificate's serial number (idempotent) and writes the
  list again atomically, under a lock file, because the API process
  (decommission, replace) and the gateway process (a rotation's old
  certificate) may revoke at the same moment.

The broker reads the file at start and again on SIGHUP (mosquitto 1.6's
"CRL file not being reloaded on HUP" fix): whoever revokes then signals the
broker (`v2c.infra.local.vehicle_issuer`). A connection already open stays
open: the list is read at the handshake.

Why the next update lies `CRL_VALID_DAYS` ahead: OpenSSL refuses every
client certificate once the CRL it was given has passed its next update, so
a stack left alone for a week must not lock its whole fleet out. A
production PKI publishes short-lived CRLs (or OCSP) instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from v2c.infra.pki.authority import CERT_MODE, CertificateAuthority, load_ca, write_atomic
from v2c.infra.pki.certs import CA_VALID_DAYS, utc_time

CRL_NAME: Final = "crl.pem"
LOCK_NAME: Final = ".crl.lock"
CRL_VALID_DAYS: Final = CA_VALID_DAYS


def crl_path(pki_dir: Path) -> Path:
    return pki_dir / CRL_NAME


def build_crl(
    ca: CertificateAuthority, revoked: Mapping[int, datetime], now: datetime
) -> x509.CertificateRevocationList:
    """A CRL of `ca` naming `revoked` (serial number -> when), issued `now`: pure."""
    start = now.astimezone(UTC).replace(microsecond=0)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(start)
        .next_update(start + timedelta(days=CRL_VALID_DAYS))
    )
    for serial, when in sorted(revoked.items()):
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(when.astimezone(UTC).replace(microsecond=0))
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca.private_key, hashes.SHA256())


def revoked_serials(crl: x509.CertificateRevocationList) -> dict[int, datetime]:
    return {entry.serial_number: entry.revocation_date_utc for entry in crl}


def _current(pki_dir: Path, ca: CertificateAuthority) -> dict[int, datetime] | None:
    """The serials the file lists, or None when there is no CRL of this CA."""
    try:
        crl = x509.load_pem_x509_crl(crl_path(pki_dir).read_bytes())
    except (OSError, ValueError):
        return None
    if crl.issuer != ca.certificate.subject or not crl.is_signature_valid(
        ca.certificate.public_key()  # type: ignore[arg-type]
    ):
        return None
    return revoked_serials(crl)


def _write(pki_dir: Path, crl: x509.CertificateRevocationList) -> None:
    write_atomic(crl_path(pki_dir), crl.public_bytes(serialization.Encoding.PEM), CERT_MODE)


@contextlib.contextmanager
def _locked(pki_dir: Path) -> Iterator[None]:
    pki_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(pki_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def init_crl(pki_dir: Path, *, now: datetime | None = None) -> Path:
    """`<pki>/crl.pem`: kept when it is the fleet CA's, else a new empty one."""
    ca = load_ca(pki_dir)
    with _locked(pki_dir):
        if _current(pki_dir, ca) is None:
            _write(pki_dir, build_crl(ca, {}, utc_time(now)))
    return crl_path(pki_dir)


def revoke(pki_dir: Path, serials: Mapping[int, datetime], *, now: datetime | None = None) -> bool:
    """Add `serials` (serial number -> revocation time) to the CRL; True when
    the file changed (False: each was listed already)."""
    ca = load_ca(pki_dir)
    with _locked(pki_dir):
        listed = _current(pki_dir, ca) or {}
        added = {s: when for s, when in serials.items() if s not in listed}
        if not added:
            return False
        _write(pki_dir, build_crl(ca, {**listed, **added}, utc_time(now)))
    return True


def is_revoked(pki_dir: Path, certificate: x509.Certificate) -> bool:
    """Whether the CRL lists `certificate` (for tools and tests)."""
    current = _current(pki_dir, load_ca(pki_dir))
    return current is not None and certificate.serial_number in current
