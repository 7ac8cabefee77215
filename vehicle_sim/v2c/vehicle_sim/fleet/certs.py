"""Each simulated vehicle's client certificate (CN = its vehicle id), issued once.

The broker's mTLS listener takes the certificate's CN as the user name (and
client id) its per-VIN policy is written against, so every vehicle needs its
own; a vehicle issued while the broker runs must also be registered there
(`FleetSimulator` does, through `v2c.infra.local.broker_admin`). Issuing a
thousand costs a few seconds; they are kept in the stack's PKI directory
(`<pki>/vehicles/<vehicle id>.pem|.key`, as `v2c pki issue` writes them) and
reused while they still verify against the CA, carry the right name and
are valid for another day. A CA re-created with `--force` invalidates them
all, and they are issued again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from v2c.infra.pki.authority import (
    CertificateAuthority,
    CertPaths,
    PkiPaths,
    build_vehicle_certificate,
    common_name,
    load_ca,
    write_identity,
)


def _usable(ca: CertificateAuthority, paths: CertPaths, vehicle_id: str, now: datetime) -> bool:
    if not (paths.cert.exists() and paths.key.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        cert.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature, OSError):
        return False
    valid_now = cert.not_valid_before_utc <= now
    valid_tomorrow = now + timedelta(days=1) < cert.not_valid_after_utc
    return common_name(cert) == vehicle_id and valid_now and valid_tomorrow


def ensure_vehicle_certs(
    pki_dir: Path, vehicle_ids: Iterable[str], *, now: datetime | None = None
) -> tuple[dict[str, CertPaths], int]:
    """Paths of every vehicle's certificate, and how many had to be issued."""
    at = now or datetime.now(tz=UTC)
    layout = PkiPaths.for_dir(pki_dir)
    ca = load_ca(pki_dir)
    out: dict[str, CertPaths] = {}
    issued = 0
    for vehicle_id in vehicle_ids:
        paths = CertPaths(
            layout.vehicles_dir / f"{vehicle_id}.pem",
            layout.vehicles_dir / f"{vehicle_id}.key",
            layout.ca_cert,
        )
        if not _usable(ca, paths, vehicle_id, at):
            identity = build_vehicle_certificate(ca, vehicle_id, now=at)
            write_identity(identity, paths.cert, paths.key)
            issued += 1
        out[vehicle_id] = paths
    return out, issued
