"""One active update per vehicle across campaigns, carried out: screen, supersede, hold, release.

`domain.coordination.arbitrate` decides; this module reads what it needs
(the vehicle's records: one Query on the vehicle's partition; the priority
and status of the campaigns they belong to, read once per call) and writes
the answer:

* dispatch (`screen`, then `carry_out` once the chunk is recorded): a
  vehicle busy with an update of equal or higher rank, or installing one,
  is recorded and held back (`Command.HOLD`: WAITING, counted `waiting`,
  not notified); a lower-rank update not yet installing is cancelled
  (`Command.CANCEL`, counted `cancelled` in its own campaign, reason
  "superseded by ...") and the vehicle gets a signed CANCEL_UPDATE before
  the new notification. A victim that started installing meanwhile refuses
  the cancel: the new update waits instead.
* the monitor (`release_waiting`): each waiting update whose recheck is
  due (the sparse `by-due` index, a bounded number per pass) is weighed
  again and notified (WAITING -> NOTIFIED, a fresh deadline), or looked at
  again a recheck later. A campaign's waiting vehicles are notified only
  while it dispatches (running, started, in its window) and within its
  concurrency window.

The vehicle still has the last word: a notification that crosses another
campaign's (the screen is a read, not a lock) is answered REJECTED
UPDATE_IN_PROGRESS, which queues it the same way (`update_state.apply_busy`)
and is never a failure.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from v2c.contract.errors import Conflict, NotFound, TransientError
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.domain.campaign_run import dispatch_open
from v2c.handlers.ota.domain.coordination import (
    EXPLICIT_RANK,
    ROLLBACK_RANK,
    Arbitration,
    Claim,
    Verdict,
    arbitrate,
    priority_rank,
)
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.timeouts import MAX_DUE_PER_PASS, DueKind, recheck_due
from v2c.handlers.ota.domain.update_state import TERMINAL, Command, UpdateState, apply_command
from v2c.handlers.ota.events import update_cancelled_detail
from v2c.handlers.ota.updates.commands import UpdateCommands
from v2c.handlers.ota.updates.notices import Notices
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.handlers.ota.vehicle_commands import CommandTarget, cancel_update

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Released:
    """What a monitor pass did with the waiting updates due for a look."""

    notified: int = 0
    superseded: int = 0  # other campaigns' updates cancelled to make room
    still_waiting: int = 0


# Campaigns whose updates may still be with vehicles: running, paused, rolling
# back, or stopped with an installation that finishes after the stop.
_MAY_HOLD = (
    CampaignStatus.IN_PROGRESS,
    CampaignStatus.PAUSED,
    CampaignStatus.ROLLING_BACK,
    CampaignStatus.CANCELLED,
    CampaignStatus.ROLLED_BACK,
)


class _Campaigns:
    """The campaigns a call reads, each once."""

    def __init__(self, deps: CampaignServiceDeps) -> None:
        self._d = deps
        self._seen: dict[str, Campaign | None] = {}

    def get(self, campaign_id: str) -> Campaign | None:
        if campaign_id not in self._seen:
            try:
                self._seen[campaign_id] = self._d.campaigns.get(campaign_id)
            except NotFound:
                self._seen[campaign_id] = None
        return self._seen[campaign_id]

    def put(self, campaign: Campaign) -> None:
        self._seen[campaign.campaign_id] = campaign


class Coordinator:
    def __init__(
        self, deps: CampaignServiceDeps, commands: UpdateCommands, notices: Notices
    ) -> None:
        self._d = deps
        self._commands = commands
        self._notices = notices

    def _now_ms(self) -> int:
        return int(self._d.clock() * 1000)

    # -- claims --------------------------------------------------------------

    def _claim(self, update: VehicleUpdate, campaigns: _Campaigns) -> Claim:
        if update.kind is UpdateKind.ROLLBACK:
            rank, live = ROLLBACK_RANK, True
        elif not update.campaign_id:
            rank, live = EXPLICIT_RANK, True
        else:
            campaign = campaigns.get(update.campaign_id)
            if campaign is None:  # a deleted campaign holds nobody up
                rank, live = 0, False
            else:
                rank = priority_rank(campaign.spec.priority)
                live = campaign.status is CampaignStatus.IN_PROGRESS
        return Claim(
            update.update_id, update.campaign_id, rank, update.state, update.created_at_ms, live
        )

    def _weigh(self, new: Claim, vehicle_id: str, campaigns: _Campaigns) -> Arbitration:
        others = self._d.updates.for_vehicle(vehicle_id)
        return arbitrate(new, (self._claim(u, campaigns) for u in others))

    # -- dispatch --------------------------------------------------------------

    def screen(
        self, campaign: Campaign, updates: Sequence[VehicleUpdate]
    ) -> dict[str, Arbitration]:
        """Per vehicle of a chunk about to be notified, whether it may be.

        Only vehicles another campaign holds are weighed (their records read
        then): reading every target's records cost a query per vehicle and
        cut the fan-out tenfold (`v2c bench campaign`: 666 -> 66 notifications
        a second), while campaigns running side by side are few. A vehicle
        busy with an update outside any campaign (a fleet manager's device
        update) answers REJECTED UPDATE_IN_PROGRESS, which waits, never fails."""
        campaigns = _Campaigns(self._d)
        campaigns.put(campaign)
        rank = priority_rank(campaign.spec.priority)
        held = self._held_by_others(campaign, campaigns)
        return {
            u.vehicle_id: self._weigh(
                Claim(u.update_id, campaign.campaign_id, rank, u.state, u.created_at_ms),
                u.vehicle_id,
                campaigns,
            )
            for u in updates
            if u.vehicle_id in held
        }

    def _held_by_others(self, campaign: Campaign, campaigns: _Campaigns) -> set[str]:
        """The vehicles with an update of another campaign not yet ended: of
        the campaigns whose counters show one in flight or waiting (a query
        per such campaign, none when this campaign runs alone)."""
        held: set[str] = set()
        for other in self._d.campaigns.iter_status(*_MAY_HOLD):
            if other.campaign_id == campaign.campaign_id:
                continue
            if other.counters.in_progress + other.counters.waiting == 0:
                continue
            campaigns.put(other)
            held.update(
                u.vehicle_id
                for u in self._d.updates.for_campaign(other.campaign_id)
                if u.state not in TERMINAL
            )
        return held

    def carry_out(
        self,
        campaign: Campaign,
        updates: Sequence[VehicleUpdate],
        verdicts: dict[str, Arbitration],
    ) -> tuple[list[VehicleUpdate], list[VehicleUpdate]]:
        """After the chunk is recorded (all notified): cancel the superseded
        updates, hold back the busy vehicles; (to notify, held back)."""
        go: list[VehicleUpdate] = []
        held: list[VehicleUpdate] = []
        for update in updates:
            verdict = verdicts.get(update.vehicle_id)
            if verdict is None or verdict.verdict is Verdict.GO:
                go.append(update)
                continue
            reason = verdict.reason
            if verdict.verdict is Verdict.SUPERSEDE:
                if self._supersede(update, verdict, campaign.campaign_id):
                    go.append(update)
                    continue
                reason = "a superseded update started installing"
            if self._hold(update, reason):
                held.append(update)
            # else: the record moved meanwhile (cancelled): nothing to send
        return go, held

    def _hold(self, update: VehicleUpdate, reason: str) -> bool:
        """The record just written as notified, held back: never sent, so
        not counted as a notification either. False if it moved meanwhile."""
        transition = apply_command(update.machine, Command.HOLD)
        if transition.after.state is not UpdateState.WAITING:
            return False
        now = self._now_ms()
        after = update.with_machine(
            transition.after,
            updated_at_ms=now,
            notified_at_ms=0,
            notifications=0,
            reason=f"waiting: {reason}"[:500],
        )
        try:
            self._commands.record(update, after, transition.deltas, now)
        except Conflict:
            return False
        return True

    def _supersede(self, update: VehicleUpdate, verdict: Arbitration, by_campaign: str) -> bool:
        """Cancel every victim of `verdict` (False: one could not be: installing)."""
        now = self._now_ms()
        by = f"superseded by campaign {by_campaign}" if by_campaign else "superseded"
        for victim in verdict.victims:
            record = self._d.updates.find(update.vehicle_id, victim.update_id)
            if record is None:
                continue
            try:
                applied = self._commands.apply(record, Command.CANCEL, reason=by)
            except Conflict:
                return False
            if applied.update.state is not UpdateState.CANCELLED:
                return False
            if applied.changed:
                command = cancel_update(
                    campaign_id=record.campaign_id,
                    update_id=record.update_id,
                    reason=by,
                    now_ms=now,
                    vehicle_id=record.vehicle_id,
                )
                self._d.commands.send(command, [CommandTarget(record.vehicle_id, record.region)])
                self._d.events.publish(
                    "update.cancelled", update_cancelled_detail(applied.update, reason=by)
                )
        return True

    # -- the monitor -------------------------------------------------------------

    def release_waiting(self, now_ms: int, limit: int = MAX_DUE_PER_PASS) -> Released:
        """Notify the waiting updates whose vehicle is free now; look at the
        others again a recheck later. At most `limit` updates per pass."""
        campaigns = _Campaigns(self._d)
        released: defaultdict[str, int] = defaultdict(int)
        notified = superseded = waiting = 0
        for due in self._d.updates.due(DueKind.WAITING, now_ms, limit):
            try:
                update = self._d.updates.find(due.vehicle_id, due.update_id)
                if update is None or not recheck_due(update, now_ms):
                    continue
                blocked = self._campaign_blocks(update, campaigns, released, now_ms)
                verdict = (
                    Arbitration(Verdict.WAIT, blocked)
                    if blocked
                    else self._weigh(self._claim(update, campaigns), update.vehicle_id, campaigns)
                )
                if verdict.verdict is Verdict.SUPERSEDE:
                    if self._supersede(update, verdict, update.campaign_id):
                        superseded += len(verdict.victims)
                    else:
                        verdict = Arbitration(Verdict.WAIT, "a superseded update is installing")
                if verdict.verdict is Verdict.WAIT:
                    self._touch(update, verdict.reason, now_ms)
                    waiting += 1
                elif self._notify(update, now_ms):
                    notified += 1
                    released[update.campaign_id] += 1
            except Conflict:
                continue  # the record moved (a report, a cancel): the next pass sees it
            except TransientError as exc:
                logger.warning(
                    "a waiting update could not be looked at; the next pass retries",
                    extra={"vehicle_id": due.vehicle_id, "error": str(exc)},
                )
        return Released(notified, superseded, waiting)

    def _campaign_blocks(
        self,
        update: VehicleUpdate,
        campaigns: _Campaigns,
        released: dict[str, int],
        now_ms: int,
    ) -> str:
        """Why the update's campaign may not notify it now ("" if it may). A
        rollback or a device update does not wait for any campaign's dispatch."""
        if update.kind is not UpdateKind.CAMPAIGN or not update.campaign_id:
            return ""
        campaign = campaigns.get(update.campaign_id)
        if campaign is None:
            return "its campaign is gone"
        if not dispatch_open(campaign, datetime.fromtimestamp(now_ms / 1000, tz=UTC)):
            return f"campaign {campaign.status.value}, outside its start or window"
        in_flight = campaign.counters.in_progress + released.get(update.campaign_id, 0)
        if in_flight >= campaign.spec.max_concurrent_updates:
            return "the campaign's concurrency window is full"
        return ""

    def _touch(self, update: VehicleUpdate, reason: str, now_ms: int) -> None:
        """Look again a recheck later: the record's time moves, nothing else
        (no campaign write: a vehicle still waiting is no campaign progress)."""
        after = update.with_machine(
            update.machine, updated_at_ms=now_ms, reason=f"waiting: {reason}"[:500]
        )
        self._d.updates.save(update, after)

    def _notify(self, update: VehicleUpdate, now_ms: int) -> bool:
        transition = apply_command(update.machine, Command.NOTIFY)
        if not transition.changed:
            return False
        after = update.with_machine(
            transition.after,
            updated_at_ms=now_ms,
            notified_at_ms=now_ms,
            notifications=update.notifications + 1,
            reason="",
        )
        self._commands.record(update, after, transition.deltas, now_ms)
        self._notices.send(after)
        return True
