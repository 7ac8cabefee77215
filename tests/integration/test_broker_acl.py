"""The stack's broker enforces who a client is and what it may touch.

The broker is configured exactly as `v2c stack up` configures it
(`stack_layout.broker_config`: a vehicle and a service mTLS listener, the
dynamic-security policy of `device_policy`, no anonymous access, no retained
messages). Vehicles are admitted the way a vehicle issued after `stack up` is
(`broker_admin`, through the plugin's control topic); the gateway connects
with the service identity through the production wiring. Clients are stock:
paho-mqtt and mosquitto_pub/mosquitto_sub, with real certificates.

"Nothing arrived" is never judged by waiting: after the attempt, a sentinel
message is sent to the same subscriber along a path that is allowed, and the
sentinel must be the first thing it receives (mosquitto handles packets one
at a time, so anything the attempt had routed would already be queued before it).
"""

from __future__ import annotations

import queue
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from gateway_handlers import RECORD_ENV, RECORDING_RULES, read_records
from gateway_support import publish_all, running_gateway, vehicle_client, wait_until
from mqtt_clients import MqttClientError, PahoV5Client
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from v2c.contract.errors import MqttReasonCode
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.contract.topics import KNOWN_REGIONS
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.local.broker_admin import register_in_stack
from v2c.infra.local.stack import GATEWAY_CLIENT_ID
from v2c.infra.local.stack_layout import (
    StackLayout,
    broker_config,
    broker_settings,
    prepare_broker_files,
    stack_share_group,
)
from v2c.infra.local.wiring import service_endpoint
from v2c.infra.pki.authority import CertPaths, PkiPaths, init_foreign_ca, issue_vehicle_cert
from v2c.infra.settings import StackSettings

VIN = "VIN-1HGBH41JXMN109186"
OTHER_VIN = "VIN-2HGBH41JXMN109186"
UNREGISTERED_VIN = "VIN-3HGBH41JXMN109186"
REGION = "eu-west-1"
NOT_AUTHORIZED = int(MqttReasonCode.NOT_AUTHORIZED)  # 0x87
TAKEN = {0, 0x10}  # success, or "no matching subscribers" (a success as well)
RETAIN_NOT_SUPPORTED = 0x9A
WAIT = 30.0  # a bound, never an expectation


def topic(vin: str, suffix: str, region: str = REGION) -> str:
    return f"v2c/v1/{region}/{vin}/{suffix}"


class StackBroker:
    """A broker configured like the stack's, and the identities to talk to it."""

    def __init__(self, broker: MosquittoBroker, layout: StackLayout, scratch: Path) -> None:
        self.broker, self.layout, self.scratch = broker, layout, scratch
        self.pki = PkiPaths.for_dir(layout.pki)
        assert broker.service_port is not None
        self.settings = StackSettings(
            mqtt=broker_settings(broker.host, broker.port, broker.service_port, self.pki)
        )

    @property
    def service(self) -> MqttEndpoint:
        return service_endpoint(self.settings)

    def endpoint(
        self, cert: Path | None = None, key: Path | None = None, *, port: int | None = None
    ) -> MqttEndpoint:
        return MqttEndpoint(
            self.broker.host,
            self.broker.port if port is None else port,
            ca_file=str(self.pki.ca_cert),
            cert_file=None if cert is None else str(cert),
            key_file=None if key is None else str(key),
        )

    def vehicle_cert(self, vin: str, **validity: datetime | int) -> CertPaths:
        out = self.scratch / f"certs-{len(list(self.scratch.glob('certs-*')))}"
        return issue_vehicle_cert(self.layout.pki, vin, out, **validity)  # type: ignore[arg-type]

    def vehicle(
        self, vin: str, *, register: bool = True, **validity: datetime | int
    ) -> MqttEndpoint:
        """A new certificate for `vin`, admitted to the running broker unless `register=False`."""
        paths = self.vehicle_cert(vin, **validity)
        if register:
            register_in_stack(self.settings, [vin])
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


class Session:
    """One paho MQTT 5 session that keeps everything the broker tells it."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        *,
        clean_start: bool = True,
        session_expiry: int = 0,
    ) -> None:
        self.client_id = client_id
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        context = endpoint.ssl_context()
        if context is not None:
            self.client.tls_set_context(context)
        self.client.reconnect_delay_set(min_delay=60, max_delay=60)  # never within a test
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.session_present: bool | None = None
        self.disconnect_reason: int | None = None
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._acks: dict[int, int] = {}
        self._acked = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = self._on_ack
        self.client.on_publish = self._on_ack
        properties = Properties(PacketTypes.CONNECT)
        if session_expiry:
            properties.SessionExpiryInterval = session_expiry
        self.client.connect(
            endpoint.host, endpoint.port, clean_start=clean_start, properties=properties
        )
        self.client.loop_start()
        assert self.connected.wait(WAIT), f"{client_id}: no CONNACK"

    def _on_connect(self, c: object, u: object, flags: object, reason: object, p: object) -> None:
        assert not getattr(reason, "is_failure", False), f"{self.client_id}: {reason}"
        self.session_present = bool(getattr(flags, "session_present", False))
        self.connected.set()

    def _on_disconnect(self, c: object, u: object, f: object, reason: object, p: object) -> None:
        self.disconnect_reason = int(getattr(reason, "value", -1))
        self.disconnected.set()

    def _on_ack(self, c: object, u: object, mid: int, reasons: object, p: object) -> None:
        first = reasons[0] if isinstance(reasons, list) else reasons
        with self._acked:
            self._acks[mid] = int(getattr(first, "value", 0))
            self._acked.notify_all()

    def _wait_ack(self, mid: int) -> int:
        with self._acked:
            assert self._acked.wait_for(lambda: mid in self._acks, WAIT), f"no ack for {mid}"
            return self._acks.pop(mid)

    def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """The SUBACK's reason code: the granted QoS, or 0x87 when refused."""
        _, mid = self.client.subscribe(topic_filter, qos=qos)
        assert mid is not None
        return self._wait_ack(mid)

    def publish(self, name: str, payload: bytes, qos: int = 1) -> int:
        """The PUBACK's reason code at QoS 1; at QoS 2 the PUBCOMP's (paho does not
        report the PUBREC's, so use QoS 1 to see a refusal)."""
        return self._wait_ack(self.client.publish(name, payload, qos=qos).mid)

    def taken(self, name: str, payload: bytes, qos: int = 1) -> bool:
        return self.publish(name, payload, qos) in TAKEN

    def next_message(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=WAIT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def service_session(stack: StackBroker, name: str) -> Session:
    return Session(stack.service, f"v2c-test-{name}")


def first_is_sentinel(session: Session, sentinel: tuple[str, bytes]) -> None:
    assert session.next_message() == sentinel


# -- who a client is ---------------------------------------------------------------------


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


def test_a_vehicle_cannot_take_another_vehicles_session_nor_the_gateways(
    stack_broker: StackBroker, record_file: str
) -> None:
    """Before: a vehicle with its own valid certificate connecting as `VIN` made the
    broker close the victim's connection, and its clean start threw away the
    victim's persistent session with the QoS 2 notification queued in it."""
    victim_ep, intruder_ep = stack_broker.vehicle(VIN), stack_broker.vehicle(OTHER_VIN)
    notice = topic(VIN, "ota/available")
    with (
        running_gateway(stack_broker.service, RECORDING_RULES, client_id=GATEWAY_CLIENT_ID) as gw,
        service_session(stack_broker, "cloud") as cloud,
    ):
        # Given a vehicle offline with a persistent session and a QoS 2 notification queued
        with Session(victim_ep, VIN, clean_start=True, session_expiry=3600) as victim:
            assert victim.subscribe(notice, 2) == 2
        assert cloud.publish(notice, b"queued update", qos=2) == 0

        # When another vehicle connects with the victim's client id, clean start,
        # then with the gateway's fixed client id
        for client_id in (VIN, GATEWAY_CLIENT_ID):
            with Session(intruder_ep, client_id, clean_start=True) as intruder:
                # Then it is connected as itself: its own topics work, the victim's do not
                assert intruder.taken(topic(OTHER_VIN, "telemetry/vehicle"), b"own")
                assert intruder.publish(topic(VIN, "telemetry/vehicle"), b"x") == NOT_AUTHORIZED

        # And the victim, reconnecting, finds its session and the queued notification
        with Session(victim_ep, VIN, clean_start=False, session_expiry=3600) as victim:
            assert victim.session_present is True
            assert victim.next_message() == (notice, b"queued update")

            # And an intruder connecting as the victim now does not push it off
            with Session(intruder_ep, VIN, clean_start=True):
                assert cloud.publish(notice, b"still here", qos=2) == 0
                assert victim.next_message() == (notice, b"still here")
            assert not victim.disconnected.is_set()

        # And the gateway, under its fixed client id, handled the intruder's own
        # messages: nobody took its session
        wait_until(lambda: len(read_records(record_file)) == 2, what="both own messages")
        wait_until(lambda: gw.in_flight == 0, what="every received message handled")
    assert sorted(r["vehicle_id"] for r in read_records(record_file)) == [OTHER_VIN, OTHER_VIN]
    # (mosquitto logs every takeover as "Client <id> already connected, closing old connection")
    assert "already connected" not in stack_broker.broker.log_tail(10_000)


# -- what a vehicle may publish ------------------------------------------------------------

FORGED = {
    "another vehicle's telemetry": topic(OTHER_VIN, "telemetry/vehicle"),
    "another vehicle's OTA status": topic(OTHER_VIN, "ota/status"),
    "an unknown region": topic(VIN, "telemetry/vehicle", region="eu-central-1"),
    "a deeper topic": topic(VIN, "telemetry/vehicle/extra"),
    "a shallower topic": topic(VIN, "telemetry"),
    "an unknown kind": topic(VIN, "telemetry/unknown"),
    "its own downlink (ota/available)": topic(VIN, "ota/available"),
    "its own downlink (commands/request)": topic(VIN, "commands/request"),
    "another vehicle's downlink": topic(OTHER_VIN, "ota/available"),
    "the control topic": "$CONTROL/dynamic-security/v1",
}


def test_a_vehicle_may_publish_only_its_own_uplink_in_a_known_region(
    stack_broker: StackBroker, record_file: str
) -> None:
    vehicle_ep, other_ep = stack_broker.vehicle(VIN), stack_broker.vehicle(OTHER_VIN)
    with (
        running_gateway(stack_broker.service, RECORDING_RULES, client_id="gw-acl-spoof") as gw,
        Session(vehicle_ep, VIN) as vehicle,
        Session(other_ep, OTHER_VIN) as other,
        service_session(stack_broker, "witness") as witness,
    ):
        # Given witnesses of every uplink (a service) and of the downlinks (both vehicles)
        for uplink in ("telemetry/#", "ota/status", "commands/response"):
            assert witness.subscribe(f"v2c/v1/+/+/{uplink}") == 1
        for session, vin in ((vehicle, VIN), (other, OTHER_VIN)):
            for downlink in ("ota/available", "commands/request"):
                assert session.subscribe(topic(vin, downlink)) == 1

        # When the vehicle publishes anywhere but its own uplink, each is refused
        refused = {why: vehicle.publish(name, b"forged") for why, name in FORGED.items()}
        assert refused == dict.fromkeys(FORGED, NOT_AUTHORIZED)

        # while its own uplink, in every known region, is taken
        own = [topic(VIN, "commands/response", r) for r in KNOWN_REGIONS]
        for name in own:
            assert vehicle.publish(name, b"own") == 0

        # Then no witness saw a forged message: each sees only what was allowed
        genuine = (topic(VIN, "telemetry/vehicle"), b"genuine")
        assert vehicle.publish(*genuine) == 0
        seen = [witness.next_message() for _ in range(len(own) + 1)]
        assert seen == [*((name, b"own") for name in own), genuine]
        for session, vin in ((vehicle, VIN), (other, OTHER_VIN)):
            sentinel = (topic(vin, "commands/request"), b"sentinel")
            assert witness.taken(*sentinel)
            first_is_sentinel(session, sentinel)
        wait_until(lambda: len(read_records(record_file)) >= 1, what="the genuine message")
        wait_until(lambda: gw.in_flight == 0, what="every received message handled")
    records = read_records(record_file)
    assert [(r["vehicle_id"], r["payload"]) for r in records] == [(VIN, "genuine")]


def test_a_vehicle_will_message_is_held_to_the_same_rules(stack_broker: StackBroker) -> None:
    """A Will is published by the broker for the client when it drops: a forged topic
    in it is refused like a forged publish, and a retained Will is refused at CONNECT."""
    victim_ep, vehicle_ep = stack_broker.vehicle(OTHER_VIN), stack_broker.vehicle(VIN)
    victim_topic = topic(OTHER_VIN, "ota/available")
    with Session(victim_ep, OTHER_VIN) as victim, service_session(stack_broker, "cloud") as cloud:
        assert victim.subscribe(victim_topic) == 1
        # Given a vehicle (mosquitto_sub) whose Will names another vehicle's topic
        process = subprocess.Popen(
            [
                "mosquitto_sub", *_mosquitto_args(vehicle_ep),
                "-i", VIN,
                "-t", topic(VIN, "ota/available"),
                "--will-topic", victim_topic,
                "--will-payload", "forged will",
                "--will-qos", "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(
                lambda: f"as {VIN} " in stack_broker.broker.log_tail(50), what="it connected"
            )
        finally:
            # When it drops without DISCONNECT
            process.kill()
            process.wait()
        wait_until(
            lambda: f"Client {VIN} closed its connection" in stack_broker.broker.log_tail(50),
            what="the broker noticed",
        )
        # Then the Will went nowhere
        sentinel = (victim_topic, b"sentinel")
        assert cloud.taken(*sentinel)
        first_is_sentinel(victim, sentinel)

    # And a retained Will is refused at CONNECT (MQTT 5: 0x9A retain not supported)
    retained_will = _run_mosquitto(
        vehicle_ep,
        "mosquitto_pub", "-i", VIN, "-t", topic(VIN, "telemetry/vehicle"), "-m", "x",
        "--will-topic", topic(VIN, "telemetry/vehicle"), "--will-payload", "w", "--will-retain",
    )  # fmt: skip
    assert retained_will.returncode != 0


# -- what a vehicle may subscribe to ---------------------------------------------------------


def test_a_vehicle_may_subscribe_only_to_its_own_downlink_and_receives_nothing_else(
    stack_broker: StackBroker,
) -> None:
    own_notice = topic(VIN, "ota/available")
    group = stack_share_group(stack_broker.layout)
    snooper_ep, other_ep = stack_broker.vehicle(VIN), stack_broker.vehicle(OTHER_VIN)
    with (
        Session(snooper_ep, VIN) as snooper,
        Session(other_ep, OTHER_VIN) as other,
        service_session(stack_broker, "cloud") as cloud,
    ):
        # Given a vehicle trying every wider subscription: each is refused at SUBACK
        wider = [
            "#",
            "v2c/#",
            "v2c/v1/+/+/#",
            "v2c/v1/+/+/telemetry/#",
            "v2c/v1/+/+/ota/available",
            f"v2c/v1/+/{OTHER_VIN}/#",
            f"v2c/v1/+/{VIN}/#",
            f"v2c/v1/+/{VIN}/ota/available",
            f"v2c/v1/{REGION}/{VIN}/ota/+",
            topic(OTHER_VIN, "ota/available"),
            topic(OTHER_VIN, "telemetry/vehicle"),
            topic(VIN, "telemetry/vehicle"),
            f"$share/{group}/v2c/v1/+/+/telemetry/vehicle",
            f"$share/{group}/{own_notice}",
            "$CONTROL/dynamic-security/#",
            "$SYS/#",
        ]
        granted = {candidate: snooper.subscribe(candidate, 2) for candidate in wider}
        assert granted == dict.fromkeys(wider, NOT_AUTHORIZED)
        # and its own notifications, by their literal name, are granted
        assert snooper.subscribe(own_notice, 2) == 2

        # When the other vehicle and the cloud (for the other vehicle) publish
        assert other.taken(topic(OTHER_VIN, "telemetry/vehicle"), b"other telemetry")
        assert other.taken(topic(OTHER_VIN, "ota/status"), b"other status")
        assert cloud.taken(topic(OTHER_VIN, "ota/available"), b"other notice")
        assert cloud.taken(own_notice, b"own notice")

        # Then the only thing that arrives is its own notification
        first_is_sentinel(snooper, (own_notice, b"own notice"))
        assert snooper.messages.empty()


def test_a_vehicle_cannot_divert_messages_from_the_gateways_shared_group(
    stack_broker: StackBroker, record_file: str
) -> None:
    """Before: mosquitto 2.0.11's `acl_file` never checked SUBSCRIBE, so a vehicle in the
    gateway's group was handed a share of the messages, refused them at delivery,
    and the broker dropped them. The group name is not a secret (stack.json, the
    process list): the broker refuses the subscription itself."""
    count = 20
    group = stack_share_group(stack_broker.layout)
    with (
        running_gateway(
            stack_broker.service, RECORDING_RULES, client_id="gw-acl-share", share_group=group
        ),
        vehicle_client(stack_broker.vehicle(VIN), VIN) as victim,
        Session(stack_broker.vehicle(OTHER_VIN), OTHER_VIN) as intruder,
    ):
        # Given a vehicle that knows the real group and tries to join it on every filter
        for rule in RECORDING_RULES:
            for name in (group, "v2c"):
                assert intruder.subscribe(f"$share/{name}/{rule.topic_filter}") == NOT_AUTHORIZED
        # When another vehicle publishes
        messages = [(topic(VIN, "telemetry/vehicle"), f"m{i}".encode()) for i in range(count)]
        publish_all(victim, messages, qos=1)
        # Then every message reaches the gateway, and none the intruder
        wait_until(lambda: len(read_records(record_file)) == count, what="every message handled")
        assert intruder.messages.empty()
    payloads = sorted(r["payload"] for r in read_records(record_file))
    assert payloads == sorted(f"m{i}" for i in range(count))


# -- retained messages -----------------------------------------------------------------------


def test_retained_publishes_are_refused_and_nothing_retained_reaches_a_later_subscriber(
    stack_broker: StackBroker,
) -> None:
    """`retain_available false`: an MQTT 5 client is told at CONNACK (libmosquitto then
    clears the flag itself); one that sends the flag anyway, or speaks MQTT 3.1.1,
    is disconnected. Either way the broker keeps no message for later subscribers."""
    vehicle_ep = stack_broker.vehicle(VIN)
    telemetry = topic(VIN, "telemetry/vehicle")
    # Given a vehicle flooding retained messages with stock clients, both protocols
    for version in ("mqttv5", "mqttv311"):
        for kind in ("vehicle", "batch", "heartbeat"):
            _run_mosquitto(
                vehicle_ep, "mosquitto_pub", "-i", VIN, "-q", "1", "-r",
                "-t", topic(VIN, f"telemetry/{kind}"), "-m", f"retained {kind}",
                version=version,
            )  # fmt: skip
    # and with paho, which sends the flag: the broker disconnects it (0x9A)
    with Session(vehicle_ep, VIN) as vehicle:
        vehicle.client.publish(telemetry, b"retained", qos=1, retain=True)
        assert vehicle.disconnected.wait(WAIT)
        assert vehicle.disconnect_reason == RETAIN_NOT_SUPPORTED
    # and a service too (the setting is the broker's)
    with service_session(stack_broker, "cloud") as cloud:
        cloud.client.publish(topic(VIN, "ota/available"), b"retained", qos=1, retain=True)
        assert cloud.disconnected.wait(WAIT)

    # Then a subscriber arriving later gets no retained message: the first thing
    # each receives is a live one
    with (
        service_session(stack_broker, "late") as late,
        Session(vehicle_ep, VIN) as vehicle,
        service_session(stack_broker, "cloud") as cloud,
    ):
        assert late.subscribe("v2c/v1/+/+/telemetry/#") == 1
        assert vehicle.subscribe(topic(VIN, "ota/available")) == 1
        live = (telemetry, b"live")
        assert vehicle.taken(*live)
        first_is_sentinel(late, live)
        notice = (topic(VIN, "ota/available"), b"live notice")
        assert cloud.taken(*notice)
        first_is_sentinel(vehicle, notice)


# -- listeners and credentials -----------------------------------------------------------------


def _mosquitto_args(endpoint: MqttEndpoint, version: str = "mqttv5") -> list[str]:
    args = ["-h", endpoint.host, "-p", str(endpoint.port), "-V", version]
    if endpoint.ca_file:
        args += ["--cafile", endpoint.ca_file]
    if endpoint.cert_file and endpoint.key_file:
        args += ["--cert", endpoint.cert_file, "--key", endpoint.key_file]
    return args


def _run_mosquitto(
    endpoint: MqttEndpoint, tool: str, *args: str, version: str = "mqttv5"
) -> subprocess.CompletedProcess[str]:
    command = [tool, *_mosquitto_args(endpoint, version), *args]
    if tool == "mosquitto_sub":
        command += ["-W", "10"]  # a bound: it must fail long before
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _without_credentials(stack: StackBroker) -> dict[str, MqttEndpoint]:
    """Every way in without a credential the listener accepts, on both listeners."""
    host = stack.broker.host
    service_port = stack.broker.service_port
    assert service_port is not None
    vehicle_cert = stack.vehicle_cert(OTHER_VIN)
    ways = {}
    for name, port in (("vehicle listener", stack.broker.port), ("service listener", service_port)):
        ways[f"{name}, plain TCP"] = MqttEndpoint(host, port)
        ways[f"{name}, TLS without a certificate"] = stack.endpoint(port=port)
    ways["service listener, a vehicle certificate"] = stack.endpoint(
        vehicle_cert.cert, vehicle_cert.key, port=service_port
    )
    ways["vehicle listener, the service certificate"] = stack.endpoint(
        stack.pki.service.cert, stack.pki.service.key
    )
    return ways


def test_no_listener_admits_a_client_without_its_kind_of_certificate(
    stack_broker: StackBroker,
) -> None:
    victim_ep = stack_broker.vehicle(VIN)
    notice = topic(VIN, "ota/available")
    with Session(victim_ep, VIN) as victim, service_session(stack_broker, "cloud") as cloud:
        assert victim.subscribe(notice) == 1
        for why, endpoint in _without_credentials(stack_broker).items():
            # paho cannot connect
            with pytest.raises(MqttClientError):
                PahoV5Client(
                    endpoint.host,
                    endpoint.port,
                    client_id=f"v2c-intruder-{len(why)}",
                    tls_context=endpoint.ssl_context(),
                    timeout=WAIT,
                ).connect()
            # nor can a stock client inject an OTA notification or read telemetry
            injected = _run_mosquitto(endpoint, "mosquitto_pub", "-q", "1", "-t", notice, "-m", "x")
            assert injected.returncode != 0, why
            read = _run_mosquitto(endpoint, "mosquitto_sub", "-C", "1", "-t", "v2c/v1/#")
            assert read.returncode != 0, why
            assert read.stdout == "", why
        # Then the vehicle's first notification is the cloud's genuine one
        sentinel = (notice, b"genuine")
        assert cloud.taken(*sentinel)
        first_is_sentinel(victim, sentinel)


def test_a_certificate_from_the_fleet_ca_that_is_not_registered_can_do_nothing(
    stack_broker: StackBroker,
) -> None:
    """The broker cannot refuse it at CONNECT (no password check runs for certificate
    identities), so it connects, and every publish and subscription is refused."""
    endpoint = stack_broker.vehicle(UNREGISTERED_VIN, register=False)
    with Session(endpoint, UNREGISTERED_VIN) as stranger:
        assert stranger.subscribe(topic(UNREGISTERED_VIN, "ota/available")) == NOT_AUTHORIZED
        assert stranger.publish(topic(UNREGISTERED_VIN, "telemetry/vehicle"), b"x") == (
            NOT_AUTHORIZED
        )
    # and once registered, the same certificate works
    register_in_stack(stack_broker.settings, [UNREGISTERED_VIN])
    with Session(endpoint, UNREGISTERED_VIN) as admitted:
        assert admitted.subscribe(topic(UNREGISTERED_VIN, "ota/available")) == 1


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
