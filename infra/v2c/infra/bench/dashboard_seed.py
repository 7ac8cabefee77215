"""What `v2c bench dashboard` stands on: the production services over a private
moto, and a running campaign whose records got there as production writes them.

The services are built as the Lambda functions build theirs (`ota.config.
build_services` from the handlers' environment, `api.config.dashboard_reads`
beside them), with a software signer and a sink that only counts
notifications (no broker: the dashboard reads what the fan-out recorded, not
what it published). One boto3 session carries every client, so a hook on it
counts each AWS request and the records each DynamoDB read went through
(`AwsCalls`): what a dashboard call costs, whatever moto's speed.

A campaign is seeded the way a rollout leaves it: registry and fleet index
(`FleetRegistry.put`), `CampaignService.create` then `start` (the fan-out
writes each record in its chunk transaction, up to the concurrency window),
then vehicles' reports through `StatusService.apply_batch` in batches of
100, as a queue batch hands them: terminal reports (completed with the new
version, or failed with a reason) refill the window through the campaign's
own reaction, until only the last window's vehicles are in flight, left
notified, downloading or installing.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import boto3

from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.config import OtaConfig, OtaServices, build_services
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.fleet import Vehicle
from v2c.handlers.ota.notifier import SinkMessage
from v2c.handlers.signing.software import SoftwareSigner
from v2c.infra.bench.common import BenchError, JsonDict, put_bench_package
from v2c.infra.bench.creation import REGIONS, VIN_ALPHABET
from v2c.infra.local.wiring import handler_environment
from v2c.infra.names import ResourceNames
from v2c.infra.settings import AwsSettings, StackSettings
from v2c.v1.ota_pb2 import OTAStatus

INGEST_BATCH: Final = 100  # reports per `apply_batch`, as a queue batch hands them
MAX_CONCURRENT: Final = 1_000  # the campaign's window (BR-OTA-016's maximum)
FAILED_EVERY: Final = 30  # one vehicle in 30 of those that end fails (3.3 %)
FAILURE_REASONS: Final = (
    OTAStatus.INSUFFICIENT_STORAGE,
    OTAStatus.CHECKSUM_MISMATCH,
    OTAStatus.DOWNLOAD_TIMEOUT,
    OTAStatus.FLASH_WRITE_FAILURE,
)
IN_FLIGHT_STATES: Final = (None, OTAStatus.DOWNLOADING, OTAStatus.INSTALLING)  # None: notified
PACKAGE: Final = b"bench-dashboard" * 4096
NEW_VERSION: Final = "2.0.0"  # `put_bench_package`'s version


def vin(model: str, number: int) -> str:
    """A VIN as random-looking as real ones, distinct per model."""
    digest = hashlib.sha256(f"bench-dashboard:{model}:{number}".encode()).digest()
    return "VIN-" + "".join(VIN_ALPHABET[b % len(VIN_ALPHABET)] for b in digest[:17])


class AwsCalls:
    """Every AWS request the services' clients make, by `service.Operation`,
    and the records DynamoDB reads went through (`ScannedCount`, else
    `Count`, else the items of a BatchGetItem answer): thread-safe, because
    the API answers on a pool of threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.records = 0

    def hook(self, session: boto3.Session) -> None:
        session.events.register("after-call", self._after_call)

    def _after_call(self, *, model: Any, parsed: Mapping[str, Any], **_: Any) -> None:
        name = f"{model.service_model.service_name}.{model.name}"
        read = parsed.get("ScannedCount", parsed.get("Count"))
        if read is None and model.name == "BatchGetItem":
            read = sum(len(items) for items in (parsed.get("Responses") or {}).values())
        with self._lock:
            self.requests[name] += 1
            self.records += int(read or 0)

    def snapshot(self) -> tuple[Counter[str], int]:
        with self._lock:
            return Counter(self.requests), self.records


@dataclass
class CountingSink:
    """The notification sink of a fan-out without a broker: every message
    delivered, its vehicle kept in order (the topic's fourth level)."""

    vehicles: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send(
        self, topic: str, payload: bytes, *, correlation_id: str, context: dict[str, Any]
    ) -> bool:
        with self._lock:
            self.vehicles.append(topic.split("/")[3])
        return True

    def send_many(self, messages: Sequence[SinkMessage]) -> list[bool]:
        return [
            self.send(m.topic, m.payload, correlation_id=m.correlation_id, context=m.context)
            for m in messages
        ]


@contextmanager
def handler_env(aws: AwsSettings, names: ResourceNames) -> Iterator[dict[str, str]]:
    """The Lambda functions' environment for this moto, for the run only:
    handlers configure themselves (and boto3 its endpoint) from it."""
    env = handler_environment(StackSettings(aws=aws, resources=names))
    before = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class BenchServices:
    ota: OtaServices
    calls: AwsCalls
    sink: CountingSink
    session: boto3.Session


def ota_services(aws: AwsSettings, env: Mapping[str, str]) -> BenchServices:
    session = boto3.Session(**aws.boto3_session_kwargs())
    calls = AwsCalls()
    calls.hook(session)  # before any client: clients copy the session's hooks
    sink = CountingSink()
    services = build_services(
        OtaConfig.from_env(env),
        session,
        sink=sink,
        signer=SoftwareSigner.generate(key_id="bench-dashboard"),
    )
    return BenchServices(services, calls, sink, session)


@dataclass
class SeededCampaign:
    campaign_id: str
    model: str
    targets: int
    completed: int
    failed: int
    in_flight: int
    failures_by_reason: dict[str, int]
    seconds: dict[str, float]

    def to_json(self) -> JsonDict:
        return {
            "campaign_id": self.campaign_id,
            "model": self.model,
            "targets": self.targets,
            "completed": self.completed,
            "failed": self.failed,
            "in_flight": self.in_flight,
            "failures_by_reason": dict(self.failures_by_reason),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def seed_campaign(
    bench: BenchServices,
    aws: AwsSettings,
    names: ResourceNames,
    *,
    model: str,
    vehicles: int,
    planned_timeout_s: float = 300.0,
) -> SeededCampaign:
    """`vehicles` of `model` registered, and a running campaign over them
    with one record each: all but the last window's ended (see the module
    docstring), checked against the campaign's counters."""
    services = bench.ota
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    services.deps.fleet.put(
        Vehicle(vin(model, i), model, REGIONS[i % 3], 2019 + i % 7, "Bench", "hw-1", "1.0.0")
        for i in range(vehicles)
    )
    seconds["registry_and_index"] = time.perf_counter() - began
    firmware_id = put_bench_package(
        aws.client("dynamodb"), aws.client("s3"), names, name="bench-dash", model=model,
        payload=PACKAGE,
    )  # fmt: skip
    began = time.perf_counter()
    first = len(bench.sink.vehicles)  # the sink's list goes on from the last campaign's
    campaign = _create(services, model, firmware_id, planned_timeout_s)
    seconds["create_and_plan"] = time.perf_counter() - began
    began = time.perf_counter()
    in_flight = min(MAX_CONCURRENT, max(1, vehicles // 10))
    ended = _run(services, bench.sink.vehicles, first, campaign, vehicles, in_flight)
    seconds["fanout_and_reports"] = time.perf_counter() - began
    failed = sum(ended.values()) - ended["COMPLETED"]
    seeded = SeededCampaign(
        campaign.campaign_id,
        model,
        vehicles,
        ended["COMPLETED"],
        failed,
        in_flight,
        {k: v for k, v in ended.items() if k != "COMPLETED"},
        seconds,
    )
    _check(services.campaigns.get(campaign.campaign_id), seeded)
    return seeded


def _create(
    services: OtaServices, model: str, firmware_id: str, planned_timeout_s: float
) -> Campaign:
    spec = {
        "name": f"bench dashboard {model}",
        "firmware_id": firmware_id,
        "target_filter": f"model = '{model}'",
        "deployment_strategy": "immediate",
        "batch_size": 500,
        "max_concurrent_updates": MAX_CONCURRENT,
        # A healthy rollout's 3.3 % failures on small samples must not pause it.
        "pause_threshold_percent": 25.0,
        "failure_threshold_percent": 50,
    }
    report = services.campaigns.create(spec, created_by="bench-dashboard")
    campaign_id = report.campaign.campaign_id
    deadline = time.monotonic() + planned_timeout_s
    campaign = report.campaign
    while campaign.status is CampaignStatus.PLANNING:
        if time.monotonic() > deadline:
            raise BenchError(f"campaign {campaign_id} not planned after {planned_timeout_s:g} s")
        time.sleep(0.05)
        campaign = services.campaigns.get(campaign_id)
    if campaign.status is not CampaignStatus.CREATED:
        raise BenchError(f"campaign {campaign_id} is {campaign.status.value}, expected created")
    return services.campaigns.start(campaign_id)


def _terminal(vehicle_id: str, update_id: str, position: int) -> OTAStatus:
    """The report of the `position`-th vehicle notified that ends: one in
    `FAILED_EVERY` fails (its reason in turn), the others complete."""
    if position % FAILED_EVERY == FAILED_EVERY // 4:
        reason = FAILURE_REASONS[(position // FAILED_EVERY) % len(FAILURE_REASONS)]
        return OTAStatus(
            vehicle_id=vehicle_id, update_id=update_id, state=OTAStatus.FAILED, reason=reason,
            sequence=1, bytes_downloaded=len(PACKAGE) // 2,
        )  # fmt: skip
    return OTAStatus(
        vehicle_id=vehicle_id, update_id=update_id, state=OTAStatus.COMPLETED, sequence=1,
        installed_version=NEW_VERSION, bytes_downloaded=len(PACKAGE),
        total_duration_ms=540_000 + (position % 13) * 10_000,
    )  # fmt: skip


def _apply(services: OtaServices, reports: list[OTAStatus]) -> None:
    for result in services.status.apply_batch(reports):
        if isinstance(result, Exception):
            raise BenchError(f"a status report failed: {result}")


def _run(
    services: OtaServices,
    sent: list[str],
    first: int,
    campaign: Campaign,
    vehicles: int,
    in_flight: int,
) -> Counter[str]:
    """Reports until all are notified and `in_flight` remain: ended per outcome
    (COMPLETED, or the failure's reason name). `sent[first:]`: the vehicles
    this campaign notified, in order (the sink's list grows as it notifies)."""

    def notified() -> list[str]:
        return sent[first:]

    update_id = campaign.release.update_id
    campaign_id = campaign.campaign_id
    quota = vehicles - in_flight
    taken = 0  # vehicles of `sink.vehicles` given a report so far
    ended: Counter[str] = Counter()
    while taken < quota:
        if taken >= len(notified()):
            services.campaigns.advance(campaign_id)  # the reaction refills; this is a net
            if taken >= len(notified()):
                raise BenchError(f"{taken} of {vehicles} notified and the window is empty")
        batch = notified()[taken : min(quota, taken + INGEST_BATCH)]
        reports = [_terminal(v, update_id, taken + i) for i, v in enumerate(batch)]
        _apply(services, reports)
        for report in reports:
            outcome = "COMPLETED" if report.state == OTAStatus.COMPLETED else None
            ended[outcome or OTAStatus.Reason.Name(report.reason)] += 1
        taken += len(batch)
    if len(notified()) < vehicles:
        services.campaigns.advance(campaign_id)
    if len(notified()) != vehicles:
        raise BenchError(f"{len(notified())} of {vehicles} vehicles notified, expected all")
    progress = [
        OTAStatus(vehicle_id=v, update_id=update_id, state=state, sequence=1, progress_percent=40)
        for i, v in enumerate(notified()[quota:])
        if (state := IN_FLIGHT_STATES[i % len(IN_FLIGHT_STATES)]) is not None
    ]
    for start in range(0, len(progress), INGEST_BATCH):
        _apply(services, progress[start : start + INGEST_BATCH])
    return ended


def _check(campaign: Campaign, seeded: SeededCampaign) -> None:
    counters = campaign.counters
    found = (counters.total, counters.completed, counters.failed, counters.in_progress)
    wanted = (seeded.targets, seeded.completed, seeded.failed, seeded.in_flight)
    if found != wanted or campaign.status is not CampaignStatus.IN_PROGRESS:
        raise BenchError(
            f"campaign {campaign.campaign_id} is {campaign.status.value} with (total, completed, "
            f"failed, in progress) {found}, expected in_progress with {wanted}"
        )
