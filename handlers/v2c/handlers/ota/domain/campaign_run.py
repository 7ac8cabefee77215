"""Running a campaign, as decisions: who is targeted, what the dispatcher does
next, what a cancel moves, how an outcome changes the campaign, when it stalls.

`canary.evaluate_gate` and `campaign_health.evaluate_health` judge numbers;
this module says what the campaign *does* with the judgement (move to the
next wave, pass the gate, pause, finish, roll back), so "what happens when the
canary gate fails" is answered here in a few lines, apart from how it is
stored. Every function takes the campaign as read plus `now`, and returns a
value; `CampaignService` carries the value out with one conditional write, and
re-asks here when that write loses a race.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from v2c.contract.errors import ValidationFailed
from v2c.contract.semver import SemVer
from v2c.handlers.ota.domain.campaign_health import HealthAction, campaign_stalled, evaluate_health
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec
from v2c.handlers.ota.domain.canary import GateVerdict, evaluate_gate
from v2c.handlers.ota.domain.counters import CampaignCounters, Counter, CounterMoves
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.plan import Target, Wave
from v2c.handlers.ota.domain.rollout import next_batch_size


class RunningCampaign(Protocol):
    """What the running rules read of a campaign (the stored `Campaign` is one)."""

    @property
    def status(self) -> CampaignStatus: ...
    @property
    def spec(self) -> CampaignSpec: ...
    @property
    def waves(self) -> tuple[Wave, ...]: ...
    @property
    def current_wave(self) -> int: ...
    @property
    def cursor(self) -> int: ...
    @property
    def target_count(self) -> int: ...
    @property
    def counters(self) -> CampaignCounters: ...
    @property
    def wave_counters(self) -> tuple[CampaignCounters, ...]: ...
    @property
    def stalled(self) -> bool: ...
    @property
    def last_progress_at_ms(self) -> int: ...


class VehicleFacts(Protocol):
    """What eligibility reads of a registered vehicle."""

    @property
    def vehicle_id(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def installed_version(self) -> str: ...


# -- who is targeted ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Eligibility:
    targets: tuple[Target, ...]
    excluded: dict[str, int]  # reason -> vehicles left out, shown to the fleet manager


def eligible_targets(
    vehicles: Iterable[VehicleFacts], device_model: str, version: str
) -> Eligibility:
    """The selected vehicles that can take `version`: the package's model, and
    not already on it or newer. A vehicle whose recorded version is not a
    semantic version is offered the update: its registry entry is what is
    wrong, and the agent refuses an update it cannot take."""
    targets: list[Target] = []
    excluded = {"other_model": 0, "up_to_date": 0}
    new = SemVer.parse(version)
    for vehicle in vehicles:
        if vehicle.model != device_model:
            excluded["other_model"] += 1
            continue
        if _runs_at_least(vehicle.installed_version, new):
            excluded["up_to_date"] += 1
            continue
        targets.append(
            Target(vehicle.vehicle_id, vehicle.region, vehicle.model, vehicle.installed_version)
        )
    return Eligibility(tuple(targets), excluded)


def _runs_at_least(installed: str, new: SemVer) -> bool:
    if not installed:
        return False
    try:
        return SemVer.parse(installed) >= new
    except ValidationFailed:
        return False


# -- what the dispatcher does next --------------------------------------------


@dataclass(frozen=True, slots=True)
class Notify:
    """Notify the next `count` targets of the current wave (0: the
    concurrency window is full; wait for reports to free it)."""

    count: int


@dataclass(frozen=True, slots=True)
class Hold:
    """The wave is fully notified but may not move on yet."""

    gate: GateVerdict | None = None  # WAIT: the gate has too few results


@dataclass(frozen=True, slots=True)
class Finish:
    """The last wave is notified and every update ended: the campaign is complete."""

    gate: None = None


@dataclass(frozen=True, slots=True)
class NextWave:
    """An ungated wave is fully notified: the next one starts at once."""

    wave: int
    gate: None = None


@dataclass(frozen=True, slots=True)
class PassGate:
    wave: int
    summary: dict[str, Any]
    gate: GateVerdict = GateVerdict.PASS


@dataclass(frozen=True, slots=True)
class FailGate:
    """Pause and alert: a bad release stops at the canary (or green cohort, or stage)."""

    status_reason: str
    alert_detail: str
    summary: dict[str, Any]
    gate: GateVerdict = GateVerdict.FAIL_PAUSE


WaveStep = Hold | Finish | NextWave | PassGate | FailGate


def dispatch_open(campaign: RunningCampaign, now: datetime) -> bool:
    """Running, past its scheduled start and inside its maintenance window."""
    if campaign.status is not CampaignStatus.IN_PROGRESS:
        return False
    spec = campaign.spec
    if spec.scheduled_start is not None and now < spec.scheduled_start:
        return False
    return spec.maintenance_window is None or spec.maintenance_window.contains(now)


def release_due(expires_at_ms: int, now_ms: int, resign_before_ms: int) -> bool:
    """Re-sign a release this close to its expiry: a long staged campaign outlives it."""
    return expires_at_ms - now_ms <= resign_before_ms


def next_step(campaign: RunningCampaign, now_ms: int) -> Notify | WaveStep:
    """Notify more of the current wave, or decide what its end means."""
    wave = campaign.waves[campaign.current_wave]
    if campaign.cursor >= wave.end:
        return after_wave(campaign, now_ms)
    return Notify(
        next_batch_size(
            campaign.counters.in_progress,
            wave.end - campaign.cursor,
            campaign.spec.batch_size,
            campaign.spec.max_concurrent_updates,
        )
    )


def after_wave(campaign: RunningCampaign, now_ms: int) -> WaveStep:
    """The current wave is fully notified: move on, pass or fail its gate, or finish.

    The last wave has no gate: the campaign completes when nothing is
    outstanding, and the health thresholds (`react_to_outcome`) guard it
    until then."""
    number = campaign.current_wave
    wave = campaign.waves[number]
    if number == len(campaign.waves) - 1:
        return Finish() if campaign.counters.outstanding == 0 else Hold()
    if not wave.gated:
        return NextWave(number + 1)
    thresholds = campaign.spec.gate_thresholds(number)
    decision = evaluate_gate(campaign.wave_counters[number], thresholds)
    summary = {
        "wave": wave.name,
        "verdict": decision.verdict.value,
        "reason": decision.reason,
        "success_rate": decision.success_rate,
        "success_threshold_percent": thresholds.success_threshold_percent,
        "completed": decision.completed,
        "failures": decision.failures,
        "finished": decision.finished,
        "eligible": decision.eligible,
        "decided_at": now_ms,
    }
    if decision.verdict is GateVerdict.WAIT:
        return Hold(GateVerdict.WAIT)
    if decision.verdict is GateVerdict.PASS:
        return PassGate(number + 1, summary)
    return FailGate(f"{wave.name} gate failed: {decision.reason}", decision.reason, summary)


# -- what a cancel or a rollback moves ----------------------------------------


def wave_start(waves: Sequence[Wave], number: int) -> int:
    return 0 if number == 0 else waves[number - 1].end


def unnotified_moves(campaign: RunningCampaign) -> CounterMoves:
    """Targets never notified have no record: stopping the campaign moves them
    from pending to cancelled in bulk, for the campaign and for each wave they
    belonged to. Notified updates move one by one through their own records."""
    remaining = campaign.target_count - campaign.cursor
    if remaining <= 0:
        return CounterMoves()
    waves: dict[int, Mapping[Counter, int]] = {}
    for number, wave in enumerate(campaign.waves):
        left = wave.end - max(campaign.cursor, wave_start(campaign.waves, number))
        if left > 0:
            waves[number] = {Counter.PENDING: -left, Counter.CANCELLED: left}
    return CounterMoves({Counter.PENDING: -remaining, Counter.CANCELLED: remaining}, waves)


# -- how an outcome changes the campaign --------------------------------------


class OutcomeStep(StrEnum):
    NOTHING = "nothing"  # not running, or already paused
    ADVANCE = "advance"  # healthy and running: refill the concurrency window
    PAUSE = "pause"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class OutcomeReaction:
    action: HealthAction  # what the thresholds say
    step: OutcomeStep  # what the campaign does about it, given its status
    reason: str = ""


REACTIVE = frozenset({CampaignStatus.IN_PROGRESS, CampaignStatus.PAUSED})


def react_to_outcome(campaign: RunningCampaign) -> OutcomeReaction:
    """After a report that moved the rates. A paused campaign is still judged,
    because a failure rate that keeps climbing while paused must still roll it
    back; a finished or cancelled one is not."""
    if campaign.status not in REACTIVE:
        return OutcomeReaction(HealthAction.CONTINUE, OutcomeStep.NOTHING)
    decision = evaluate_health(campaign.counters, campaign.spec.health_policy())
    running = campaign.status is CampaignStatus.IN_PROGRESS
    if decision.action is HealthAction.ROLLBACK:
        step = OutcomeStep.ROLLBACK
    elif decision.action is HealthAction.PAUSE:
        step = OutcomeStep.PAUSE if running else OutcomeStep.NOTHING
    else:
        step = OutcomeStep.ADVANCE if running else OutcomeStep.NOTHING
    return OutcomeReaction(decision.action, step, decision.reason)


# -- when it stalls -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stall:
    detail: str  # for the alert: since when, and how much is outstanding


def stall(campaign: RunningCampaign, now_ms: int) -> Stall | None:
    """Newly stalled (FMEA: no progress for 24 h with updates outstanding), or
    None; a campaign already flagged is not flagged (and alerted) again."""
    if campaign.stalled:
        return None
    last = _at(campaign.last_progress_at_ms)
    if not campaign_stalled(campaign.counters, last, _at(now_ms)):
        return None
    return Stall(
        f"no progress since {last.isoformat()} "
        f"({campaign.counters.outstanding} updates outstanding)"
    )


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
