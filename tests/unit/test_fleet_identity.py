"""The simulated fleet's identities and the summary counted from its reports."""

from __future__ import annotations

from collections import Counter

import pytest

from v2c.contract.errors import ValidationFailed
from v2c.contract.topics import VIN_PATTERN
from v2c.vehicle_sim.fleet.identity import fleet_members, vin_for
from v2c.vehicle_sim.fleet.summary import FleetSummary


def test_vehicle_i_is_always_the_same_vehicle() -> None:
    first, again = fleet_members(50), fleet_members(80)
    assert first == again[:50]
    assert len({m.vehicle_id for m in again}) == 80
    assert all(VIN_PATTERN.fullmatch(m.vehicle_id) for m in again)
    assert vin_for(7) == "VIN-5V2CFLT0000000007"


def test_every_region_and_model_stratum_is_filled_evenly() -> None:
    strata = Counter((m.region, m.model) for m in fleet_members(60))
    assert len(strata) == 6
    assert set(strata.values()) == {10}


@pytest.mark.parametrize("prefix", ["5V2CFL", "5V2CFLI", "5v2cflt"])
def test_a_vin_prefix_must_be_seven_vin_characters(prefix: str) -> None:
    with pytest.raises(ValidationFailed):
        vin_for(1, prefix)


def test_the_summary_counts_by_state_and_reason_in_display_order() -> None:
    summary = FleetSummary.of(
        [
            ("COMPLETED", ""),
            ("IDLE", ""),
            ("ROLLED_BACK", "BOOT_FAILURE"),
            ("COMPLETED", ""),
            ("FAILED", "S3_UNAVAILABLE"),
        ],
        reports=12,
    )
    assert list(summary.by_state) == ["IDLE", "COMPLETED", "FAILED", "ROLLED_BACK"]
    assert summary.count("COMPLETED") == 2
    assert summary.count("ROLLED_BACK", "BOOT_FAILURE") == 1
    assert summary.finished == 4
    doc = summary.to_json()
    assert doc["vehicles"] == 5
    assert {"state": "FAILED", "reason": "S3_UNAVAILABLE", "vehicles": 1} in doc["by_state_reason"]
