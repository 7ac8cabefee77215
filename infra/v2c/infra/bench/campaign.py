"""`v2c bench campaign`: what a campaign costs, beside what its parts cost raw.

Measured in one run against a private moto server and a private mosquitto:

* creation time for each fleet size (registry query, plan, one signature,
  plan chunks to S3, one campaign item), the registry seeding time apart;
* notification fan-out: QoS-2 `OTAUpdateAvailable` publishes per second out
  of `CampaignService.advance`, in chunks of `CampaignConfig.notify_chunk`
  (99) targets: one `TransactWriteItems` per chunk (the campaign's cursor and
  counters plus the chunk's records), then the chunk's publishes pipelined
  through `OutboundPublisher.publish_many` (a window of QoS-2 flows in
  flight), counted by a subscriber on the broker, beside a raw QoS-2
  publish loop through the same broker (the pass-through baseline: one
  publisher waiting for each PUBCOMP, the path dispatch took before chunks;
  the same loop with the publisher's window in flight is reported beside it,
  the ceiling of the pipelined path);
* status ingest: every notified vehicle's progress reports, then its
  terminal report, through `StatusService`: half the vehicles one report per
  call (`apply`: one read and one transaction per report, the path before
  issue 13), the other half in batches of 100 (`apply_batch`, what a queue
  batch hands the handler: one BatchGetItem, transactions of up to 100
  records with one summed counter update per campaign, one campaign
  reaction per batch); terminal reports also refill the concurrency window.
  Beside raw sequential PutItems and raw BatchWriteItem(25) items on the
  same moto (the store's ceilings; the BatchWriteItem rounds run for at
  least `RAW_BATCH_MIN_S`, so that one figure is not a fraction of a second).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.gateway.ota_sink import MqttNotificationSink
from v2c.gateway.publisher import DEFAULT_WINDOW, OutboundPublisher
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.plan_store import PlanStore
from v2c.handlers.ota.campaigns.repository import CampaignRepository
from v2c.handlers.ota.campaigns.rollback_log import RollbackLog
from v2c.handlers.ota.campaigns.service import CampaignService
from v2c.handlers.ota.firmware_catalog import FirmwareCatalog
from v2c.handlers.ota.fleet import FleetRegistry, Vehicle
from v2c.handlers.ota.metrics import PrometheusAlerts
from v2c.handlers.ota.notifier import Notifier
from v2c.handlers.ota.status import StatusService
from v2c.handlers.ota.stores import FleetDirectory
from v2c.handlers.ota.updates.repository import UpdateRepository
from v2c.handlers.ota.vehicle_commands import VehicleCommands
from v2c.handlers.signing.software import SoftwareSigner
from v2c.infra.aws.resources import ensure_resources
from v2c.infra.bench.common import (
    BenchError,
    JsonDict,
    bench_broker,
    fmt,
    make_report,
    per_second,
    put_bench_package,
    ratio,
)
from v2c.infra.local.moto_server import MotoServer
from v2c.infra.names import ResourceNames
from v2c.infra.settings import AwsSettings
from v2c.v1.ota_pb2 import OTAStatus

MODEL: Final = "BenchModel"
REGIONS: Final = ("us-east-1", "eu-west-1", "ap-southeast-2")
PROGRESS: Final = (
    OTAStatus.ACCEPTED,
    OTAStatus.DOWNLOADING,
    OTAStatus.DOWNLOADED,
    OTAStatus.INSTALLING,
    OTAStatus.REBOOTING,
    OTAStatus.VERIFYING,
)


@dataclass(frozen=True)
class CampaignBenchParams:
    fleet_sizes: tuple[int, ...] = (5_000, 100_000)
    fanout: int = 200  # notifications measured (at most max_concurrent_updates)
    baseline_messages: int = 2_000

    def __post_init__(self) -> None:
        if not self.fleet_sizes or min(self.fleet_sizes) < 1:
            raise ValueError("fleet sizes must be positive")
        if not 1 <= self.fanout <= min(1_000, min(self.fleet_sizes)):
            raise ValueError("fanout must be 1..1000 and at most the smallest fleet")


def vin(number: int) -> str:
    return f"VIN-BNCH{number:013d}"


@dataclass
class _Events:
    count: int = 0

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        self.count += 1


@dataclass
class _Subscriber:
    """Counts what the broker delivers on the notification topics."""

    endpoint: MqttEndpoint
    received: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, topic: str) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=mqtt.MQTTv5
        )
        ready = threading.Event()

        def on_message(c: Any, u: Any, m: Any) -> None:
            with self.lock:
                self.received += 1

        client.on_message = on_message
        client.on_subscribe = lambda *a: ready.set()
        client.connect(self.endpoint.host, self.endpoint.port)
        client.subscribe(topic, qos=2)
        client.loop_start()
        if not ready.wait(10):
            raise BenchError("the bench subscriber was not subscribed")
        return client

    def wait_for(self, count: int, timeout_s: float = 120.0) -> float:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            with self.lock:
                if self.received >= count:
                    return time.perf_counter()
            time.sleep(0.005)
        raise BenchError(f"only {self.received} of {count} notifications arrived")


def _raw_qos2(endpoint: MqttEndpoint, subscriber: _Subscriber, n: int, window: int = 1) -> JsonDict:
    """`n` bare QoS-2 publishes through the broker to the subscriber, with up
    to `window` flows in flight (1: each PUBCOMP awaited before the next)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(window)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    before = subscriber.received
    start = time.perf_counter()
    in_flight: deque[mqtt.MQTTMessageInfo] = deque()
    for i in range(n):
        info = client.publish(f"v2c/v1/us-east-1/{vin(i)}/ota/available", b"x" * 300, qos=2)
        in_flight.append(info)
        if len(in_flight) >= window:
            in_flight.popleft().wait_for_publish(10)
    while in_flight:
        in_flight.popleft().wait_for_publish(10)
    done = subscriber.wait_for(before + n)
    client.loop_stop()
    client.disconnect()
    return {
        "messages": n,
        "window": window,
        "seconds": round(done - start, 3),
        "msg_per_s": per_second(n, done - start),
    }


def _raw_puts(ddb: Any, table: str, n: int) -> JsonDict:
    start = time.perf_counter()
    for i in range(n):
        ddb.put_item(
            TableName=table,
            Item={"vehicle_id": {"S": vin(i)}, "rollback_id": {"S": "raw"}, "state": {"S": "x"}},
        )
    took = time.perf_counter() - start
    return {"writes": n, "seconds": round(took, 3), "writes_per_s": per_second(n, took)}


def _raw_transacts(ddb: Any, names: ResourceNames, campaign_id: str, n: int) -> JsonDict:
    """The transaction a status report makes (record + campaign counters),
    raw, at the tables' current size: moto deep-copies every table a
    transaction touches (its rollback), so its cost grows with the table."""
    start = time.perf_counter()
    for i in range(n):
        ddb.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": names.vehicle_updates_table,
                        "Item": {"vehicle_id": {"S": vin(i)}, "update_id": {"S": "raw"}},
                    }
                },
                {
                    "Update": {
                        "TableName": names.campaigns_table,
                        "Key": {"campaign_id": {"S": campaign_id}},
                        "UpdateExpression": "ADD raw_counter :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )
    took = time.perf_counter() - start
    return {"transactions": n, "seconds": round(took, 3), "transactions_per_s": per_second(n, took)}


INGEST_BATCH: Final = 100  # records per call, as the gateway and the event source mapping hand them


def _ingest(
    status: StatusService, vehicles: list[str], release: str, *, batch: int | None
) -> JsonDict:
    """Every vehicle's progress reports, then its terminal report, through the
    status service: one report per call (`batch=None`, the path before issue
    13) or `batch` reports per `apply_batch` call (what a queue batch gives)."""
    progress = [
        OTAStatus(vehicle_id=v, update_id=release, state=state, sequence=sequence)
        for v in vehicles
        for sequence, state in enumerate(PROGRESS, start=1)
    ]
    terminal = [
        OTAStatus(
            vehicle_id=v,
            update_id=release,
            state=OTAStatus.COMPLETED,
            sequence=len(PROGRESS) + 1,
            installed_version="2.0.0",
        )
        for v in vehicles
    ]
    began = time.perf_counter()
    for reports in (progress, terminal):
        if batch is None:
            for report in reports:
                status.apply(report)
            continue
        for start in range(0, len(reports), batch):
            for result in status.apply_batch(reports[start : start + batch]):
                if isinstance(result, Exception):
                    raise BenchError(f"a batched status report failed: {result}")
    took = time.perf_counter() - began
    count = len(progress) + len(terminal)
    return {
        "vehicles": len(vehicles),
        "reports": count,
        "seconds": round(took, 3),
        "reports_per_s": per_second(count, took),
    }


# The raw BatchWriteItem baseline runs at least this long: 2,000 items took
# 0.25-0.7 s and swung 2.7x between runs (issue 13, second pass).
RAW_BATCH_MIN_S: Final = 3.0


def _raw_batch_writes(ddb: Any, table: str, n: int, min_s: float = RAW_BATCH_MIN_S) -> JsonDict:
    """Raw BatchWriteItem of 25 items (DynamoDB's maximum): the store's
    ceiling for a batch-shaped path on this moto. The same `n` items are
    written again, round after round, until `min_s` has passed."""
    start = time.perf_counter()
    rounds = 0
    while not rounds or time.perf_counter() - start < min_s:
        rounds += 1
        for first in range(0, n, 25):
            items: Any = [
                {
                    "PutRequest": {
                        "Item": {
                            "vehicle_id": {"S": vin(i)},
                            "rollback_id": {"S": "raw-batch"},
                            "state": {"S": f"x{rounds}"},
                        }
                    }
                }
                for i in range(first, min(n, first + 25))
            ]
            pending: Any = {table: items}
            while pending:
                pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or None
    took = time.perf_counter() - start
    written = n * rounds  # every round after the first overwrites the same items
    return {
        "items": n,
        "rounds": rounds,
        "writes": written,
        "seconds": round(took, 3),
        "items_per_s": per_second(written, took),
    }


def _seed(fleet: FleetDirectory, start: int, n: int) -> float:
    vehicles = (
        Vehicle(vin(start + i), MODEL, REGIONS[i % 3], 2024, "Bench", "hw", "1.0.0")
        for i in range(n)
    )
    began = time.perf_counter()
    fleet.put(vehicles)
    return time.perf_counter() - began


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    began = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - began


def run_campaign_bench(params: CampaignBenchParams) -> JsonDict:
    started = time.time()
    names = ResourceNames()
    with MotoServer() as moto, bench_broker() as broker:
        aws = AwsSettings(endpoint_url=moto.endpoint_url)
        ensure_resources(aws, names)
        ddb, s3 = aws.client("dynamodb"), aws.client("s3")
        endpoint = MqttEndpoint("127.0.0.1", broker.port)
        subscriber = _Subscriber(endpoint)
        sub_client = subscriber.start("v2c/v1/+/+/ota/available")
        publisher = OutboundPublisher(endpoint, "bench-ota", None)
        publisher.start()
        try:
            baseline_broker = _raw_qos2(endpoint, subscriber, params.baseline_messages)
            baseline_windowed = _raw_qos2(
                endpoint, subscriber, params.baseline_messages, DEFAULT_WINDOW
            )
            baseline_store = _raw_puts(ddb, names.rollbacks_table, params.baseline_messages)
            firmware_id = put_bench_package(
                ddb, s3, names, name="bench", model=MODEL, payload=b"bench-firmware" * 1000
            )
            packages = FirmwareCatalog(ddb, s3, names.firmware_table, names.firmware_bucket)
            signer = SoftwareSigner.generate(key_id="bench")
            deps = CampaignServiceDeps(
                campaigns=CampaignRepository(ddb, names.campaigns_table),
                updates=UpdateRepository(ddb, names.vehicle_updates_table),
                plans=PlanStore(s3, names.firmware_bucket),
                fleet=FleetRegistry(ddb, names.vehicle_registry_table),
                packages=packages,
                signer=signer,
                notifier=Notifier(MqttNotificationSink(publisher), packages),
                events=_Events(),
                alerts=PrometheusAlerts(),
                rollbacks=RollbackLog(ddb, names.rollbacks_table),
                commands=VehicleCommands(MqttNotificationSink(publisher), signer),
            )
            service = CampaignService(deps)
            creation: list[JsonDict] = []
            seeded = 0
            first_campaign = ""
            for size in sorted(params.fleet_sizes):
                seed_s = _seed(deps.fleet, seeded, size - seeded)
                seeded = size
                spec = {
                    "name": f"bench {size}",
                    "firmware_id": firmware_id,
                    "target_filter": f"model = '{MODEL}'",
                    "deployment_strategy": "immediate",
                    "batch_size": 500,
                    "max_concurrent_updates": params.fanout,
                }
                report, took = _timed(lambda spec=spec: service.create(spec))  # type: ignore[misc]
                campaign = report.campaign
                if campaign.target_count != size:
                    raise BenchError(f"campaign targets {campaign.target_count}, expected {size}")
                first_campaign = first_campaign or campaign.campaign_id
                creation.append(
                    {
                        "targets": size,
                        "seconds": round(took, 3),
                        "registry_seed_seconds": round(seed_s, 3),
                        "plan_chunks": -(-size // 1000),
                    }
                )
            before = subscriber.received
            began = time.perf_counter()
            service.start(first_campaign)
            published = time.perf_counter()
            arrived = subscriber.wait_for(before + params.fanout)
            fanout = {
                "notifications": params.fanout,
                "dispatch_seconds": round(published - began, 3),
                "publishes_per_s": per_second(params.fanout, published - began),
                "delivered_per_s": per_second(params.fanout, arrived - began),
            }
            status = StatusService(deps, service)
            campaign = service.get(first_campaign)
            vehicles = [u.vehicle_id for u in deps.updates.for_campaign(first_campaign)][
                : params.fanout
            ]
            release = campaign.release.update_id
            half = len(vehicles) // 2
            single = _ingest(status, vehicles[:half], release, batch=None)
            batched = _ingest(status, vehicles[half:], release, batch=INGEST_BATCH)
            final = service.get(first_campaign)
            if final.counters.completed != len(vehicles):
                raise BenchError(f"counted {final.counters.completed} completed of {len(vehicles)}")
            baseline_transact = _raw_transacts(
                ddb, names, first_campaign, min(params.baseline_messages, len(vehicles) * 2)
            )
            baseline_batch = _raw_batch_writes(ddb, names.rollbacks_table, params.baseline_messages)
            ingest: JsonDict = {
                "one_at_a_time": single,
                "batched": batched,
                "batch_size": INGEST_BATCH,
                "counters_exact": final.counters.total == final.target_count,
            }
        finally:
            publisher.stop()
            sub_client.loop_stop()
            sub_client.disconnect()
    results = {
        "creation": creation,
        "fanout": fanout,
        "status_ingest": ingest,
        "baseline_broker_qos2": baseline_broker,
        "baseline_broker_qos2_windowed": baseline_windowed,
        "baseline_moto_put_item": baseline_store,
        "baseline_moto_transaction": baseline_transact,
        "baseline_moto_batch_write_25": baseline_batch,
    }
    ratios = {
        "fanout_vs_raw_qos2": ratio(fanout["publishes_per_s"], baseline_broker["msg_per_s"]),
        "fanout_vs_raw_qos2_windowed": ratio(
            fanout["publishes_per_s"], baseline_windowed["msg_per_s"]
        ),
        "batched_reports_vs_raw_batch_write_items": ratio(
            ingest["batched"]["reports_per_s"], baseline_batch["items_per_s"]
        ),
        "one_at_a_time_reports_vs_raw_batch_write_items": ratio(
            ingest["one_at_a_time"]["reports_per_s"], baseline_batch["items_per_s"]
        ),
        "batched_vs_one_at_a_time": ratio(
            ingest["batched"]["reports_per_s"], ingest["one_at_a_time"]["reports_per_s"]
        ),
        "fanout_vs_raw_transaction": ratio(
            fanout["publishes_per_s"], baseline_transact["transactions_per_s"]
        ),
    }
    return make_report(
        "campaign",
        {
            "fleet_sizes": list(params.fleet_sizes),
            "fanout": params.fanout,
            "baseline_messages": params.baseline_messages,
            "notify_chunk": deps.config.notify_chunk,
            "publish_window": DEFAULT_WINDOW,
        },
        results,
        ratios,
        started_at=started,
    )


def table_rows(report: JsonDict) -> list[tuple[str, str]]:
    r, q = report["results"], report["ratios"]
    rows = [
        (f"create, {c['targets']:,} targets", fmt(c["seconds"], " s", 2)) for c in r["creation"]
    ]
    rows += [
        ("fan-out (QoS 2 publishes/s)", fmt(r["fanout"]["publishes_per_s"])),
        ("raw QoS 2 pass-through (msg/s)", fmt(r["baseline_broker_qos2"]["msg_per_s"])),
        (
            "raw QoS 2, 100 in flight (msg/s)",
            fmt(r["baseline_broker_qos2_windowed"]["msg_per_s"]),
        ),
        ("fan-out / raw", fmt(q["fanout_vs_raw_qos2"], "", 2)),
        ("fan-out / raw, 100 in flight", fmt(q["fanout_vs_raw_qos2_windowed"], "", 2)),
        (
            "status reports/s, one at a time",
            fmt(r["status_ingest"]["one_at_a_time"]["reports_per_s"]),
        ),
        ("status reports/s, batches of 100", fmt(r["status_ingest"]["batched"]["reports_per_s"])),
        (
            "raw moto BatchWriteItem(25) items/s",
            fmt(r["baseline_moto_batch_write_25"]["items_per_s"]),
        ),
        ("raw moto transaction/s", fmt(r["baseline_moto_transaction"]["transactions_per_s"])),
        (
            "batched reports / raw batch items",
            fmt(q["batched_reports_vs_raw_batch_write_items"], "", 2),
        ),
        ("batched / one at a time", fmt(q["batched_vs_one_at_a_time"], "", 2)),
    ]
    return rows
