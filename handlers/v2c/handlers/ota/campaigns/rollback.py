"""Rollbacks: a signed update back to the version a vehicle ran before, and
the commands that stop vehicles still on their way to the bad one.

A rollback is an ordinary update for the vehicle (its own release id, its
own sequence numbers) whose manifest carries `is_rollback`, the one case in
which the agent accepts a version that is not newer, at priority CRITICAL
(BR-OTA-033). One manifest is signed per target version, not per vehicle.
Each rollback is also a row in the rollbacks table (the audit trail
BR-OTA-035 asks for: who, why, which trigger (BR-OTA-031), from, to,
outcome). When a campaign rollback completes on a vehicle, the campaign's
original update moves from completed to rolled_back (`Command.REVERT`).

A campaign rollback (BR-OTA-034) treats each vehicle by where it stands:

* never notified: counted cancelled with the status change;
* notified, not finished (in flight): its record is cancelled if it has not
  begun installing, and every such vehicle gets one campaign-wide, signed
  ROLL_BACK command: one that has not begun installing aborts; one already
  installing finishes (an A/B slot write is not stopped halfway) and reports;
* completed: a signed rollback manifest, sent in chunks of the campaign's
  batch size (E4-US3 AC3; the chunks go out back to back, the concurrency
  window is not waited on);
* completed *after* the rollback began (it was installing, or its record was
  cancelled while the vehicle was in fact installing): the same rollback
  manifest when its COMPLETED arrives (`after_outcome`), so in the end every
  vehicle that was in flight or completed runs the version it ran before.

The campaign is rolled back once no rollback is pending and none of its
updates is still in flight.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Final

from v2c.contract.errors import Conflict, InvalidField, TransientError
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.record import Campaign, Release, StatusChange
from v2c.handlers.ota.campaigns.release import manifest_for, release_id, sign_release
from v2c.handlers.ota.campaigns.rollback_log import ROLLBACK_PENDING
from v2c.handlers.ota.concurrency import retry_stale
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec
from v2c.handlers.ota.domain.campaign_run import unnotified_moves
from v2c.handlers.ota.domain.counters import Counter
from v2c.handlers.ota.domain.lifecycle import CampaignCommand, CampaignStatus, next_status
from v2c.handlers.ota.domain.rollback_rules import (
    RollbackTrigger,
    rollback_status_reason,
    trigger_of,
)
from v2c.handlers.ota.domain.update_state import TERMINAL, Command, UpdateState
from v2c.handlers.ota.events import rollback_initiated_detail
from v2c.handlers.ota.metrics import never_notified_cancelled, rollback_started
from v2c.handlers.ota.ports import Package
from v2c.handlers.ota.updates.commands import UpdateCommands
from v2c.handlers.ota.updates.notices import Notices
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.handlers.ota.vehicle_commands import CommandSender, CommandTarget, roll_back
from v2c.v1.command_pb2 import OTACommand
from v2c.v1.ota_pb2 import UPDATE_PRIORITY_CRITICAL

logger = logging.getLogger(__name__)

# Targets per `CommandSender.send` call: one signature per chunk (the same
# command, same id and bytes, so a vehicle acts on it once whichever copy
# it gets), and a bounded batch of messages in flight at the sink.
COMMAND_CHUNK: Final = 500
ROLLING: Final = frozenset({CampaignStatus.ROLLING_BACK, CampaignStatus.ROLLED_BACK})


def send_command(
    sender: CommandSender,
    command: OTACommand,
    updates: Iterable[VehicleUpdate],
    chunk: int = COMMAND_CHUNK,
) -> int:
    """Send `command` to the vehicle of each update, `chunk` at a time; how
    many were dead-lettered (`v2c dlq replay` sends those again)."""
    targets = [CommandTarget(u.vehicle_id, u.region) for u in updates]
    dead = 0
    for start in range(0, len(targets), chunk):
        dead += sender.send(command, targets[start : start + chunk]).count(False)
    return dead


def requested_by(trigger: RollbackTrigger) -> str:
    return "fleet-manager" if trigger is RollbackTrigger.MANUAL else "auto"


class Rollbacks:
    def __init__(
        self, deps: CampaignServiceDeps, commands: UpdateCommands, notices: Notices
    ) -> None:
        self._d = deps
        self._commands = commands
        self._notices = notices

    def _now_ms(self) -> int:
        return int(self._d.clock() * 1000)

    def tell(self, command: OTACommand, updates: Sequence[VehicleUpdate], campaign_id: str) -> int:
        """Send a campaign-wide command to the vehicles of `updates` after the
        decision is recorded; how many were dead-lettered. A signer or sink
        that fails now does not undo the decision (answering 503 for a cancel
        that took effect would mislead): it alerts `vehicle_command_unsent`
        with the command for an operator to act on, and counts them all unsent."""
        try:
            return send_command(self._d.commands, command, updates)
        except TransientError as exc:
            logger.warning(
                "vehicle command not sent",
                extra={"campaign_id": campaign_id, "command_id": command.command_id},
            )
            self._d.alerts.alert(
                "vehicle_command_unsent",
                campaign_id,
                f"{OTACommand.Kind.Name(command.kind)} to {len(updates)} vehicles: {exc}",
            )
            return len(updates)

    # -- one vehicle ------------------------------------------------------------

    def sign(
        self,
        package: Package,
        release_update_id: str,
        spec_source: Campaign | None,
        vehicle_id: str,
        now_ms: int,
    ) -> Release:
        """The rollback manifest to `package`, signed: CRITICAL (BR-OTA-033)."""
        spec = (
            spec_source.spec
            if spec_source is not None
            else CampaignSpec(
                name="device rollback",
                firmware_id=package.firmware_id,
                target_devices=(vehicle_id,),
            )
        )
        campaign_id = spec_source.campaign_id if spec_source is not None else ""
        manifest = manifest_for(
            package, spec, release_update_id, campaign_id, now_ms, is_rollback=True
        )
        manifest.priority = UPDATE_PRIORITY_CRITICAL
        return sign_release(self._d.signer, manifest)

    def send(
        self,
        *,
        vehicle_id: str,
        region: str,
        package: Package,
        release_update_id: str,
        spec_source: Campaign | None,
        reverts: VehicleUpdate | None,
        reason: str,
        trigger: RollbackTrigger = RollbackTrigger.MANUAL,
        now_ms: int,
    ) -> VehicleUpdate:
        """Sign, record and publish a rollback to `package` for one vehicle."""
        release = self.sign(package, release_update_id, spec_source, vehicle_id, now_ms)
        campaign_id = spec_source.campaign_id if spec_source is not None else ""
        update, due = self._prepare(
            vehicle_id, region, package, release, campaign_id, reverts, reason, trigger, now_ms
        )
        if due:
            self._notices.send(update, release)
            self._initiated(update, campaign_id, trigger)
        return update

    def _prepare(
        self,
        vehicle_id: str,
        region: str,
        package: Package,
        release: Release,
        campaign_id: str,
        reverts: VehicleUpdate | None,
        reason: str,
        trigger: RollbackTrigger,
        now_ms: int,
    ) -> tuple[VehicleUpdate, bool]:
        """Record the rollback and its audit row; the record, and whether its
        notification is due (False: already under way, a repeated request)."""
        current = reverts.to_version if reverts is not None else ""
        update = VehicleUpdate.notified(
            vehicle_id=vehicle_id,
            update_id=release.update_id,
            now_ms=now_ms,
            kind=UpdateKind.ROLLBACK,
            region=region,
            firmware_id=package.firmware_id,
            to_version=package.version,
            from_version=current,
            reverts_update_id=reverts.update_id if reverts is not None else "",
            reason=reason,
            manifest=release.manifest,
            signature=release.signature,
            key_id=release.key_id,
        )
        if not self._notices.record(update):
            existing = self._d.updates.get(vehicle_id, release.update_id)
            if existing.state is not UpdateState.NOTIFIED:
                return existing, False  # already under way: a repeated request changes nothing
            update = existing
        # The audit row is written before the message: a fast vehicle's report
        # must find it to record how the rollback ended.
        self._d.rollbacks.put(
            {
                "vehicle_id": vehicle_id,
                "rollback_id": release.update_id,
                "campaign_id": campaign_id or None,
                "from_version": current,
                "to_version": package.version,
                "reason": reason,
                "trigger": trigger.value,
                "requested_by": requested_by(trigger),
                "status": ROLLBACK_PENDING,
                "created_at": now_ms,
            }
        )
        return update, True

    def _initiated(self, update: VehicleUpdate, campaign_id: str, trigger: RollbackTrigger) -> None:
        self._d.events.publish(
            "rollback.initiated",
            rollback_initiated_detail(update, campaign_id=campaign_id, trigger=trigger.value),
        )

    # -- a campaign -------------------------------------------------------------

    def campaign(
        self,
        campaign_id: str,
        *,
        reason: str,
        trigger: RollbackTrigger = RollbackTrigger.MANUAL,
    ) -> Campaign:
        """Stop the rollout, stop the vehicles in flight (their records
        cancelled where not installing, one ROLL_BACK command to them all),
        and send every vehicle that completed the update a signed rollback to
        the version it ran before. The trigger leads the status reason."""
        now_ms = self._now_ms()

        cancelled = 0

        def stop() -> Campaign:
            nonlocal cancelled
            campaign = self._d.campaigns.get(campaign_id)
            target = next_status(campaign.status, CampaignCommand.ROLLBACK)
            change = StatusChange(
                target,
                updated_at_ms=now_ms,
                status_reason=rollback_status_reason(trigger, reason),
            )
            moves = unnotified_moves(campaign)
            changed = self._d.campaigns.change_status(campaign, change, moves)
            cancelled = moves.campaign.get(Counter.CANCELLED, 0)
            return changed

        campaign = retry_stale(
            stop,
            gave_up=f"campaign {campaign_id} keeps changing; try again",
            attempts=self._d.config.conflict_retries,
        )
        rollback_started(trigger.value)
        never_notified_cancelled(cancelled)
        completed: list[VehicleUpdate] = []
        in_flight: list[VehicleUpdate] = []
        for update in self._d.updates.for_campaign(campaign_id):
            if update.state is UpdateState.COMPLETED:
                completed.append(update)
            elif update.state not in TERMINAL:
                in_flight.append(update)
                self._commands.apply(update, Command.CANCEL, max_retries=campaign.spec.max_retries)
        command = roll_back(
            campaign_id=campaign_id,
            update_id=campaign.release.update_id,
            reason=reason,
            trigger=trigger.to_proto(),
            now_ms=now_ms,
        )
        dead = self.tell(command, in_flight, campaign_id)
        sent = self._roll_back(campaign, completed, reason, trigger, now_ms)
        logger.info(
            "campaign rollback",
            extra={
                "campaign_id": campaign_id,
                "trigger": trigger.value,
                "rollbacks_sent": sent,
                "in_flight_told": len(in_flight),
                "commands_dead_lettered": dead,
                "reason": reason,
            },
        )
        self.finish_if_done(campaign_id)
        return self._d.campaigns.get(campaign_id)

    def after_outcome(self, campaign: Campaign, completed: Sequence[VehicleUpdate]) -> None:
        """Reports completed updates of a campaign that is rolling (or rolled)
        back: each (it was installing when the rollback began) gets the
        campaign's rollback manifest too, with the campaign's trigger and
        reason. The caller then asks `finish_if_done` (`on_outcome` does)."""
        late = [
            u
            for u in completed
            if u.state is UpdateState.COMPLETED and u.campaign_id == campaign.campaign_id
        ]
        if late and campaign.status in ROLLING:
            trigger = trigger_of(campaign.status_reason) or RollbackTrigger.MANUAL
            _, _, reason = campaign.status_reason.partition(": ")
            self._roll_back(
                campaign, late, reason or campaign.status_reason, trigger, self._now_ms()
            )

    def _roll_back(
        self,
        campaign: Campaign,
        completed: Sequence[VehicleUpdate],
        reason: str,
        trigger: RollbackTrigger,
        now_ms: int,
    ) -> int:
        """Rollback manifests for completed updates, one signature per target
        version, recorded and sent a batch (the campaign's batch size) at a
        time; how many were sent."""
        by_version: dict[str, list[VehicleUpdate]] = defaultdict(list)
        for update in completed:
            by_version[update.from_version].append(update)
        sent = 0
        for version, updates in sorted(by_version.items()):
            package = (
                self._d.packages.find_version(campaign.device_model, version) if version else None
            )
            if package is None:
                self._d.alerts.alert(
                    "rollback_package_missing",
                    campaign.campaign_id,
                    f"no {campaign.device_model} firmware {version or '(unknown)'} to roll "
                    f"{len(updates)} vehicles back to",
                )
                continue
            shared_id = release_id(campaign.campaign_id, f"rollback/{version}")
            release = self.sign(package, shared_id, campaign, "", now_ms)
            batch = campaign.spec.batch_size
            for start in range(0, len(updates), batch):
                due: list[VehicleUpdate] = []
                for update in updates[start : start + batch]:
                    record, send = self._prepare(
                        update.vehicle_id,
                        update.region,
                        package,
                        release,
                        campaign.campaign_id,
                        update,
                        reason,
                        trigger,
                        now_ms,
                    )
                    if send:
                        due.append(record)
                self._notices.send_many(due, release)
                for record in due:
                    self._initiated(record, campaign.campaign_id, trigger)
                sent += len(due)
        return sent

    def resume(self, campaign: Campaign) -> int:
        """Carry on a rollback whose process stopped partway (the monitor calls
        this for every campaign rolling back): the status moved first, so a
        crash after it left vehicles in flight uncancelled or completed ones
        without their rollback. Records not yet cancelled are cancelled and
        told (the same ROLL_BACK command, so a vehicle that had it acts once);
        completed updates without a rollback row get theirs; the rest was done.
        How many vehicles this pass reached."""
        cid = campaign.campaign_id
        trigger = trigger_of(campaign.status_reason) or RollbackTrigger.MANUAL
        _, _, reason = campaign.status_reason.partition(": ")
        reason = reason or campaign.status_reason
        now_ms = self._now_ms()
        rolled = {row.get("vehicle_id") for row in self._d.rollbacks.for_campaign(cid)}
        completed: list[VehicleUpdate] = []
        stopped: list[VehicleUpdate] = []
        for update in self._d.updates.for_campaign(cid):
            if update.state is UpdateState.COMPLETED and update.vehicle_id not in rolled:
                completed.append(update)
            elif update.state not in TERMINAL:
                applied = self._commands.apply(
                    update, Command.CANCEL, max_retries=campaign.spec.max_retries
                )
                if applied.changed:
                    stopped.append(update)
        if stopped:
            command = roll_back(
                campaign_id=cid,
                update_id=campaign.release.update_id,
                reason=reason,
                trigger=trigger.to_proto(),
                now_ms=now_ms,
            )
            self.tell(command, stopped, cid)
        sent = self._roll_back(campaign, completed, reason, trigger, now_ms) if completed else 0
        self.finish_if_done(cid)
        return len(stopped) + sent

    def finish_if_done(self, campaign_id: str) -> bool:
        """A rolling-back campaign with no rollback pending and none of its
        updates still in flight (installing when the rollback began) is rolled back."""
        campaign = self._d.campaigns.get(campaign_id)
        if campaign.status is not CampaignStatus.ROLLING_BACK:
            return False
        if campaign.counters.in_progress > 0:
            return False
        rows = self._d.rollbacks.for_campaign(campaign_id)
        if any(r.get("status") == ROLLBACK_PENDING for r in rows):
            return False
        try:
            self._d.campaigns.change_status(
                campaign,
                StatusChange(CampaignStatus.ROLLED_BACK, finished_at_ms=self._now_ms()),
            )
        except Conflict:
            return False
        return True


def previous_version(history: list[VehicleUpdate]) -> str:
    """The version a vehicle ran before its last completed update."""
    for update in sorted(history, key=lambda u: u.completed_at_ms, reverse=True):
        if update.state is UpdateState.COMPLETED and update.from_version:
            return update.from_version
    raise InvalidField("to_version", "the vehicle has no earlier installed version on record")
