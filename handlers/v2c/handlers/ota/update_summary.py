"""Fleet statistics folded from per-vehicle update records: pure (BR-OTA-041 to 045).

`StatsService` reads the records (bounded, see there) and hands them here
one at a time; this module decides what each one counts towards, so the
rules are tested without a store:

* an update's counter is the one its state maps to (`COUNTER_OF`, as the
  campaign counters do), so rates follow BR-OTA-041 exactly as campaigns'
  do: `completed / (completed + failed) * 100`, a rollback or a time-out a
  failure, pending and in-progress ones outside;
* the last 24 hours (BR-OTA-043) are judged by the records' own timestamps,
  against the `now_ms` the caller passes (no clock read here): an update
  *started* in the window was created in it (a record is born when the
  vehicle is notified), one *completed* or *failed* in it reached that
  state in it (`completed_at_ms`, else the last write, `updated_at_ms`);
* the average update time (BR-OTA-044) is over completed updates only, from
  the first progress report (`started_at_ms`) to completion, in minutes; an
  update the vehicle never reported starting falls back to the vehicle's
  own total duration, then to the time since notification;
* data transferred (BR-OTA-045) is the sum of the package's file size over
  completed updates only: a failed or cancelled download is not counted,
  whatever bytes it moved.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from v2c.handlers.ota.domain.counters import CampaignCounters, Counter
from v2c.handlers.ota.domain.update_state import COUNTER_OF, UpdateState
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate

DAY_MS: Final = 24 * 3600 * 1000
FAILURE_COUNTERS: Final = frozenset({Counter.FAILED, Counter.ROLLED_BACK, Counter.TIMED_OUT})


@dataclass(frozen=True, slots=True)
class PackageFacts:
    """What the statistics need of a package (`None` when it is unknown)."""

    size_bytes: int
    device_model: str


PackageLookup = Callable[[str], PackageFacts | None]


def rate(completed: int, failed: int) -> float | None:
    """BR-OTA-041 in percent, rounded; None while nothing finished (0/0 is not 0 %)."""
    finished = completed + failed
    return None if finished == 0 else round(completed * 100 / finished, 2)


def update_minutes(update: VehicleUpdate) -> float | None:
    """A completed update's duration in minutes (BR-OTA-044); None if unknown."""
    if update.state is not UpdateState.COMPLETED or not update.completed_at_ms:
        return None
    if update.started_at_ms and update.completed_at_ms >= update.started_at_ms:
        took = update.completed_at_ms - update.started_at_ms
    elif update.total_duration_ms > 0:
        took = update.total_duration_ms
    elif update.notified_at_ms and update.completed_at_ms >= update.notified_at_ms:
        took = update.completed_at_ms - update.notified_at_ms
    else:
        return None
    return took / 60_000


@dataclass(slots=True)
class _Tally:
    """Counters of one group (a firmware version, a device type, a vehicle)."""

    counts: dict[Counter, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, counter: Counter) -> None:
        self.counts[counter] += 1

    @property
    def completed(self) -> int:
        return self.counts[Counter.COMPLETED]

    @property
    def failed(self) -> int:
        return sum(self.counts[c] for c in FAILURE_COUNTERS)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {c.value: self.counts[c] for c in Counter}
        data["total"] = sum(self.counts.values())
        data["success_rate"] = rate(self.completed, self.failed)
        return data


@dataclass(slots=True)
class UpdateSummary:
    """The fold of update records; `add` them, then read the figures."""

    now_ms: int
    packages: PackageLookup
    records: int = 0
    outside_campaigns: CampaignCounters = field(default_factory=CampaignCounters)
    all_updates: _Tally = field(default_factory=_Tally)
    by_version: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    by_device_type: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    minutes: list[float] = field(default_factory=list)
    data_transferred: int = 0
    last_24h_started: int = 0
    last_24h_completed: int = 0
    last_24h_failed: int = 0
    last_24h_data_transferred: int = 0
    _known: dict[str, PackageFacts | None] = field(default_factory=dict)

    def _package(self, firmware_id: str) -> PackageFacts | None:
        if firmware_id not in self._known:
            self._known[firmware_id] = self.packages(firmware_id)
        return self._known[firmware_id]

    def add(self, update: VehicleUpdate) -> None:
        counter = COUNTER_OF[update.state]
        self.records += 1
        self.all_updates.add(counter)
        if update.kind is not UpdateKind.CAMPAIGN:
            self.outside_campaigns = self.outside_campaigns.moved({counter: 1})
        package = self._package(update.firmware_id)
        self.by_version[update.to_version or "unknown"].add(counter)
        self.by_device_type[package.device_model if package else "unknown"].add(counter)
        since = self.now_ms - DAY_MS
        if update.created_at_ms >= since:
            self.last_24h_started += 1
        ended_at = update.completed_at_ms or update.updated_at_ms
        if counter is Counter.COMPLETED:
            size = package.size_bytes if package else 0
            self.data_transferred += size
            minutes = update_minutes(update)
            if minutes is not None:
                self.minutes.append(minutes)
            if ended_at >= since:
                self.last_24h_completed += 1
                self.last_24h_data_transferred += size
        elif counter in FAILURE_COUNTERS and ended_at >= since:
            self.last_24h_failed += 1

    @property
    def avg_update_minutes(self) -> float | None:
        return round(sum(self.minutes) / len(self.minutes), 2) if self.minutes else None

    def to_json(self) -> dict[str, Any]:
        return {
            "avg_update_time": self.avg_update_minutes,
            "avg_update_time_unit": "minutes",
            "total_data_transferred": self.data_transferred,
            "last_24h_updates": self.last_24h_started,
            "last_24h_completed": self.last_24h_completed,
            "last_24h_failures": self.last_24h_failed,
            "last_24h_data_transferred": self.last_24h_data_transferred,
            "updates_by_firmware_version": {
                version: tally.to_json() for version, tally in sorted(self.by_version.items())
            },
            "updates_by_device_type": {
                model: tally.to_json() for model, tally in sorted(self.by_device_type.items())
            },
        }
