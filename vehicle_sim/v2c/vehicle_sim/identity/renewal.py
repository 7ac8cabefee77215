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

The new key is written to `key.next` (0600, atomically) BEFORE its CSR is
published, and every later attempt reuses it until a certificate for it
arrives: once the cloud has seen the CSR it may have issued the certificate
and made it the live one, and it refuses any other new key for 30 days
(`v2c.handlers.vehicles.rotation`). So a lost answer (a retry of the
cloud's queue later than `answer_timeout_s`, a dropped connection, a crash
or a power cut before the pair was written) costs one more request: the
same key, answered with the same certificate (the cloud's repeat), on the
old certificate, which the cloud keeps active for an overlap (1 h) after
it issued. Asking with a fresh key instead would be refused as too early,
and once the overlap ended the vehicle could never connect again.
A refusal (`RenewalRefused`) or no answer (`RenewalTimeout`) leaves the old
pair in place and the staged key for the next attempt.
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
from typing import Final, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from v2c.contract.certificate_renewal import (
    RenewalAnswer,
    RenewalRequest,
    RenewalStatus,
    build_csr,
)
from v2c.contract.errors import InvalidInput, V2CError
from v2c.contract.topics import Domain, Topic, qos_for
from v2c.vehicle_sim.atomic import atomic_write, fsync_dir

logger = logging.getLogger(__name__)

DAY_S: Final = 24 * 3600
KEY_MODE: Final = 0o600
CERT_MODE: Final = 0o644
STAGED: Final = ".next"


class RenewalRefused(V2CError):
    """The cloud answered the CSR with a refusal (its reason in the detail)."""

    reason = "certificate_renewal_refused"


class RenewalTimeout(V2CError):
    """No answer in time: the cloud may have issued, so the next attempt
    must come soon (within the cloud's overlap) and with the same key."""

    reason = "certificate_renewal_timeout"
    retryable = True


class RenewalSession(Protocol):
    """What the rotation needs of the vehicle's session (`AsyncMqttSession`)."""

    def publish(self, topic: str, payload: bytes, qos: int = ...) -> Awaitable[bool]: ...

    async def reconnect(self, offline: Callable[[], Awaitable[None]] | None = None) -> None: ...


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


def complete_staged(files: IdentityFiles, *, durable: bool = True) -> bool:
    """Finish a rotation a crash interrupted between its renames; True when
    something was moved. The key moves first, so a staged certificate
    without its staged key means the key is in place already. A staged key
    without a staged certificate is the pending key (`load_pending_key`):
    the cloud may have certified it already, so it stays for the next attempt."""
    staged = files.staged()
    if not staged.cert.exists():
        return False
    if staged.key.exists():
        os.replace(staged.key, files.key)
    os.replace(staged.cert, files.cert)
    fsync_dir(files.cert.parent, durable)
    return True


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_pending_key(files: IdentityFiles) -> ec.EllipticCurvePrivateKey | None:
    """The staged key of an earlier attempt, if one is there and readable.
    `atomic_write` never leaves it torn; a file that is not an EC key
    (written by something else) is no key this module sent a CSR for."""
    try:
        key = serialization.load_pem_private_key(files.staged().key.read_bytes(), password=None)
    except FileNotFoundError:
        return None
    except ValueError:
        logger.warning("%s is not a private key; a new one is made", files.staged().key)
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def pending_key(files: IdentityFiles, *, durable: bool = True) -> ec.EllipticCurvePrivateKey:
    """The key to ask a certificate for: the staged one if an earlier attempt
    left it, else a new one, staged (0600 from creation, fsynced) before
    the caller publishes its CSR."""
    key = load_pending_key(files)
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
        atomic_write(files.staged().key, key_pem(key), durable=durable, mode=KEY_MODE)
    return key


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
        session: RenewalSession,
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
        """Rotate now: the pending key (staged first), CSR, answer, the pair
        written, reconnected."""
        previous = not_after(self._files.cert)
        key = pending_key(self._files, durable=self._config.durable)
        request = RenewalRequest(
            request_id=uuid.uuid4().hex,
            csr_pem=build_csr(key, self.vehicle_id),
            current_not_after_ms=int(previous.timestamp() * 1000),
        )
        answer = await self._ask(request)
        if answer.status is RenewalStatus.REJECTED:
            raise RenewalRefused(f"certificate renewal refused: {answer.reason}")
        cert_pem = _checked(answer, key, self.vehicle_id)
        self._write(cert_pem)
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

    def _write(self, cert_pem: bytes) -> None:
        """The certificate staged beside the key staged before the CSR, then both renamed."""
        durable = self._config.durable
        atomic_write(self._files.staged().cert, cert_pem, durable=durable, mode=CERT_MODE)
        complete_staged(self._files, durable=durable)
