"""The vehicle's telemetry uplink (`Vehicle.telemetry`, on its one MQTT session)
against a real mosquitto, a real TCP proxy in
between for the network faults, and the in-process gateway as the cloud.

What arrived is read from the gateway's record file and deduplicated by
message id, as the cloud does: QoS 1 allows a sample to arrive twice, never
zero times."""

from __future__ import annotations

import base64
import collections
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faults import TcpProxy
from gateway_handlers import RECORDING_RULES, read_records
from gateway_support import running_gateway, wait_until
from vehicle_support import TelemetryDriver, telemetry_vehicle

from v2c.contract.batch_codec import decode_envelope
from v2c.contract.ids import telemetry_message_id
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.infra.local.broker import MosquittoBroker
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.backoff import BackoffPolicy
from v2c.vehicle_sim.delivery import BatchPolicy, DeliveryConfig
from v2c.vehicle_sim.metrics import SIM_METRICS
from v2c.vehicle_sim.mqtt_async import MqttTarget
from v2c.vehicle_sim.sampler import TelemetrySampler
from v2c.vehicle_sim.telemetry_publisher import PublisherConfig, VehicleIdentity

BrokerFactory = Callable[..., MosquittoBroker]

VIN = "VIN-1HGBH41JXMN109186"
IDENTITY = VehicleIdentity(VIN, "eu-west-1", vehicle_model="Model-E", firmware_version="2.4.1")
FLUSH_S = 90.0
# Seconds, not minutes: the same logic, on a schedule a test can wait for.
FAST_BACKOFF = BackoffPolicy(initial_s=0.05, max_s=0.5, quota_window_s=0.5, quota_jitter_s=0.1)


def fast_delivery(batch: BatchPolicy | None, puback_timeout_s: float) -> DeliveryConfig:
    return DeliveryConfig(
        window=20,
        puback_timeout_s=puback_timeout_s,
        puback_attempts=2,
        retry_later_s=0.2,
        heartbeat_interval_s=0.5,
        batch=batch,
    )


def make_publisher(
    port: int,
    buffer_path: Path,
    *,
    batch: BatchPolicy | None = None,
    capacity: int = 1000,
    puback_timeout_s: float = 5.0,
) -> TelemetryDriver:
    """A vehicle's uplink on a test schedule. The PUBACK timeout stays generous
    (a busy 2-core machine can hold a PUBACK for a second) except where a test
    wants the missing PUBACK to be noticed."""
    target = MqttTarget("127.0.0.1", port, keepalive_s=300, connect_timeout_s=2.0)
    config = PublisherConfig(
        buffer_capacity=capacity,
        durable=False,
        delivery=fast_delivery(batch, puback_timeout_s),
    )
    return telemetry_vehicle(IDENTITY, target, buffer_path, config, backoff=FAST_BACKOFF)


def arrived(record_file: str) -> collections.Counter[bytes]:
    """How often each sample id reached the cloud, single and batch topics together."""
    seen: collections.Counter[bytes] = collections.Counter()
    for record in read_records(record_file):
        raw = base64.b64decode(record["payload_b64"])
        if record["rule"] == "telemetry":
            seen[telemetry_pb2.Telemetry.FromString(raw).header.message_id] += 1
        elif record["rule"] == "telemetry_batch":
            seen.update(s.header.message_id for s in decode_envelope(raw).samples)
    return seen


def publishes(status: str) -> float:
    """The simulator exporter's `v2c_telemetry_publish_total{status}` (process-wide)."""
    sample = SIM_METRICS.registry.get_sample_value(
        "v2c_telemetry_publish_total", {"status": status}
    )
    return sample or 0.0


def ids(epoch: int, sequences: range) -> set[bytes]:
    return {telemetry_message_id(VIN, epoch, n) for n in sequences}


@pytest.fixture
def broker(mosquitto_factory: BrokerFactory) -> MosquittoBroker:
    return mosquitto_factory()


@pytest.fixture
def record_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "records.jsonl")
    monkeypatch.setenv("V2C_TEST_RECORD_FILE", path)
    return path


@pytest.fixture
def cloud(broker: MosquittoBroker, record_file: str) -> Iterator[str]:
    endpoint = MqttEndpoint(broker.host, broker.port)
    with running_gateway(endpoint, RECORDING_RULES, client_id="gw-uplink"):
        yield record_file


@pytest.fixture
def proxy(broker: MosquittoBroker) -> Iterator[TcpProxy]:
    with TcpProxy(broker.host, broker.port) as p:
        yield p


def test_500_single_samples_then_10_batches_of_25_all_arrive_with_their_properties(
    broker: MosquittoBroker, cloud: str, tmp_path: Path
) -> None:
    sampler = TelemetrySampler(VIN, seed=7)
    buffer_path = tmp_path / f"{VIN}.db"
    with make_publisher(broker.port, buffer_path) as publisher:
        epoch = publisher.buffer.epoch
        for sample in sampler.samples(500):
            publisher.publish(sample)
        assert publisher.flush(FLUSH_S)
        stats = publisher.stats()
        assert stats.delivered >= 500
        # Topic aliases: all but the first PUBLISH omit the topic, and the
        # broker accepted them (one connection, never dropped).
        assert stats.alias_only_publishes >= 499
        assert stats.connects == 1

    # Same vehicle, same buffer file, batch mode: the sequence continues.
    batches = BatchPolicy(min_samples=25, max_samples=25, interval_s=3600)
    with make_publisher(broker.port, buffer_path, batch=batches) as publisher:
        for sample in sampler.samples(250):
            publisher.publish(sample)
        assert publisher.flush(FLUSH_S)
        assert publisher.buffer.epoch == epoch

    wait_until(lambda: set(arrived(cloud)) >= ids(epoch, range(1, 751)), what="750 samples")
    assert set(arrived(cloud)) == ids(epoch, range(1, 751))
    records = read_records(cloud)
    singles = [r for r in records if r["rule"] == "telemetry"]
    batch_records = [r for r in records if r["rule"] == "telemetry_batch"]
    batch_ids = {
        decode_envelope(base64.b64decode(r["payload_b64"])).batch_id for r in batch_records
    }
    assert len(batch_ids) == 10
    assert all(
        len(decode_envelope(base64.b64decode(r["payload_b64"])).samples) == 25
        for r in batch_records
    )
    single_props = singles[0]["properties"]
    assert single_props["content_type"] == "application/x-protobuf"
    assert ["vehicle_model", "Model-E"] in single_props["user_properties"]
    assert ["firmware_version", "2.4.1"] in single_props["user_properties"]
    assert ["schema_version", "1.0"] in single_props["user_properties"]
    batch_props = batch_records[0]["properties"]
    assert batch_props["content_type"] == "application/x-protobuf+zstd"
    assert ["message_count", "25"] in batch_props["user_properties"]
    assert ["compression", "ZSTD"] in batch_props["user_properties"]


def test_50_samples_published_while_the_link_is_cut_wait_in_the_buffer_and_all_arrive(
    proxy: TcpProxy, cloud: str, tmp_path: Path
) -> None:
    sampler = TelemetrySampler(VIN, seed=8)
    with make_publisher(proxy.port, tmp_path / "v.db") as publisher:
        assert publisher.wait_connected(10)
        epoch = publisher.buffer.epoch
        proxy.cut()
        wait_until(lambda: not publisher.stats().connected, what="the vehicle to notice")
        for sample in sampler.samples(50):
            publisher.publish(sample)
        assert publisher.stats().buffered == 50
        proxy.heal()
        assert publisher.flush(FLUSH_S)
        assert publisher.stats().buffered == 0

    wait_until(lambda: set(arrived(cloud)) >= ids(epoch, range(1, 51)), what="50 samples")
    assert set(arrived(cloud)) == ids(epoch, range(1, 51))


def test_blackholed_link_is_detected_by_missing_pubacks_and_nothing_is_lost(
    proxy: TcpProxy, cloud: str, tmp_path: Path
) -> None:
    # Given a vehicle whose TCP connection stays open but carries nothing (split brain)
    sampler = TelemetrySampler(VIN, seed=9)
    failures, successes = publishes("failure"), publishes("success")
    with make_publisher(proxy.port, tmp_path / "v.db", puback_timeout_s=1.0) as publisher:
        assert publisher.wait_connected(10)
        epoch = publisher.buffer.epoch
        proxy.blackhole()
        # When it publishes 50 samples into the void
        for sample in sampler.samples(50):
            publisher.publish(sample)
        # Then the missing PUBACKs (or heartbeat) make it give up the connection
        wait_until(
            lambda: publisher.stats().delivery.dead_connections >= 1, what="a dead connection"
        )
        assert publisher.stats().buffered == 50
        # And after the partition heals, everything arrives
        proxy.heal()
        assert publisher.flush(FLUSH_S)
        assert publisher.stats().delivery.puback_timeouts >= 1
    # And the exporter counted no failure: every timed-out publish went again and
    # was acknowledged (a failure is a message given up, never a missing PUBACK)
    assert publishes("failure") == failures
    assert publishes("success") >= successes + 50

    wait_until(lambda: set(arrived(cloud)) >= ids(epoch, range(1, 51)), what="50 samples")
    assert set(arrived(cloud)) == ids(epoch, range(1, 51))


def test_1200_samples_while_offline_keep_the_newest_1000_and_count_200_dropped(
    proxy: TcpProxy, cloud: str, tmp_path: Path
) -> None:
    proxy.cut()
    sampler = TelemetrySampler(VIN, seed=10)
    failures = publishes("failure")
    with make_publisher(proxy.port, tmp_path / "v.db") as publisher:
        epoch = publisher.buffer.epoch
        dropped = sum(publisher.publish(sample).dropped for sample in sampler.samples(1200))
        assert publishes("failure") == failures + 200  # given up: failures
        stats = publisher.stats()
        assert (stats.buffered, stats.dropped_total, dropped) == (1000, 200, 200)
        proxy.heal()
        assert publisher.flush(FLUSH_S)
        assert publisher.stats().dropped_total == 200

    newest = ids(epoch, range(201, 1201))
    wait_until(lambda: set(arrived(cloud)) >= newest, what="the newest 1000")
    assert set(arrived(cloud)) == newest


def test_vehicle_restarted_while_offline_loses_nothing_and_continues_its_sequence(
    proxy: TcpProxy, cloud: str, tmp_path: Path
) -> None:
    proxy.cut()
    sampler = TelemetrySampler(VIN, seed=11)
    buffer_path = tmp_path / "v.db"
    first = make_publisher(proxy.port, buffer_path).start()
    epoch = first.buffer.epoch
    for sample in sampler.samples(300):
        first.publish(sample)
    first.close()  # the process ends while offline

    with make_publisher(proxy.port, buffer_path) as second:
        assert second.stats().buffered == 300
        proxy.heal()
        published = [second.publish(sample) for sample in sampler.samples(10)]
        assert [(p.epoch, p.sequence) for p in published] == [(epoch, n) for n in range(301, 311)]
        assert second.flush(FLUSH_S)

    wait_until(lambda: set(arrived(cloud)) >= ids(epoch, range(1, 311)), what="310 samples")
    assert set(arrived(cloud)) == ids(epoch, range(1, 311))


def test_batches_above_the_brokers_maximum_packet_size_are_split_before_sending(
    mosquitto_factory: BrokerFactory, record_file: str, tmp_path: Path
) -> None:
    # A 50-sample envelope is ~1.4 kB, 25 samples ~0.9 kB: a 1,200-byte broker
    # limit (announced in CONNACK) forces every batch of 50 into halves.
    broker = mosquitto_factory(max_packet_size=1200)
    endpoint = MqttEndpoint(broker.host, broker.port)
    batches = BatchPolicy(min_samples=50, max_samples=50, interval_s=3600)
    sampler = TelemetrySampler(VIN, seed=12)
    with (
        running_gateway(endpoint, RECORDING_RULES, client_id="gw-split"),
        make_publisher(broker.port, tmp_path / "v.db", batch=batches) as publisher,
    ):
        epoch = publisher.buffer.epoch
        for sample in sampler.samples(100):
            publisher.publish(sample)
        assert publisher.flush(FLUSH_S)
        assert publisher.stats().connects == 1  # never disconnected for an oversized packet
        # Wait while the gateway runs: a PUBACK means the broker has the
        # batch, not that the gateway handled it (stopping it first raced).
        wait_until(lambda: set(arrived(record_file)) >= ids(epoch, range(1, 101)), what="100")

    envelopes = [
        base64.b64decode(r["payload_b64"])
        for r in read_records(record_file)
        if r["rule"] == "telemetry_batch"
    ]
    assert len(envelopes) >= 4
    assert all(len(envelope) < 1200 for envelope in envelopes)
    assert set(arrived(record_file)) == ids(epoch, range(1, 101))


def test_samples_acknowledged_with_no_matching_subscribers_are_resent_once_the_cloud_listens(
    broker: MosquittoBroker, record_file: str, tmp_path: Path
) -> None:
    # Given no gateway subscribed (a broker restart drops shared subscriptions)
    sampler = TelemetrySampler(VIN, seed=13)
    with make_publisher(broker.port, tmp_path / "v.db") as publisher:
        epoch = publisher.buffer.epoch
        for sample in sampler.samples(20):
            publisher.publish(sample)
        # Then PUBACK 0x10 keeps them in the buffer instead of losing them
        wait_until(lambda: publisher.stats().delivery.held >= 20, what="0x10 PUBACKs")
        assert publisher.stats().buffered == 20
        # And when the gateway subscribes, they arrive
        endpoint = MqttEndpoint(broker.host, broker.port)
        with running_gateway(endpoint, RECORDING_RULES, client_id="gw-late"):
            assert publisher.flush(FLUSH_S)
            wait_until(lambda: set(arrived(record_file)) >= ids(epoch, range(1, 21)), what="20")
    assert set(arrived(record_file)) == ids(epoch, range(1, 21))
