"""The fleet index on a real moto server: it agrees with the registry table,
follows installed versions, is rebuilt from the table, survives concurrent
writers, and lets a large campaign be created (`planning`) and planned.

Sizes are small enough to run in seconds; the planner is driven without
sleeps (called directly, or its worker thread joined)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import requests
from api_support import AUTH_HEADERS
from ota_support import MODEL, ota_services

from v2c.handlers.api import ApiServices
from v2c.handlers.ota.campaigns.deps import CampaignConfig
from v2c.handlers.ota.campaigns.planning_queue import BackgroundPlanning
from v2c.handlers.ota.campaigns.service import CampaignService
from v2c.handlers.ota.campaigns.targeting import Targeting
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.ota.domain.campaign_rules import parse_campaign_spec
from v2c.handlers.ota.domain.campaign_run import eligible_targets
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.plan import plan_rollout
from v2c.handlers.ota.domain.target_filter import parse
from v2c.handlers.ota.fleet import FleetRegistry, Vehicle
from v2c.handlers.ota.fleet_index.codec import IndexRow
from v2c.handlers.ota.fleet_index.store import FleetIndex
from v2c.infra.local.http_adapter import ApiHttpServer

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
VERSIONS = ("1.0.0", "1.5.0", "2.0.0", "")
BASE = "/api/v1/ota"


def vin(number: int) -> str:
    return f"VIN-2HGFC2F59MH{number:06d}"


def mixed_fleet(n: int, seed: int = 1) -> list[Vehicle]:
    rnd = random.Random(seed)
    return [
        Vehicle(
            vin(i),
            rnd.choice((MODEL, MODEL, "Civic")),
            rnd.choice(REGIONS),
            rnd.choice((2019, 2021, 2023)),
            "Honda",
            rnd.choice(("hw-a", "hw-b")),
            rnd.choice(VERSIONS),
            frozenset(rnd.sample(("beta", "fleet-a"), rnd.randint(0, 1))),
        )
        for i in range(n)
    ]


def registry(stack: AwsStack, *, indexed: bool = True) -> FleetRegistry:
    index = FleetIndex(stack.aws.client("s3"), stack.names.firmware_bucket)
    return FleetRegistry(
        stack.aws.client("dynamodb"),
        stack.names.vehicle_registry_table,
        index if indexed else None,
    )


def table_view(stack: AwsStack) -> dict[str, Vehicle]:
    table = registry(stack, indexed=False)
    return {v.vehicle_id: v for v in table.select(parse("year >= 0"))}


def index_view(fleet: FleetRegistry) -> dict[str, IndexRow]:
    snapshot = fleet.snapshot()
    rows = (row for columns in snapshot.models.values() for row in columns.rows())
    return {row.vehicle_id: row for row in rows}


def same(vehicle: Vehicle, row: IndexRow) -> bool:
    return vehicle.index_row(row.stamp) == row


SPECS: list[dict[str, Any]] = [
    {"target_filter": f"model = '{MODEL}'"},
    {"target_filter": f"model = '{MODEL}' AND year >= 2021 AND region != 'eu-west-1'"},
    {"target_filter": "installed_version < '2.0.0' OR hardware_id = 'hw-b'"},
    {"target_groups": ["beta"]},
    {"target_devices": [vin(i) for i in range(0, 600, 7)]},
]


@pytest.mark.parametrize("targets", SPECS, ids=["model", "and", "or", "group", "devices"])
def test_the_index_selects_what_the_table_selects(
    aws_stack: AwsStack, targets: dict[str, Any]
) -> None:
    fleet = registry(aws_stack)
    fleet.put(mixed_fleet(600))
    spec = parse_campaign_spec({"name": "x", "firmware_id": "f" * 32, **targets})
    table = registry(aws_stack, indexed=False)
    expected = eligible_targets(
        table.select(spec.filter_expr, spec.target_devices, spec.target_groups), MODEL, "2.0.0"
    )
    assert expected.targets
    resolution = Targeting(fleet).resolve(spec, MODEL, "2.0.0")
    assert resolution.indexed
    assert resolution.eligibility == expected


def test_installed_versions_reach_the_index_and_survive_compaction(aws_stack: AwsStack) -> None:
    fleet = registry(aws_stack)
    fleet.put(mixed_fleet(200))
    fleet.set_installed_version(vin(1), "2.0.0")
    fleet.set_installed_versions({vin(2): "2.1.0", vin(3): "2.1.0", vin(4): "3.0.0"})
    fleet.set_installed_version("VIN-2HGFC2F59MH999999", "2.0.0")  # not registered: no-op
    index = FleetIndex(aws_stack.aws.client("s3"), aws_stack.names.firmware_bucket)
    assert sum(len(m.deltas) for m in index.listing().values()) >= 2  # pending deltas

    def agrees() -> None:
        rows, table = index_view(fleet), table_view(aws_stack)
        assert rows.keys() == table.keys()
        assert all(same(table[v], rows[v]) for v in table)
        assert rows[vin(1)].installed_version == "2.0.0"
        assert rows[vin(4)].installed_version == "3.0.0"

    agrees()
    assert index.compact() >= 2
    assert all(not m.deltas for m in index.listing().values())
    agrees()


def test_a_rebuild_makes_the_index_from_the_table(aws_stack: AwsStack) -> None:
    index = FleetIndex(aws_stack.aws.client("s3"), aws_stack.names.firmware_bucket)
    assert index.is_built()  # the bootstrap created the table empty, and its index with it
    aws_stack.aws.client("s3").delete_object(
        Bucket=aws_stack.names.firmware_bucket, Key="fleet-index/v1/meta.json"
    )  # as for a registry older than its index
    vehicles = mixed_fleet(300)
    registry(aws_stack, indexed=False).put(vehicles)  # the table only: an older writer
    fleet = registry(aws_stack)
    assert fleet.snapshot().size == 0
    assert fleet.maintain() == {"index_rebuilt_vehicles": 300}  # never built: built now
    rows, table = index_view(fleet), table_view(aws_stack)
    assert rows.keys() == table.keys()
    assert all(same(table[v], rows[v]) for v in table)
    # a vehicle moved to another model through the table alone: the rebuild moves it
    moved = next(v for v in vehicles if v.model == "Civic")
    registry(aws_stack, indexed=False).put([Vehicle(moved.vehicle_id, MODEL, moved.region)])
    assert fleet.rebuild_index() == 300
    civics = fleet.snapshot(["Civic"]).models["Civic"].vehicle_id
    assert moved.vehicle_id not in civics
    assert index_view(fleet)[moved.vehicle_id].model == MODEL
    assert "index_deltas_folded" in fleet.maintain()  # built: compaction only


class _RaceBeforePut:
    """An S3 client whose next PutObject first lets another writer run: that
    writer wins the race for the object this one read."""

    def __init__(self, client: Any, race: Callable[[], object]) -> None:
        self._client = client
        self._race: Callable[[], object] | None = race

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_object(self, **kwargs: Any) -> Any:
        race, self._race = self._race, None
        if race is not None:
            race()
        return self._client.put_object(**kwargs)


def test_a_writer_that_lost_a_race_on_s3_reads_again_and_loses_nothing(
    aws_stack: AwsStack,
) -> None:
    # Interleaved, not threaded: moto's server checks If-Match and writes
    # without a lock (S3 does both at once), so only a sequenced race is a
    # fair test of moto; `tests/unit/test_fleet_index_store.py` runs threads
    # against an S3 fake that is atomic as S3 is.
    s3, bucket = aws_stack.aws.client("s3"), aws_stack.names.firmware_bucket
    other = FleetIndex(s3, bucket, shards=1)
    other.merge([IndexRow(vin(0), MODEL, "us-east-1", stamp=1)])
    racing = _RaceBeforePut(
        s3, lambda: other.merge([IndexRow(vin(1), MODEL, "us-east-1", stamp=1)])
    )
    FleetIndex(racing, bucket, shards=1).merge([IndexRow(vin(2), MODEL, "us-east-1", stamp=1)])
    snapshot = FleetIndex(s3, bucket, shards=1).read([MODEL])
    assert sorted(snapshot.models[MODEL].vehicle_id) == [vin(0), vin(1), vin(2)]
    assert not FleetIndex(s3, bucket).listing([MODEL])[MODEL].deltas  # folded, not parked


def test_a_large_campaign_answers_planning_and_is_planned_as_the_table_says(
    aws_stack: AwsStack,
) -> None:
    ota = ota_services(aws_stack, config=CampaignConfig(inline_max_targets=50))
    ota.deps.fleet = registry(aws_stack)
    planning = BackgroundPlanning()
    ota.deps.planning = planning
    campaigns = CampaignService(ota.deps)
    planning.bind(campaigns.plan)
    vehicles = mixed_fleet(700)
    ota.deps.fleet.put(vehicles)
    package = ota.packages.add("2.0.0", b"image" * 100)
    spec = {
        "name": "big",
        "firmware_id": package.firmware_id,
        "target_filter": f"model = '{MODEL}' AND year >= 2021",
        "deployment_strategy": "canary",
    }

    answer = campaigns.create(spec)
    assert answer.campaign.status is CampaignStatus.PLANNING
    queued = campaigns.start(answer.campaign.campaign_id)  # a script that starts at once
    assert queued.status is CampaignStatus.PLANNING
    planning.join()
    planning.close()

    campaign = campaigns.get(answer.campaign.campaign_id)
    assert campaign.status is CampaignStatus.IN_PROGRESS  # planned, then started as asked
    table = registry(aws_stack, indexed=False)
    parsed = parse_campaign_spec(spec, now=ota.now())
    expected = eligible_targets(table.select(parsed.filter_expr), MODEL, "2.0.0")
    plan = plan_rollout(parsed, expected.targets, seed=campaign.campaign_id)
    assert campaign.target_count == len(expected.targets) == plan.size
    assert campaign.waves == plan.waves
    stored = ota.deps.plans.read(campaign.campaign_id, 0, campaign.target_count)
    assert tuple(stored) == plan.targets
    assert [kind for kind, _ in ota.events.events][:3] == [
        "campaign.planning",
        "campaign.created",
        "campaign.started",
    ]


# -- through the API -----------------------------------------------------------------------


@pytest.fixture
def api_services(moto_campaign_api: ApiServices) -> ApiServices:
    return moto_campaign_api


def test_the_api_answers_planning_and_the_campaign_is_created_after(
    api_server: ApiHttpServer, moto_ota: OtaServices, registered_firmware: str
) -> None:
    moto_ota.deps.config = CampaignConfig(inline_max_targets=20)
    moto_ota.deps.fleet.put(mixed_fleet(120))
    planning = moto_ota.deps.planning
    assert isinstance(planning, BackgroundPlanning)  # as `v2c api serve` runs it
    answer = requests.post(
        f"{api_server.base_url}{BASE}/campaigns",
        json={
            "name": "big",
            "firmware_id": registered_firmware,
            "target_filter": f"model = '{MODEL}'",
        },
        headers={**AUTH_HEADERS, "Idempotency-Key": "big-1"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert (created["status"], created["target_count"], created["waves"]) == ("planning", 0, [])
    planning.join()
    url = f"{api_server.base_url}{BASE}/campaigns/{created['campaign_id']}"
    campaign = requests.get(url, headers=AUTH_HEADERS, timeout=30).json()
    assert campaign["status"] == "created"
    assert campaign["target_count"] == sum(
        1 for v in mixed_fleet(120) if v.model == MODEL and v.installed_version != "2.0.0"
    )
    again = requests.post(
        f"{api_server.base_url}{BASE}/campaigns",
        json={
            "name": "big",
            "firmware_id": registered_firmware,
            "target_filter": f"model = '{MODEL}'",
        },
        headers={**AUTH_HEADERS, "Idempotency-Key": "big-1"},
        timeout=30,
    )
    assert again.json()["created"] is False
    assert again.json()["status"] == "created"


def test_a_batch_of_installed_versions_is_a_few_requests_and_skips_the_unregistered(
    aws_stack: AwsStack,
) -> None:
    """A status batch's ended updates: one BatchGetItem per 100 and one
    transaction per 100, not one UpdateItem per vehicle; an unregistered
    vehicle is neither written nor indexed."""
    registry(aws_stack).put(mixed_fleet(150, seed=7))
    ddb = aws_stack.aws.client("dynamodb")
    calls: list[str] = []
    ddb.meta.events.register("before-call.dynamodb.*", lambda model, **_: calls.append(model.name))
    index = FleetIndex(aws_stack.aws.client("s3"), aws_stack.names.firmware_bucket)
    fleet = FleetRegistry(ddb, aws_stack.names.vehicle_registry_table, index)
    stranger = "VIN-2HGFC2F59MH999998"
    versions = {vin(i): "4.0.0" for i in range(150)} | {stranger: "4.0.0"}

    fleet.set_installed_versions(versions)

    assert sorted(calls) == ["BatchGetItem"] * 2 + ["TransactWriteItems"] * 2

    table = table_view(aws_stack)
    assert stranger not in table
    assert all(table[vin(i)].installed_version == "4.0.0" for i in range(150))
    rows = index_view(fleet)
    assert all(rows[vin(i)].installed_version == "4.0.0" for i in range(150))
