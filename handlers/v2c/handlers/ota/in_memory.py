"""The OTA stores in memory: for unit tests, and for a run without AWS.

Each class keeps the contract of its DynamoDB or S3 counterpart (see
`stores.py`), because a fake that is kinder than the real store hides the
races the services are written to survive:

* conditional writes compare what the caller read with what is stored
  (status, cursor, wave, lease; an update's state and sequence) and raise
  `StaleWrite` without writing anything when they differ (`StaleRecords`,
  naming every record that moved, for a batch of records);
* a new update record and its campaign write commit together or not at all,
  like one `TransactWriteItems`, and so do a dispatch chunk's new records
  and its cursor move, and a batch of records and its campaigns' counter
  writes (at most `TRANSACTION_ITEMS` items, as DynamoDB allows);
* counters move by adding, and a counter read never goes below zero
  (`Campaign.from_item` clamps the same way); failure reasons too (kept as
  summed, read through `Campaign.failures_by_reason`);
* `get` raises `NotFound`, `find` returns None, `put_new` refuses an
  existing id with `Conflict`.

`conflicts` lets a test make the next N conditional writes of a store lose
their race, the one thing a single-threaded test cannot arrange otherwise
(a batch loses on its first record). A record `find` cannot read (a
subclass raising `TransientError`) is unread in `find_reported`, as a key
DynamoDB leaves unprocessed.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from v2c.contract.errors import Conflict, NotFound, TransientError, V2CError
from v2c.handlers.ota.campaigns.record import Campaign, Release, StatusChange
from v2c.handlers.ota.concurrency import StaleRecords, StaleWrite
from v2c.handlers.ota.domain.counters import Counter, CounterDeltas, CounterMoves
from v2c.handlers.ota.domain.lifecycle import ACTIVE, CampaignStatus
from v2c.handlers.ota.domain.report_batch import TRANSACTION_ITEMS
from v2c.handlers.ota.domain.timeouts import DueKind, due_at, due_kind
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.stores import CampaignWrite, RecordsRead, UpdateKey
from v2c.handlers.ota.updates.record import VehicleUpdate


@dataclass(frozen=True, slots=True, eq=False)
class MemoryWrite(CampaignWrite):
    """A campaign write held back until the update record commits with it."""

    store: InMemoryCampaignStore
    campaign_id: str
    holds: Callable[[Campaign], bool]  # the write's condition
    change: Callable[[Campaign], Campaign]


def _moved(campaign: Campaign, moves: Mapping[int | None, Mapping[Counter, int]]) -> Campaign:
    """`campaign` after adding `moves` (key None: the whole campaign; else a wave)."""
    waves = list(campaign.wave_counters)
    counters = campaign.counters
    for wave, deltas in moves.items():
        if wave is None:
            counters = counters.moved(deltas)
        elif wave < len(waves):
            waves[wave] = waves[wave].moved(deltas)
    return campaign.evolve(counters=counters, wave_counters=tuple(waves))


def _reasons_moved(campaign: Campaign, moves: Iterable[tuple[str, int]]) -> Campaign:
    """`campaign` after adding failure-reason moves: stored as DynamoDB's
    `ADD` leaves them (a sum from 0, zeros dropped as `from_item` drops them)."""
    reasons = dict(campaign.failure_reasons)
    for reason, delta in moves:
        reasons[reason] = reasons.get(reason, 0) + delta
    return campaign.evolve(failure_reasons={r: n for r, n in reasons.items() if n})


class InMemoryCampaignStore:
    def __init__(self) -> None:
        self._items: dict[str, Campaign] = {}
        self._lock = threading.RLock()
        self.conflicts = 0  # the next N conditional writes lose their race

    # -- reads ---------------------------------------------------------------

    def get(self, campaign_id: str) -> Campaign:
        with self._lock:
            try:
                return self._items[campaign_id]
            except KeyError:
                raise NotFound(f"campaign {campaign_id!r} not found") from None

    def list(
        self, status: CampaignStatus | None = None, *, limit: int = 50, start: str | None = None
    ) -> tuple[builtins.list[Campaign], str | None]:
        with self._lock:
            found = [c for c in self._items.values() if status is None or c.status is status]
        if status is not None:
            found.sort(key=lambda c: c.created_at_ms, reverse=True)
        first = int(start) if start else 0
        page = found[first : first + max(1, min(limit, 100))]
        rest = first + len(page)
        return page, str(rest) if rest < len(found) else None

    def iter_status(self, *statuses: CampaignStatus) -> Iterator[Campaign]:
        for status in statuses:
            yield from self.list(status, limit=100)[0]

    def active_campaigns_using(self, firmware_id: str) -> builtins.list[str]:
        with self._lock:
            return sorted(
                c.campaign_id
                for c in self._items.values()
                if c.status in ACTIVE and c.firmware_id == firmware_id
            )

    # -- writes ----------------------------------------------------------------

    def put_new(self, campaign: Campaign) -> None:
        with self._lock:
            if campaign.campaign_id in self._items:
                raise Conflict(f"campaign {campaign.campaign_id!r} already exists")
            self._items[campaign.campaign_id] = campaign

    def request_start(self, campaign: Campaign, now_ms: int) -> Campaign:
        return self._update(campaign, start_requested_at_ms=now_ms)

    def finish_planning(self, leased: Campaign, planned: Campaign) -> Campaign:
        with self._lock:
            stored = self.get(leased.campaign_id)
            if (
                self._lose()
                or stored.status is not CampaignStatus.PLANNING
                or stored.lease_owner != leased.lease_owner
            ):
                raise StaleWrite(
                    f"campaign {leased.campaign_id} is no longer planned by this planner"
                )
            after = planned.evolve(start_requested_at_ms=stored.start_requested_at_ms)
            self._items[leased.campaign_id] = after
            return after

    def _update(
        self,
        campaign: Campaign,
        *,
        cursor: bool = False,
        wave: bool = False,
        moves: Mapping[int | None, Mapping[Counter, int]] | None = None,
        **changes: Any,
    ) -> Campaign:
        with self._lock:
            stored = self.get(campaign.campaign_id)
            lost = (
                self._lose()
                or stored.status is not campaign.status
                or (cursor and stored.cursor != campaign.cursor)
                or (wave and stored.current_wave != campaign.current_wave)
            )
            if lost:
                raise StaleWrite(
                    f"campaign {campaign.campaign_id} changed meanwhile; read it again"
                )
            after = stored.evolve(revision=stored.revision + 1, **changes)
            after = _moved(after, moves or {})
            self._items[campaign.campaign_id] = after
            return after

    def _lose(self) -> bool:
        if self.conflicts > 0:
            self.conflicts -= 1
            return True
        return False

    def change_status(
        self, campaign: Campaign, change: StatusChange, unnotified: CounterMoves | None = None
    ) -> Campaign:
        if unnotified is None:
            return self._update(campaign, **change.changes())
        moves: dict[int | None, Mapping[Counter, int]] = {None: unnotified.campaign}
        moves.update({wave: deltas for wave, deltas in unnotified.waves.items()})
        return self._update(campaign, cursor=True, moves=moves, **change.changes())

    def set_release(self, campaign: Campaign, release: Release) -> Campaign:
        return self._update(campaign, release=release)

    def next_wave(self, campaign: Campaign) -> Campaign:
        return self._update(campaign, wave=True, current_wave=campaign.current_wave + 1)

    def pass_gate(self, campaign: Campaign, summary: dict[str, Any]) -> Campaign:
        return self._update(
            campaign, wave=True, current_wave=campaign.current_wave + 1, gate=summary
        )

    def fail_gate(self, campaign: Campaign, reason: str, summary: dict[str, Any]) -> Campaign:
        return self._update(
            campaign, wave=True, status=CampaignStatus.PAUSED, status_reason=reason, gate=summary
        )

    def flag_stalled(self, campaign: Campaign) -> Campaign:
        return self._update(campaign, stalled=True)

    def acquire_lease(
        self, campaign: Campaign, owner: str, now_ms: int, ttl_ms: int
    ) -> Campaign | None:
        with self._lock:
            stored = self._items.get(campaign.campaign_id)
            if stored is None or not (
                stored.lease_until_ms < now_ms or stored.lease_owner == owner
            ):
                return None
            leased = stored.evolve(lease_owner=owner, lease_until_ms=now_ms + ttl_ms)
            self._items[campaign.campaign_id] = leased
            return leased

    def release_lease(self, campaign_id: str, owner: str) -> None:
        with self._lock:
            stored = self._items.get(campaign_id)
            if stored is not None and stored.lease_owner == owner:
                self._items[campaign_id] = stored.evolve(lease_until_ms=0)

    def notify_at_cursor(self, campaign: Campaign, now_ms: int, count: int = 1) -> MemoryWrite:
        if count < 1:
            raise ValueError(f"a chunk notifies at least one target, not {count}")
        at, wave = campaign.cursor, campaign.current_wave
        move = {Counter.PENDING: -count, Counter.IN_PROGRESS: count}

        def holds(stored: Campaign) -> bool:
            return (
                stored.status is CampaignStatus.IN_PROGRESS
                and stored.cursor == at
                and stored.current_wave == wave
            )

        def change(stored: Campaign) -> Campaign:
            after = stored.evolve(cursor=at + count, last_progress_at_ms=now_ms)
            return _moved(after, {None: move, wave: move})

        return MemoryWrite(self, campaign.campaign_id, holds, change)

    def move_counters(
        self, campaign_id: str, deltas: CounterDeltas, wave: int | None, now_ms: int
    ) -> MemoryWrite:
        moves = {Counter(name): delta for name, delta in deltas.nonzero().items()}

        def change(stored: Campaign) -> Campaign:
            after = stored.evolve(last_progress_at_ms=now_ms, stalled=False)
            after = _reasons_moved(after, deltas.reasons)
            return _moved(after, {None: moves} if wave is None else {None: moves, wave: moves})

        return MemoryWrite(self, campaign_id, lambda _stored: True, change)

    def count_reports(self, campaign_id: str, moves: CounterMoves, now_ms: int) -> MemoryWrite:
        summed: dict[int | None, Mapping[Counter, int]] = {None: moves.campaign}
        summed.update({wave: deltas for wave, deltas in moves.waves.items()})

        def change(stored: Campaign) -> Campaign:
            after = stored.evolve(last_progress_at_ms=now_ms, stalled=False)
            return _moved(_reasons_moved(after, moves.reasons.items()), summed)

        return MemoryWrite(self, campaign_id, lambda _stored: True, change)

    def commit(self, write: MemoryWrite, record: Callable[[], None]) -> bool:
        """Check `write`'s condition, run `record` (the update record's own
        conditional write, which may raise), then apply `write`: all or nothing."""
        with self._lock:
            stored = self._items.get(write.campaign_id)
            if stored is not None and not write.holds(stored):
                return False
            record()
            if stored is not None:
                self._items[write.campaign_id] = write.change(stored)
            return True


class InMemoryUpdateStore:
    def __init__(self) -> None:
        self._items: dict[tuple[str, str], VehicleUpdate] = {}
        self._lock = threading.RLock()
        self.conflicts = 0  # the next N `save`s lose their race

    def find(self, vehicle_id: str, update_id: str) -> VehicleUpdate | None:
        with self._lock:
            return self._items.get((vehicle_id, update_id))

    def get(self, vehicle_id: str, update_id: str) -> VehicleUpdate:
        found = self.find(vehicle_id, update_id)
        if found is None:
            raise NotFound(f"no update {update_id!r} for vehicle {vehicle_id!r}")
        return found

    def by_device_update_id(self, device_update_id: str) -> VehicleUpdate:
        with self._lock:
            for update in self._items.values():
                if update.device_update_id == device_update_id:
                    return update
        raise NotFound(f"update {device_update_id!r} not found")

    def for_vehicle(self, vehicle_id: str) -> list[VehicleUpdate]:
        with self._lock:
            mine = [u for (v, _), u in self._items.items() if v == vehicle_id]
        return sorted(mine, key=lambda u: (u.created_at_ms, u.update_id))

    def for_campaign(
        self, campaign_id: str, states: frozenset[UpdateState] | None = None
    ) -> Iterator[VehicleUpdate]:
        with self._lock:
            found = [u for u in self._items.values() if u.campaign_id == campaign_id]
        yield from (u for u in found if states is None or u.state in states)

    def due(self, kind: DueKind, now_ms: int, limit: int) -> list[VehicleUpdate]:
        with self._lock:
            found = [
                u
                for u in self._items.values()
                if due_kind(u) is kind and (due_at(u) or 0) <= now_ms
            ]
        found.sort(key=lambda u: (due_at(u) or 0, u.vehicle_id, u.update_id))
        return found[:limit]

    def create(self, update: VehicleUpdate, with_campaign: CampaignWrite | None = None) -> bool:
        key = (update.vehicle_id, update.update_id)

        def record() -> None:
            if key in self._items:
                raise _Exists
            self._items[key] = update

        with self._lock:
            try:
                return _together(with_campaign, record)
            except _Exists:
                return False

    def create_many(
        self, updates: Sequence[VehicleUpdate], with_campaign: CampaignWrite | None = None
    ) -> bool:
        items = len(updates) + (with_campaign is not None)
        if items > TRANSACTION_ITEMS:
            raise ValueError(f"{items} items exceed one transaction ({TRANSACTION_ITEMS})")
        keys = [(u.vehicle_id, u.update_id) for u in updates]

        def records() -> None:
            if len(set(keys)) < len(keys) or any(k in self._items for k in keys):
                raise _Exists
            self._items.update(zip(keys, updates, strict=True))

        with self._lock:
            try:
                return _together(with_campaign, records)
            except _Exists:
                return False

    def save(
        self,
        before: VehicleUpdate,
        after: VehicleUpdate,
        with_campaign: CampaignWrite | None = None,
    ) -> None:
        key = (after.vehicle_id, after.update_id)

        def record() -> None:
            stored = self._items.get(key)
            if (
                self.conflicts > 0
                or stored is None
                or (stored.state, stored.last_sequence) != (before.state, before.last_sequence)
            ):
                self.conflicts = max(0, self.conflicts - 1)
                raise StaleWrite(
                    f"update {after.update_id} of {after.vehicle_id} changed meanwhile"
                )
            self._items[key] = after

        with self._lock:
            if not _together(with_campaign, record):
                raise StaleWrite(
                    f"update {after.update_id} of {after.vehicle_id} changed meanwhile"
                )

    def find_reported(self, keys: Collection[UpdateKey]) -> RecordsRead:
        found: dict[UpdateKey, VehicleUpdate] = {}
        unread: dict[UpdateKey, V2CError] = {}
        for vehicle_id, update_id in dict.fromkeys(keys):
            try:
                update = self.find(vehicle_id, update_id)
            except TransientError as exc:
                unread[(vehicle_id, update_id)] = exc
                continue
            if update is not None:
                found[(vehicle_id, update_id)] = update
        return RecordsRead(found, unread)

    def save_reported(
        self,
        changes: Sequence[tuple[VehicleUpdate, VehicleUpdate]],
        with_campaigns: Sequence[CampaignWrite] = (),
    ) -> None:
        def records() -> None:
            stale = [
                (a.vehicle_id, a.update_id)
                for b, a in changes
                if (stored := self._items.get((a.vehicle_id, a.update_id))) is None
                or (stored.state, stored.last_sequence) != (b.state, b.last_sequence)
            ]
            if changes and self.conflicts > 0:
                self.conflicts -= 1
                stale.append((changes[0][1].vehicle_id, changes[0][1].update_id))
            if stale:
                raise StaleRecords(f"{len(stale)} of {len(changes)} updates moved", stale)
            for _before, after in changes:
                self._items[(after.vehicle_id, after.update_id)] = after

        with self._lock:
            _all_together(list(with_campaigns), records)


class _Exists(Exception):
    pass


def _all_together(writes: list[CampaignWrite], record: Callable[[], None]) -> None:
    """`record` and every campaign write, all or nothing (their conditions
    checked first, as a transaction does); the campaign writes of one batch
    carry no condition, so a refusal here is a broken fake, not a race."""
    if not writes:
        record()
    elif not _together(writes[0], lambda: _all_together(writes[1:], record)):
        raise StaleWrite("a campaign write's condition failed")


def _together(write: CampaignWrite | None, record: Callable[[], None]) -> bool:
    if write is None:
        record()
        return True
    if not isinstance(write, MemoryWrite):
        raise TypeError(f"an in-memory update store cannot commit {type(write).__name__}")
    return write.store.commit(write, record)
