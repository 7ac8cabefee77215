"""Staged waves, blue/green cohorts, batch sizing, thresholds and stalled campaigns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from v2c.contract.errors import ValidationFailed
from v2c.handlers.ota.domain.campaign_health import (
    HealthAction,
    HealthPolicy,
    campaign_stalled,
    evaluate_health,
    is_stalled,
)
from v2c.handlers.ota.domain.canary import Candidate
from v2c.handlers.ota.domain.counters import CampaignCounters
from v2c.handlers.ota.domain.rollout import (
    blue_green_split,
    next_batch_size,
    rollout_count,
    staged_waves,
)

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def test_design_phases_1_10_50_100_on_10000_vehicles() -> None:
    assert staged_waves(10_000, [1, 10, 50, 100]) == [100, 900, 4000, 5000]


def test_small_fleet_gets_a_vehicle_in_the_first_wave_and_drops_empty_waves() -> None:
    assert staged_waves(3, [1, 10, 50, 100]) == [1, 1, 1]
    assert staged_waves(0, [1, 100]) == []


@given(
    st.integers(0, 200_000),
    st.lists(st.integers(1, 100), min_size=1, max_size=8, unique=True).map(sorted),
)
def test_waves_are_positive_and_add_up_to_the_last_stage_exactly(
    n: int, percentages: list[int]
) -> None:
    waves = staged_waves(n, percentages)
    assert all(w > 0 for w in waves)
    assert sum(waves) == -(-n * percentages[-1] // 100)
    if percentages[-1] == 100:
        assert sum(waves) == n


@pytest.mark.parametrize("percentages", [[], [0, 100], [50, 50], [60, 40], [101]])
def test_invalid_stage_percentages_are_refused(percentages: list[int]) -> None:
    with pytest.raises(ValidationFailed):
        staged_waves(100, percentages)


def test_rollout_percentage_rounds_up() -> None:
    assert rollout_count(50, 1) == 1
    assert rollout_count(5000, 100) == 5000
    with pytest.raises(ValidationFailed):
        rollout_count(10, 0)


def test_blue_green_cohorts_partition_the_fleet_and_both_are_non_empty() -> None:
    fleet = [Candidate(f"v{i}", "eu" if i % 2 else "us", "A") for i in range(11)]
    green, blue = blue_green_split(fleet, 50, seed="s")
    assert len(green) == 6
    assert len(blue) == 5
    assert set(green) | set(blue) == {c.vehicle_id for c in fleet}
    assert not set(green) & set(blue)
    assert blue_green_split(fleet[:2], 99, "s")[1]  # blue never empty with 2+ vehicles


def test_next_batch_respects_batch_size_concurrency_and_remaining() -> None:
    assert next_batch_size(in_flight=0, remaining=1000, batch_size=50, max_concurrent=10) == 10
    assert next_batch_size(in_flight=8, remaining=1000, batch_size=50, max_concurrent=100) == 50
    assert next_batch_size(in_flight=10, remaining=1000, batch_size=50, max_concurrent=10) == 0
    assert next_batch_size(in_flight=0, remaining=3, batch_size=50, max_concurrent=10) == 3
    assert next_batch_size(in_flight=12, remaining=3, batch_size=50, max_concurrent=10) == 0


# -- health ---------------------------------------------------------------------


def test_healthy_campaign_continues() -> None:
    decision = evaluate_health(
        CampaignCounters(completed=97, failed=3, pending=900), HealthPolicy()
    )
    assert decision.action is HealthAction.CONTINUE
    assert not decision.alert


def test_failures_above_5_percent_pause_and_alert() -> None:
    decision = evaluate_health(
        CampaignCounters(completed=90, failed=10, pending=900), HealthPolicy()
    )
    assert decision.action is HealthAction.PAUSE
    assert decision.alert
    assert decision.failure_rate == 10.0


def test_failures_above_br_ota_019_threshold_roll_back_when_auto_rollback() -> None:
    stats = CampaignCounters(completed=70, failed=20, rolled_back=10, pending=900)
    assert evaluate_health(stats, HealthPolicy()).action is HealthAction.ROLLBACK
    no_auto = HealthPolicy(auto_rollback=False)
    decision = evaluate_health(stats, no_auto)
    assert decision.action is HealthAction.PAUSE
    assert "auto-rollback is off" in decision.reason


def test_a_single_early_failure_is_not_yet_a_rate() -> None:
    decision = evaluate_health(CampaignCounters(failed=1, pending=999), HealthPolicy())
    assert decision.action is HealthAction.CONTINUE


def test_failures_certain_to_exceed_the_threshold_act_before_the_sample_fills() -> None:
    decision = evaluate_health(CampaignCounters(failed=3, in_progress=7), HealthPolicy())
    assert decision.action is HealthAction.ROLLBACK  # 3 of 10 can only end above 20 %


def test_stalled_after_more_than_24_hours_without_progress() -> None:
    assert not is_stalled(T0, T0 + timedelta(hours=24))
    assert is_stalled(T0, T0 + timedelta(hours=24, seconds=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        is_stalled(T0.replace(tzinfo=None), T0)


def test_finished_campaign_is_never_stalled() -> None:
    later = T0 + timedelta(days=3)
    assert not campaign_stalled(CampaignCounters(completed=10), T0, later)
    assert campaign_stalled(CampaignCounters(completed=9, in_progress=1), T0, later)
