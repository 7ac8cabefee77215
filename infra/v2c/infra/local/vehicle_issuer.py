"""The local stack's certificate issuer: the stack's fleet CA signs, its broker admits.

What AWS IoT Core does for `v2c.handlers.vehicles.iot_issuer`, on one machine:

* issue: the CSR's public key is signed by the fleet CA (`<pki>/ca.pem`) into
  a vehicle certificate shaped as `v2c.infra.pki.certs` shapes them (CN and
  URI SAN = the vehicle id, clientAuth, `LEAF_VALID_DAYS`), written to
  `<pki>/vehicles/<vehicle id>.pem`, and the vehicle is admitted to the running
  broker's policy (`broker_admin`, a few messages for a whole batch). A
  certificate already there for the same key, from this CA and valid for
  more than `REUSE_MIN_DAYS`, is returned instead of a new one (the
  simulator's cache and `v2c pki issue` put them there), so registering a
  fleet whose certificates exist costs no signing;
* decommission: the vehicle is taken out of the broker's policy (the plugin
  disconnects it; its certificate can then do nothing: every publish and
  subscription answers 0x87) and its files leave `<pki>/vehicles`, so the
  next `v2c stack up` does not admit it again; its certificate is revoked too;
* revoke (a replaced certificate, or a rotation's old one once its overlap
  ended): its serial number goes on the fleet CA's CRL (`<pki>/crl.pem`,
  `v2c.infra.pki.crl`) and the broker is told to read it again (SIGHUP):
  from the next handshake on, mosquitto refuses that certificate while the
  vehicle's other (new) certificate still connects, as AWS IoT Core refuses
  a revoked certificate. A connection already open stays open (the CRL is
  read at the handshake); decommissioning closes it through the policy.
  The CRL holds certificates this CA signed; another's is only logged.

The certificate id is the certificate's SHA-256 fingerprint (hex), the form
AWS IoT's certificate ids have.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from v2c.contract.errors import InvalidField, V2CError
from v2c.handlers.vehicles.csr import public_key_sha256
from v2c.handlers.vehicles.ports import IssueRequest, IssueResult
from v2c.handlers.vehicles.record import Certificate
from v2c.infra.local.broker_admin import register_in_stack, remove_from_stack
from v2c.infra.pki.authority import (
    CERT_MODE,
    LEAF_VALID_DAYS,
    CertificateAuthority,
    PkiPaths,
    load_ca,
    write_atomic,
)
from v2c.infra.pki.certs import ORGANIZATION, VEHICLE_URN_PREFIX, common_name
from v2c.infra.pki.crl import revoke as revoke_in_crl
from v2c.infra.settings import StackSettings

log = logging.getLogger(__name__)

REUSE_MIN_DAYS: Final = 30


class BrokerAdmission(Protocol):
    def admit(self, vehicle_ids: Sequence[str]) -> None: ...

    def remove(self, vehicle_ids: Sequence[str]) -> None: ...

    def reload(self) -> None:
        """Make the broker read its CRL again."""
        ...


class StackBrokerAdmission:
    """The stack's running broker, through its dynamic-security control topic."""

    def __init__(self, settings: StackSettings) -> None:
        self._settings = settings

    def admit(self, vehicle_ids: Sequence[str]) -> None:
        register_in_stack(self._settings, vehicle_ids)

    def remove(self, vehicle_ids: Sequence[str]) -> None:
        remove_from_stack(self._settings, vehicle_ids)

    def reload(self) -> None:
        """SIGHUP to the stack's mosquitto (its pid from the stack description,
        checked to be that broker's command line before it is signalled)."""
        from v2c.infra.local.processes import is_ours
        from v2c.infra.local.stack_control import BROKER
        from v2c.infra.local.stack_layout import StackLayout

        mqtt, pid = self._settings.mqtt, self._settings.processes.get(BROKER)
        if mqtt is None or mqtt.ca_file is None or pid is None:
            log.warning("no broker process known: the CRL is read at its next start")
            return
        marker = StackLayout.for_dir(mqtt.ca_file.parent.parent).broker_marker
        if not is_ours(pid, marker):
            log.warning("broker pid %s is not this stack's mosquitto: CRL not reloaded", pid)
            return
        os.kill(pid, signal.SIGHUP)


def certificate_id(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def sign_vehicle_key(
    ca: CertificateAuthority,
    vehicle_id: str,
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    now: datetime,
    valid_days: int = LEAF_VALID_DAYS,
) -> x509.Certificate:
    """A vehicle certificate for `key`, as `pki.certs.build_vehicle_certificate`
    makes one for a key of its own."""
    start = now.astimezone(UTC).replace(microsecond=0)
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    name = x509.Name(
        [
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, vehicle_id),
        ]
    )
    san = x509.UniformResourceIdentifier(f"{VEHICLE_URN_PREFIX}{vehicle_id}")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.certificate.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .sign(ca.private_key, hashes.SHA256())
    )


class LocalCaIssuer:
    """`CertificateIssuer` over a PKI directory and a broker (see the module docstring)."""

    def __init__(
        self,
        pki_dir: Path,
        broker: BrokerAdmission | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._paths = PkiPaths.for_dir(pki_dir)
        self._ca = load_ca(pki_dir)
        self._broker = broker
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _cert_path(self, vehicle_id: str) -> Path:
        return self._paths.vehicles_dir / f"{vehicle_id}.pem"

    def _reusable(self, request: IssueRequest, now: datetime) -> x509.Certificate | None:
        path = self._cert_path(request.vehicle_id)
        try:
            certificate = x509.load_pem_x509_certificate(path.read_bytes())
            certificate.verify_directly_issued_by(self._ca.certificate)
            key = certificate.public_key()
        except (OSError, ValueError, TypeError, InvalidSignature):
            return None
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            return None
        fits = (
            common_name(certificate) == request.vehicle_id
            and public_key_sha256(key) == request.public_key_sha256
            and certificate.not_valid_before_utc <= now
            and now + timedelta(days=REUSE_MIN_DAYS) < certificate.not_valid_after_utc
        )
        return certificate if fits else None

    def _sign(self, request: IssueRequest, now: datetime) -> x509.Certificate:
        csr = x509.load_pem_x509_csr(request.csr_pem.encode())
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise InvalidField("csr", "the key must be EC P-256 or RSA")
        certificate = sign_vehicle_key(self._ca, request.vehicle_id, key, now)
        write_atomic(
            self._cert_path(request.vehicle_id),
            certificate.public_bytes(serialization.Encoding.PEM),
            CERT_MODE,
        )
        return certificate

    def issue(self, requests: Sequence[IssueRequest]) -> list[IssueResult]:
        now = self._now()
        made: list[IssueResult] = []
        for request in requests:
            try:
                certificate = self._reusable(request, now) or self._sign(request, now)
            except V2CError as exc:
                made.append(exc)
                continue
            pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
            made.append(
                Certificate(
                    certificate_id=certificate_id(certificate),
                    pem=pem,
                    expires_at_ms=int(certificate.not_valid_after_utc.timestamp() * 1000),
                    issued_at_ms=int(certificate.not_valid_before_utc.timestamp() * 1000),
                    public_key_sha256=request.public_key_sha256,
                )
            )
        admitted = [
            r.vehicle_id for r, m in zip(requests, made, strict=True) if not isinstance(m, V2CError)
        ]
        if self._broker is not None and admitted:
            try:
                self._broker.admit(admitted)
            except V2CError as exc:  # none of them can connect: say so for each
                return [exc if not isinstance(m, V2CError) else m for m in made]
        return made

    def _listed(self, certificate: Certificate) -> bool:
        """Put `certificate` on the CRL; True when the CRL changed."""
        try:
            parsed = x509.load_pem_x509_certificate(certificate.pem.encode())
            parsed.verify_directly_issued_by(self._ca.certificate)
        except (ValueError, TypeError, InvalidSignature):
            log.info("certificate %s is not this CA's: not on its CRL", certificate.certificate_id)
            return False
        # The wall clock, not the injected one: mosquitto compares the CRL's
        # last update with its own clock, and refuses every vehicle while the
        # CRL's is in the future (a test driving a simulated clock ahead).
        return revoke_in_crl(self._paths.root, {parsed.serial_number: datetime.now(UTC)})

    def revoke(self, vehicle_id: str, certificate: Certificate) -> None:
        if self._listed(certificate) and self._broker is not None:
            self._broker.reload()
        log.info("certificate %s of %s revoked", certificate.certificate_id, vehicle_id)

    def decommission(self, vehicle_id: str, certificate: Certificate | None) -> None:
        if self._broker is not None:
            self._broker.remove([vehicle_id])
        if certificate is not None and self._listed(certificate) and self._broker is not None:
            self._broker.reload()
        for suffix in (".pem", ".key"):
            (self._paths.vehicles_dir / f"{vehicle_id}{suffix}").unlink(missing_ok=True)


def stack_issuer(settings: StackSettings) -> LocalCaIssuer | None:
    """The issuer of a stack with a fleet CA (its PKI next to the broker's CA
    file), admitting to its broker; None for a stack without TLS vehicles."""
    mqtt = settings.mqtt
    if mqtt is None or mqtt.ca_file is None or not (mqtt.ca_file.parent / "ca.key").exists():
        return None
    return LocalCaIssuer(mqtt.ca_file.parent, StackBrokerAdmission(settings))
