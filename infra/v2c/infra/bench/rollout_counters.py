"""The rollout bench's last word: are the campaign's counters exact?

Three independent views of one finished rollout must agree to the unit:

1. the campaign item's counters (`c_<counter>`) and each wave's
   (`w<n>_<counter>`), as the status path moved them with `ADD`s;
2. the per-vehicle update records of the campaign in the updates table,
   counted by the counter their state maps to (`update_state.COUNTER_OF`),
   for the campaign and per wave;
3. the vehicles themselves: the state of each one's last report and the
   version it now runs (COMPLETED vehicles run the new version, nobody else does).

`compare` is pure (values in, the list of disagreements out); reading the
two DynamoDB views is `read_campaign` and `count_records`: strongly
consistent reads and a paginated, strongly consistent scan, so nothing
eventually consistent (an index) can make a right count look wrong.
"""

from __future__ import annotations

import json
from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from v2c.handlers.ota.ddb import from_item
from v2c.handlers.ota.domain.counters import Counter
from v2c.handlers.ota.domain.update_state import COUNTER_OF, UpdateState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

COUNTERS: Final = tuple(c.value for c in Counter)
# A vehicle's last report (the `OTAStatus` state name) as the counter it belongs to.
VEHICLE_COUNTER: Final[Mapping[str, str]] = {
    "COMPLETED": Counter.COMPLETED.value,
    "FAILED": Counter.FAILED.value,
    "REJECTED": Counter.FAILED.value,
    "ROLLED_BACK": Counter.ROLLED_BACK.value,
}
OUTSTANDING: Final = (Counter.PENDING.value, Counter.IN_PROGRESS.value)


@dataclass(frozen=True)
class CampaignView:
    """The campaign item's counters: the campaign's and each wave's."""

    campaign_id: str
    status: str
    target_count: int
    counters: dict[str, int]
    waves: list[dict[str, int]]


@dataclass(frozen=True)
class RecordView:
    """The update records, counted: the campaign's and each wave's."""

    counters: dict[str, int]
    waves: dict[int, dict[str, int]]
    records: int
    without_wave: int = 0


@dataclass(frozen=True)
class VehicleView:
    """What the vehicles say: the counter of each one's last report, and how
    many run the new version (of the vehicles the campaign targets)."""

    counters: dict[str, int]
    running_new_version: int
    not_terminal: int
    vehicles: int


@dataclass(frozen=True)
class CounterCheck:
    campaign: CampaignView
    records: RecordView
    vehicles: VehicleView
    problems: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "exact": self.exact,
            "problems": self.problems,
            "campaign_status": self.campaign.status,
            "target_count": self.campaign.target_count,
            "campaign_counters": self.campaign.counters,
            "records_by_counter": self.records.counters,
            "records": self.records.records,
            "vehicles_by_counter": self.vehicles.counters,
            "vehicles_running_new_version": self.vehicles.running_new_version,
            "waves": [
                {"campaign": wave, "records": self.records.waves.get(n, _zeros())}
                for n, wave in enumerate(self.campaign.waves)
            ],
        }


def _zeros() -> dict[str, int]:
    return dict.fromkeys(COUNTERS, 0)


def _diff(label: str, expected: Mapping[str, int], actual: Mapping[str, int]) -> list[str]:
    return [
        f"{label}: {name} {expected.get(name, 0)} != {actual.get(name, 0)}"
        for name in COUNTERS
        if expected.get(name, 0) != actual.get(name, 0)
    ]


def compare(campaign: CampaignView, records: RecordView, vehicles: VehicleView) -> list[str]:
    """Every way the three views disagree, or the rollout is not over; empty when exact."""
    problems: list[str] = []
    if campaign.status != "completed":
        problems.append(f"the campaign is {campaign.status}, not completed")
    total = sum(campaign.counters.values())
    if total != campaign.target_count:
        problems.append(f"campaign counters sum to {total}, targets {campaign.target_count}")
    outstanding = {name: campaign.counters.get(name, 0) for name in OUTSTANDING}
    if any(outstanding.values()):
        problems.append(f"targets not terminal: {outstanding}")
    problems += _diff("campaign vs records", campaign.counters, records.counters)
    wave_sum = _zeros()
    for number, wave in enumerate(campaign.waves):
        problems += _diff(f"wave {number} vs records", wave, records.waves.get(number, _zeros()))
        for name in COUNTERS:
            wave_sum[name] += wave.get(name, 0)
    problems += _diff("campaign vs sum of waves", campaign.counters, wave_sum)
    extra_waves = sorted(set(records.waves) - set(range(len(campaign.waves))))
    if extra_waves:
        problems.append(f"records name waves the campaign does not have: {extra_waves}")
    if records.without_wave:
        problems.append(f"{records.without_wave} records carry no wave")
    terminal = {name: campaign.counters.get(name, 0) for name in VEHICLE_COUNTER.values()}
    problems += _diff("campaign vs vehicles' last reports", terminal, vehicles.counters)
    completed = campaign.counters.get(Counter.COMPLETED.value, 0)
    if vehicles.running_new_version != completed:
        problems.append(
            f"{vehicles.running_new_version} vehicles run the new version, {completed} completed"
        )
    if vehicles.not_terminal:
        problems.append(f"{vehicles.not_terminal} targeted vehicles did not report an end")
    return problems


# -- reading the views ---------------------------------------------------------


def read_campaign(ddb: DynamoDBClient, table: str, campaign_id: str) -> CampaignView:
    answer = ddb.get_item(
        TableName=table, Key={"campaign_id": {"S": campaign_id}}, ConsistentRead=True
    )
    if "Item" not in answer:
        return CampaignView(campaign_id, "missing", 0, _zeros(), [])
    item = from_item(answer["Item"])
    waves = len(_json_list(item.get("waves")))
    return CampaignView(
        campaign_id=campaign_id,
        status=str(item.get("status", "")),
        target_count=int(item.get("target_count", 0)),
        counters={name: int(item.get(f"c_{name}", 0)) for name in COUNTERS},
        waves=[{name: int(item.get(f"w{n}_{name}", 0)) for name in COUNTERS} for n in range(waves)],
    )


def _json_list(value: object) -> list[Any]:
    if not isinstance(value, str):
        return []
    loaded = json.loads(value)
    return loaded if isinstance(loaded, list) else []


def count_records(ddb: DynamoDBClient, table: str, campaign_id: str) -> RecordView:
    """The campaign's update records by counter, overall and per wave."""
    overall: Tally[str] = Tally()
    waves: dict[int, Tally[str]] = {}
    records = without_wave = 0
    kwargs: dict[str, Any] = {
        "TableName": table,
        "ConsistentRead": True,
        "FilterExpression": "campaign_id = :c",
        "ProjectionExpression": "#s, wave",
        "ExpressionAttributeNames": {"#s": "state"},
        "ExpressionAttributeValues": {":c": {"S": campaign_id}},
    }
    while True:
        answer = ddb.scan(**kwargs)
        for raw in answer.get("Items", []):
            item = from_item(raw)
            counter = COUNTER_OF[UpdateState(item["state"])].value
            overall[counter] += 1
            records += 1
            wave = item.get("wave")
            if wave is None:
                without_wave += 1
            else:
                waves.setdefault(int(wave), Tally())[counter] += 1
        last = answer.get("LastEvaluatedKey")
        if not last:
            break
        kwargs["ExclusiveStartKey"] = last
    return RecordView(
        counters={name: overall[name] for name in COUNTERS},
        waves={n: {name: t[name] for name in COUNTERS} for n, t in waves.items()},
        records=records,
        without_wave=without_wave,
    )


def vehicle_view(states: Iterable[tuple[str, str]], new_version: str) -> VehicleView:
    """`states`: each targeted vehicle's (last reported state, version it runs)."""
    counters = _zeros()
    running = not_terminal = vehicles = 0
    for state, version in states:
        vehicles += 1
        running += version == new_version
        counter = VEHICLE_COUNTER.get(state)
        if counter is None:
            not_terminal += 1
        else:
            counters[counter] += 1
    terminal_names = set(VEHICLE_COUNTER.values())
    return VehicleView(
        {k: v for k, v in counters.items() if k in terminal_names}, running, not_terminal, vehicles
    )


def check(campaign: CampaignView, records: RecordView, vehicles: VehicleView) -> CounterCheck:
    return CounterCheck(campaign, records, vehicles, compare(campaign, records, vehicles))
