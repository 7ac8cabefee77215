"""Auto-rotation of the vehicle's client certificate over its own MQTT session.

Spec 001: a certificate that expires within 7 days (`RenewalConfig.threshold_days`,
configurable) is renewed before it does, as AWS IoT's certificate rotation
works: a NEW key (the old one never signs again), a CSR for it (CN = the
vehicle id) on `.../certificate/renew`, the certificate back on
`.../certificate/issued` (`v2c.contract.certificate_renewal`), then

1. the pair written so that a power cut leaves the old pair or the new one,
   never a key of one and a certificate of the other: both staged beside
   the live files (`*.next`, fsynced, the key 0600 from creation), then
   renamed over them; `complete_staged` finishes renames a crash
   interrupted, before the next connect reads the files;
2. the session reconnected with the new pair (`AsyncMqttSession.reconnect`):
   the same client id, clean start false, so the broker's persistent session
   survives, with its subscriptions and whatever QoS 1/2 messages it queued
   while the vehicle was between the two connections.

The cloud keeps the old certificate active for an overlap (1 h), so a
vehicle that crashed before writing asks again (same key: the same
certificate) with the old one. A refusal (`RenewalRefused`) leaves the old
pair in place; a missing answer (`RenewalTimeout`) too: the next check asks
again with a new key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from v2c.contract.certificate_renewal import RenewalAnswer, RenewalRequest, RenewalStatus
from v2c.contract.errors import InvalidInput, V2CError
from v2c.contract.topics import Domain, Topic, qos_for
from v2c.vehicle_sim.atomic import atomic_write, fsync_dir
from v2c.vehicle_sim.mqtt_async import AsyncMqttSession

logger = logging.getLogger(__name__)

DAY_S: Final = 24 * 3600
KEY_MODE: Final = 0o600
CERT_MODE: Final = 0o644
STAGED: Final = ".next"


class RenewalRefused(V2CError):
    """The cloud answered the CSR with a refusal (its reason in the detail)."""

    reason = "certificate_renewal_refused"


class RenewalTimeout(V2CError):
    reason = "certificate_renewal_timeout"
    retryable = True


@dataclass(frozen=True, slots=True)
class RenewalConfig:
    threshold_days: float = 7.0  # spec 001: "Expiring Soon (<7 days)"
    answer_timeout_s: float = 120.0
    durable: bool = True  # fsync the staged pair (a fleet simulation may skip it)


@dataclass(frozen=True, slots=True)
class IdentityFiles:
    cert: Path
    key: Path

    def staged(self) -> IdentityFiles:
        return IdentityFiles(_next(self.cert), _next(self.key))


@dataclass(frozen=True, slots=True)
class Renewed:
    certificate_id: str
    not_after: datetime
    previous_not_after: datetime


def answer_subscription(vehicle_id: str, region: str) -> tuple[str, int]:
    """The downlink a vehicle subscribes to for its answers, at the contract's QoS."""
    topic = Topic(region, vehicle_id, Domain.CERTIFICATE, "issued")
    return str(topic), qos_for(Domain.CERTIFICATE)


def _next(path: Path) -> Path:
    return path.with_name(path.name + STAGED)


def not_after(cert_file: Path) -> datetime:
    return x509.load_pem_x509_certificate(cert_file.read_bytes()).not_valid_after_utc


def is_due(expires: datetime, now: datetime, threshold_days: float) -> bool:
    """Whether a certificate ending at `expires` is due for rotation at `now`: pure."""
    return (expires - now).total_seconds() < threshold_days * DAY_S


def due_from(expires: datetime, threshold_days: float) -> float:
    """The moment (epoch seconds) from which `is_due` holds: a vehicle sets
    one timer for it instead of checking over and over."""
    return expires.timestamp() - threshold_days * DAY_S


def build_csr(key: ec.EllipticCurvePrivateKey, vehicle_id: str) -> str:
    """A PEM CSR for `vehicle_id` (CN = the vehicle id), SHA-256."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, vehicle_id)])
    request = x509.CertificateSigningRequestBuilder().subject_name(name)
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def complete_staged(files: IdentityFiles, *, durable: bool = True) -> bool:
    """Finish a rotation a crash interrupted between its renames; True when
    something was moved. The key moves first, so a staged certificate
    without its staged key means the key is in place already."""
    staged = files.staged()
    if not staged.cert.exists():
        staged.key.unlink(missing_ok=True)  # the certificate never came: no pair
        return False
    if staged.key.exists():
        os.replace(staged.key, files.key)
    os.replace(staged.cert, files.cert)
    fsync_dir(files.cert.parent, durable)
    return True


def _checked(answer: RenewalAnswer, key: ec.EllipticCurvePrivateKey, vehicle_id: str) -> bytes:
    """The answer's certificate, if it is for this key and this vehicle."""
    try:
        certificate = x509.load_pem_x509_certificate(answer.certificate_pem.encode())
    except ValueError as exc:
        raise InvalidInput("the issued certificate is not PEM") from exc
    if certificate.public_key() != key.public_key():
        raise InvalidInput("the issued certificate is not for the key the CSR named")
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [n.value for n in names] != [vehicle_id]:
        raise InvalidInput("the issued certificate is for another vehicle")
    return certificate.public_bytes(serialization.Encoding.PEM)


class CertificateRenewal:
    """Rotates one vehicle's certificate on its session (see the module docstring).

    The session must subscribe to `subscription` (`answer_subscription`) and
    hand its messages to `handle_message`. `offline`, if set, runs during the
    reconnect while there is no connection (a test publishes to the vehicle then).
    """

    def __init__(
        self,
        vehicle_id: str,
        region: str,
        session: AsyncMqttSession,
        files: IdentityFiles,
        *,
        config: RenewalConfig | None = None,
        clock: Callable[[], float] = time.time,
        offline: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.vehicle_id = vehicle_id
        self._session = session
        self._files = files
        self._config = config or RenewalConfig()
        self._clock = clock
        self.offline = offline
        self._request = str(Topic(region, vehicle_id, Domain.CERTIFICATE, "renew"))
        self.answer_topic, self._answer_qos = answer_subscription(vehicle_id, region)
        self._waiting: dict[str, asyncio.Future[RenewalAnswer]] = {}
        complete_staged(files, durable=self._config.durable)

    @property
    def subscription(self) -> tuple[str, int]:
        return self.answer_topic, self._answer_qos

    def due(self) -> bool:
        now = datetime.fromtimestamp(self._clock(), UTC)
        return is_due(not_after(self._files.cert), now, self._config.threshold_days)

    def due_at(self) -> float:
        """When the certificate on disk becomes due, on this renewal's clock."""
        return due_from(not_after(self._files.cert), self._config.threshold_days)

    async def handle_message(self, topic: str, payload: bytes) -> bool:
        """Take an answer addressed to this vehicle; False: not this module's topic."""
        if topic != self.answer_topic:
            return False
        try:
            answer = RenewalAnswer.decode(payload)
        except InvalidInput as exc:
            logger.warning("%s: unreadable renewal answer: %s", self.vehicle_id, exc)
            return True
        waiting = self._waiting.get(answer.request_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)
        return True

    async def renew_if_due(self) -> Renewed | None:
        return await self.renew() if self.due() else None

    async def renew(self) -> Renewed:
        """Rotate now: new key, CSR, answer, the pair written, reconnected."""
        previous = not_after(self._files.cert)
        key = ec.generate_private_key(ec.SECP256R1())
        request = RenewalRequest(
            request_id=uuid.uuid4().hex,
            csr_pem=build_csr(key, self.vehicle_id),
            current_not_after_ms=int(previous.timestamp() * 1000),
        )
        answer = await self._ask(request)
        if answer.status is RenewalStatus.REJECTED:
            raise RenewalRefused(f"certificate renewal refused: {answer.reason}")
        cert_pem = _checked(answer, key, self.vehicle_id)
        self._write(key, cert_pem)
        logger.info("%s: certificate %s written", self.vehicle_id, answer.certificate_id)
        await self._session.reconnect(self.offline)
        return Renewed(answer.certificate_id, not_after(self._files.cert), previous)

    async def _ask(self, request: RenewalRequest) -> RenewalAnswer:
        loop = asyncio.get_running_loop()
        waiting: asyncio.Future[RenewalAnswer] = loop.create_future()
        self._waiting[request.request_id] = waiting
        try:
            await self._session.publish(
                self._request, request.encode(), qos=qos_for(Domain.CERTIFICATE)
            )
            return await asyncio.wait_for(waiting, self._config.answer_timeout_s)
        except TimeoutError:
            raise RenewalTimeout(
                f"no certificate within {self._config.answer_timeout_s}s"
            ) from None
        finally:
            self._waiting.pop(request.request_id, None)

    def _write(self, key: ec.EllipticCurvePrivateKey, cert_pem: bytes) -> None:
        durable = self._config.durable
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        staged = self._files.staged()
        atomic_write(staged.key, key_pem, durable=durable, mode=KEY_MODE)
        atomic_write(staged.cert, cert_pem, durable=durable, mode=CERT_MODE)
        complete_staged(self._files, durable=durable)
