"""Certificate rotation over MQTT on a running stack (`LocalStack`: mosquitto, moto, the gateway).

A vehicle whose certificate expires within 7 days asks for a new one on its
own `certificate/renew` with a CSR for a new key; the gateway's
`vehicle_certificates` function (the stack's CA issuing) records it and
answers on the vehicle's `certificate/issued`; the vehicle writes the pair
and reconnects with it under the same client id and persistent session, so a
QoS 2 message published to it while it was between the two connections
still arrives. The expiry pass then revokes the old certificate once the
overlap ended, and the broker (reading the CRL again) refuses it.

A lost answer: the cloud issued and recorded the new certificate, but its
answer never reached the vehicle, which then went down. Restarted, the
vehicle asks again with the key it staged before the first CSR; the cloud,
although the live certificate is a year from its end, answers with that same
certificate, and the vehicle still connects after the old one is revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from gateway_support import wait_until

from v2c.contract.certificate_renewal import build_csr as cloud_csr
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.vehicles import rules
from v2c.handlers.vehicles.csr import check_csr, public_key_sha256
from v2c.handlers.vehicles.metrics import certificate_metrics
from v2c.handlers.vehicles.record import Certificate
from v2c.handlers.vehicles.repository import InventoryRepository
from v2c.handlers.vehicles.rotation_service import RotationService
from v2c.infra.local.stack import LocalStack
from v2c.infra.local.vehicle_issuer import certificate_id, sign_vehicle_key, stack_issuer
from v2c.infra.local.vehicle_service import registration_service
from v2c.infra.local.wiring import service_endpoint
from v2c.infra.pki.authority import load_ca
from v2c.infra.settings import StackSettings
from v2c.infra.tools.mqtt5 import MqttClientError, PahoV5Client
from v2c.vehicle_sim.backoff import BackoffPolicy
from v2c.vehicle_sim.identity.renewal import (
    CertificateRenewal,
    IdentityFiles,
    Renewed,
    answer_subscription,
)
from v2c.vehicle_sim.mqtt_async import AsyncMqttSession, MqttTarget

VIN = "VIN-1HGBH41JXMN109186"
REGION = "eu-west-1"
AVAILABLE = f"v2c/v1/{REGION}/{VIN}/ota/available"
WAIT = 60.0  # a bound for a loaded machine, never an expectation


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[StackSettings]:
    with LocalStack(tmp_path / "stack") as running:
        yield running.settings


def registry(settings: StackSettings) -> InventoryRepository:
    return InventoryRepository(
        settings.aws.client("dynamodb"), settings.resources.vehicle_registry_table
    )


def as_certificate(parsed: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Certificate:
    return Certificate(
        certificate_id=certificate_id(parsed),
        pem=parsed.public_bytes(serialization.Encoding.PEM).decode(),
        expires_at_ms=int(parsed.not_valid_after_utc.timestamp() * 1000),
        issued_at_ms=int(parsed.not_valid_before_utc.timestamp() * 1000),
        public_key_sha256=public_key_sha256(key.public_key()),
    )


def certified_vehicle_expiring_in_5_days(settings: StackSettings, files: IdentityFiles) -> str:
    """A registered vehicle (admitted to the broker) whose live certificate, on
    the vehicle and in the registry, is 360 days old of 365; its id."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = check_csr(cloud_csr(key, VIN), VIN)
    request = rules.registration(VIN, "Accord", REGION, 2024, csr=csr)
    registration_service(settings).register(request, "test")
    mqtt = settings.require_mqtt()
    assert mqtt.ca_file is not None
    ca = load_ca(mqtt.ca_file.parent)
    old = sign_vehicle_key(ca, VIN, key.public_key(), datetime.now(UTC) - timedelta(days=360))
    files.key.parent.mkdir(parents=True)
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.cert.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    repo = registry(settings)
    record = repo.get(VIN)
    assert record is not None
    (stored,) = repo.save([(record, replace(record, certificate=as_certificate(old, key)))])
    assert stored is not None
    return certificate_id(old)


def target(settings: StackSettings, files: IdentityFiles) -> MqttTarget:
    mqtt = settings.require_mqtt()
    assert mqtt.tls_port is not None
    return MqttTarget(
        mqtt.host, mqtt.tls_port, ca_file=mqtt.ca_file, cert_file=files.cert, key_file=files.key
    )


def connects_with(settings: StackSettings, cert: Path, key: Path) -> bool:
    """Whether the broker completes a handshake and CONNACK for this pair
    (another client id than the vehicle's: its session stays untouched)."""
    mqtt = settings.require_mqtt()
    assert mqtt.tls_port is not None
    endpoint = MqttEndpoint(
        mqtt.host, mqtt.tls_port, ca_file=str(mqtt.ca_file), cert_file=str(cert), key_file=str(key)
    )
    client = PahoV5Client(endpoint.host, endpoint.port, tls_context=endpoint.ssl_context())
    try:
        client.connect()
    except MqttClientError:
        return False
    client.disconnect()
    return True


class NoAnswers:
    """The expiry pass answers no vehicle."""

    def send(
        self, topic: str, payload: bytes, *, correlation_id: str, context: dict[str, Any]
    ) -> bool:
        raise AssertionError("the expiry pass published")


def rotation_pass(settings: StackSettings, hours_later: float) -> RotationService:
    """The expiry pass as the function's schedule runs it, `hours_later`."""
    issuer = stack_issuer(settings)
    assert issuer is not None
    later = time.time() + hours_later * 3600
    return RotationService(
        registry(settings), issuer, NoAnswers(), metrics=certificate_metrics(), clock=lambda: later
    )


def test_a_vehicle_renews_its_expiring_certificate_and_keeps_its_session(
    stack: StackSettings, tmp_path: Path
) -> None:
    files = IdentityFiles(tmp_path / "vehicle" / "cert.pem", tmp_path / "vehicle" / "key.pem")
    old_id = certified_vehicle_expiring_in_5_days(stack, files)
    saved_old = IdentityFiles(tmp_path / "old.pem", tmp_path / "old.key")
    saved_old.cert.write_bytes(files.cert.read_bytes())
    saved_old.key.write_bytes(files.key.read_bytes())

    # Given the expiry pass sees one certificate due within 7 (and 30) days
    before = rotation_pass(stack, 0).end_overlaps()
    assert before.expiring == {7: 1, 30: 1}

    cloud = service_endpoint(stack)
    service = PahoV5Client(cloud.host, cloud.port, tls_context=cloud.ssl_context())
    service.connect()

    async def scenario() -> tuple[list[bytes], bool, int]:
        received: list[bytes] = []
        queued_arrived = asyncio.Event()
        renewal: CertificateRenewal

        async def route(topic: str, payload: bytes) -> None:
            if await renewal.handle_message(topic, payload):
                return
            received.append(payload)
            queued_arrived.set()

        async def while_offline() -> None:
            # the cloud publishes to the vehicle while it has no connection
            await asyncio.to_thread(service.publish, AVAILABLE, b"queued while offline", 2)

        session = AsyncMqttSession(
            VIN,
            target(stack, files),
            subscriptions=[(AVAILABLE, 2), answer_subscription(VIN, REGION)],
            on_message=route,
            backoff=BackoffPolicy(initial_s=0.2, max_s=1.0),
        )
        renewal = CertificateRenewal(VIN, REGION, session, files, offline=while_offline)
        await session.connect()
        try:
            # When the vehicle finds its certificate due and rotates it
            assert renewal.due()
            renewed = await renewal.renew_if_due()
            assert renewed is not None
            # Then it is connected again with the new pair, the session kept
            await asyncio.wait_for(queued_arrived.wait(), WAIT)
            assert session.connected
            days_left = (renewed.not_after - datetime.now(UTC)).days
            return received, session.connected, days_left
        finally:
            await session.close()

    try:
        received, connected, days_left = asyncio.run(scenario())
    finally:
        service.disconnect()

    assert received == [b"queued while offline"]  # QoS 2, exactly once, across the rotation
    assert connected
    assert days_left >= 364
    new_cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    new_key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert new_cert.public_key() == new_key.public_key()
    assert (files.key.stat().st_mode & 0o777) == 0o600
    # the registry holds the new certificate live, the old one overlapping, the report
    record = registry(stack).get(VIN)
    assert record is not None
    assert record.certificate is not None
    assert record.certificate.certificate_id == certificate_id(new_cert)
    assert record.previous_certificate is not None
    assert record.previous_certificate.certificate_id == old_id
    assert not record.previous_certificate.revoked_at_ms
    old_not_after = x509.load_pem_x509_certificate(saved_old.cert.read_bytes()).not_valid_after_utc
    assert record.reported_expires_at_ms == int(old_not_after.timestamp() * 1000)
    # during the overlap both certificates connect
    assert connects_with(stack, saved_old.cert, saved_old.key)

    # When the expiry pass runs after the overlap ended
    after = rotation_pass(stack, 2).end_overlaps()

    # Then the old certificate is revoked and the broker refuses it; the new one connects
    assert after.revoked == [old_id]
    assert after.expiring == {7: 0, 30: 0}
    wait_until(
        lambda: not connects_with(stack, saved_old.cert, saved_old.key),
        timeout=WAIT,
        what="the old certificate refused",
    )
    assert connects_with(stack, files.cert, files.key)
    revoked = registry(stack).get(VIN)
    assert revoked is not None
    assert revoked.previous_certificate is not None
    assert revoked.previous_certificate.revoked_at_ms


def vehicle_session(
    settings: StackSettings,
    files: IdentityFiles,
    route: Callable[[str, bytes], Awaitable[None]],
) -> AsyncMqttSession:
    """The vehicle's persistent session (its client id), subscribed to its answers."""
    return AsyncMqttSession(
        VIN,
        target(settings, files),
        subscriptions=[answer_subscription(VIN, REGION)],
        on_message=route,
        backoff=BackoffPolicy(initial_s=0.2, max_s=1.0),
    )


def test_a_lost_answer_is_recovered_with_the_staged_key_and_survives_the_revocation(
    stack: StackSettings, tmp_path: Path
) -> None:
    files = IdentityFiles(tmp_path / "vehicle" / "cert.pem", tmp_path / "vehicle" / "key.pem")
    old_id = certified_vehicle_expiring_in_5_days(stack, files)
    old_pair = (files.cert.read_bytes(), files.key.read_bytes())
    saved_old = IdentityFiles(tmp_path / "old.pem", tmp_path / "old.key")
    saved_old.cert.write_bytes(old_pair[0])
    saved_old.key.write_bytes(old_pair[1])

    async def asks_then_loses_the_answer_and_goes_down() -> None:
        dropped = asyncio.Event()

        async def route(topic: str, payload: bytes) -> None:
            # the answer arrives on the vehicle's session and is discarded: lost
            if topic == renewal.answer_topic:
                dropped.set()

        session = vehicle_session(stack, files, route)
        renewal = CertificateRenewal(VIN, REGION, session, files)
        await session.connect()
        attempt = asyncio.create_task(renewal.renew())
        try:
            await asyncio.wait_for(dropped.wait(), WAIT)
        finally:
            attempt.cancel()  # the vehicle goes down before it writes anything
            with contextlib.suppress(asyncio.CancelledError):
                await attempt
            await session.close()

    async def restarts_and_asks_again() -> tuple[Renewed, bool]:
        renewal: CertificateRenewal

        async def route(topic: str, payload: bytes) -> None:
            await renewal.handle_message(topic, payload)

        session = vehicle_session(stack, files, route)
        renewal = CertificateRenewal(VIN, REGION, session, files)  # as built at boot
        await session.connect()
        try:
            renewed = await renewal.renew()
            return renewed, session.connected
        finally:
            await session.close()

    # Given the cloud issued a certificate for the vehicle's CSR and made it live,
    # but its answer was lost and the vehicle went down
    asyncio.run(asks_then_loses_the_answer_and_goes_down())
    issued = registry(stack).get(VIN)
    assert issued is not None
    assert issued.certificate is not None
    assert issued.previous_certificate is not None
    assert issued.previous_certificate.certificate_id == old_id
    live = issued.certificate
    # the vehicle still holds the old pair, and the key it asked with is staged
    assert (files.cert.read_bytes(), files.key.read_bytes()) == old_pair
    staged = serialization.load_pem_private_key(files.staged().key.read_bytes(), password=None)
    assert isinstance(staged, ec.EllipticCurvePrivateKey)
    assert public_key_sha256(staged.public_key()) == live.public_key_sha256
    assert (files.staged().key.stat().st_mode & 0o777) == 0o600
    # the live certificate is a year from its end: a new key would be too early now
    assert live.expires_at_ms - time.time() * 1000 > rules.RENEW_WITHIN_MS

    # When the vehicle, restarted, asks again
    renewed, connected = asyncio.run(restarts_and_asks_again())

    # Then the cloud answered with the same certificate, issuing nothing new, and the
    # vehicle reconnected with it
    assert connected
    assert renewed.certificate_id == live.certificate_id
    assert certificate_id(x509.load_pem_x509_certificate(files.cert.read_bytes())) == (
        live.certificate_id
    )
    new_key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert new_key.public_key() == staged.public_key()
    assert not files.staged().key.exists()
    after = registry(stack).get(VIN)
    assert after is not None
    assert after.certificate == live
    assert after.previous_certificate is not None
    assert after.previous_certificate.certificate_id == old_id

    # When the expiry pass runs after the overlap ended
    revoked = rotation_pass(stack, 2).end_overlaps()

    # Then the old certificate is refused, and the vehicle connects with its new pair
    assert revoked.revoked == [old_id]
    wait_until(
        lambda: not connects_with(stack, saved_old.cert, saved_old.key),
        timeout=WAIT,
        what="the old certificate refused",
    )
    assert connects_with(stack, files.cert, files.key)
