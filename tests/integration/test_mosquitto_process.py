"""The spawned mosquitto: lifecycle, persistence across restarts, limits, TLS, failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mqtt_clients import MqttClientError, gmqtt_client, paho_client

from v2c.infra.local.broker import (
    BrokerNotInstalled,
    BrokerStartError,
    BrokerTls,
    MosquittoBroker,
    MosquittoConfig,
)
from v2c.infra.net import port_accepts

BrokerFactory = Callable[..., MosquittoBroker]  # the mosquitto_factory fixture

TOPIC = "v2c/v1/eu-central-1/VIN-1HGBH41JXMN109186/ota/available"


def wait_for_log(broker: MosquittoBroker, text: str, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if text in broker.log_path.read_text():
            return True
        time.sleep(0.02)
    return False


def test_broker_accepts_connections_until_stopped_and_then_frees_the_port(
    mosquitto: MosquittoBroker,
) -> None:
    assert mosquitto.running
    assert port_accepts(mosquitto.host, mosquitto.port)

    mosquitto.stop()

    assert not mosquitto.running
    assert mosquitto.pid is None
    assert not port_accepts(mosquitto.host, mosquitto.port)
    mosquitto.stop()  # idempotent


def test_restart_keeps_the_port_and_the_retained_message_in_its_database(
    mosquitto: MosquittoBroker,
) -> None:
    # Given a retained message
    port = mosquitto.port
    with paho_client(mosquitto) as publisher:
        publisher.publish(TOPIC, b"retained across restarts", 1, retain=True)

    # When the broker restarts (SIGTERM saves the database)
    mosquitto.restart()

    # Then a new subscriber on the same port still gets it
    assert mosquitto.port == port
    assert mosquitto.db_path.exists()
    with paho_client(mosquitto) as subscriber:
        subscriber.subscribe(TOPIC, 1)
        assert subscriber.receive().payload == b"retained across restarts"


def test_killed_broker_starts_again_on_the_same_port(mosquitto: MosquittoBroker) -> None:
    port, first_pid = mosquitto.port, mosquitto.pid

    mosquitto.kill()
    assert not mosquitto.running
    mosquitto.start()

    assert (mosquitto.port, mosquitto.running) == (port, True)
    assert mosquitto.pid != first_pid
    with paho_client(mosquitto) as client:
        assert client.subscribe(TOPIC, 2) == 2


def test_packets_up_to_the_limit_pass_and_larger_ones_cost_the_sender_its_connection(
    mosquitto: MosquittoBroker,
) -> None:
    async def scenario() -> bytes:
        async with gmqtt_client(mosquitto) as gateway:
            await gateway.subscribe(TOPIC, qos=1)
            with paho_client(mosquitto) as vehicle:
                await asyncio.to_thread(vehicle.publish, TOPIC, b"x" * 120_000, 1)
            with paho_client(mosquitto, client_id="oversize-sender") as vehicle:
                await asyncio.to_thread(vehicle.publish, TOPIC, b"y" * 140_000, 0)
                assert wait_for_log(mosquitto, "oversize-sender disconnected due to oversize")
            return (await gateway.receive()).payload

    assert asyncio.run(scenario()) == b"x" * 120_000


def test_missing_binary_is_a_typed_error_that_names_the_setup_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from v2c.infra.local import broker as broker_module

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(broker_module, "_SEARCH_DIRS", ())

    with pytest.raises(BrokerNotInstalled, match=r"scripts/setup\.sh"):
        MosquittoBroker(MosquittoConfig(data_dir=tmp_path))


def test_broker_that_exits_at_start_reports_its_log_tail(
    mosquitto_factory: BrokerFactory, tmp_path: Path
) -> None:
    absent = tmp_path / "absent.pem"
    tls = BrokerTls(cafile=absent, certfile=absent, keyfile=absent)

    with pytest.raises(BrokerStartError, match="log tail") as failure:
        mosquitto_factory(tls=tls)

    assert "Error" in str(failure.value)


# --- mutual TLS: the vehicle's certificate CN becomes its MQTT username ------------------------


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)  # as private as real keys: the broker must still read it
    return path


def _issue(
    subject_cn: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    issuer_name, issuer_key = issuer or (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _pem(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_mutual_tls_listener_admits_ca_signed_vehicles_confined_by_the_acl(
    mosquitto_factory: BrokerFactory, tmp_path: Path
) -> None:
    # Given a CA, a server certificate for 127.0.0.1 and a vehicle certificate (CN = VIN)
    ca_cert, ca_key = _issue("v2c test CA", None, ca=True)
    server_cert, server_key = _issue("mosquitto", (ca_cert.subject, ca_key), ip="127.0.0.1")
    vin = "VIN-1HGBH41JXMN109186"
    vehicle_cert, vehicle_key = _issue(vin, (ca_cert.subject, ca_key))
    acl = tmp_path / "acl"
    acl.write_text("pattern readwrite v2c/v1/+/%u/#\n")
    tls = BrokerTls(
        cafile=_pem(ca_cert, tmp_path / "ca.pem"),
        certfile=_pem(server_cert, tmp_path / "server.pem"),
        keyfile=_write_key(server_key, tmp_path / "server.key"),
    )
    broker = mosquitto_factory(tls=tls, acl_file=acl)
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    context.load_cert_chain(
        _pem(vehicle_cert, tmp_path / "vehicle.pem"),
        _write_key(vehicle_key, tmp_path / "vehicle.key"),
    )

    # When the vehicle publishes on its own topic and on another vehicle's
    with paho_client(broker, client_id=vin, tls_context=context) as vehicle:
        vehicle.subscribe("v2c/v1/+/+/ota/#", 2)
        vehicle.publish("v2c/v1/eu-central-1/VIN-2HGBH41JXMN109186/ota/status", b"not mine", 2)
        vehicle.publish(f"v2c/v1/eu-central-1/{vin}/ota/status", b"mine", 2)

        # Then only its own message comes back: the ACL filtered the other
        assert vehicle.receive().payload == b"mine"

    # And a client without a certificate is refused at the TLS handshake
    no_cert = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    with pytest.raises(MqttClientError), paho_client(broker, tls_context=no_cert):
        pass
