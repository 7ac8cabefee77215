"""Counting a fleet by what each vehicle last reported: live progress and the final table.

A vehicle's state is the `OTAStatus` state of its last report (IDLE before
any), with the reason for the states that carry one (DEFERRED
INSUFFICIENT_BATTERY, FAILED S3_UNAVAILABLE, ROLLED_BACK BOOT_FAILURE, ...).
Pure: the simulator hands in (state, reason) pairs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

# Display order: the happy path first, then the outcomes.
STATE_ORDER: Final = (
    "IDLE",
    "ACCEPTED",
    "DEFERRED",
    "DOWNLOADING",
    "PAUSED",
    "DOWNLOADED",
    "INSTALLING",
    "REBOOTING",
    "VERIFYING",
    "COMPLETED",
    "FAILED",
    "ROLLED_BACK",
    "REJECTED",
)
TERMINAL: Final = frozenset({"COMPLETED", "FAILED", "ROLLED_BACK", "REJECTED"})


def state_rank(state: str) -> int:
    return STATE_ORDER.index(state) if state in STATE_ORDER else len(STATE_ORDER)


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """Where the fleet stands (also the final table of `v2c sim`)."""

    vehicles: int
    by_state: dict[str, int]
    by_state_reason: dict[tuple[str, str], int]
    connected: int = 0
    reports: int = 0
    delivered: int = 0
    notifications: int = 0
    power_cuts: int = 0
    errors: int = 0
    real_seconds: float = 0.0
    simulated_seconds: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, states: Iterable[tuple[str, str]], **totals: Any) -> FleetSummary:
        pairs = Counter(states)
        by_state: Counter[str] = Counter()
        for (state, _reason), n in pairs.items():
            by_state[state] += n
        return cls(
            vehicles=sum(pairs.values()),
            by_state=dict(sorted(by_state.items(), key=lambda kv: state_rank(kv[0]))),
            by_state_reason=dict(
                sorted(pairs.items(), key=lambda kv: (state_rank(kv[0][0]), kv[0][1]))
            ),
            **totals,
        )

    @property
    def finished(self) -> int:
        return sum(n for state, n in self.by_state.items() if state in TERMINAL)

    def count(self, state: str, reason: str | None = None) -> int:
        if reason is None:
            return self.by_state.get(state, 0)
        return self.by_state_reason.get((state, reason), 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "vehicles": self.vehicles,
            "by_state": self.by_state,
            "by_state_reason": [
                {"state": s, "reason": r, "vehicles": n}
                for (s, r), n in self.by_state_reason.items()
            ],
            "connected": self.connected,
            "reports": self.reports,
            "delivered": self.delivered,
            "notifications": self.notifications,
            "power_cuts": self.power_cuts,
            "errors": self.errors,
            "real_seconds": round(self.real_seconds, 3),
            "simulated_seconds": round(self.simulated_seconds, 1),
            "faults": self.faults,
        }
