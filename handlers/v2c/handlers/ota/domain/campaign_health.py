"""Campaign health: failure thresholds, auto-pause / auto-rollback, stalled campaigns.

Evaluated on every report that moves the rates (the PRD's 60 s is a ceiling;
we decide on the report itself). Two thresholds, from two sources (see
`campaign_rules`): above `pause_threshold_percent` (default 5 %) the campaign
pauses and alerts; above `failure_threshold_percent` (BR-OTA-019, default 20 %)
it rolls back if `auto_rollback` (BR-OTA-020), and otherwise pauses.

The rate is taken over finished updates (BR-OTA-040/041), but a rate of a
handful of reports is noise, so it may act only once `min_sample` updates
finished. Failures that already exceed a threshold as a share of *every*
update still to count are certain, whatever the rest does, and act at once.

The decision is a pure value: the service applies it with a conditional write
on the campaign's status, so concurrent reports pause or roll back only once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from v2c.handlers.ota.domain.canary import MIN_SAMPLE
from v2c.handlers.ota.domain.counters import CampaignCounters

STALL_AFTER: Final = timedelta(hours=24)  # FMEA: "Campaign stalled (>24h no progress)"


class HealthAction(StrEnum):
    CONTINUE = "continue"
    PAUSE = "pause"  # stop new notifications, alert
    ROLLBACK = "rollback"  # pause, cancel pending, roll back completed vehicles, alert


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    pause_threshold_percent: float = 5.0
    failure_threshold_percent: float = 20.0
    auto_rollback: bool = True
    min_sample: int = MIN_SAMPLE


@dataclass(frozen=True, slots=True)
class HealthDecision:
    action: HealthAction
    reason: str
    failure_rate: float | None  # percent of finished
    failures: int
    finished: int

    @property
    def alert(self) -> bool:
        return self.action is not HealthAction.CONTINUE


def _exceeds(counters: CampaignCounters, threshold: float, min_sample: int) -> bool:
    failures, finished = counters.failures, counters.finished
    certain = failures * 100 > threshold * (counters.total - counters.cancelled)
    observed = finished >= min_sample and failures * 100 > threshold * finished
    return certain or observed


def evaluate_health(counters: CampaignCounters, policy: HealthPolicy) -> HealthDecision:
    """What the campaign should do now, given its counters."""
    failures, finished = counters.failures, counters.finished
    rate = counters.failure_rate
    shown = "n/a" if rate is None else f"{rate:.1f}%"
    counts = f"{failures} of {finished} finished failed or rolled back"

    def decide(action: HealthAction, reason: str) -> HealthDecision:
        return HealthDecision(action, reason, rate, failures, finished)

    if _exceeds(counters, policy.failure_threshold_percent, policy.min_sample):
        limit = f"failure rate {shown} exceeds {policy.failure_threshold_percent:g}% ({counts})"
        if policy.auto_rollback:
            return decide(HealthAction.ROLLBACK, f"{limit}: auto-rollback")
        return decide(HealthAction.PAUSE, f"{limit}: auto-rollback is off, pausing")
    if _exceeds(counters, policy.pause_threshold_percent, policy.min_sample):
        return decide(
            HealthAction.PAUSE,
            f"failure rate {shown} exceeds {policy.pause_threshold_percent:g}% ({counts})",
        )
    return decide(HealthAction.CONTINUE, f"failure rate {shown} within thresholds ({counts})")


def is_stalled(
    last_progress_at: datetime, now: datetime, threshold: timedelta = STALL_AFTER
) -> bool:
    """No progress for longer than `threshold` (both datetimes timezone-aware)."""
    if last_progress_at.utcoffset() is None or now.utcoffset() is None:
        raise ValueError("is_stalled needs timezone-aware datetimes")
    return now - last_progress_at > threshold


def campaign_stalled(
    counters: CampaignCounters,
    last_progress_at: datetime,
    now: datetime,
    threshold: timedelta = STALL_AFTER,
) -> bool:
    """A campaign with updates still outstanding and no progress for `threshold`.
    One with nothing outstanding is finished, not stalled."""
    return counters.outstanding > 0 and is_stalled(last_progress_at, now, threshold)
