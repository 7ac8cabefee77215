"""Connect retry delays: the schedule, the jitter bounds and quota windows, without sleeping."""

from __future__ import annotations

import pytest

from v2c.vehicle_sim.backoff import (
    Backoff,
    BackoffPolicy,
    ConnectFailure,
    classify_connack,
)

NO_JITTER = 0.0
MAX_JITTER = 0.999_999


def test_nominal_schedule_doubles_from_2_s_and_is_capped_at_60_s() -> None:
    policy = BackoffPolicy()
    assert [policy.nominal(n) for n in range(1, 9)] == [2, 4, 8, 16, 32, 60, 60, 60]


def test_a_vehicle_offline_for_weeks_does_not_overflow_the_schedule() -> None:
    assert BackoffPolicy().nominal(100_000) == 60


def test_jitter_only_adds_so_no_retry_comes_sooner_than_the_schedule() -> None:
    policy = BackoffPolicy(jitter=0.2)
    for attempt, nominal in enumerate([2, 4, 8, 16, 32, 60], start=1):
        assert policy.delay(attempt, None, lambda: NO_JITTER) == nominal
        assert nominal < policy.delay(attempt, None, lambda: MAX_JITTER) < nominal * 1.2


def test_vehicles_at_the_cap_still_spread_out() -> None:
    policy = BackoffPolicy()
    delays = {policy.delay(10, None, iter([r]).__next__) for r in (0.0, 0.25, 0.5, 0.75)}
    assert len(delays) == 4
    assert min(delays) == 60


@pytest.mark.parametrize("code", [0x97, 0x89, 0x9F])
def test_quota_refusal_waits_for_the_window_plus_random_jitter(code: int) -> None:
    policy = BackoffPolicy(quota_window_s=60, quota_jitter_s=30)
    assert policy.delay(1, code, lambda: NO_JITTER) == 60
    assert policy.delay(1, code, lambda: 0.5) == 75
    assert 60 <= policy.delay(1, code, lambda: MAX_JITTER) < 90


def test_refusal_no_retry_can_fix_retries_slowly_at_the_cap() -> None:
    policy = BackoffPolicy()
    assert policy.delay(1, 0x86, lambda: NO_JITTER) == 60  # bad credentials: expired cert
    assert policy.delay(1, 0x87, lambda: NO_JITTER) == 60


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        (None, ConnectFailure.NETWORK),
        (0x97, ConnectFailure.QUOTA),
        (0x89, ConnectFailure.QUOTA),
        (0x9F, ConnectFailure.QUOTA),
        (0x86, ConnectFailure.REFUSED),
        (0x8A, ConnectFailure.REFUSED),
        (0x88, ConnectFailure.SERVER),
        (0x80, ConnectFailure.SERVER),
    ],
)
def test_connack_codes_are_classified(code: int | None, failure: ConnectFailure) -> None:
    assert classify_connack(code) is failure


def test_backoff_counts_failures_and_a_success_starts_over() -> None:
    backoff = Backoff(BackoffPolicy(), random=lambda: NO_JITTER)
    assert [backoff.failed() for _ in range(4)] == [2, 4, 8, 16]
    assert backoff.attempts == 4
    backoff.succeeded()
    assert backoff.attempts == 0
    assert backoff.failed() == 2


def test_quota_refusal_in_the_middle_of_a_streak_does_not_reset_the_streak() -> None:
    backoff = Backoff(BackoffPolicy(), random=lambda: NO_JITTER)
    backoff.failed()
    assert backoff.failed(0x97) == 60
    assert backoff.last_failure is ConnectFailure.QUOTA
    assert backoff.failed() == 8


@pytest.mark.parametrize(
    "kwargs",
    [{"initial_s": 0}, {"initial_s": 10, "max_s": 5}, {"multiplier": 0.5}, {"jitter": -0.1}],
)
def test_nonsensical_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        BackoffPolicy(**kwargs)
