"""The stack's broker refuses a revoked vehicle certificate at the handshake, as an expired one.

Expired and not-yet-valid certificates are refused by the TLS handshake
itself (also in `test_broker_acl.py`, with a certificate of a foreign CA and
none at all; shown again here beside revocation); a revoked one because the
vehicle listener
reads the fleet CA's CRL (`crlfile`, `v2c.infra.pki.crl`), which the stack's
issuer updates when it revokes and then makes the broker read again (SIGHUP).
The broker is configured exactly as `v2c stack up` configures it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from gateway_support import wait_until

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.vehicles.csr import public_key_sha256
from v2c.handlers.vehicles.record import Certificate
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.local.broker_admin import register_in_stack
from v2c.infra.local.stack_control import BROKER
from v2c.infra.local.stack_layout import (
    StackLayout,
    broker_config,
    broker_settings,
    prepare_broker_files,
)
from v2c.infra.local.vehicle_issuer import LocalCaIssuer, StackBrokerAdmission, certificate_id
from v2c.infra.pki.authority import CertPaths, PkiPaths, issue_vehicle_cert
from v2c.infra.pki.crl import is_revoked
from v2c.infra.settings import StackSettings
from v2c.infra.tools.mqtt5 import MqttClientError, PahoV5Client

VIN = "VIN-1HGBH41JXMN109186"
WAIT = 30.0  # a bound for a loaded machine, never an expectation


class Stack:
    def __init__(self, broker: MosquittoBroker, layout: StackLayout, scratch: Path) -> None:
        assert broker.service_port is not None
        assert broker.pid is not None
        self.broker, self.layout, self.scratch = broker, layout, scratch
        self.pki = PkiPaths.for_dir(layout.pki)
        self.settings = StackSettings(
            mqtt=broker_settings(broker.host, broker.port, broker.service_port, self.pki),
            processes={BROKER: broker.pid},
        )
        self.issuer = LocalCaIssuer(self.pki.root, StackBrokerAdmission(self.settings))

    def certificate(self, **validity: datetime | int) -> CertPaths:
        out = self.scratch / f"certs-{len(list(self.scratch.glob('certs-*')))}"
        return issue_vehicle_cert(self.pki.root, VIN, out, **validity)  # type: ignore[arg-type]

    def endpoint(self, paths: CertPaths) -> MqttEndpoint:
        return MqttEndpoint(
            self.broker.host,
            self.broker.port,
            ca_file=str(self.pki.ca_cert),
            cert_file=str(paths.cert),
            key_file=str(paths.key),
        )

    def connects(self, paths: CertPaths) -> bool:
        target = self.endpoint(paths)
        client = PahoV5Client(
            target.host, target.port, client_id=VIN, tls_context=target.ssl_context()
        )
        try:
            client.connect()
        except MqttClientError:
            return False
        client.disconnect()
        return True


@pytest.fixture
def stack(tmp_path: Path, mosquitto_executable: Path) -> Iterator[Stack]:
    layout = StackLayout.for_dir(tmp_path / "stack")
    config = broker_config(layout, prepare_broker_files(layout), executable=mosquitto_executable)
    with MosquittoBroker(config) as broker:
        running = Stack(broker, layout, tmp_path)
        register_in_stack(running.settings, [VIN])
        yield running


def as_record(paths: CertPaths) -> Certificate:
    parsed = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    key = parsed.public_key()
    return Certificate(
        certificate_id=certificate_id(parsed),
        pem=paths.cert.read_text(),
        expires_at_ms=int(parsed.not_valid_after_utc.timestamp() * 1000),
        issued_at_ms=int(parsed.not_valid_before_utc.timestamp() * 1000),
        public_key_sha256=public_key_sha256(key),  # type: ignore[arg-type]
    )


def test_expired_not_yet_valid_and_revoked_certificates_are_refused_a_valid_one_connects(
    stack: Stack,
) -> None:
    now = datetime.now(UTC)
    expired = stack.certificate(valid_from=now - timedelta(days=30), valid_days=1)
    not_yet = stack.certificate(valid_from=now + timedelta(days=30))
    old, new = stack.certificate(), stack.certificate()

    # Given a vehicle with two valid certificates (a rotation's old and new one)
    assert stack.connects(old)
    assert stack.connects(new)
    # expired and not yet valid ones never open the listener
    assert not stack.connects(expired)
    assert not stack.connects(not_yet)

    # When the stack's issuer revokes the old one
    stack.issuer.revoke(VIN, as_record(old))

    # Then the CRL lists it, the broker read it again, and it is refused from now on
    assert is_revoked(stack.pki.root, x509.load_pem_x509_certificate(old.cert.read_bytes()))
    wait_until(lambda: not stack.connects(old), timeout=WAIT, what="the revoked one refused")
    assert "Reloading config" in stack.broker.log_tail(200)
    # while the same vehicle's other certificate still connects
    assert stack.connects(new)
    # and revoking again changes nothing
    stack.issuer.revoke(VIN, as_record(old))
    assert stack.connects(new)
