"""The stack's broker enforces who a client is and what it may touch.

The broker is configured exactly as `v2c stack up` configures it
(`stack_layout.broker_config`: mTLS, CN = username, the generated ACL); the
gateway connects with the service identity through the production wiring.
Isolation is judged by what arrives, never by a SUBACK (FIELD_NOTES: mosquitto
grants any subscription and filters at delivery).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from gateway_handlers import RECORD_ENV, RECORDING_RULES, read_records
from gateway_support import publish_all, running_gateway, vehicle_client, wait_until
from mqtt_clients import MqttClientError, PahoV5Client

from v2c.contract.errors import MqttReasonCode
from v2c.gateway.connection import MqttEndpoint
from v2c.infra.broker import MosquittoBroker
from v2c.infra.pki import init_foreign_ca, issue_vehicle_cert
from v2c.infra.settings import MqttSettings, StackSettings
from v2c.infra.stack_layout import (
    StackLayout,
    broker_config,
    new_share_group,
    prepare_broker_files,
)
from v2c.infra.wiring import service_endpoint

pytestmark = pytest.mark.integration

VIN = "VIN-1HGBH41JXMN109186"
OTHER_VIN = "VIN-2HGBH41JXMN109186"
REGION = "eu-west-1"


def topic(vin: str, suffix: str) -> str:
    return f"v2c/v1/{REGION}/{vin}/{suffix}"


class StackBroker:
    """A broker configured like the stack's, and the identities to talk to it."""

    def __init__(self, broker: MosquittoBroker, layout: StackLayout, scratch: Path) -> None:
        self.broker, self.layout, self.scratch = broker, layout, scratch
        paths = layout.pki
        self.settings = StackSettings(
            mqtt=MqttSettings(
                host=broker.host,
                port=broker.plain_port or 1,
                tls_port=broker.port,
                ca_file=paths / "ca.pem",
                service_cert=paths / "service.pem",
                service_key=paths / "service.key",
            )
        )

    @property
    def service(self) -> MqttEndpoint:
        return service_endpoint(self.settings)

    def endpoint(self, cert: Path | None = None, key: Path | None = None) -> MqttEndpoint:
        ca = str(self.layout.pki / "ca.pem")
        return MqttEndpoint(
            self.broker.host,
            self.broker.port,
            ca_file=ca,
            cert_file=None if cert is None else str(cert),
            key_file=None if key is None else str(key),
        )

    def vehicle(self, vin: str, **validity: datetime | int) -> MqttEndpoint:
        out = self.scratch / f"certs-{len(list(self.scratch.glob('certs-*')))}"
        paths = issue_vehicle_cert(self.layout.pki, vin, out, **validity)  # type: ignore[arg-type]
        return self.endpoint(paths.cert, paths.key)


@pytest.fixture
def stack_broker(tmp_path: Path, mosquitto_executable: Path) -> Iterator[StackBroker]:
    layout = StackLayout.for_dir(tmp_path / "stack")
    pki = prepare_broker_files(layout)
    config = broker_config(layout, pki, executable=mosquitto_executable)
    with MosquittoBroker(config) as broker:
        yield StackBroker(broker, layout, tmp_path)


@pytest.fixture
def record_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "records.jsonl")
    monkeypatch.setenv(RECORD_ENV, path)
    return path


def puback_reason(client: mqtt.Client, topic_name: str, payload: bytes, qos: int) -> int:
    """Publish once and return the reason code of the broker's PUBACK (or PUBREC)."""
    reasons: dict[int, int] = {}
    acknowledged = threading.Event()

    def on_publish(c: object, u: object, mid: int, reason: object, p: object) -> None:
        reasons[mid] = int(getattr(reason, "value", 0))
        acknowledged.set()

    previous, client.on_publish = client.on_publish, on_publish
    try:
        info = client.publish(topic_name, payload, qos=qos)
        info.wait_for_publish(10)
        assert acknowledged.wait(10), "no PUBACK"
        return reasons[info.mid]
    finally:
        client.on_publish = previous


def test_vehicle_message_over_mtls_reaches_its_rule_handler_with_region_and_vehicle_from_topic(
    stack_broker: StackBroker, record_file: str
) -> None:
    with (
        running_gateway(stack_broker.service, RECORDING_RULES, client_id="gw-acl-route"),
        vehicle_client(stack_broker.vehicle(VIN), VIN) as vehicle,
    ):
        publish_all(vehicle, [(topic(VIN, "telemetry/vehicle"), b"sample-1")], qos=1)
        publish_all(vehicle, [(topic(VIN, "ota/status"), b"status-1")], qos=2)
        wait_until(lambda: len(read_records(record_file)) == 2, what="both messages handled")

    by_rule = {r["rule"]: r for r in read_records(record_file)}
    assert by_rule.keys() == {"telemetry", "ota_status"}
    for record in by_rule.values():
        assert (record["region"], record["vehicle_id"]) == (REGION, VIN)
    assert by_rule["telemetry"]["payload"] == "sample-1"
    assert by_rule["ota_status"]["payload"] == "status-1"


@pytest.mark.parametrize(("suffix", "qos"), [("telemetry/vehicle", 1), ("ota/status", 2)])
def test_vehicle_publishing_under_another_vin_is_refused_and_the_handler_sees_nothing(
    stack_broker: StackBroker, record_file: str, suffix: str, qos: int
) -> None:
    with (
        running_gateway(stack_broker.service, RECORDING_RULES, client_id="gw-acl-spoof") as gw,
        vehicle_client(stack_broker.vehicle(VIN), VIN) as vehicle,
    ):
        # When the vehicle publishes as another vehicle
        reason = puback_reason(vehicle, topic(OTHER_VIN, suffix), b"forged", qos)
        # and then as itself (the broker handles one client's packets in order)
        publish_all(vehicle, [(topic(VIN, suffix), b"genuine")], qos=qos)
        wait_until(lambda: len(read_records(record_file)) >= 1, what="the genuine message")
        wait_until(lambda: gw.in_flight == 0, what="every received message handled")

    # Then the forged one was refused with "not authorized" and never handled. At
    # QoS 2 the refusal is in the PUBREC, which paho does not report (it answers
    # with PUBREL regardless): there the outcome is the evidence.
    if qos == 1:
        assert reason == MqttReasonCode.NOT_AUTHORIZED == 0x87
    records = read_records(record_file)
    assert [(r["vehicle_id"], r["payload"]) for r in records] == [(VIN, "genuine")]


def test_vehicle_subscribed_to_other_vehicles_topics_receives_only_its_own(
    stack_broker: StackBroker,
) -> None:
    own_notice = topic(VIN, "ota/available")
    snooper_ep, other_ep = stack_broker.vehicle(VIN), stack_broker.vehicle(OTHER_VIN)
    with (
        PahoV5Client(
            snooper_ep.host, snooper_ep.port, client_id=VIN, tls_context=snooper_ep.ssl_context()
        ) as snooper,
        PahoV5Client(
            other_ep.host, other_ep.port, client_id=OTHER_VIN, tls_context=other_ep.ssl_context()
        ) as other,
        PahoV5Client(
            stack_broker.service.host,
            stack_broker.service.port,
            client_id="v2c-test-service",
            tls_context=stack_broker.service.ssl_context(),
        ) as cloud,
    ):
        # Given a vehicle subscribed to everything, and to the other vehicle by name
        snooper.subscribe("v2c/v1/+/+/#", 2)
        snooper.subscribe(f"v2c/v1/+/{OTHER_VIN}/#", 2)
        snooper.subscribe("#", 2)

        # When the other vehicle and the cloud (for the other vehicle) publish, then
        # the cloud publishes to the snooper itself
        other.publish(topic(OTHER_VIN, "telemetry/vehicle"), b"other telemetry", 1)
        other.publish(topic(OTHER_VIN, "ota/status"), b"other status", 2)
        cloud.publish(topic(OTHER_VIN, "ota/available"), b"other notice", 2)
        cloud.publish(own_notice, b"own notice", 2)

        # Then the first thing to arrive is its own notification, once per matching filter
        first = snooper.receive()
        assert (first.topic, first.payload) == (own_notice, b"own notice")
        arrived = [first]
        while True:
            try:
                arrived.append(snooper.receive(within=1.0))
            except MqttClientError:
                break
    assert {m.topic for m in arrived} == {own_notice}


def _expired(stack: StackBroker) -> MqttEndpoint:
    return stack.vehicle(VIN, valid_from=datetime.now(UTC) - timedelta(days=30), valid_days=1)


def _not_yet_valid(stack: StackBroker) -> MqttEndpoint:
    return stack.vehicle(VIN, valid_from=datetime.now(UTC) + timedelta(days=30))


def _foreign_ca(stack: StackBroker) -> MqttEndpoint:
    foreign = init_foreign_ca(stack.scratch / "foreign-pki")
    paths = issue_vehicle_cert(foreign.root, VIN, stack.scratch / "foreign-vehicle")
    return stack.endpoint(paths.cert, paths.key)


def _no_certificate(stack: StackBroker) -> MqttEndpoint:
    return stack.endpoint()


@pytest.mark.parametrize(
    "client", [_no_certificate, _expired, _not_yet_valid, _foreign_ca], ids=lambda f: f.__name__
)
def test_client_without_a_currently_valid_certificate_from_the_stack_ca_is_refused_at_connect(
    stack_broker: StackBroker, client: object
) -> None:
    endpoint: MqttEndpoint = client(stack_broker)  # type: ignore[operator]

    with pytest.raises(MqttClientError):
        PahoV5Client(
            endpoint.host, endpoint.port, client_id=VIN, tls_context=endpoint.ssl_context()
        ).connect()

    # The same broker admits the same vehicle with a good certificate
    good = stack_broker.vehicle(VIN)
    with PahoV5Client(good.host, good.port, client_id=VIN, tls_context=good.ssl_context()):
        pass


def test_vehicle_guessing_share_groups_cannot_divert_messages_from_the_stacks_gateway(
    stack_broker: StackBroker, record_file: str
) -> None:
    """mosquitto 2.0.11's `acl_file` never checks SUBSCRIBE: a vehicle that joins the
    gateway's shared group is picked for some messages, the read ACL refuses to deliver
    them to it, and mosquitto drops them. The stack's mitigation is a random group name
    per stack directory (`stack_layout.stack_share_group`), so guesses (`v2c`, the
    documented default, or any other) land in groups of their own and the gateway
    still gets every message. Residual risk: whoever learns the name (stack.json, the
    gateway's command line) can still divert traffic. AWS IoT Core authorizes
    subscriptions (`iot:Subscribe` on the `$share/...` filter), so it has no such gap.
    """
    count = 10
    secret = new_share_group()
    guesses = ["v2c", "v2c-gateway", new_share_group()]
    with (
        running_gateway(
            stack_broker.service, RECORDING_RULES, client_id="gw-acl-share", share_group=secret
        ),
        vehicle_client(stack_broker.vehicle(VIN), VIN) as victim,
    ):
        intruder_ep = stack_broker.vehicle(OTHER_VIN)
        with PahoV5Client(
            intruder_ep.host,
            intruder_ep.port,
            client_id=OTHER_VIN,
            tls_context=intruder_ep.ssl_context(),
        ) as intruder:
            # Given a vehicle in every group it could guess, on the gateway's filter
            for group in guesses:
                intruder.subscribe(f"$share/{group}/v2c/v1/+/+/telemetry/vehicle", 1)
            # When another vehicle publishes
            messages = [(topic(VIN, "telemetry/vehicle"), f"m{i}".encode()) for i in range(count)]
            publish_all(victim, messages, qos=1)
            # Then every message reaches the gateway
            wait_until(
                lambda: len(read_records(record_file)) == count, what="every message handled"
            )
    payloads = sorted(r["payload"] for r in read_records(record_file))
    assert payloads == sorted(f"m{i}" for i in range(count))
