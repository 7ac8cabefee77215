"""The rules of running a campaign (`domain.campaign_run`), as truth tables.

Each table reads as a spec: a campaign as read, and what it does next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from v2c.handlers.ota.domain.campaign_health import HealthAction
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec
from v2c.handlers.ota.domain.campaign_run import (
    FailGate,
    Finish,
    Hold,
    NextWave,
    Notify,
    OutcomeStep,
    PassGate,
    Stall,
    dispatch_open,
    eligible_targets,
    next_step,
    react_to_outcome,
    release_due,
    stall,
    unnotified_moves,
)
from v2c.handlers.ota.domain.canary import GateVerdict
from v2c.handlers.ota.domain.counters import CampaignCounters, Counter
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.maintenance_window import MaintenanceWindow
from v2c.handlers.ota.domain.plan import Target, Wave

FIRMWARE = "0" * 32
NOW_MS = 1_900_000_000_000
C = CampaignCounters
S = CampaignStatus

CANARY_THEN_ROLLOUT = (Wave("canary", 10, gated=True), Wave("rollout", 100, gated=False))
TWO_UNGATED = (Wave("a", 10, gated=False), Wave("b", 100, gated=False))


@dataclass(frozen=True)
class Run:
    """A campaign as the rules read it."""

    waves: tuple[Wave, ...] = CANARY_THEN_ROLLOUT
    current_wave: int = 0
    cursor: int = 0
    counters: CampaignCounters = field(default_factory=CampaignCounters)
    wave_counters: tuple[CampaignCounters, ...] = (C(), C())
    status: CampaignStatus = S.IN_PROGRESS
    spec: CampaignSpec = field(
        default_factory=lambda: CampaignSpec(
            name="c", firmware_id=FIRMWARE, target_filter="year > 0"
        )
    )
    stalled: bool = False
    last_progress_at_ms: int = NOW_MS

    @property
    def target_count(self) -> int:
        return self.waves[-1].end


# -- the end of a wave ---------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "run", "expected"),
    [
        (
            "ungated wave fully notified: the next starts",
            Run(waves=TWO_UNGATED, cursor=10, counters=C(in_progress=10, pending=90)),
            NextWave(1),
        ),
        (
            "canary still reporting: hold and say wait",
            Run(cursor=10, wave_counters=(C(in_progress=4, completed=6), C(pending=90))),
            Hold(GateVerdict.WAIT),
        ),
        (
            "canary all completed: the gate passes into the rollout",
            Run(cursor=10, wave_counters=(C(completed=10), C(pending=90))),
            PassGate,
        ),
        (
            "canary with 2 of 10 failed: pause",
            Run(cursor=10, wave_counters=(C(completed=8, failed=2), C(pending=90))),
            FailGate,
        ),
        (
            "last wave notified, updates outstanding: hold",
            Run(current_wave=1, cursor=100, counters=C(in_progress=3, completed=97)),
            Hold(),
        ),
        (
            "last wave notified, nothing outstanding: finish",
            Run(current_wave=1, cursor=100, counters=C(completed=99, failed=1)),
            Finish(),
        ),
    ],
)
def test_the_end_of_a_wave(case: str, run: Run, expected: object) -> None:
    step = next_step(run, NOW_MS)
    if isinstance(expected, type):
        assert isinstance(step, expected), case
    else:
        assert step == expected, case


def test_a_passed_gate_records_its_numbers_and_moves_to_the_next_wave() -> None:
    step = next_step(Run(cursor=10, wave_counters=(C(completed=10), C(pending=90))), NOW_MS)
    assert isinstance(step, PassGate)
    assert step.wave == 1
    assert step.gate is GateVerdict.PASS
    assert step.summary["wave"] == "canary"
    assert step.summary["completed"] == 10
    assert step.summary["decided_at"] == NOW_MS


def test_a_failed_gate_names_the_wave_in_the_pause_reason() -> None:
    step = next_step(Run(cursor=10, wave_counters=(C(completed=8, failed=2), C())), NOW_MS)
    assert isinstance(step, FailGate)
    assert step.status_reason.startswith("canary gate failed: ")
    assert step.status_reason.endswith(step.alert_detail)
    assert step.gate is GateVerdict.FAIL_PAUSE


@pytest.mark.parametrize(
    ("in_progress", "batch_size", "max_concurrent", "expected"),
    [
        (0, 50, 10, 10),  # the concurrency window bounds the batch
        (7, 50, 10, 3),  # three free slots
        (10, 50, 10, 0),  # window full: wait for reports
        (0, 4, 10, 4),  # the batch size bounds it
    ],
)
def test_the_next_batch_inside_a_wave(
    in_progress: int, batch_size: int, max_concurrent: int, expected: int
) -> None:
    spec = CampaignSpec(
        name="c",
        firmware_id=FIRMWARE,
        target_filter="year > 0",
        batch_size=batch_size,
        max_concurrent_updates=max_concurrent,
    )
    run = Run(waves=TWO_UNGATED, spec=spec, counters=C(in_progress=in_progress, pending=90))
    assert next_step(run, NOW_MS) == Notify(expected)


def test_the_batch_never_crosses_the_end_of_the_wave() -> None:
    assert next_step(Run(cursor=8), NOW_MS) == Notify(2)


# -- may dispatch now -------------------------------------------------------------

MONDAY_NOON = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("case", "status", "spec_extra", "expected"),
    [
        ("running, no schedule", S.IN_PROGRESS, {}, True),
        ("paused", S.PAUSED, {}, False),
        ("created", S.CREATED, {}, False),
        ("before the scheduled start", S.IN_PROGRESS, {"start_in": timedelta(hours=1)}, False),
        ("after the scheduled start", S.IN_PROGRESS, {"start_in": -timedelta(hours=1)}, True),
        ("inside the window", S.IN_PROGRESS, {"window": ("11:00", "13:00")}, True),
        ("outside the window", S.IN_PROGRESS, {"window": ("01:00", "03:00")}, False),
    ],
)
def test_when_a_campaign_may_dispatch(
    case: str, status: CampaignStatus, spec_extra: dict[str, object], expected: bool
) -> None:
    extra: dict[str, object] = {}
    if "start_in" in spec_extra:
        start_in = spec_extra["start_in"]
        assert isinstance(start_in, timedelta)
        extra["scheduled_start"] = MONDAY_NOON + start_in
    if "window" in spec_extra:
        start, end = spec_extra["window"]  # type: ignore[misc]
        extra["maintenance_window"] = MaintenanceWindow.model_validate(
            {"start": start, "end": end, "timezone": "UTC"}
        )
    spec = CampaignSpec(name="c", firmware_id=FIRMWARE, target_filter="year > 0")
    spec = spec.model_copy(update=extra)  # a start in the past is refused at creation only
    assert dispatch_open(Run(status=status, spec=spec), MONDAY_NOON) is expected, case


@pytest.mark.parametrize(
    ("left_ms", "expected"),
    [(25 * 3600_000, False), (24 * 3600_000, True), (3600_000, True), (-1, True)],
)
def test_a_release_is_resigned_within_a_day_of_expiry(left_ms: int, expected: bool) -> None:
    assert release_due(NOW_MS + left_ms, NOW_MS, 24 * 3600_000) is expected


# -- who is eligible ------------------------------------------------------------


@dataclass(frozen=True)
class Car:
    vehicle_id: str
    model: str = "M"
    installed_version: str = "1.0.0"
    region: str = "eu"


@pytest.mark.parametrize(
    ("car", "eligible", "excluded"),
    [
        (Car("older", installed_version="1.9.9"), True, None),
        (Car("never updated", installed_version=""), True, None),
        (Car("unreadable version", installed_version="banana"), True, None),
        (Car("same version", installed_version="2.0.0"), False, "up_to_date"),
        (Car("newer", installed_version="2.1.0"), False, "up_to_date"),
        (Car("other model", model="X", installed_version="1.0.0"), False, "other_model"),
    ],
)
def test_who_is_eligible_for_version_2(car: Car, eligible: bool, excluded: str | None) -> None:
    result = eligible_targets([car], "M", "2.0.0")
    assert (
        result.targets == (Target(car.vehicle_id, "eu", car.model, car.installed_version),)
    ) is (eligible)
    expected = {"other_model": 0, "up_to_date": 0}
    if excluded:
        expected[excluded] = 1
    assert result.excluded == expected


# -- what a cancel or a rollback moves -------------------------------------------


@pytest.mark.parametrize(
    ("cursor", "campaign_moves", "wave_moves"),
    [
        (0, {"pending": -100, "cancelled": 100}, {0: 10, 1: 90}),
        (4, {"pending": -96, "cancelled": 96}, {0: 6, 1: 90}),
        (10, {"pending": -90, "cancelled": 90}, {1: 90}),
        (60, {"pending": -40, "cancelled": 40}, {1: 40}),
        (100, {}, {}),
    ],
)
def test_stopping_cancels_the_targets_never_notified(
    cursor: int, campaign_moves: dict[str, int], wave_moves: dict[int, int]
) -> None:
    moves = unnotified_moves(Run(cursor=cursor))
    assert {c.value: n for c, n in moves.campaign.items()} == campaign_moves
    assert {w: m[Counter.CANCELLED] for w, m in moves.waves.items()} == wave_moves
    assert all(m[Counter.PENDING] == -m[Counter.CANCELLED] for m in moves.waves.values())
    assert bool(moves) is (cursor < 100)


# -- how an outcome changes the campaign ----------------------------------------


@pytest.mark.parametrize(
    ("status", "counters", "action", "step"),
    [
        (
            S.IN_PROGRESS,
            C(completed=50, in_progress=50),
            HealthAction.CONTINUE,
            OutcomeStep.ADVANCE,
        ),
        (S.PAUSED, C(completed=50, in_progress=50), HealthAction.CONTINUE, OutcomeStep.NOTHING),
        (S.IN_PROGRESS, C(completed=90, failed=10), HealthAction.PAUSE, OutcomeStep.PAUSE),
        (S.PAUSED, C(completed=90, failed=10), HealthAction.PAUSE, OutcomeStep.NOTHING),
        (S.IN_PROGRESS, C(completed=70, failed=30), HealthAction.ROLLBACK, OutcomeStep.ROLLBACK),
        (S.PAUSED, C(completed=70, failed=30), HealthAction.ROLLBACK, OutcomeStep.ROLLBACK),
        (S.COMPLETED, C(completed=70, failed=30), HealthAction.CONTINUE, OutcomeStep.NOTHING),
        (S.CANCELLED, C(failed=100), HealthAction.CONTINUE, OutcomeStep.NOTHING),
    ],
)
def test_how_an_outcome_changes_the_campaign(
    status: CampaignStatus, counters: CampaignCounters, action: HealthAction, step: OutcomeStep
) -> None:
    reaction = react_to_outcome(Run(status=status, counters=counters))
    assert (reaction.action, reaction.step) == (action, step)


def test_without_auto_rollback_a_failing_campaign_pauses() -> None:
    spec = CampaignSpec(
        name="c", firmware_id=FIRMWARE, target_filter="year > 0", auto_rollback=False
    )
    reaction = react_to_outcome(Run(spec=spec, counters=C(completed=70, failed=30)))
    assert (reaction.action, reaction.step) == (HealthAction.PAUSE, OutcomeStep.PAUSE)


# -- when it stalls ---------------------------------------------------------------

HOUR_MS = 3600_000


@pytest.mark.parametrize(
    ("case", "idle_h", "counters", "flagged", "expected"),
    [
        ("idle a day with work outstanding", 25, C(in_progress=3), False, True),
        ("idle less than a day", 23, C(in_progress=3), False, False),
        ("idle, nothing outstanding", 25, C(completed=3), False, False),
        ("already flagged", 25, C(in_progress=3), True, False),
    ],
)
def test_when_a_campaign_stalls(
    case: str, idle_h: int, counters: CampaignCounters, flagged: bool, expected: bool
) -> None:
    run = Run(counters=counters, stalled=flagged, last_progress_at_ms=NOW_MS - idle_h * HOUR_MS)
    found = stall(run, NOW_MS)
    assert (found is not None) is expected, case
    if isinstance(found, Stall):
        assert "3 updates outstanding" in found.detail


STAGES = (
    Wave("stage-1", 10, gated=True),
    Wave("stage-2", 40, gated=True),
    Wave("stage-3", 100, gated=False),
)


def _staged(**fields: object) -> CampaignSpec:
    return CampaignSpec(
        name="c",
        firmware_id=FIRMWARE,
        target_filter="year > 0",
        deployment_strategy="staged",
        stage_percentages=(10, 40, 100),
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("wave", "completed", "failed", "verdict"),
    [
        (0, 99, 1, PassGate),  # 99 % meets the canary stage's 99 %
        (0, 98, 2, FailGate),  # 98 % does not
        (1, 98, 2, PassGate),  # but meets the pilot stage's 98 %
        (1, 97, 3, FailGate),
    ],
)
def test_each_stage_is_judged_by_its_own_success_rate(
    wave: int, completed: int, failed: int, verdict: type
) -> None:
    """Spec 002 §7: canary 99 %, pilot 98 %, production 97 %."""
    spec = _staged(stage_success_percentages=(99, 98), pause_threshold_percent=100)
    counters = [C(), C(), C()]
    counters[wave] = C(completed=completed, failed=failed)
    run = Run(
        waves=STAGES,
        current_wave=wave,
        cursor=STAGES[wave].end,
        counters=C(completed=completed, failed=failed),
        wave_counters=tuple(counters),
        spec=spec,
    )
    step = next_step(run, NOW_MS)
    assert isinstance(step, verdict)
    assert isinstance(step, PassGate | FailGate)
    assert step.summary["success_threshold_percent"] == (99, 98)[wave]


def test_without_stage_rates_every_stage_uses_the_campaign_success_rate() -> None:
    spec = _staged(success_threshold_percent=90)
    assert [spec.gate_thresholds(n).success_threshold_percent for n in (0, 1)] == [90, 90]


def test_stage_rates_need_one_per_gate_and_the_staged_strategy() -> None:
    with pytest.raises(ValueError, match="one success rate per stage but the last"):
        _staged(stage_success_percentages=(99, 98, 97))
    with pytest.raises(ValueError, match="staged strategy only"):
        CampaignSpec(
            name="c",
            firmware_id=FIRMWARE,
            target_filter="year > 0",
            deployment_strategy="canary",
            stage_success_percentages=(99,),
        )
