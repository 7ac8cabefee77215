"""`v2c bench creation`: campaign creation at fleet sizes, over the fleet index.

Issue #13's goal 6: creation answers within 0.5 s whatever the fleet size,
and 100,000 targets are resolved and planned within 5 s. Measured in one
run against a private moto server, for each fleet size (cumulative: the
registry grows to each size in turn, one model):

* seeding, apart: the registry table (BatchWriteItem) and the fleet index
  (its registration merge, as `FleetRegistry.put` does after the table);
* the index: its size in bytes and one full read (LIST + shards);
* the create answer: `CampaignService.create` returning, and the status it
  answered (`created` when planned inline, `planning` otherwise);
* planned: from the create call until the campaign is `created` (the
  planner runs in a worker thread, as in `v2c api serve`);
* the same-run baseline, for sizes up to `baseline_max`: the targets as
  creation resolved them before the index (`FleetRegistry.select`, a Query
  of the registry's model partition, one 1-MB page at a time).
"""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.plan_store import CHUNK, PlanStore
from v2c.handlers.ota.campaigns.planning_queue import BackgroundPlanning
from v2c.handlers.ota.campaigns.repository import CampaignRepository
from v2c.handlers.ota.campaigns.rollback_log import RollbackLog
from v2c.handlers.ota.campaigns.service import CampaignService
from v2c.handlers.ota.domain.campaign_rules import Strategy
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.target_filter import parse
from v2c.handlers.ota.events import RecordingEventPublisher
from v2c.handlers.ota.firmware_catalog import FirmwareCatalog
from v2c.handlers.ota.fleet import FleetRegistry, Vehicle
from v2c.handlers.ota.fleet_index.store import FleetIndex
from v2c.handlers.ota.in_memory_ports import RecordingAlerts, RecordingCommands, RecordingNotifier
from v2c.handlers.ota.updates.repository import UpdateRepository
from v2c.handlers.signing.software import SoftwareSigner
from v2c.infra.aws.resources import ensure_resources
from v2c.infra.bench.common import (
    BenchError,
    JsonDict,
    fmt,
    make_report,
    put_bench_package,
    ratio,
)
from v2c.infra.local.moto_server import MotoServer
from v2c.infra.names import ResourceNames
from v2c.infra.settings import AwsSettings

MODEL: Final = "BenchCreation"
REGIONS: Final = ("us-east-1", "eu-west-1", "ap-southeast-2")
VIN_ALPHABET: Final = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # ISO 3779: no I, O, Q
GOAL_ANSWER_S: Final = 0.5
GOAL_PLANNED_S: Final = 5.0


@dataclass(frozen=True)
class CreationBenchParams:
    fleet_sizes: tuple[int, ...] = (5_000, 20_000, 100_000)
    strategy: str = Strategy.CANARY.value
    baseline_max: int = 5_000  # sizes up to this also time the table select
    repeats: int = 3  # campaigns created per size (median and worst reported)
    planned_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not self.fleet_sizes or min(self.fleet_sizes) < 1:
            raise ValueError("fleet sizes must be positive")
        if self.repeats < 1:
            raise ValueError("repeats must be positive")
        Strategy(self.strategy)  # ValueError: a usage error


def vin(number: int) -> str:
    """A VIN as random-looking as real ones (they compress as real ones do)."""
    digest = hashlib.sha256(f"bench-creation:{number}".encode()).digest()
    return "VIN-" + "".join(VIN_ALPHABET[b % len(VIN_ALPHABET)] for b in digest[:17])


def fleet(start: int, n: int) -> list[Vehicle]:
    return [
        Vehicle(
            vin(start + i),
            MODEL,
            REGIONS[i % len(REGIONS)],
            2019 + i % 7,
            "Bench",
            f"hw-{i % 4}",
            "1.0.0",
        )
        for i in range(n)
    ]


class _Planned:
    """When the planner thread finished each campaign (perf_counter)."""

    def __init__(self, service: CampaignService) -> None:
        self._service = service
        self.at: dict[str, float] = {}
        self._done = threading.Condition()

    def __call__(self, campaign_id: str) -> object:
        campaign = self._service.plan(campaign_id)
        with self._done:
            self.at[campaign_id] = time.perf_counter()
            self._done.notify_all()
        return campaign

    def wait(self, campaign_id: str, timeout_s: float) -> float:
        with self._done:
            if not self._done.wait_for(lambda: campaign_id in self.at, timeout_s):
                raise BenchError(f"campaign {campaign_id} not planned after {timeout_s:g} s")
            return self.at[campaign_id]


def _package(ddb: Any, s3: Any, names: ResourceNames) -> str:
    return put_bench_package(
        ddb, s3, names, name="bench-creation", model=MODEL, payload=b"bench-creation" * 64
    )


def _timed(fn: Any) -> tuple[Any, float]:
    began = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - began


def run_creation_bench(params: CreationBenchParams) -> JsonDict:
    started = time.time()
    names = ResourceNames()
    with MotoServer() as moto:
        aws = AwsSettings(endpoint_url=moto.endpoint_url)
        ensure_resources(aws, names)
        ddb, s3 = aws.client("dynamodb"), aws.client("s3")
        index = FleetIndex(s3, names.firmware_bucket)
        table_only = FleetRegistry(ddb, names.vehicle_registry_table)
        planning = BackgroundPlanning()
        deps = CampaignServiceDeps(
            campaigns=CampaignRepository(ddb, names.campaigns_table),
            updates=UpdateRepository(ddb, names.vehicle_updates_table),
            plans=PlanStore(s3, names.firmware_bucket),
            fleet=FleetRegistry(ddb, names.vehicle_registry_table, index),
            packages=FirmwareCatalog(ddb, s3, names.firmware_table, names.firmware_bucket),
            signer=SoftwareSigner.generate(key_id="bench"),
            notifier=RecordingNotifier(),
            events=RecordingEventPublisher(),
            alerts=RecordingAlerts(),
            rollbacks=RollbackLog(ddb, names.rollbacks_table),
            commands=RecordingCommands(),
            planning=planning,
        )
        service = CampaignService(deps)
        planned = _Planned(service)
        planning.bind(planned)
        firmware_id = _package(ddb, s3, names)
        rows: list[JsonDict] = []
        seeded = 0
        try:
            for size in sorted(params.fleet_sizes):
                rows.append(
                    _one_size(
                        params, service, planned, index, table_only, firmware_id, seeded, size
                    )
                )
                seeded = size
        finally:
            planning.close()
    results = {"sizes": rows, "goal": {"answer_s": GOAL_ANSWER_S, "planned_s": GOAL_PLANNED_S}}
    ratios: dict[str, Any] = {}
    for row in rows:
        n = row["targets"]
        ratios[f"answer_over_goal_{n}"] = ratio(row["answer_s"], GOAL_ANSWER_S)
        ratios[f"planned_over_goal_{n}"] = ratio(row["planned_s"], GOAL_PLANNED_S)
        if row.get("table_select_s") is not None:
            ratios[f"table_select_over_planned_{n}"] = ratio(
                row["table_select_s"], row["planned_s"]
            )
    return make_report(
        "creation",
        {
            "fleet_sizes": list(params.fleet_sizes),
            "strategy": params.strategy,
            "baseline_max": params.baseline_max,
            "repeats": params.repeats,
        },
        results,
        ratios,
        started_at=started,
    )


def _one_size(
    params: CreationBenchParams,
    service: CampaignService,
    planned: _Planned,
    index: FleetIndex,
    table_only: FleetRegistry,
    firmware_id: str,
    seeded: int,
    size: int,
) -> JsonDict:
    vehicles = fleet(seeded, size - seeded)
    _, seed_s = _timed(lambda: table_only.put(vehicles))
    stamp = int(time.time() * 1000)
    _, index_s = _timed(lambda: index.merge([v.index_row(stamp) for v in vehicles]))
    index_bytes = index.size([MODEL])
    snapshot, read_s = _timed(lambda: index.read([MODEL]))
    if snapshot.size != size:
        raise BenchError(f"the index holds {snapshot.size} vehicles, expected {size}")
    table_s = None
    if size <= params.baseline_max:
        found, table_s = _timed(lambda: table_only.select(parse(f"model = '{MODEL}'")))
        if len(found) != size:
            raise BenchError(f"the table select found {len(found)} vehicles, expected {size}")
    answers: list[float] = []
    planned_after: list[float] = []
    statuses: set[str] = set()
    waves: list[str] = []
    for attempt in range(params.repeats):
        answer_s, done_s, status, waves = _create(
            params, service, planned, firmware_id, size, attempt
        )
        answers.append(answer_s)
        planned_after.append(done_s)
        statuses.add(status)
    answer_median, planned_median = statistics.median(answers), statistics.median(planned_after)
    return {
        "targets": size,
        "registry_seed_s": round(seed_s, 3),
        "index_update_s": round(index_s, 3),
        "index_bytes": index_bytes,
        "index_bytes_per_vehicle": round(index_bytes / size, 1),
        "index_read_s": round(read_s, 3),
        "table_select_s": round(table_s, 3) if table_s is not None else None,
        "answer_s": round(answer_median, 3),
        "answer_s_max": round(max(answers), 3),
        "answer_status": "/".join(sorted(statuses)),
        "planned_s": round(planned_median, 3),
        "planned_s_max": round(max(planned_after), 3),
        "campaigns": params.repeats,
        "plan_chunks": -(-size // CHUNK),
        "waves": waves,
        "meets_goal": max(answers) <= GOAL_ANSWER_S and max(planned_after) <= GOAL_PLANNED_S,
    }


def _create(
    params: CreationBenchParams,
    service: CampaignService,
    planned: _Planned,
    firmware_id: str,
    size: int,
    attempt: int,
) -> tuple[float, float, str, list[str]]:
    """One campaign over the whole fleet: (answer s, planned s, status answered, waves)."""
    spec = {
        "name": f"bench creation {size} #{attempt}",
        "firmware_id": firmware_id,
        "target_filter": f"model = '{MODEL}'",
        "deployment_strategy": params.strategy,
    }
    began = time.perf_counter()
    report = service.create(spec)
    answered = time.perf_counter()
    campaign_id = report.campaign.campaign_id
    done = answered
    if report.campaign.status is CampaignStatus.PLANNING:
        done = planned.wait(campaign_id, params.planned_timeout_s)
    campaign = service.get(campaign_id)
    if campaign.status is not CampaignStatus.CREATED or campaign.target_count != size:
        raise BenchError(
            f"campaign {campaign_id} is {campaign.status.value} with "
            f"{campaign.target_count} targets, expected created with {size}"
        )
    waves = [w.name for w in campaign.waves]
    return answered - began, done - began, report.campaign.status.value, waves


def table_rows(report: JsonDict) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for r in report["results"]["sizes"]:
        n = f"{r['targets']:,}"
        rows += [
            (f"{n}: registry seed (table)", fmt(r["registry_seed_s"], " s", 2)),
            (f"{n}: index update", fmt(r["index_update_s"], " s", 2)),
            (f"{n}: index size", f"{r['index_bytes']:,} B"),
            (f"{n}: index read", fmt(r["index_read_s"], " s", 3)),
            (f"{n}: create answer ({r['answer_status']}), median", fmt(r["answer_s"], " s", 3)),
            (f"{n}: create answer, worst", fmt(r["answer_s_max"], " s", 3)),
            (f"{n}: planned (created), median", fmt(r["planned_s"], " s", 2)),
            (f"{n}: planned (created), worst", fmt(r["planned_s_max"], " s", 2)),
        ]
        if r["table_select_s"] is not None:
            rows.append((f"{n}: baseline table select", fmt(r["table_select_s"], " s", 2)))
    return rows
