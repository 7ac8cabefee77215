"""What the campaign, status and device services need from storage, as protocols.

The services are written against these, not against the DynamoDB and S3
classes, so the same orchestration runs over AWS, moto and the in-memory
stores of `in_memory.py` (the millisecond unit tests). Each method is named
for what it means to a campaign (`pass_gate`, `notify_at_cursor`), never
for how it is written: expressions, attribute names and transaction items
stay inside the adapters.

The contract every implementation keeps:

* a write conditioned on what was read (status, cursor, wave, lease; an
  update's state and sequence) raises `StaleWrite` when the stored record
  moved meanwhile, and changes nothing;
* a missing record is `NotFound` from `get`, None from `find`;
* counters move by adding, never by writing totals: concurrent reports
  must not overwrite each other's moves;
* a batch of update records is written in one all-or-nothing transaction
  of at most `TRANSACTION_ITEMS` items (records and campaign writes); a
  record that moved meanwhile makes it `StaleRecords`, naming every such
  record, and nothing is written; a dispatch chunk's new records commit the
  same way with the campaign's cursor move (`create_many`), all or none.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from v2c.contract.errors import V2CError
from v2c.handlers.ota.campaigns.record import Campaign, Release, StatusChange
from v2c.handlers.ota.domain.counters import CounterDeltas, CounterMoves
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.plan import Target
from v2c.handlers.ota.domain.target_filter import Expr
from v2c.handlers.ota.domain.timeouts import DueKind
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.fleet import Vehicle
from v2c.handlers.ota.fleet_index.select import FleetSnapshot
from v2c.handlers.ota.updates.record import VehicleUpdate

UpdateKey = tuple[str, str]  # (vehicle_id, update_id): an update record's key


@dataclass(frozen=True, slots=True)
class RecordsRead:
    """The records a batch of reports names, as one read found them."""

    found: Mapping[UpdateKey, VehicleUpdate]
    # Keys the store could not read now (DynamoDB left them unprocessed, or
    # the request failed), each with the error: their reports are retried,
    # never taken for reports about unknown updates.
    unread: Mapping[UpdateKey, V2CError] = field(default_factory=dict)


class CampaignWrite:
    """A write on a campaign item that must commit together with a vehicle's
    update record (one transaction). The campaign store makes it, the update
    store of the same backend commits it; the services only pass it along."""

    __slots__ = ()


class CampaignStore(Protocol):
    def get(self, campaign_id: str) -> Campaign: ...

    def list(
        self, status: CampaignStatus | None = None, *, limit: int = 50, start: str | None = None
    ) -> tuple[list[Campaign], str | None]: ...

    def iter_status(self, *statuses: CampaignStatus) -> Iterator[Campaign]: ...

    def active_campaigns_using(self, firmware_id: str) -> builtins.list[str]: ...

    def put_new(self, campaign: Campaign) -> None:
        """`Conflict` if the id exists (a retried creation)."""
        ...

    def request_start(self, campaign: Campaign, now_ms: int) -> Campaign:
        """Record a start asked for while planning (`StaleWrite` if the
        campaign is no longer planning: start it the usual way)."""
        ...

    def finish_planning(self, leased: Campaign, planned: Campaign) -> Campaign:
        """Move a planning campaign to `planned` (created, with its targets,
        waves and counters; or planning failed) if it is still planning under
        `leased`'s lease, else `StaleWrite` (cancelled meanwhile, or another
        planner took over). A start requested meanwhile is kept."""
        ...

    def change_status(
        self, campaign: Campaign, change: StatusChange, unnotified: CounterMoves | None = None
    ) -> Campaign:
        """Move `campaign` as read to `change.status`. With `unnotified` (a
        cancel, a rollback) the cursor must not have moved either, so no
        vehicle is notified between the count and the stop."""
        ...

    def set_release(self, campaign: Campaign, release: Release) -> Campaign: ...

    def next_wave(self, campaign: Campaign) -> Campaign:
        """Start the next wave; conditioned on the wave as read."""
        ...

    def pass_gate(self, campaign: Campaign, summary: dict[str, Any]) -> Campaign:
        """Record the gate's verdict and start the next wave."""
        ...

    def fail_gate(self, campaign: Campaign, reason: str, summary: dict[str, Any]) -> Campaign:
        """Record the gate's verdict and pause."""
        ...

    def flag_stalled(self, campaign: Campaign) -> Campaign: ...

    def acquire_lease(
        self, campaign: Campaign, owner: str, now_ms: int, ttl_ms: int
    ) -> Campaign | None:
        """Become the one dispatcher for `ttl_ms`, or None while another
        holds an unexpired lease."""
        ...

    def release_lease(self, campaign_id: str, owner: str) -> None: ...

    def notify_at_cursor(self, campaign: Campaign, now_ms: int, count: int = 1) -> CampaignWrite:
        """Move the cursor past the next `count` targets (a dispatch chunk),
        `count` from pending to in progress for the campaign and its current
        wave, if the campaign is still running at this cursor and wave (else
        none of the chunk's update records is written either)."""
        ...

    def move_counters(
        self, campaign_id: str, deltas: CounterDeltas, wave: int | None, now_ms: int
    ) -> CampaignWrite:
        """Move the counters with an update record's change, and mark progress."""
        ...

    def count_reports(self, campaign_id: str, moves: CounterMoves, now_ms: int) -> CampaignWrite:
        """Move the counters by the summed changes of a batch's records of this
        campaign (whole campaign and per wave: one write, not one per report),
        and mark progress."""
        ...


class UpdateStore(Protocol):
    def find(self, vehicle_id: str, update_id: str) -> VehicleUpdate | None: ...

    def get(self, vehicle_id: str, update_id: str) -> VehicleUpdate: ...

    def by_device_update_id(self, device_update_id: str) -> VehicleUpdate: ...

    def for_vehicle(self, vehicle_id: str) -> list[VehicleUpdate]: ...

    def for_campaign(
        self, campaign_id: str, states: frozenset[UpdateState] | None = None
    ) -> Iterator[VehicleUpdate]: ...

    def due(self, kind: DueKind, now_ms: int, limit: int) -> list[VehicleUpdate]:
        """Up to `limit` updates of `kind` whose due time (`timeouts.due_at`)
        is at or before `now_ms`, earliest first, without reading any other
        (DynamoDB: the sparse `by-due` index, eventually consistent)."""
        ...

    def create(self, update: VehicleUpdate, with_campaign: CampaignWrite | None = None) -> bool:
        """Write a new record; False if it exists already or `with_campaign`'s
        condition failed (nothing is written then)."""
        ...

    def create_many(
        self, updates: Sequence[VehicleUpdate], with_campaign: CampaignWrite | None = None
    ) -> bool:
        """Write new records and `with_campaign` in one transaction of at most
        `TRANSACTION_ITEMS` items (`ValueError` beyond); False, and nothing
        written, if any record exists already or the campaign write's
        condition failed."""
        ...

    def save(
        self,
        before: VehicleUpdate,
        after: VehicleUpdate,
        with_campaign: CampaignWrite | None = None,
    ) -> None:
        """Write `after` if the stored record still has `before`'s state and
        sequence, else `StaleWrite`."""
        ...

    def find_reported(self, keys: Collection[UpdateKey]) -> RecordsRead:
        """The current records a batch of status reports names, read together
        (consistently; DynamoDB: BatchGetItem, 100 keys a request)."""
        ...

    def save_reported(
        self,
        changes: Sequence[tuple[VehicleUpdate, VehicleUpdate]],
        with_campaigns: Sequence[CampaignWrite] = (),
    ) -> None:
        """Write every `(before, after)` and the campaign writes in one
        transaction, each record conditioned on `before`'s state and sequence;
        `StaleRecords` naming the records that moved (nothing is written)."""
        ...


class PlanStore(Protocol):
    def write(self, campaign_id: str, targets: Sequence[Target]) -> int: ...

    def read(self, campaign_id: str, start: int, stop: int) -> list[Target]:
        """Targets `[start, stop)` in dispatch order."""
        ...


class FleetDirectory(Protocol):
    def put(self, vehicles: Iterable[Vehicle]) -> int: ...

    def get(self, vehicle_id: str) -> Vehicle | None: ...

    def get_many(self, vehicle_ids: Iterable[str]) -> dict[str, Vehicle]: ...

    def select(
        self, expr: Expr | None, devices: Iterable[str] = (), groups: Iterable[str] = ()
    ) -> list[Vehicle]:
        """The registered vehicles a campaign targets, read from the registry
        itself (exact; a full read of the matching partition)."""
        ...

    def set_installed_version(self, vehicle_id: str, version: str) -> None:
        """No-op for a vehicle that is not registered."""
        ...

    def set_installed_versions(self, versions: Mapping[str, str]) -> None:
        """`set_installed_version` for many vehicles (one index delta per model)."""
        ...

    def index_size(self, models: Collection[str] | None = None) -> int | None:
        """Bytes a read of the fleet index for `models` (None: every model)
        would fetch; None: this directory keeps no index (select instead)."""
        ...

    def snapshot(self, models: Collection[str] | None = None) -> FleetSnapshot:
        """The fleet index for `models` (None: every model), eventually
        consistent with the registry."""
        ...

    def maintain(self) -> dict[str, int]:
        """Keep the index cheap to read (the monitor's pass); what it did."""
        ...


class RollbackLog(Protocol):
    def put(self, row: dict[str, Any]) -> None: ...

    def finish(self, vehicle_id: str, rollback_id: str, status: str, now_ms: int) -> None:
        """No-op for a rollback that was never recorded."""
        ...

    def for_campaign(self, campaign_id: str) -> list[dict[str, Any]]: ...
