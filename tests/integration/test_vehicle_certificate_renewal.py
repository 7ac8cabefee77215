"""A fleet vehicle renews its certificate by itself; the stack's schedule revokes the old one.

On a running stack (`LocalStack`: mosquitto with mTLS, moto, the gateway
hosting `vehicle_certificates`), a vehicle provisioned as the fleet
simulator provisions it (onboarded with a CSR, its key and certificate in the
stack's PKI directory) holds a certificate that ends in 5 days. Started by
`FleetSimulator`, its `Vehicle` finds the certificate due when it connects,
rotates it over MQTT, writes the new pair where its target reads it, and
reconnects on the same persistent session: a QoS 2 `ota/available`
published while it is between the two connections reaches its OTA half,
and so does one published afterwards. The stack's gateway made the expiry
pass once at start (its /metrics carry the gauge only a pass sets); run here
by the same `ExpirySchedule` (the Lambda handler, its scheduled input, the
stack's rotation service; an hour is a call of the injected `wait`), the pass
revokes the rotated-out certificate and the broker refuses it.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from gateway_support import wait_until
from prometheus_client import REGISTRY

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.vehicles.csr import public_key_sha256
from v2c.handlers.vehicles.record import Certificate
from v2c.handlers.vehicles.repository import InventoryRepository
from v2c.handlers.vehicles.rotation_lambda import SERVICE
from v2c.infra.local.certificate_rotation import (
    EXPIRY_INTERVAL_S,
    ExpirySchedule,
    use_local_rotation_service,
)
from v2c.infra.local.fleet_provisioning import fleet_vehicles, stack_trusted_keys
from v2c.infra.local.stack import LocalStack
from v2c.infra.local.vehicle_issuer import certificate_id, sign_vehicle_key
from v2c.infra.local.wiring import handler_environment, service_endpoint
from v2c.infra.pki.authority import load_ca
from v2c.infra.settings import StackSettings
from v2c.infra.tools.mqtt5 import MqttClientError, PahoV5Client
from v2c.vehicle_sim.fleet.identity import fleet_members
from v2c.vehicle_sim.fleet.simulator import FleetSimulator, FleetVehicle

WAIT = 60.0  # a bound for a loaded machine, never an expectation
THRESHOLD_S = 7 * 24 * 3600  # RenewalConfig's default: due within 7 days


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StackSettings]:
    # No overlap: the first expiry pass after the rotation revokes the old
    # certificate (the gateway inherits this), so the test need not wait an hour.
    monkeypatch.setenv("CERTIFICATE_OVERLAP_S", "0")
    with LocalStack(tmp_path / "stack") as running:
        yield running.settings


@pytest.fixture
def expiry_service(stack: StackSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process hosts the rotation function as the gateway does (its
    environment, the stack's CA, a publisher on the service listener)."""
    for name, value in handler_environment(stack).items():
        monkeypatch.setenv(name, value)
    use_local_rotation_service(stack)
    yield
    SERVICE.build_with(None)  # closes the service and its publisher


def registry(settings: StackSettings) -> InventoryRepository:
    return InventoryRepository(
        settings.aws.client("dynamodb"), settings.resources.vehicle_registry_table
    )


def age_certificate(settings: StackSettings, vehicle: FleetVehicle) -> x509.Certificate:
    """Replace the vehicle's certificate, on its disk and in the registry, by
    one for the same key issued 360 days ago (of 365): 5 days left."""
    target = vehicle.target
    assert target.cert_file is not None
    assert target.key_file is not None
    assert target.ca_file is not None
    key = serialization.load_pem_private_key(target.key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    ca = load_ca(target.ca_file.parent)
    old = sign_vehicle_key(
        ca, vehicle.member.vehicle_id, key.public_key(), datetime.now(UTC) - timedelta(days=360)
    )
    target.cert_file.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    repo = registry(settings)
    record = repo.get(vehicle.member.vehicle_id)
    assert record is not None
    live = Certificate(
        certificate_id=certificate_id(old),
        pem=old.public_bytes(serialization.Encoding.PEM).decode(),
        expires_at_ms=int(old.not_valid_after_utc.timestamp() * 1000),
        issued_at_ms=int(old.not_valid_before_utc.timestamp() * 1000),
        public_key_sha256=public_key_sha256(key.public_key()),
    )
    (stored,) = repo.save([(record, replace(record, certificate=live))])
    assert stored is not None
    return old


def connects_with(settings: StackSettings, cert: Path, key: Path) -> bool:
    """Whether the broker's vehicle listener completes a handshake and CONNACK for this pair."""
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


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT}s: {what}")
        await asyncio.sleep(0.05)


def expiring_within_7_days() -> float | None:
    return REGISTRY.get_sample_value("v2c_vehicle_certificates_expiring", {"within_days": "7"})


def gateway_metrics(settings: StackSettings) -> str:
    assert settings.gateway is not None
    with urllib.request.urlopen(settings.gateway.metrics_url, timeout=10) as response:
        return str(response.read().decode())


def test_a_fleet_vehicle_renews_by_itself_keeps_its_qos2_downlink_and_the_schedule_revokes_the_old(
    stack: StackSettings, expiry_service: None, tmp_path: Path
) -> None:
    # The stack's gateway made its expiry pass at start (the gauge is set by a pass only)
    wait_until(
        lambda: 'v2c_vehicle_certificates_expiring{within_days="7"} 0.0' in gateway_metrics(stack),
        timeout=WAIT,
        what="the gateway's expiry pass at start",
    )

    # Given a vehicle provisioned as the fleet simulator provisions one, 5 days from its end
    (fleet_vehicle,) = fleet_vehicles(stack, fleet_members(1))[0]
    old = age_certificate(stack, fleet_vehicle)
    target = fleet_vehicle.target
    assert target.cert_file is not None
    assert target.key_file is not None
    saved_old = (tmp_path / "old.pem", tmp_path / "old.key")
    saved_old[0].write_bytes(target.cert_file.read_bytes())
    saved_old[1].write_bytes(target.key_file.read_bytes())
    # and the expiry pass, as the gateway schedules it, counts it as expiring within 7 days
    schedule = ExpirySchedule()
    before = schedule.run_pass()
    assert before is not None
    assert before["expiring"] == {"7": 1, "30": 1}
    assert expiring_within_7_days() == 1

    cloud = service_endpoint(stack)
    service = PahoV5Client(cloud.host, cloud.port, tls_context=cloud.ssl_context())
    service.connect()
    fleet = FleetSimulator([fleet_vehicle], stack_trusted_keys(stack), base_dir=tmp_path / "fleet")

    async def scenario() -> tuple[int, int, int, int, float | None]:
        await fleet.start(connect=False)
        vehicle = fleet.vehicles[fleet_vehicle.member.vehicle_id]
        renewing = vehicle.certificate
        assert renewing is not None
        available = vehicle.spec.topic("available")

        async def while_offline() -> None:
            # the cloud notifies the vehicle between its two connections
            await asyncio.to_thread(service.publish, available, b"published while offline", 2)

        renewing.renewal.offline = while_offline
        try:
            # When the fleet connects it, nothing else asked
            await fleet.connect()
            # Then it rotates by itself and the notification queued meanwhile arrives
            await until(lambda: renewing.renewals == 1, "the vehicle renewed")
            await until(lambda: vehicle.ota.notifications == 1, "the queued notification")
            # and the new connection keeps receiving its QoS 2 downlink
            await asyncio.to_thread(service.publish, available, b"published afterwards", 2)
            await until(lambda: vehicle.ota.notifications == 2, "the later notification")
            assert vehicle.connected
            return (
                renewing.renewals,
                renewing.failures,
                vehicle.ota.notifications,
                vehicle.session.connects,
                renewing.next_check_at,
            )
        finally:
            await fleet.stop()

    try:
        renewals, failures, notifications, connects, next_check_at = asyncio.run(scenario())
    finally:
        service.disconnect()

    assert (renewals, failures) == (1, 0)
    assert notifications == 2  # each QoS 2 notification once, across the rotation
    assert connects == 2  # the first connection, then the one with the new pair
    # the new pair is where the fleet provisioned the old one, a pair, a year long
    new = x509.load_pem_x509_certificate(target.cert_file.read_bytes())
    new_key = serialization.load_pem_private_key(target.key_file.read_bytes(), password=None)
    assert new.public_key() == new_key.public_key()
    assert certificate_id(new) != certificate_id(old)
    assert new.not_valid_after_utc - datetime.now(UTC) > timedelta(days=364)
    # one timer left, for the moment the new certificate becomes due
    assert next_check_at == new.not_valid_after_utc.timestamp() - THRESHOLD_S
    record = registry(stack).get(fleet_vehicle.member.vehicle_id)
    assert record is not None
    assert record.certificate is not None
    assert record.certificate.certificate_id == certificate_id(new)
    assert record.previous_certificate is not None
    assert record.previous_certificate.certificate_id == certificate_id(old)

    # When the schedule runs: a pass at once, then one per hour, until stopped
    waits: list[float] = []

    def an_hour_passes(interval_s: float) -> bool:  # a stop event's `wait`
        waits.append(interval_s)
        return len(waits) == 2  # stopped during the second wait

    schedule.run(an_hour_passes)

    # Then two passes ran, the old certificate is revoked and refused, the new one connects
    assert (schedule.passes, schedule.failed_passes) == (1 + 2, 0)
    assert waits == [EXPIRY_INTERVAL_S, EXPIRY_INTERVAL_S]
    assert expiring_within_7_days() == 0
    revoked = registry(stack).get(fleet_vehicle.member.vehicle_id)
    assert revoked is not None
    assert revoked.previous_certificate is not None
    assert revoked.previous_certificate.revoked_at_ms
    wait_until(
        lambda: not connects_with(stack, *saved_old),
        timeout=WAIT,
        what="the rotated-out certificate refused",
    )
    assert connects_with(stack, target.cert_file, target.key_file)
