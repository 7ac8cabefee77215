"""One vehicle's update history as the API pages it (PRD E5-US3): pure.

Newest first (AC2) by creation time, the record's id breaking ties, so the
order is total and a page boundary is a position `(created_at_ms,
update_id)`: the next page starts strictly after it. A position, not an
offset, so updates made while a client pages (they are newer: they sort
first) never shift what the next page shows.

The vehicle's success rate (AC4) is BR-OTA-041 over its whole history, not
the page: completed / (completed + failed) in percent, where a rollback or
a time-out is a failure and pending, in-progress and cancelled updates are
outside, as for campaigns.

A vehicle's records are one partition of the updates table (one Query,
`UpdateStore.for_vehicle`); a vehicle collects a few updates a year, so
reading them all to sort them costs one or two requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from v2c.handlers.ota.domain.counters import Counter
from v2c.handlers.ota.domain.update_state import COUNTER_OF
from v2c.handlers.ota.update_summary import FAILURE_COUNTERS, rate
from v2c.handlers.ota.updates.record import VehicleUpdate

Position = tuple[int, str]  # (created_at_ms, update_id) of the last item shown


def _key(update: VehicleUpdate) -> Position:
    return (update.created_at_ms, update.update_id)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    items: tuple[VehicleUpdate, ...]
    next_position: Position | None  # None: this is the last page
    total: int  # the vehicle's updates, all pages
    completed: int
    failed: int

    @property
    def success_rate(self) -> float | None:
        return rate(self.completed, self.failed)


def history_page(
    updates: Sequence[VehicleUpdate], *, limit: int, after: Position | None = None
) -> HistoryPage:
    """The page of `limit` updates after `after` (None: the newest), newest first."""
    ordered = sorted(updates, key=_key, reverse=True)
    start = (
        0
        if after is None
        else next((n for n, u in enumerate(ordered) if _key(u) < after), len(ordered))
    )
    items = tuple(ordered[start : start + limit])
    more = start + limit < len(ordered)
    counters = [COUNTER_OF[u.state] for u in ordered]
    return HistoryPage(
        items=items,
        next_position=_key(items[-1]) if more and items else None,
        total=len(ordered),
        completed=sum(1 for c in counters if c is Counter.COMPLETED),
        failed=sum(1 for c in counters if c in FAILURE_COUNTERS),
    )
