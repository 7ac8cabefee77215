"""`v2c bench campaign`: what a campaign costs, beside what its parts cost raw.

Measured in one run against a private moto server and a private mosquitto:

* creation time for each fleet size (registry query, plan, one signature,
  plan chunks to S3, one campaign item), the registry seeding time apart;
* notification fan-out: QoS-2 `OTAUpdateAvailable` publishes per second out
  of `CampaignService.advance` (one transaction and one publish per
  vehicle), counted by a subscriber on the broker, beside a raw QoS-2
  publish loop through the same broker (the pass-through baseline);
* status ingest: progress reports and terminal reports per second through
  `StatusService` (read, state machine, one transaction with the counters;
  a terminal report also runs the campaign's reaction), beside raw
  sequential PutItems on the same moto (the store baseline).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.gateway.ota_sink import MqttNotificationSink
from v2c.gateway.publisher import OutboundPublisher
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
from v2c.handlers.signing.software import SoftwareSigner
from v2c.infra.aws.resources import ensure_resources
from v2c.infra.bench.common import (
    BenchError,
    JsonDict,
    bench_broker,
    fmt,
    make_report,
    per_second,
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


def _raw_qos2(endpoint: MqttEndpoint, subscriber: _Subscriber, n: int) -> JsonDict:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    before = subscriber.received
    start = time.perf_counter()
    for i in range(n):
        info = client.publish(f"v2c/v1/us-east-1/{vin(i)}/ota/available", b"x" * 300, qos=2)
        info.wait_for_publish(10)
    done = subscriber.wait_for(before + n)
    client.loop_stop()
    client.disconnect()
    return {
        "messages": n,
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
            baseline_store = _raw_puts(ddb, names.rollbacks_table, params.baseline_messages)
            payload = b"bench-firmware" * 1000
            firmware_id = hashlib.sha256(f"bench:2.0.0:{MODEL}".encode()).hexdigest()[:32]
            s3.put_object(Bucket=names.firmware_bucket, Key=f"firmware/{firmware_id}", Body=payload)
            ddb.put_item(
                TableName=names.firmware_table,
                Item={
                    "firmware_id": {"S": firmware_id},
                    "name": {"S": "bench"},
                    "version": {"S": "2.0.0"},
                    "device_model": {"S": MODEL},
                    "size_bytes": {"N": str(len(payload))},
                    "sha256": {"S": hashlib.sha256(payload).hexdigest()},
                    "status": {"S": "available"},
                    "s3_key": {"S": f"firmware/{firmware_id}"},
                },
            )
            packages = FirmwareCatalog(ddb, s3, names.firmware_table, names.firmware_bucket)
            deps = CampaignServiceDeps(
                campaigns=CampaignRepository(ddb, names.campaigns_table),
                updates=UpdateRepository(ddb, names.vehicle_updates_table),
                plans=PlanStore(s3, names.firmware_bucket),
                fleet=FleetRegistry(ddb, names.vehicle_registry_table),
                packages=packages,
                signer=SoftwareSigner.generate(key_id="bench"),
                notifier=Notifier(MqttNotificationSink(publisher), packages),
                events=_Events(),
                alerts=PrometheusAlerts(),
                rollbacks=RollbackLog(ddb, names.rollbacks_table),
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
            began = time.perf_counter()
            for vehicle in vehicles:
                for sequence, state in enumerate(PROGRESS, start=1):
                    status.apply(
                        OTAStatus(
                            vehicle_id=vehicle, update_id=release, state=state, sequence=sequence
                        )
                    )
            progress_s = time.perf_counter() - began
            before = subscriber.received
            began = time.perf_counter()
            for vehicle in vehicles:
                status.apply(
                    OTAStatus(
                        vehicle_id=vehicle,
                        update_id=release,
                        state=OTAStatus.COMPLETED,
                        sequence=len(PROGRESS) + 1,
                        installed_version="2.0.0",
                    )
                )
            terminal_s = time.perf_counter() - began
            refilled = subscriber.received - before
            final = service.get(first_campaign)
            if final.counters.completed != len(vehicles):
                raise BenchError(f"counted {final.counters.completed} completed of {len(vehicles)}")
            baseline_transact = _raw_transacts(
                ddb, names, first_campaign, min(params.baseline_messages, len(vehicles) * 2)
            )
            ingest = {
                "progress_reports": len(vehicles) * len(PROGRESS),
                "progress_reports_per_s": per_second(len(vehicles) * len(PROGRESS), progress_s),
                "terminal_reports": len(vehicles),
                "terminal_reports_per_s": per_second(len(vehicles), terminal_s),
                "refill_notifications_during_terminal": refilled,
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
        "baseline_moto_put_item": baseline_store,
        "baseline_moto_transaction": baseline_transact,
    }
    ratios = {
        "fanout_vs_raw_qos2": ratio(fanout["publishes_per_s"], baseline_broker["msg_per_s"]),
        "progress_ingest_vs_raw_put": ratio(
            ingest["progress_reports_per_s"], baseline_store["writes_per_s"]
        ),
        "terminal_ingest_vs_raw_put": ratio(
            ingest["terminal_reports_per_s"], baseline_store["writes_per_s"]
        ),
        "progress_ingest_vs_raw_transaction": ratio(
            ingest["progress_reports_per_s"], baseline_transact["transactions_per_s"]
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
        ("fan-out / raw", fmt(q["fanout_vs_raw_qos2"], "", 2)),
        ("progress reports/s", fmt(r["status_ingest"]["progress_reports_per_s"])),
        ("terminal reports/s", fmt(r["status_ingest"]["terminal_reports_per_s"])),
        ("raw moto PutItem/s", fmt(r["baseline_moto_put_item"]["writes_per_s"])),
        ("raw moto transaction/s", fmt(r["baseline_moto_transaction"]["transactions_per_s"])),
        ("progress ingest / raw put", fmt(q["progress_ingest_vs_raw_put"], "", 2)),
        ("progress ingest / raw transaction", fmt(q["progress_ingest_vs_raw_transaction"], "", 2)),
    ]
    return rows
