"""The vehicle uplink over mutual TLS: client id = VIN = certificate CN, confined by the ACL."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
from gateway_handlers import RECORDING_RULES, read_records
from gateway_support import running_gateway, wait_until

from v2c.gateway.connection import MqttEndpoint
from v2c.infra.broker import BrokerTls, MosquittoBroker
from v2c.infra.pki import PkiPaths, init_pki, issue_vehicle_cert
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.backoff import BackoffPolicy
from v2c.vehicle_sim.delivery import DeliveryConfig
from v2c.vehicle_sim.mqtt_client import ConnectionConfig, VehicleIdentity
from v2c.vehicle_sim.sampler import TelemetrySampler
from v2c.vehicle_sim.telemetry_publisher import PublisherConfig, TelemetryPublisher

pytestmark = pytest.mark.integration

BrokerFactory = Callable[..., MosquittoBroker]
VIN = "VIN-1HGBH41JXMN109186"
OTHER_VIN = "VIN-2HGBH41JXMN109187"
ACL = """\
pattern readwrite v2c/v1/+/%u/#
user v2c-gateway
topic readwrite v2c/#
"""


@pytest.fixture
def pki(tmp_path: Path) -> PkiPaths:
    return init_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(mosquitto_factory: BrokerFactory, pki: PkiPaths, tmp_path: Path) -> MosquittoBroker:
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    tls = BrokerTls(cafile=pki.ca_cert, certfile=pki.server.cert, keyfile=pki.server.key)
    return mosquitto_factory(tls=tls, acl_file=acl)


@pytest.fixture
def record_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "records.jsonl")
    monkeypatch.setenv("V2C_TEST_RECORD_FILE", path)
    return path


def publisher_with_certificate_of(
    vin: str, broker: MosquittoBroker, pki: PkiPaths, tmp_path: Path
) -> TelemetryPublisher:
    cert = issue_vehicle_cert(pki.root, vin)
    connection = ConnectionConfig(
        broker.host,
        broker.port,
        ca_file=cert.ca,
        cert_file=cert.cert,
        key_file=cert.key,
        connect_timeout_s=5,
        backoff=BackoffPolicy(initial_s=0.05, max_s=0.5),
    )
    config = PublisherConfig(durable=False, delivery=DeliveryConfig(retry_later_s=0.2))
    return TelemetryPublisher(
        VehicleIdentity(VIN, "eu-west-1"), connection, tmp_path / "v.db", config
    )


def test_vehicle_with_its_own_certificate_publishes_over_mutual_tls(
    tls_broker: MosquittoBroker, pki: PkiPaths, record_file: str, tmp_path: Path
) -> None:
    endpoint = MqttEndpoint(
        tls_broker.host,
        tls_broker.port,
        ca_file=str(pki.ca_cert),
        cert_file=str(pki.service.cert),
        key_file=str(pki.service.key),
    )
    with (
        running_gateway(endpoint, RECORDING_RULES, client_id="gw-tls"),
        publisher_with_certificate_of(VIN, tls_broker, pki, tmp_path) as publisher,
    ):
        for sample in TelemetrySampler(VIN, seed=1).samples(10):
            publisher.publish(sample)
        assert publisher.flush(60)
        assert publisher.stats().refused == 0

    wait_until(lambda: len(read_records(record_file)) >= 10, what="10 samples")
    received = {
        telemetry_pb2.Telemetry.FromString(base64.b64decode(r["payload_b64"])).sequence
        for r in read_records(record_file)
    }
    assert received == set(range(1, 11))


def test_vehicle_holding_another_vins_certificate_is_refused_and_gives_up_the_samples(
    tls_broker: MosquittoBroker, pki: PkiPaths, tmp_path: Path
) -> None:
    # Given a vehicle whose certificate names another VIN: the ACL confines it to
    # that VIN's topics, so the broker answers its publishes with 0x87.
    with publisher_with_certificate_of(OTHER_VIN, tls_broker, pki, tmp_path) as publisher:
        for sample in TelemetrySampler(VIN, seed=2).samples(5):
            publisher.publish(sample)
        # Then the refusal is final: counted, removed, not retried forever
        wait_until(lambda: publisher.stats().refused == 5, what="five refusals")
        assert publisher.stats().buffered == 0
        assert publisher.stats().delivered == 0
