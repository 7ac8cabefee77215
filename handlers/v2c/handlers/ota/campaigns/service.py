"""Campaigns: the fleet manager's commands, and the campaign's reaction to outcomes.

The front door of the campaign side: create (`creation`), plan a campaign
creation left planning (`planning`), approve, start, pause, resume, cancel,
roll back (`rollback`), advance (`dispatch`), react to a report that moved
the rates, and the periodic monitor. Every status
change is read, decided (`lifecycle.next_status`) and written with a
condition on what was read, retried from a fresh read when another writer
won (`concurrency.retry_stale`), so two racing commands never both win.

What each step *means* (next wave, gate passed or failed, finished, paused,
stalled, who is eligible, what a cancel moves) is decided in
`domain.campaign_run`; the services read, ask, and write the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from v2c.contract.errors import Conflict, Forbidden, InvalidField, TransientError, V2CError
from v2c.handlers.ota.campaigns.coordination import Coordinator
from v2c.handlers.ota.campaigns.creation import CampaignCreation, CreationReport
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.dispatch import AdvanceReport, Dispatcher
from v2c.handlers.ota.campaigns.planning import CampaignPlanner
from v2c.handlers.ota.campaigns.record import Campaign, StatusChange
from v2c.handlers.ota.campaigns.rollback import Rollbacks
from v2c.handlers.ota.campaigns.timeouts import Timeouts
from v2c.handlers.ota.concurrency import retry_stale
from v2c.handlers.ota.domain.campaign_health import HealthAction, HealthPolicy
from v2c.handlers.ota.domain.campaign_run import (
    OutcomeStep,
    react_to_outcome,
    stall,
    unnotified_moves,
)
from v2c.handlers.ota.domain.counters import Counter
from v2c.handlers.ota.domain.lifecycle import CampaignCommand, CampaignStatus, next_status
from v2c.handlers.ota.domain.rollback_rules import RollbackTrigger, automatic_trigger
from v2c.handlers.ota.domain.update_state import TERMINAL, Command
from v2c.handlers.ota.metrics import never_notified_cancelled
from v2c.handlers.ota.updates.commands import UpdateCommands
from v2c.handlers.ota.updates.notices import Notices
from v2c.handlers.ota.updates.record import VehicleUpdate
from v2c.handlers.ota.vehicle_commands import cancel_update

logger = logging.getLogger(__name__)


class SelfApproval(Forbidden):
    """The campaign's creator tried to approve it (separation of duties)."""

    reason = "self_approval"


class CampaignService:
    def __init__(self, deps: CampaignServiceDeps) -> None:
        self._d = deps
        self._config = deps.config
        # Shared with the status and device services, which are built on this one.
        self.commands = UpdateCommands(
            deps.campaigns, deps.updates, deps.clock, deps.config.conflict_retries
        )
        self.notices = Notices(deps.updates, deps.campaigns, deps.notifier)
        self.rollbacks = Rollbacks(deps, self.commands, self.notices)
        self._creation = CampaignCreation(deps)
        self._planner = CampaignPlanner(deps, start=self.start)
        self._coordinator = Coordinator(deps, self.commands, self.notices)
        self._dispatcher = Dispatcher(deps, self.notices, self._coordinator)
        self._timeouts = Timeouts(deps, self.commands, self.notices)

    def _now_ms(self) -> int:
        return int(self._d.clock() * 1000)

    def get(self, campaign_id: str) -> Campaign:
        return self._d.campaigns.get(campaign_id)

    def list_campaigns(
        self, status: CampaignStatus | None = None, limit: int = 50, start: str | None = None
    ) -> tuple[list[Campaign], str | None]:
        return self._d.campaigns.list(status, limit=limit, start=start)

    def _event(self, detail_type: str, campaign: Campaign, **extra: Any) -> None:
        self._d.events.publish(detail_type, campaign.event_detail(**extra))

    def create(
        self, data: object, *, created_by: str = "", idempotency_key: str | None = None
    ) -> CreationReport:
        return self._creation.create(data, created_by=created_by, idempotency_key=idempotency_key)

    def plan(self, campaign_id: str) -> Campaign:
        """Resolve and plan a campaign creation left planning (a no-op for
        any other, or while another planner holds it); the campaign after."""
        return self._planner.plan(campaign_id)

    # -- lifecycle -----------------------------------------------------------

    def _command(
        self,
        campaign_id: str,
        command: CampaignCommand,
        change: Callable[[Campaign, CampaignStatus], StatusChange],
        *,
        stop: bool = False,
    ) -> Campaign:
        """Move the campaign as `command` allows; with `stop`, never-notified
        targets are cancelled in the same conditional write."""

        cancelled = 0

        def attempt() -> Campaign:
            nonlocal cancelled
            campaign = self._d.campaigns.get(campaign_id)
            target = next_status(
                campaign.status,
                command,
                requires_approval=campaign.spec.requires_approval,
                approved=campaign.approved,
            )
            moves = unnotified_moves(campaign) if stop else None
            changed = self._d.campaigns.change_status(campaign, change(campaign, target), moves)
            cancelled = moves.campaign.get(Counter.CANCELLED, 0) if moves else 0
            return changed

        changed = retry_stale(
            attempt,
            gave_up=f"campaign {campaign_id} keeps changing; try again",
            attempts=self._config.conflict_retries,
        )
        never_notified_cancelled(cancelled)
        return changed

    @staticmethod
    def _reviewer(approver: str) -> str:
        """The principal approving or rejecting, whom the audit fields name."""
        if not approver.strip():
            raise InvalidField("approved_by", "must name the approver")
        return approver.strip()

    def approve(self, campaign_id: str, approver: str, comment: str = "") -> Campaign:
        """Record `approver` (the authenticated principal, never a name a
        client typed) as the campaign's approver, with the approver's
        `comment` (PRD E2-US6 AC2). Separation of duties: the principal that
        created the campaign cannot approve it (403)."""
        who = self._reviewer(approver)
        now = self._now_ms()

        def approval(campaign: Campaign, target: CampaignStatus) -> StatusChange:
            if campaign.created_by and campaign.created_by == who:
                raise SelfApproval("the creator of a campaign cannot approve it")
            return StatusChange(
                target,
                updated_at_ms=now,
                approved_by=who,
                approved_at_ms=now,
                approval_comment=comment.strip(),
            )

        campaign = self._command(campaign_id, CampaignCommand.APPROVE, approval)
        self._event("campaign.approved", campaign, approved_by=who, comment=comment.strip())
        return campaign

    def reject(self, campaign_id: str, approver: str, reason: str) -> Campaign:
        """The approver's no: a campaign awaiting approval ends `rejected`
        (final) with the reason; nobody was notified, so nothing else moves.
        Unlike approval, its creator may reject it: saying no to one's own
        campaign needs no second pair of eyes (and cancel could end it anyway)."""
        who = self._reviewer(approver)
        if not reason.strip():
            raise InvalidField("reason", "must say why the campaign is rejected")
        now = self._now_ms()
        campaign = self._command(
            campaign_id,
            CampaignCommand.REJECT,
            lambda _c, target: StatusChange(
                target,
                updated_at_ms=now,
                status_reason=reason.strip(),
                finished_at_ms=now,
                rejected_by=who,
                rejected_at_ms=now,
            ),
            stop=True,  # its targets, never notified, count as cancelled, not pending
        )
        self._event("campaign.rejected", campaign, rejected_by=who, reason=reason.strip())
        return campaign

    def start(self, campaign_id: str) -> Campaign:
        """Start dispatching. A campaign still planning records the start
        and answers as it is (planning); the planner starts it once planned."""
        now = self._now_ms()

        def attempt() -> Campaign:
            campaign = self._d.campaigns.get(campaign_id)
            target = next_status(
                campaign.status,
                CampaignCommand.START,
                requires_approval=campaign.spec.requires_approval,
                approved=campaign.approved,
            )
            if target is CampaignStatus.PLANNING:  # StaleWrite once planned: start it then
                return self._d.campaigns.request_start(campaign, now)
            change = StatusChange(
                target, updated_at_ms=now, started_at_ms=now, last_progress_at_ms=now
            )
            return self._d.campaigns.change_status(campaign, change)

        campaign = retry_stale(
            attempt,
            gave_up=f"campaign {campaign_id} keeps changing; try again",
            attempts=self._config.conflict_retries,
        )
        if campaign.status is CampaignStatus.PLANNING:
            logger.info("start queued until planned", extra={"campaign_id": campaign_id})
            return campaign
        self._event("campaign.started", campaign)
        self.advance(campaign_id)
        return self._d.campaigns.get(campaign_id)

    def pause(self, campaign_id: str, reason: str = "paused by a fleet manager") -> Campaign:
        now = self._now_ms()
        return self._command(
            campaign_id,
            CampaignCommand.PAUSE,
            lambda _c, target: StatusChange(target, updated_at_ms=now, status_reason=reason),
        )

    def resume(self, campaign_id: str) -> Campaign:
        now = self._now_ms()
        self._command(
            campaign_id,
            CampaignCommand.RESUME,
            lambda _c, target: StatusChange(
                target, updated_at_ms=now, status_reason="", last_progress_at_ms=now
            ),
        )
        self.advance(campaign_id)
        return self._d.campaigns.get(campaign_id)

    def cancel(self, campaign_id: str, reason: str = "cancelled by a fleet manager") -> Campaign:
        """Stop the campaign: targets never notified count as cancelled at
        once; notified updates not yet installing are cancelled one by one
        (an update already installing finishes: E3-US3); and every vehicle
        notified and not finished is told so (a signed CANCEL_UPDATE), since
        the cloud's records alone cannot stop a vehicle."""
        now = self._now_ms()
        campaign = self._command(
            campaign_id,
            CampaignCommand.CANCEL,
            lambda _c, target: StatusChange(
                target, updated_at_ms=now, status_reason=reason, finished_at_ms=now
            ),
            stop=True,
        )
        cancelled = 0
        in_flight: list[VehicleUpdate] = []
        for update in self._d.updates.for_campaign(campaign_id):
            if update.state in TERMINAL:
                continue
            in_flight.append(update)
            applied = self.commands.apply(
                update, Command.CANCEL, max_retries=campaign.spec.max_retries
            )
            cancelled += applied.changed
        # One command for the whole campaign, signed once per chunk of
        # vehicles: a vehicle not yet installing stops; one installing finishes.
        command = cancel_update(
            campaign_id=campaign_id,
            update_id=campaign.release.update_id,
            reason=reason,
            now_ms=now,
        )
        self.rollbacks.tell(command, in_flight, campaign_id)
        self._event("update.cancelled", campaign, cancelled_updates=cancelled, reason=reason)
        return self._d.campaigns.get(campaign_id)

    # -- dispatch ------------------------------------------------------------

    def advance(self, campaign_id: str) -> AdvanceReport:
        """Notify as many vehicles as the wave, the gate and the concurrency
        window allow now. Safe to call any time, from anywhere."""
        return self._dispatcher.advance(campaign_id)

    # -- outcomes and monitoring --------------------------------------------

    def on_completed(self, campaign_id: str, completed: Sequence[VehicleUpdate]) -> None:
        """Updates of the campaign that reports just completed. While the
        campaign rolls back (or after: a vehicle whose COMPLETED overrode the
        cancel the rollback recorded), each gets the signed rollback too
        (`Rollbacks.after_outcome`): it was installing when the rollback
        began. A cancelled campaign does nothing here: see `on_outcome`."""
        campaign = self._d.campaigns.get(campaign_id)
        if campaign.status in (CampaignStatus.ROLLING_BACK, CampaignStatus.ROLLED_BACK):
            self.rollbacks.after_outcome(campaign, completed)

    def on_outcome(self, campaign_id: str) -> HealthAction:
        """After a report that moved the rates: pause or roll back when the
        thresholds say so, else keep the rollout going; a campaign rolling
        back may now be rolled back (its last update in flight ended).

        A campaign that was cancelled does not react at all: a COMPLETED for
        an update the cloud cancelled (the vehicle was installing, or never got
        the cancel) is recorded as the vehicle's truth (its record, the
        campaign's counters and the registry's installed version say
        completed), but a cancel is final, so it passes no gate, dispatches
        nothing and is not rolled back."""
        campaign = self._d.campaigns.get(campaign_id)
        if campaign.status is CampaignStatus.ROLLING_BACK:
            self.rollbacks.finish_if_done(campaign_id)
            return HealthAction.CONTINUE
        reaction = react_to_outcome(campaign)
        if reaction.step is OutcomeStep.ROLLBACK:
            self._d.alerts.alert("campaign_auto_rollback", campaign_id, reaction.reason)
            trigger = automatic_trigger(campaign.counters, campaign.spec.health_policy())
            self.rollback(campaign_id, reason=reaction.reason, trigger=trigger)
        elif reaction.step is OutcomeStep.PAUSE:
            change = StatusChange(CampaignStatus.PAUSED, status_reason=reaction.reason)
            try:
                self._d.campaigns.change_status(campaign, change)
            except Conflict:
                return reaction.action
            self._d.alerts.alert("campaign_auto_paused", campaign_id, reaction.reason)
        elif reaction.step is OutcomeStep.ADVANCE:
            self.advance(campaign_id)
        return reaction.action

    @staticmethod
    def health_policy(campaign: Campaign) -> HealthPolicy:
        """The campaign's thresholds. During a gated wave the gate decides
        on that wave alone; the campaign-wide policy still guards the rest."""
        return campaign.spec.health_policy()

    def rollback(
        self,
        campaign_id: str,
        *,
        reason: str = "rollback requested",
        trigger: RollbackTrigger = RollbackTrigger.MANUAL,
    ) -> Campaign:
        """Stop the rollout, tell the vehicles in flight to stop (ROLL_BACK),
        and send every vehicle that completed the update a signed rollback to
        the version it ran before (BR-OTA-034). `trigger` (BR-OTA-031): MANUAL
        for a fleet manager; the failure threshold passes its own (see
        `rollback_rules.automatic_trigger`); the monitor passes TIMEOUT."""
        return self.rollbacks.campaign(campaign_id, reason=reason, trigger=trigger)

    def monitor(self, now_ms: int | None = None) -> dict[str, Any]:
        """The periodic pass (every minute): plan campaigns left planning (a
        lost planner), keep the fleet index compact, time out updates past
        their deadline (`campaigns.timeouts`; their campaigns react to the
        failures), notify waiting vehicles now free (`campaigns.coordination`),
        advance running campaigns (a scheduled start, a reopened maintenance
        window, a lost lease), flag stalled ones, and carry on rollbacks a
        crash stopped partway and finish those done (`Rollbacks.resume`)."""
        now_ms = now_ms if now_ms is not None else self._now_ms()
        planned = self._plan_waiting()
        timeouts = self._timeouts.run(now_ms)
        for campaign_id in sorted(timeouts.campaigns):
            try:
                self.on_outcome(campaign_id)
            except V2CError as exc:  # the timeouts are recorded; the next report or pass reacts
                logger.warning(
                    "campaign reaction to timeouts failed",
                    extra={"campaign_id": campaign_id, "error": str(exc)},
                )
        released = self._coordinator.release_waiting(now_ms)
        try:
            index = self._d.fleet.maintain()
        except TransientError as exc:  # the index can wait a pass; campaigns cannot
            logger.warning("fleet index maintenance failed: %s", exc)
            index = {}
        seen = advanced = stalled = 0
        for campaign in self._d.campaigns.iter_status(CampaignStatus.IN_PROGRESS):
            seen += 1
            advanced += self.advance(campaign.campaign_id).notified
            fresh = self._d.campaigns.get(campaign.campaign_id)
            found = stall(fresh, now_ms)
            if found is None:
                continue
            try:
                self._d.campaigns.flag_stalled(fresh)
            except Conflict:
                continue
            stalled += 1
            self._d.alerts.alert("campaign_stalled", fresh.campaign_id, found.detail)
        resumed = 0
        for campaign in self._d.campaigns.iter_status(CampaignStatus.ROLLING_BACK):
            try:
                resumed += self.rollbacks.resume(campaign)
            except V2CError as exc:  # the next pass tries again
                logger.warning(
                    "rollback not resumed",
                    extra={"campaign_id": campaign.campaign_id, "error": str(exc)},
                )
        return {
            "campaigns": seen,
            "notified": advanced,
            "stalled": stalled,
            "planned": planned,
            "timed_out": timeouts.timed_out,
            "retried": timeouts.retried,
            "released": released.notified,
            "superseded": released.superseded,
            "still_waiting": released.still_waiting,
            "rollbacks_resumed": resumed,
            **index,
        }

    def _plan_waiting(self) -> int:
        """Plan campaigns still planning whose planner never came or died
        (the planner skips those another one holds), and start those planned
        whose queued start was lost with their planner; how many moved on."""
        moved = attempted = 0
        for campaign in self._d.campaigns.iter_status(CampaignStatus.PLANNING):
            if attempted >= self._config.max_plans_per_pass:
                break
            attempted += 1
            try:
                after = self.plan(campaign.campaign_id)
            except TransientError as exc:
                logger.warning(
                    "planning failed; the next pass retries",
                    extra={"campaign_id": campaign.campaign_id, "error": str(exc)},
                )
                continue
            moved += after.status is not CampaignStatus.PLANNING
        for campaign in self._d.campaigns.iter_status(CampaignStatus.CREATED):
            if campaign.start_requested_at_ms is not None:
                try:
                    self.start(campaign.campaign_id)
                except V2CError as exc:
                    logger.warning("queued start failed: %s", exc)
        return moved
