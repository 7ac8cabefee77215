"""Update timeouts, enforced by the monitor (BR-OTA-018/025, NFR-8; retries BR-OTA-024).

An update's deadline is `notified_at + timeout`: a campaign's records carry
the campaign's `timeout_minutes` (set at dispatch), a device update its own
`timeout_ms`. Each monitor pass (every minute) reads the updates whose
deadline passed from the sparse `by-due` index, at most `limit` of them
(bounded work, whatever the fleet's size), reads each record again (the
index lags) and applies `Command.TIME_OUT`:

* with retries left (the record's `max_retries`, else its campaign's, and
  only while the campaign runs: a paused or stopping campaign notifies
  nobody), the update is notified again with a new deadline (`retries` + 1,
  counted in progress throughout: no failure is counted for it). No cancel
  is sent: a vehicle still working on it takes the repeat as a re-delivery
  and carries on; one that lost it takes it afresh;
* without, it ends TIMED_OUT (counted `timed_out`, a failure for the rates)
  and the vehicle gets a signed CANCEL_UPDATE (`vehicle_commands.cancel_update`,
  one per vehicle), so a vehicle that comes back does not install an update
  the cloud gave up on. The campaigns touched then react once each, as to
  a batch of reports (`CampaignService.on_outcome`): the pause and
  rollback thresholds see the failures, and so does the canary gate.

A late report is the truth about the vehicle: TIMED_OUT is the cloud's
conclusion (`decided_by_cloud`), so a COMPLETED (an install the cancel could
not stop), FAILED or ROLLED_BACK that arrives after it replaces it and the
counters move from `timed_out` to where the vehicle says; any other report
changes nothing.

A record that moved between the read and the write (the vehicle reported
just now) loses its conditional write and is left to the next pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from v2c.contract.errors import Conflict, NotFound, TransientError
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.timeouts import MAX_DUE_PER_PASS, DueKind, deadline_passed
from v2c.handlers.ota.domain.update_state import Command, UpdateState, apply_command
from v2c.handlers.ota.updates.commands import UpdateCommands
from v2c.handlers.ota.updates.notices import Notices
from v2c.handlers.ota.updates.record import VehicleUpdate
from v2c.handlers.ota.vehicle_commands import CommandTarget, cancel_update

logger = logging.getLogger(__name__)

TIMED_OUT_EVENT = "update.timed_out"
CANCEL_REASON = "timed out"


@dataclass
class TimeoutPass:
    timed_out: int = 0  # ended for good (a failure)
    retried: int = 0  # notified again with a new deadline
    campaigns: set[str] = field(default_factory=set)  # to react: their rates moved


class Timeouts:
    def __init__(
        self,
        deps: CampaignServiceDeps,
        commands: UpdateCommands,
        notices: Notices,
        limit: int = MAX_DUE_PER_PASS,
    ) -> None:
        self._d = deps
        self._commands = commands
        self._notices = notices
        self._limit = limit

    def run(self, now_ms: int) -> TimeoutPass:
        result = TimeoutPass()
        campaigns: dict[str, Campaign | None] = {}
        for due in self._d.updates.due(DueKind.TIMEOUT, now_ms, self._limit):
            try:
                update = self._d.updates.find(due.vehicle_id, due.update_id)
                if update is None or not deadline_passed(update, now_ms):
                    continue
                self._time_out(update, self._max_retries(update, campaigns), now_ms, result)
            except Conflict:
                continue  # it moved: the vehicle spoke; the next pass looks again
            except TransientError as exc:
                logger.warning(
                    "an update past its deadline could not be timed out; the next pass retries",
                    extra={"vehicle_id": due.vehicle_id, "error": str(exc)},
                )
        return result

    def _max_retries(self, update: VehicleUpdate, campaigns: dict[str, Campaign | None]) -> int:
        """Retries the update may still use now: none outside a running campaign."""
        if not update.campaign_id:
            return update.max_retries or 0
        if update.campaign_id not in campaigns:
            try:
                campaigns[update.campaign_id] = self._d.campaigns.get(update.campaign_id)
            except NotFound:
                campaigns[update.campaign_id] = None
        campaign = campaigns[update.campaign_id]
        if campaign is None or campaign.status is not CampaignStatus.IN_PROGRESS:
            return 0
        return update.max_retries if update.max_retries is not None else campaign.spec.max_retries

    def _time_out(
        self, update: VehicleUpdate, max_retries: int, now_ms: int, result: TimeoutPass
    ) -> None:
        transition = apply_command(update.machine, Command.TIME_OUT, max_retries=max_retries)
        if not transition.changed:
            return
        retry = transition.after.state is UpdateState.NOTIFIED
        if retry:
            after = update.with_machine(
                transition.after,
                updated_at_ms=now_ms,
                notified_at_ms=now_ms,
                notifications=update.notifications + 1,
                reason=transition.reason[:500],
            )
        else:
            after = update.with_machine(
                transition.after,
                updated_at_ms=now_ms,
                completed_at_ms=now_ms,
                reason=transition.reason[:500],
            )
        if retry:  # no counter moves, and no campaign progress either: no campaign write
            self._d.updates.save(update, after)
        else:
            self._commands.record(update, after, transition.deltas, now_ms)
        if retry:
            self._notices.send(after)
            result.retried += 1
            return
        # The record left the due index with this write: what follows must not
        # be lost to a failure, as no later pass would come back for it.
        result.timed_out += 1
        if update.campaign_id:
            result.campaigns.add(update.campaign_id)
        command = cancel_update(
            campaign_id=update.campaign_id,
            update_id=update.update_id,
            reason=CANCEL_REASON,
            now_ms=now_ms,
            vehicle_id=update.vehicle_id,
        )
        try:
            self._d.commands.send(command, [CommandTarget(update.vehicle_id, update.region)])
        except TransientError as exc:
            # The vehicle's next report about the update meets the cancelled
            # record and is answered with the cancel again (`status`).
            self._d.alerts.alert(
                "vehicle_command_unsent",
                update.campaign_id,
                f"CANCEL_UPDATE (timed out) to {update.vehicle_id}: {exc}",
            )
        self._d.events.publish(
            TIMED_OUT_EVENT,
            {
                "vehicle_id": update.vehicle_id,
                "update_id": update.device_update_id,
                "campaign_id": update.campaign_id,
                "state": update.state.value,
                "retries": update.retries,
                "notified_at": update.notified_at_ms,
                "timed_out_at": now_ms,
            },
        )
