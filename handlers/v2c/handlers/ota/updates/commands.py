"""A cloud command on one vehicle's update, with its campaign counter move,
under optimistic concurrency.

Cancel (a campaign's or a fleet manager's), retry, notify and revert (a
rollback that completed) all go through the same state machine as the
vehicle's reports (`update_state.apply_command`), and all write the same
way: the record conditioned on the state and sequence it was read with, and
the campaign's counters moved in the same transaction. The campaign
service, the device service, rollbacks and status ingest share this one
collaborator instead of each keeping a copy of the loop (and rollbacks no
longer reach into the campaign service for it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from v2c.contract.errors import Conflict
from v2c.handlers.ota.concurrency import CONFLICT_RETRIES, retry_stale
from v2c.handlers.ota.domain.counters import CounterDeltas
from v2c.handlers.ota.domain.update_state import (
    Command,
    Outcome,
    UpdateState,
    apply_command,
    reason_moves,
)
from v2c.handlers.ota.metrics import records_written
from v2c.handlers.ota.stores import CampaignStore, UpdateStore
from v2c.handlers.ota.updates.record import VehicleUpdate


@dataclass(frozen=True, slots=True)
class Applied:
    update: VehicleUpdate  # as stored afterwards
    changed: bool


class UpdateCommands:
    def __init__(
        self,
        campaigns: CampaignStore,
        updates: UpdateStore,
        clock: Callable[[], float],
        attempts: int = CONFLICT_RETRIES,
    ) -> None:
        self._campaigns = campaigns
        self._updates = updates
        self._clock = clock
        self._attempts = attempts

    def record(
        self, before: VehicleUpdate, after: VehicleUpdate, deltas: CounterDeltas, now_ms: int
    ) -> None:
        """Write `after` over `before` with its campaign's counter move (and
        the campaign's progress mark, even when no counter moves); `StaleWrite`
        if the record changed since it was read. The failures by reason move
        here, where both records' reasons are known (the machine has none)."""
        move = None
        if before.campaign_id:
            deltas = deltas.with_reasons(
                reason_moves(before.state, before.reason, after.state, after.reason)
            )
            move = self._campaigns.move_counters(before.campaign_id, deltas, before.wave, now_ms)
        self._updates.save(before, after, move)
        records_written([(before, after)])  # counted once written: an update that ended

    def apply(
        self,
        update: VehicleUpdate,
        command: Command,
        *,
        max_retries: int = 3,
        reason: str | None = None,
        strict: bool = False,
    ) -> Applied:
        """Apply `command` to `update` (re-read and re-decided after a lost race).

        `strict` is for a fleet manager's command on one update: one that
        cannot act says why (409) instead of quietly changing nothing, because
        the caller asked for exactly this update."""
        reads = iter([update])  # the first attempt uses the record the caller holds

        def attempt() -> Applied:
            before = next(reads, None) or self._updates.get(update.vehicle_id, update.update_id)
            transition = apply_command(before.machine, command, max_retries=max_retries)
            if strict and (
                transition.outcome is Outcome.REFUSED
                or (
                    command is Command.CANCEL
                    and transition.outcome is Outcome.NOOP
                    and before.state is not UpdateState.CANCELLED
                )
            ):
                raise Conflict(
                    f"cannot {command.value} update {before.device_update_id}: {transition.reason}"
                )
            if not transition.changed:
                return Applied(before, changed=False)
            now_ms = int(self._clock() * 1000)
            renotified: dict[str, int] = {}
            if command is Command.NOTIFY:
                # A re-notification (a fleet manager's retry) is a new promise:
                # its deadline counts from now, not from the first notification.
                renotified = {"notified_at_ms": now_ms, "notifications": before.notifications + 1}
            after = before.with_machine(
                transition.after,
                updated_at_ms=now_ms,
                reason=reason or command.value,
                **renotified,
            )
            self.record(before, after, transition.deltas, now_ms)
            return Applied(after, changed=True)

        return retry_stale(
            attempt,
            gave_up=f"update {update.device_update_id} keeps changing; try again",
            attempts=self._attempts,
        )
