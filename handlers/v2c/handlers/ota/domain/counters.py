"""Campaign counters and the rates computed from them.

Eight counters partition a campaign's per-vehicle updates: every update is in
exactly one of them, so `total` is their sum (BR-OTA-042) and a state change
moves exactly one unit from one counter to another. The state machine returns
that move as `CounterDeltas`, which a repository applies atomically (DynamoDB
`ADD` in the same conditional write as the state) — never as recomputed totals,
which concurrent reports would overwrite.

Rates use BR-OTA-041: `success_rate = completed / finished * 100`, where the
finished updates are the completed and the failed ones; a vehicle that rolled
back did not take the update and counts as a failure (the FMEA's canary
"98/100 success, 2 rollbacks" is 98 %). An update the monitor timed out for
good (BR-OTA-018/025, no retry left) is a failure too, counted apart
(`timed_out`) so a fleet manager sees silence apart from errors; a late
COMPLETED from the vehicle moves it to `completed`. Pending, in-progress,
waiting and cancelled updates are outside both rates: `waiting` holds the
vehicles found busy with another campaign's update (at dispatch, or by their
REJECTED UPDATE_IN_PROGRESS), which are notified once free and are never
failures of the campaign that found them busy (BR-OTA-014/023).

Failures are also counted by reason (`CounterDeltas.reasons`): a record that
enters a failure state adds one to its reason, one that leaves it takes one
away, in the same write as the state counters, so the campaign item answers
"failures by reason" without reading its records (`update_state.reason_moves`
decides the moves; the statistics' fold over the records is the cross-check).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Final


class Counter(StrEnum):
    """The counter names, also the attribute names a repository stores."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"  # a failure: the deadline passed with no retry left
    WAITING = "waiting"  # not notified: the vehicle is busy with another update


_COUNTERS: Final = tuple(c.value for c in Counter)

# A failure reason's moves: (reason, -1 or +1); empty for most changes.
ReasonMoves = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class CounterDeltas:
    """How one state change moves the counters: all zero, or -1 and +1; and
    the failure reasons it moves (`reasons`: a small tuple, usually empty,
    so the status ingest's hot path allocates nothing for it)."""

    pending: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    rolled_back: int = 0
    cancelled: int = 0
    timed_out: int = 0
    waiting: int = 0
    reasons: ReasonMoves = ()

    @classmethod
    def move(cls, source: Counter, target: Counter) -> CounterDeltas:
        if source is target:
            return cls()
        return _MOVES[source, target]

    def with_reasons(self, reasons: ReasonMoves) -> CounterDeltas:
        """These deltas, moving `reasons` too (self when there are none)."""
        return replace(self, reasons=reasons) if reasons else self

    def nonzero(self) -> dict[str, int]:
        """The counters to `ADD` in an update expression (empty: nothing to write)."""
        return {name: getattr(self, name) for name in _COUNTERS if getattr(self, name)}

    def __bool__(self) -> bool:
        return bool(self.nonzero()) or bool(self.reasons)

    @property
    def affects_rates(self) -> bool:
        """A finished counter moved: the success and failure rates changed."""
        return bool(self.completed or self.failed or self.rolled_back or self.timed_out)


# Every move from one counter to another, made once: the hot path only looks it up.
_MOVES: Final = {
    (source, target): CounterDeltas(**{source.value: -1, target.value: 1})  # type: ignore[arg-type]
    for source in Counter
    for target in Counter
    if source is not target
}


@dataclass(frozen=True, slots=True)
class CounterMoves:
    """Many units moved at once, for the whole campaign and per wave: what a
    cancel or a rollback does to targets that were never notified (they have
    no record to move one by one, only a share of `pending`)."""

    campaign: Mapping[Counter, int] = field(default_factory=dict)
    waves: Mapping[int, Mapping[Counter, int]] = field(default_factory=dict)
    # Failures by reason, for the whole campaign only (no wave needs them).
    reasons: Mapping[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return (
            any(self.campaign.values())
            or any(any(moves.values()) for moves in self.waves.values())
            or any(self.reasons.values())
        )

    @classmethod
    def summed(cls, changes: Iterable[tuple[CounterDeltas, int | None]]) -> CounterMoves:
        """The moves of many records' changes (each its deltas and its wave) as
        one: what a batch of status reports does to one campaign, written as a
        single `ADD` per counter instead of one write per report. Counters (and
        reasons) that sum to zero are left out (nothing to write for them)."""
        campaign: defaultdict[Counter, int] = defaultdict(int)
        waves: defaultdict[int, defaultdict[Counter, int]] = defaultdict(lambda: defaultdict(int))
        reasons: defaultdict[str, int] = defaultdict(int)
        for deltas, wave in changes:
            for name, delta in deltas.nonzero().items():
                campaign[Counter(name)] += delta
                if wave is not None:
                    waves[wave][Counter(name)] += delta
            for reason, delta in deltas.reasons:
                reasons[reason] += delta
        return cls(
            {c: d for c, d in campaign.items() if d},
            {w: {c: d for c, d in m.items() if d} for w, m in waves.items() if any(m.values())},
            {r: d for r, d in reasons.items() if d},
        )


@dataclass(frozen=True, slots=True)
class CampaignCounters:
    pending: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    rolled_back: int = 0
    cancelled: int = 0
    timed_out: int = 0
    waiting: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"counter {f.name} is negative: {getattr(self, f.name)}")

    def apply(self, deltas: CounterDeltas) -> CampaignCounters:
        """The counters after a change; raises ValueError if one would go negative."""
        return CampaignCounters(
            **{f.name: getattr(self, f.name) + getattr(deltas, f.name) for f in fields(self)}
        )

    def moved(self, moves: Mapping[Counter, int]) -> CampaignCounters:
        """The counters after a bulk move (`CounterMoves`); a repository's
        `ADD` cannot refuse to go below zero, so neither does this: it stops at 0."""
        return CampaignCounters(**{c.value: max(0, self.get(c) + moves.get(c, 0)) for c in Counter})

    def get(self, counter: Counter) -> int:
        value: int = getattr(self, counter.value)
        return value

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    @property
    def failures(self) -> int:
        """Updates that ended without the new version running: failed, rolled
        back or timed out."""
        return self.failed + self.rolled_back + self.timed_out

    @property
    def finished(self) -> int:
        """The denominator of BR-OTA-041: completed, failed, rolled back and timed out."""
        return self.completed + self.failures

    @property
    def outstanding(self) -> int:
        """Updates that have not ended yet (waiting ones are still to notify)."""
        return self.pending + self.in_progress + self.waiting

    @property
    def success_rate(self) -> float | None:
        """BR-OTA-041 in percent; None while nothing has finished (0/0 is not 0 %)."""
        return None if self.finished == 0 else self.completed * 100 / self.finished

    @property
    def failure_rate(self) -> float | None:
        """BR-OTA-040 in percent of finished updates; None while nothing has finished."""
        return None if self.finished == 0 else self.failures * 100 / self.finished

    @property
    def progress_percent(self) -> float:
        """Share of updates that have ended (finished or cancelled), for dashboards."""
        return 100.0 if self.total == 0 else (self.total - self.outstanding) * 100 / self.total
