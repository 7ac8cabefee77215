"""Campaign counters and the rates computed from them.

Six counters partition a campaign's per-vehicle updates: every update is in
exactly one of them, so `total` is their sum (BR-OTA-042) and a state change
moves exactly one unit from one counter to another. The state machine returns
that move as `CounterDeltas`, which a repository applies atomically (DynamoDB
`ADD` in the same conditional write as the state) — never as recomputed totals,
which concurrent reports would overwrite.

Rates use BR-OTA-041: `success_rate = completed / finished * 100`, where the
finished updates are the completed and the failed ones; a vehicle that rolled
back did not take the update and counts as a failure (the FMEA's canary
"98/100 success, 2 rollbacks" is 98 %). Pending, in-progress and cancelled
updates are outside both rates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum


class Counter(StrEnum):
    """The counter names, also the attribute names a repository stores."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class CounterDeltas:
    """How one state change moves the counters: all zero, or -1 and +1."""

    pending: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    rolled_back: int = 0
    cancelled: int = 0

    @classmethod
    def move(cls, source: Counter, target: Counter) -> CounterDeltas:
        if source is target:
            return cls()
        values = {source.value: -1, target.value: 1}
        return cls(**values)

    def nonzero(self) -> dict[str, int]:
        """The counters to `ADD` in an update expression (empty: nothing to write)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def __bool__(self) -> bool:
        return bool(self.nonzero())


@dataclass(frozen=True, slots=True)
class CounterMoves:
    """Many units moved at once, for the whole campaign and per wave: what a
    cancel or a rollback does to targets that were never notified (they have
    no record to move one by one, only a share of `pending`)."""

    campaign: Mapping[Counter, int] = field(default_factory=dict)
    waves: Mapping[int, Mapping[Counter, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.campaign.values()) or any(
            any(moves.values()) for moves in self.waves.values()
        )

    @classmethod
    def summed(cls, changes: Iterable[tuple[CounterDeltas, int | None]]) -> CounterMoves:
        """The moves of many records' changes (each its deltas and its wave) as
        one: what a batch of status reports does to one campaign, written as a
        single `ADD` per counter instead of one write per report. Counters that
        sum to zero are left out (nothing to write for them)."""
        campaign: defaultdict[Counter, int] = defaultdict(int)
        waves: defaultdict[int, defaultdict[Counter, int]] = defaultdict(lambda: defaultdict(int))
        for deltas, wave in changes:
            for name, delta in deltas.nonzero().items():
                campaign[Counter(name)] += delta
                if wave is not None:
                    waves[wave][Counter(name)] += delta
        return cls(
            {c: d for c, d in campaign.items() if d},
            {w: {c: d for c, d in m.items() if d} for w, m in waves.items() if any(m.values())},
        )


@dataclass(frozen=True, slots=True)
class CampaignCounters:
    pending: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    rolled_back: int = 0
    cancelled: int = 0

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
        """Updates that ended without the new version running: failed or rolled back."""
        return self.failed + self.rolled_back

    @property
    def finished(self) -> int:
        """The denominator of BR-OTA-041: completed, failed and rolled back."""
        return self.completed + self.failures

    @property
    def outstanding(self) -> int:
        """Updates that have not ended yet."""
        return self.pending + self.in_progress

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
