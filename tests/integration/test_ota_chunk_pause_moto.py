"""Acceptance (issue #13): a pause between chunks stops notifications within one
chunk, against the real moto server and a real mosquitto.

The campaign service runs over moto's DynamoDB and S3 as in production and
publishes through the gateway's `OutboundPublisher` (pipelined QoS 2). A fleet
manager pauses the campaign from another thread as soon as a real subscriber
on the broker sees the first notification; the sink holds the dispatcher
after the first chunk until that pause is written, so the race the test
means (a pause landing while a chunk is out) happens every run. What went out
is counted twice, independently: by the subscriber, and by the per-vehicle
records in DynamoDB.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import pytest
from gateway_support import wait_until
from ota_support import OtaServices, fleet, ota_services
from paho.mqtt.enums import CallbackAPIVersion

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.gateway.ota_sink import MqttNotificationSink
from v2c.gateway.publisher import OutboundPublisher
from v2c.handlers.ota.campaigns.deps import CampaignConfig
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.notifier import SinkMessage
from v2c.infra.local.broker import MosquittoBroker

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

TARGETS = 300
CHUNK = 50
NOTIFICATIONS = "v2c/v1/+/+/ota/available"
SENTINEL = "v2c/v1/test/SENTINEL/ota/available"


class FleetSubscriber:
    """A real MQTT subscriber on every vehicle's notification topic: counts
    notifications per vehicle, signals the first, and sees sentinels (a
    sentinel published after a batch arrives after all of it: one publisher,
    one subscriber, in order)."""

    def __init__(self, endpoint: MqttEndpoint) -> None:
        self.per_vehicle: Counter[str] = Counter()
        self.first = threading.Event()
        self.sentinels = 0
        self._lock = threading.Lock()
        subscribed = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="fleet-watch", protocol=mqtt.MQTTv5
        )
        client.on_message = self._on_message
        client.on_subscribe = lambda *_a: subscribed.set()
        client.connect(endpoint.host, endpoint.port)
        client.subscribe(NOTIFICATIONS, qos=2)
        client.loop_start()
        assert subscribed.wait(10), "the subscriber was not subscribed"
        self._client = client

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            if message.topic == SENTINEL:
                self.sentinels += 1
                return
            self.per_vehicle[message.topic.split("/")[3]] += 1
        self.first.set()

    def vehicles(self) -> set[str]:
        with self._lock:
            return set(self.per_vehicle)

    def duplicates(self) -> dict[str, int]:
        with self._lock:
            return {v: n for v, n in self.per_vehicle.items() if n > 1}

    def drain(self, publisher: OutboundPublisher) -> None:
        """Wait until everything published so far has arrived."""
        with self._lock:
            seen = self.sentinels
        assert publisher.publish(SENTINEL, b"sentinel").delivered
        wait_until(lambda: self.sentinels > seen, timeout=30, what="the sentinel")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class HeldSink:
    """The MQTT sink, holding the dispatcher after its first chunk until
    `release` is set (the pause is written): the next chunk's write then
    meets the paused campaign."""

    def __init__(self, inner: MqttNotificationSink) -> None:
        self._inner = inner
        self.chunks: list[int] = []
        self.release = threading.Event()

    def send(
        self, topic: str, payload: bytes, *, correlation_id: str, context: dict[str, Any]
    ) -> bool:
        return self._inner.send(topic, payload, correlation_id=correlation_id, context=context)

    def send_many(self, messages: Sequence[SinkMessage]) -> list[bool]:
        results = self._inner.send_many(messages)
        self.chunks.append(len(messages))
        if len(self.chunks) == 1:
            assert self.release.wait(30), "the pause never came"
        return results


@pytest.fixture
def endpoint(mosquitto: MosquittoBroker) -> MqttEndpoint:
    return MqttEndpoint(mosquitto.host, mosquitto.port)


@pytest.fixture
def publisher(endpoint: MqttEndpoint) -> Iterator[OutboundPublisher]:
    outbound = OutboundPublisher(endpoint, "v2c-test-dispatch", None)
    outbound.start()
    assert outbound.connected
    yield outbound
    outbound.stop()


@pytest.fixture
def subscriber(endpoint: MqttEndpoint) -> Iterator[FleetSubscriber]:
    watching = FleetSubscriber(endpoint)
    yield watching
    watching.close()


def _records(ota: OtaServices, campaign_id: str) -> Counter[str]:
    return Counter(u.vehicle_id for u in ota.deps.updates.for_campaign(campaign_id))


def test_a_pause_between_chunks_stops_notifications_within_one_chunk(
    aws_stack: AwsStack, publisher: OutboundPublisher, subscriber: FleetSubscriber
) -> None:
    # Given: 300 targets, one batch of all of them, dispatched in chunks of 50
    sink = HeldSink(MqttNotificationSink(publisher))
    ota = ota_services(aws_stack, sink=sink, config=CampaignConfig(notify_chunk=CHUNK))
    ota.register(fleet(TARGETS))
    package = ota.packages.add("2.0.0", b"firmware-2.0.0" * 100)
    campaign_id = ota.campaigns.create(
        {
            "name": "chunked",
            "firmware_id": package.firmware_id,
            "target_filter": "model = 'Accord'",
            "deployment_strategy": "immediate",
            "batch_size": TARGETS,
            "max_concurrent_updates": TARGETS,
        }
    ).campaign.campaign_id
    plan = [t.vehicle_id for t in ota.deps.plans.read(campaign_id, 0, TARGETS)]

    # ... and a fleet manager who pauses once the first notification arrives
    def fleet_manager() -> None:
        try:
            if subscriber.first.wait(30):
                ota.campaigns.pause(campaign_id, "hold it")
        finally:
            sink.release.set()

    pausing = threading.Thread(target=fleet_manager)
    pausing.start()

    # When: the campaign starts
    started = ota.campaigns.start(campaign_id)
    pausing.join()
    subscriber.drain(publisher)

    # Then: exactly the first chunk went out, by the broker's count and DynamoDB's
    assert sink.chunks == [CHUNK]
    assert subscriber.vehicles() == set(plan[:CHUNK])
    assert subscriber.duplicates() == {}
    records = _records(ota, campaign_id)
    assert set(records) == set(plan[:CHUNK])
    assert set(records.values()) == {1}
    # ... and the counters are exact
    assert started.status is CampaignStatus.PAUSED
    c = started.counters
    assert (started.cursor, c.in_progress, c.pending) == (CHUNK, CHUNK, TARGETS - CHUNK)
    assert c.pending + c.in_progress == started.target_count == TARGETS
    assert started.wave_counters[0].in_progress == CHUNK

    # When: the campaign resumes
    resumed = ota.campaigns.resume(campaign_id)
    subscriber.drain(publisher)

    # Then: it continues at the cursor and nobody hears twice
    assert sink.chunks == [CHUNK] * (TARGETS // CHUNK)
    assert subscriber.vehicles() == set(plan)
    assert subscriber.duplicates() == {}
    records = _records(ota, campaign_id)
    assert set(records) == set(plan)
    assert set(records.values()) == {1}
    assert resumed.status is CampaignStatus.IN_PROGRESS
    c = resumed.counters
    assert (resumed.cursor, c.in_progress, c.pending) == (TARGETS, TARGETS, 0)
    assert c.total == TARGETS
