"""The vehicle uplink over mutual TLS against a broker configured like the stack's:
client id = VIN = certificate CN, confined by the broker's per-VIN policy."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_handlers import RECORDING_RULES, read_records
from gateway_support import running_gateway, wait_until
from vehicle_support import TelemetryDriver, telemetry_vehicle

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.local.stack_layout import StackLayout, broker_config, prepare_broker_files
from v2c.infra.pki.authority import PkiPaths, init_pki, issue_vehicle_cert
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.backoff import BackoffPolicy
from v2c.vehicle_sim.delivery import DeliveryConfig
from v2c.vehicle_sim.mqtt_async import MqttTarget
from v2c.vehicle_sim.sampler import TelemetrySampler
from v2c.vehicle_sim.telemetry_publisher import PublisherConfig, VehicleIdentity

VIN = "VIN-1HGBH41JXMN109186"
OTHER_VIN = "VIN-2HGBH41JXMN109187"


@pytest.fixture
def layout(tmp_path: Path) -> StackLayout:
    return StackLayout.for_dir(tmp_path / "stack")


@pytest.fixture
def pki(layout: StackLayout) -> PkiPaths:
    paths = init_pki(layout.pki)
    for vin in (VIN, OTHER_VIN):  # issued before the broker starts: admitted at start
        issue_vehicle_cert(paths.root, vin)
    return paths


@pytest.fixture
def tls_broker(
    layout: StackLayout, pki: PkiPaths, mosquitto_executable: Path
) -> Iterator[MosquittoBroker]:
    config = broker_config(layout, prepare_broker_files(layout), executable=mosquitto_executable)
    with MosquittoBroker(config) as broker:
        yield broker


@pytest.fixture
def record_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "records.jsonl")
    monkeypatch.setenv("V2C_TEST_RECORD_FILE", path)
    return path


def publisher_with_certificate_of(
    vin: str, broker: MosquittoBroker, pki: PkiPaths, tmp_path: Path
) -> TelemetryDriver:
    target = MqttTarget(
        broker.host,
        broker.port,
        ca_file=pki.ca_cert,
        cert_file=pki.vehicles_dir / f"{vin}.pem",
        key_file=pki.vehicles_dir / f"{vin}.key",
        connect_timeout_s=5,
    )
    config = PublisherConfig(durable=False, delivery=DeliveryConfig(retry_later_s=0.2))
    return telemetry_vehicle(
        VehicleIdentity(VIN, "eu-west-1"),
        target,
        tmp_path / "v.db",
        config,
        backoff=BackoffPolicy(initial_s=0.05, max_s=0.5),
    )


def test_vehicle_with_its_own_certificate_publishes_over_mutual_tls(
    tls_broker: MosquittoBroker, pki: PkiPaths, record_file: str, tmp_path: Path
) -> None:
    assert tls_broker.service_port is not None
    endpoint = MqttEndpoint(
        tls_broker.host,
        tls_broker.service_port,
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
        # Waited for while the gateway runs: a PUBACK from the broker says nothing about
        # the gateway's handler, and stopping the gateway cancels what it still handles.
        wait_until(lambda: len(read_records(record_file)) >= 10, what="10 samples")
    received = {
        telemetry_pb2.Telemetry.FromString(base64.b64decode(r["payload_b64"])).sequence
        for r in read_records(record_file)
    }
    assert received == set(range(1, 11))


def test_vehicle_holding_another_vins_certificate_is_refused_and_gives_up_the_samples(
    tls_broker: MosquittoBroker, pki: PkiPaths, tmp_path: Path
) -> None:
    # Given a vehicle whose certificate names another VIN: the broker makes it that
    # VIN and confines it to that VIN's topics, so it answers its publishes with 0x87.
    with publisher_with_certificate_of(OTHER_VIN, tls_broker, pki, tmp_path) as publisher:
        for sample in TelemetrySampler(VIN, seed=2).samples(5):
            publisher.publish(sample)
        # Then the refusal is final: counted, removed, not retried forever
        wait_until(lambda: publisher.stats().refused == 5, what="five refusals")
        assert publisher.stats().buffered == 0
        assert publisher.stats().delivered == 0
