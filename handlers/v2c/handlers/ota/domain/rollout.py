"""Rollout planning: staged waves, blue/green cohorts, and batch sizing.

All integer arithmetic: with 100,000 targets a float rounding slip would
silently drop or double a vehicle, and a wave plan must add up exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from v2c.contract.errors import ValidationFailed
from v2c.handlers.ota.domain.canary import Candidate, stratified_sample


def _ceil_percent(n: int, percent: int) -> int:
    return -(-n * percent // 100)


def rollout_count(n_targets: int, rollout_percentage: int) -> int:
    """Targets a campaign updates at all (BR-OTA-015), rounded up so 1 % of 50 is 1."""
    if not 1 <= rollout_percentage <= 100:
        raise ValidationFailed(f"rollout_percentage must be 1-100, got {rollout_percentage}")
    return _ceil_percent(max(0, n_targets), rollout_percentage)


def staged_waves(n_targets: int, percentages: Sequence[int]) -> list[int]:
    """Wave sizes for cumulative stage percentages, e.g. [1, 10, 50, 100].

    Stage i covers ceil(n * p_i / 100) vehicles in total, so every stage gets
    at least one vehicle when the fleet has any, and the last stage at 100
    covers exactly all. Waves that round to nothing on a small fleet are
    dropped: the returned sizes are the waves to run, summing to the last
    stage's coverage.
    """
    if not percentages:
        raise ValidationFailed("staged rollout needs at least one stage percentage")
    if any(not 1 <= p <= 100 for p in percentages):
        raise ValidationFailed(f"stage percentages must be 1-100, got {list(percentages)}")
    if any(b <= a for a, b in itertools.pairwise(percentages)):
        raise ValidationFailed(f"stage percentages must increase, got {list(percentages)}")
    n = max(0, n_targets)
    bounds = [0, *(_ceil_percent(n, p) for p in percentages)]
    return [b - a for a, b in itertools.pairwise(bounds) if b > a]


def blue_green_split(
    candidates: Iterable[Candidate], green_percent: int, seed: str
) -> tuple[list[str], list[str]]:
    """Split targets into (green, blue): green gets the update first, blue at the switch-over.

    Green is a stratified sample, so both cohorts have the fleet's mix of
    regions and models and green's health predicts blue's. With two or more
    vehicles both cohorts are non-empty.
    """
    if not 1 <= green_percent <= 99:
        raise ValidationFailed(f"green_percentage must be 1-99, got {green_percent}")
    pool = list(candidates)
    n = len(pool)
    size = min(max(_ceil_percent(n, green_percent), 1), n - 1) if n >= 2 else n
    green = stratified_sample(pool, size, seed)
    chosen = set(green)
    blue = sorted(c.vehicle_id for c in pool if c.vehicle_id not in chosen)
    return green, blue


def next_batch_size(in_flight: int, remaining: int, batch_size: int, max_concurrent: int) -> int:
    """How many notifications to send now (BR-OTA-016/017): one batch at most,
    never more than the free concurrency slots, never more than remain."""
    return max(0, min(batch_size, max_concurrent - in_flight, remaining))
