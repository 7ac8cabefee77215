"""OTA end to end on a real mosquitto and a real moto server.

The cloud side runs as in the stack: the gateway routes `.../ota/status` to
the production `ota_status` handler, which builds itself from environment
variables and signs with KMS (moto); notifications leave through the broker
at QoS 2. Vehicles are paho clients with persistent sessions that verify the
signature with the public key alone and answer with numbered reports.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
from gateway_support import running_gateway, wait_until
from ota_support import fleet
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from v2c.contract.dead_letter import Direction
from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.contract.manifest import verify_manifest
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.gateway.publisher import OutboundPublisher
from v2c.gateway.redrive import OutboundRedriver
from v2c.gateway.rules import RULES
from v2c.handlers.dlq.service import DeadLetterService, ReplayStatus
from v2c.handlers.ota.config import SERVICES, OtaServices, set_default_services
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.local.wiring import (
    dead_letter_stores,
    handler_environment,
    local_ota_services,
    use_local_ota_services,
)
from v2c.infra.settings import StackSettings
from v2c.v1.ota_pb2 import OTAStatus, OTAUpdateAvailable

if TYPE_CHECKING:
    pass


S = OTAStatus.State
FLOW = (S.ACCEPTED, S.DOWNLOADING, S.DOWNLOADED, S.INSTALLING, S.REBOOTING, S.VERIFYING)


@pytest.fixture
def cloud(stack: StackSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[OtaServices]:
    """The handlers' environment (as `v2c stack up` exports it) and the API's
    services, built as the local stack builds them (not the shared fixture's:
    the handlers here notify as `v2c gateway run`'s do)."""
    for name, value in handler_environment(stack).items():
        monkeypatch.setenv(name, value)
    set_default_services(None)
    use_local_ota_services()  # the handlers here notify as `v2c gateway run`'s do
    services = local_ota_services()
    yield services
    services.close()
    SERVICES.build_with(None)  # closes the handlers' services


def _upload(stack: StackSettings, version: str, payload: bytes) -> str:
    import hashlib

    names = stack.resources
    firmware_id = hashlib.sha256(f"ecu:{version}:Accord".encode()).hexdigest()[:32]
    key = f"firmware/{firmware_id}"
    stack.aws.client("s3").put_object(Bucket=names.firmware_bucket, Key=key, Body=payload)
    stack.aws.client("dynamodb").put_item(
        TableName=names.firmware_table,
        Item={
            "firmware_id": {"S": firmware_id},
            "name": {"S": "ecu"},
            "version": {"S": version},
            "device_model": {"S": "Accord"},
            "size_bytes": {"N": str(len(payload))},
            "sha256": {"S": hashlib.sha256(payload).hexdigest()},
            "status": {"S": "available"},
            "s3_key": {"S": key},
        },
    )
    return firmware_id


class SimVehicle:
    """A vehicle that verifies each notification and walks the update through."""

    def __init__(self, vehicle_id: str, region: str, trusted: TrustedKeySet) -> None:
        self.vehicle_id = vehicle_id
        self.region = region
        self.trusted = trusted
        self.received: list[OTAUpdateAvailable] = []
        self.lock = threading.Lock()
        self.client: mqtt.Client | None = None

    def topic(self, kind: str) -> str:
        return f"v2c/v1/{self.region}/{self.vehicle_id}/ota/{kind}"

    def on_message(self, client: Any, userdata: Any, message: Any) -> None:
        note = OTAUpdateAvailable()
        note.ParseFromString(message.payload)
        manifest = verify_manifest(
            note.manifest,
            note.signature,
            note.key_id,
            trusted=self.trusted,
            now=datetime.now(tz=UTC),
        )
        with self.lock:
            self.received.append(note)
        for sequence, state in enumerate((*FLOW, S.COMPLETED), start=1):
            status = OTAStatus(
                vehicle_id=self.vehicle_id,
                update_id=manifest.update_id,
                campaign_id=manifest.campaign_id,
                state=state,
                sequence=sequence,
                installed_version=manifest.version if state == S.COMPLETED else "",
            )
            client.publish(self.topic("status"), status.SerializeToString(), qos=2)


class _Session:
    """A vehicle's MQTT connection with a persistent session (clean start
    false, one hour): the handler is installed before connecting, so what
    the broker kept for the vehicle while it was offline is not dropped."""

    def __init__(self, endpoint: MqttEndpoint, vehicle: SimVehicle) -> None:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=vehicle.vehicle_id, protocol=mqtt.MQTTv5
        )
        client.on_message = vehicle.on_message
        connected, subscribed = threading.Event(), threading.Event()
        client.on_connect = lambda *a: connected.set()
        client.on_subscribe = lambda *a: subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect(endpoint.host, endpoint.port, clean_start=False, properties=props)
        client.loop_start()
        assert connected.wait(10), f"{vehicle.vehicle_id} could not connect"
        client.subscribe(vehicle.topic("available"), qos=2)
        assert subscribed.wait(10)
        self.client = client

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _trusted(cloud: OtaServices) -> TrustedKeySet:
    signer = cloud.deps.signer
    since = datetime(2020, 1, 1, tzinfo=UTC)
    return TrustedKeySet([TrustedKey(signer.key_id, signer.public_key(), since)])


def test_campaign_over_the_broker_completes_and_an_offline_vehicle_catches_up(
    stack: StackSettings, cloud: OtaServices, broker: MosquittoBroker
) -> None:
    endpoint = MqttEndpoint(broker.host, broker.port)
    cars = fleet(4)
    cloud.deps.fleet.put(cars)
    firmware_id = _upload(stack, "2.0.0", b"ecu-image-2.0.0" * 1000)
    trusted = _trusted(cloud)
    vehicles = [SimVehicle(c.vehicle_id, c.region, trusted) for c in cars]
    with running_gateway(endpoint, RULES):
        sessions = [_Session(endpoint, v) for v in vehicles]
        # The last vehicle goes offline; its persistent session keeps its subscription.
        sessions[-1].close()
        created = cloud.campaigns.create(
            {
                "name": "e2e",
                "firmware_id": firmware_id,
                "target_filter": "model = 'Accord'",
                "deployment_strategy": "immediate",
            }
        ).campaign
        cloud.campaigns.start(created.campaign_id)
        wait_until(
            lambda: cloud.campaigns.get(created.campaign_id).counters.completed == 3,
            what="three online vehicles completed",
        )
        assert cloud.campaigns.get(created.campaign_id).status is CampaignStatus.IN_PROGRESS
        sessions[-1] = _Session(endpoint, vehicles[-1])  # back online
        wait_until(
            lambda: cloud.campaigns.get(created.campaign_id).status is CampaignStatus.COMPLETED,
            what="campaign completed after the offline vehicle reconnected",
        )
        for session in sessions:
            session.close()
    final = cloud.campaigns.get(created.campaign_id)
    assert final.counters.completed == 4
    assert final.counters.total == 4
    for vehicle in vehicles:
        assert len(vehicle.received) == 1
        record = cloud.deps.updates.get(vehicle.vehicle_id, final.release.update_id)
        assert record.state.value == "completed"
        assert record.last_sequence == 7
        assert cloud.deps.fleet.get(vehicle.vehicle_id).installed_version == "2.0.0"  # type: ignore[union-attr]


def test_broker_down_dead_letters_the_notification_and_replay_delivers_it(
    stack: StackSettings, cloud: OtaServices, broker: MosquittoBroker, tmp_path: Path
) -> None:
    endpoint = MqttEndpoint(broker.host, broker.port)
    car = fleet(1)[0]
    cloud.deps.fleet.put([car])
    firmware_id = _upload(stack, "2.0.0", b"ecu" * 100)
    vehicle = SimVehicle(car.vehicle_id, car.region, _trusted(cloud))
    _Session(endpoint, vehicle).close()  # session kept; the vehicle is offline
    created = cloud.campaigns.create(
        {"name": "dlq", "firmware_id": firmware_id, "target_devices": [car.vehicle_id]}
    ).campaign
    broker.stop()
    started = cloud.campaigns.start(created.campaign_id)
    assert started.counters.in_progress == 1  # recorded as notified, the message is in the DLQ
    dlq = dead_letter_stores(stack)["ota"]
    records = list(dlq.list())
    assert len(records) == 1
    record = records[0]
    assert record.direction is Direction.OUTBOUND
    assert record.attempts == 3
    assert record.vehicle_id == car.vehicle_id
    assert record.context["update_id"] == started.release.update_id
    broker.start()
    publisher = OutboundPublisher(endpoint, "dlq-replay", dlq)
    publisher.start()
    try:
        outcomes = DeadLetterService(
            {"ota": dlq}, {Direction.OUTBOUND: OutboundRedriver(publisher)}
        ).replay(queue="ota", replay_all=True)
    finally:
        publisher.stop()
    assert [o.status for o in outcomes] == [ReplayStatus.REPLAYED]
    assert dlq.depth() == 0
    with running_gateway(endpoint, RULES):
        session = _Session(endpoint, vehicle)
        wait_until(lambda: len(vehicle.received) == 1, what="the replayed notification")
        wait_until(
            lambda: cloud.campaigns.get(created.campaign_id).status is CampaignStatus.COMPLETED,
            what="campaign completed",
        )
        session.close()
