"""Targets chosen over the fleet index are exactly those chosen over the registry."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest

import v2c.handlers.ota.fleet_index.select as select_module
from v2c.handlers.ota.domain.campaign_run import eligible_targets
from v2c.handlers.ota.domain.target_filter import Expr, evaluate, parse
from v2c.handlers.ota.fleet import Vehicle
from v2c.handlers.ota.fleet_index.codec import Columns, IndexRow
from v2c.handlers.ota.fleet_index.select import FleetSnapshot, filter_matches, resolve
from v2c.handlers.ota.in_memory_ports import InMemoryFleet

MODELS = ("Accord", "Civic")
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
VERSIONS = ("1.0.0", "1.5.0", "2.0.0", "2.1.0", "not-a-version", "")
GROUPS = ("beta", "fleet-a", "fleet-b")


def random_fleet(n: int, seed: int) -> list[Vehicle]:
    rnd = random.Random(seed)
    return [
        Vehicle(
            f"VIN-1HGBH41JXMN{i:06d}",
            rnd.choice(MODELS),
            rnd.choice(REGIONS),
            rnd.choice((0, 2019, 2021, 2023)),
            rnd.choice(("Honda", "")),
            rnd.choice(("hw-a", "hw-b")),
            rnd.choice(VERSIONS),
            frozenset(rnd.sample(GROUPS, rnd.randint(0, 2))),
        )
        for i in range(n)
    ]


FILTERS = [
    None,
    "model = 'Accord'",
    "model = 'Civic' AND year >= 2021",
    "region IN ('eu-west-1', 'ap-southeast-2') OR year = 2019",
    "installed_version < '2.0.0'",
    "installed_version != '2.1.0' AND make = 'Honda'",
    "vin = 'VIN-1HGBH41JXMN000007' OR hardware_id = 'hw-b'",
    "model = 'Nope'",
]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("text", FILTERS)
@pytest.mark.parametrize("groups", [(), ("beta",)])
def test_resolve_equals_select_then_eligibility(
    seed: int, text: str | None, groups: tuple[str, ...]
) -> None:
    vehicles = random_fleet(400, seed)
    fleet = InMemoryFleet(vehicles, indexed=True)
    devices = [vehicles[3].vehicle_id, vehicles[11].vehicle_id, "VIN-1HGBH41JXMN999999"]
    expr = parse(text) if text else None
    if expr is None and not groups:
        expr = parse("year > 0")
    expected = eligible_targets(fleet.select(expr, devices, groups), "Accord", "2.0.0")
    # devices looked up in the index, and devices read exactly from the table
    assert resolve(fleet.snapshot(), expr, "Accord", "2.0.0", groups=groups, devices=devices) == (
        expected
    )
    listed = list(fleet.get_many(devices).values())
    assert (
        resolve(fleet.snapshot(), expr, "Accord", "2.0.0", groups=groups, listed=listed) == expected
    )


def test_a_filter_is_evaluated_once_per_distinct_combination(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    expr = parse("year >= 2021 AND region = 'eu-west-1'")

    def counting(e: Expr, vehicle: Mapping[str, object]) -> bool:
        nonlocal calls
        calls += 1
        return evaluate(e, vehicle)

    vehicles = random_fleet(3_000, 3)
    snapshot = InMemoryFleet(vehicles, indexed=True).snapshot(frozenset({"Accord"}))
    monkeypatch.setattr(select_module, "evaluate", counting)
    matches = filter_matches(expr, snapshot.models["Accord"])
    accords = [v for v in vehicles if v.model == "Accord"]
    assert calls <= len(REGIONS) * 4  # regions x years, not one per vehicle
    assert sum(matches) == sum(evaluate(expr, v.attributes()) for v in accords)


def test_a_vehicle_in_two_models_counts_once_as_its_newest_row() -> None:
    moved = "VIN-1HGBH41JXMN000001"
    old, new = Columns("Civic"), Columns("Accord")
    old.apply([IndexRow(moved, "Civic", "us-east-1", installed_version="1.0.0", stamp=1)])
    new.apply([IndexRow(moved, "Accord", "us-east-1", installed_version="1.0.0", stamp=2)])
    snapshot = FleetSnapshot({"Civic": old, "Accord": new})
    result = resolve(snapshot, parse("year >= 0"), "Accord", "2.0.0", devices=[moved])
    assert [t.model for t in result.targets] == ["Accord"]
    assert result.excluded == {"other_model": 0, "up_to_date": 0}


def test_nothing_selected_reports_every_reason_at_zero() -> None:
    result = resolve(FleetSnapshot({}), parse("model = 'X'"), "X", "1.0.0")
    assert result.targets == ()
    assert result.excluded == eligible_targets([], "X", "1.0.0").excluded
