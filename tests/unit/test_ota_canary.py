"""Stratified canary selection and the canary gate."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v2c.contract.errors import ValidationFailed
from v2c.handlers.ota.domain.canary import (
    Candidate,
    GateThresholds,
    GateVerdict,
    allocate,
    evaluate_gate,
    select_canary,
)
from v2c.handlers.ota.domain.counters import CampaignCounters

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fleet(sizes: dict[tuple[str, str], int]) -> list[Candidate]:
    return [
        Candidate(f"{region}-{model}-{i}", region, model)
        for (region, model), n in sizes.items()
        for i in range(n)
    ]


FLEET = _fleet(
    {("eu", "Accord"): 600, ("us", "Accord"): 300, ("eu", "Civic"): 90, ("ap", "Civic"): 10}
)


def _strata(chosen: list[str]) -> Counter[tuple[str, str]]:
    by_id = {c.vehicle_id: c.stratum for c in FLEET}
    return Counter(by_id[v] for v in chosen)


def test_canary_of_100_is_proportional_to_each_region_and_model() -> None:
    chosen = select_canary(FLEET, 100, seed="campaign-1")
    assert len(chosen) == len(set(chosen)) == 100
    assert _strata(chosen) == {
        ("eu", "Accord"): 60,
        ("us", "Accord"): 30,
        ("eu", "Civic"): 9,
        ("ap", "Civic"): 1,
    }


def test_small_canary_still_takes_one_from_every_stratum() -> None:
    chosen = select_canary(FLEET, 4, seed="campaign-1")
    assert set(_strata(chosen).values()) == {1}


def test_canary_smaller_than_the_number_of_strata_favours_the_largest() -> None:
    chosen = select_canary(FLEET, 2, seed="campaign-1")
    assert set(_strata(chosen)) == {("eu", "Accord"), ("us", "Accord")}


def test_selection_is_deterministic_and_independent_of_input_order() -> None:
    shuffled = FLEET[:]
    random.Random(7).shuffle(shuffled)
    assert select_canary(FLEET, 50, "s") == select_canary(shuffled, 50, "s")
    assert select_canary(FLEET, 50, "s") != select_canary(FLEET, 50, "other seed")


def test_canary_larger_than_the_fleet_takes_everyone() -> None:
    assert sorted(select_canary(FLEET[:5], 100, "s")) == sorted(c.vehicle_id for c in FLEET[:5])


def test_duplicate_vehicle_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="listed twice"):
        select_canary([FLEET[0], FLEET[0]], 1, "s")


STRATA = st.dictionaries(
    st.tuples(st.sampled_from(["eu", "us", "ap", "sa"]), st.sampled_from(["A", "B", "C"])),
    st.integers(0, 40),
    min_size=1,
)


@SETTINGS
@given(STRATA, st.integers(0, 200), st.text(max_size=8))
def test_allocation_is_exact_bounded_and_covers_every_stratum_when_possible(
    sizes: dict[tuple[str, str], int], count: int, seed: str
) -> None:
    alloc = allocate(sizes, count, seed)
    total = sum(sizes.values())
    assert sum(alloc.values()) == min(count, total)
    assert all(0 <= alloc[s] <= sizes[s] for s in sizes)
    nonempty = [s for s in sizes if sizes[s]]
    if count >= len(nonempty):
        assert all(alloc[s] >= 1 for s in nonempty)
    else:  # pure largest remainder: within one of the exact share
        for s in sizes:
            exact = count * sizes[s] / total
            assert exact - 1 < alloc[s] < exact + 1


# -- the gate -------------------------------------------------------------------


def test_fmea_canary_98_of_100_with_2_rollbacks_passes() -> None:
    decision = evaluate_gate(CampaignCounters(completed=98, rolled_back=2))
    assert decision.verdict is GateVerdict.PASS
    assert decision.success_rate == 98.0


def test_fmea_canary_85_percent_success_fails_and_pauses() -> None:
    decision = evaluate_gate(CampaignCounters(completed=85, rolled_back=15))
    assert decision.verdict is GateVerdict.FAIL_PAUSE
    assert "5%" in decision.reason


def test_exactly_95_percent_passes_and_exactly_5_percent_failures_do_not_pause() -> None:
    decision = evaluate_gate(CampaignCounters(completed=19, failed=1))
    assert decision.verdict is GateVerdict.PASS


def test_gate_waits_until_the_canary_group_has_finished() -> None:
    decision = evaluate_gate(CampaignCounters(completed=60, in_progress=30, pending=10))
    assert decision.verdict is GateVerdict.WAIT
    assert (decision.finished, decision.required) == (60, 100)


def test_failures_beyond_5_percent_of_the_whole_group_pause_before_it_finishes() -> None:
    decision = evaluate_gate(CampaignCounters(completed=3, failed=6, in_progress=91))
    assert decision.verdict is GateVerdict.FAIL_PAUSE
    assert "whole canary group" in decision.reason


def test_fmea_5_of_10_rollbacks_in_canary_pause_at_once() -> None:
    decision = evaluate_gate(CampaignCounters(completed=5, rolled_back=5, in_progress=90))
    assert decision.verdict is GateVerdict.FAIL_PAUSE


def test_one_early_failure_below_the_minimum_sample_waits() -> None:
    decision = evaluate_gate(CampaignCounters(failed=1, in_progress=99))
    assert decision.verdict is GateVerdict.WAIT


def test_cancelled_canary_vehicles_are_not_waited_for() -> None:
    decision = evaluate_gate(CampaignCounters(completed=97, cancelled=3))
    assert decision.verdict is GateVerdict.PASS
    assert decision.eligible == 97


def test_quorum_below_100_percent_lets_the_gate_pass_without_stragglers() -> None:
    stats = CampaignCounters(completed=90, in_progress=10)
    assert evaluate_gate(stats).verdict is GateVerdict.WAIT
    quorum = GateThresholds(min_finished_percent=90)
    assert evaluate_gate(stats, quorum).verdict is GateVerdict.PASS


def test_success_below_a_stricter_threshold_fails_even_without_many_failures() -> None:
    strict = GateThresholds(success_threshold_percent=99, failure_threshold_percent=5)
    decision = evaluate_gate(CampaignCounters(completed=97, failed=3), strict)
    assert decision.verdict is GateVerdict.FAIL_PAUSE
    assert "below 99%" in decision.reason


def test_empty_canary_group_waits() -> None:
    assert evaluate_gate(CampaignCounters()).verdict is GateVerdict.WAIT
