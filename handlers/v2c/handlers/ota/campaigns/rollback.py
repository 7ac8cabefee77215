"""Rollbacks: a signed update back to the version a vehicle ran before.

A rollback is an ordinary update for the vehicle (its own release id, its
own sequence numbers) whose manifest carries `is_rollback`, the one case in
which the agent accepts a version that is not newer. One manifest is signed
per target version, not per vehicle. Each rollback is also a row in the
rollbacks table (the audit trail BR-OTA-035 asks for: who, why, from, to,
outcome). When a campaign rollback completes on a vehicle, the campaign's
original update moves from completed to rolled_back (`Command.REVERT`).
"""

from __future__ import annotations

import logging
from collections import defaultdict

from v2c.contract.errors import Conflict, InvalidField
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.record import Campaign, StatusChange
from v2c.handlers.ota.campaigns.release import manifest_for, release_id, sign_release
from v2c.handlers.ota.campaigns.rollback_log import ROLLBACK_PENDING
from v2c.handlers.ota.concurrency import retry_stale
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec
from v2c.handlers.ota.domain.campaign_run import unnotified_moves
from v2c.handlers.ota.domain.lifecycle import CampaignCommand, CampaignStatus, next_status
from v2c.handlers.ota.domain.update_state import Command, UpdateState
from v2c.handlers.ota.ports import Package
from v2c.handlers.ota.updates.commands import UpdateCommands
from v2c.handlers.ota.updates.notices import Notices
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate

logger = logging.getLogger(__name__)


class Rollbacks:
    def __init__(
        self, deps: CampaignServiceDeps, commands: UpdateCommands, notices: Notices
    ) -> None:
        self._d = deps
        self._commands = commands
        self._notices = notices

    def _now_ms(self) -> int:
        return int(self._d.clock() * 1000)

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
        requested_by: str,
        now_ms: int,
    ) -> VehicleUpdate:
        """Sign (once per target version: the caller passes a shared release id),
        record and publish a rollback to `package` for one vehicle."""
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
        release = sign_release(self._d.signer, manifest)
        current = reverts.to_version if reverts is not None else ""
        update = VehicleUpdate.notified(
            vehicle_id=vehicle_id,
            update_id=release_update_id,
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
            existing = self._d.updates.get(vehicle_id, release_update_id)
            if existing.state not in (UpdateState.NOTIFIED,):
                return existing  # already under way: a repeated request changes nothing
            update = existing
        # The audit row is written before the message: a fast vehicle's report
        # must find it to record how the rollback ended.
        self._d.rollbacks.put(
            {
                "vehicle_id": vehicle_id,
                "rollback_id": release_update_id,
                "campaign_id": campaign_id or None,
                "from_version": current,
                "to_version": package.version,
                "reason": reason,
                "requested_by": requested_by,
                "status": ROLLBACK_PENDING,
                "created_at": now_ms,
            }
        )
        self._notices.send(update, release)
        self._d.events.publish(
            "rollback.initiated",
            {
                "vehicle_id": vehicle_id,
                "campaign_id": campaign_id,
                "rollback_id": release_update_id,
                "to_version": package.version,
                "reason": reason,
            },
        )
        return update

    def campaign(self, campaign_id: str, *, reason: str, automatic: bool) -> Campaign:
        """Stop the rollout (never-notified targets count as cancelled), cancel
        what has not completed, and send every vehicle that completed the
        update a signed rollback to the version it ran before."""
        now_ms = self._now_ms()

        def stop() -> Campaign:
            campaign = self._d.campaigns.get(campaign_id)
            target = next_status(campaign.status, CampaignCommand.ROLLBACK)
            return self._d.campaigns.change_status(
                campaign,
                StatusChange(target, updated_at_ms=now_ms, status_reason=reason),
                unnotified_moves(campaign),
            )

        campaign = retry_stale(
            stop,
            gave_up=f"campaign {campaign_id} keeps changing; try again",
            attempts=self._d.config.conflict_retries,
        )
        by_version: dict[str, list[VehicleUpdate]] = defaultdict(list)
        for update in self._d.updates.for_campaign(campaign_id):
            if update.state is UpdateState.COMPLETED:
                by_version[update.from_version].append(update)
            else:
                self._commands.apply(update, Command.CANCEL, max_retries=campaign.spec.max_retries)
        sent = missing = 0
        for version, updates in sorted(by_version.items()):
            package = (
                self._d.packages.find_version(campaign.device_model, version) if version else None
            )
            if package is None:
                missing += len(updates)
                self._d.alerts.alert(
                    "rollback_package_missing",
                    campaign_id,
                    f"no {campaign.device_model} firmware {version or '(unknown)'} to roll "
                    f"{len(updates)} vehicles back to",
                )
                continue
            shared_id = release_id(campaign_id, f"rollback/{version}")
            for update in updates:
                self.send(
                    vehicle_id=update.vehicle_id,
                    region=update.region,
                    package=package,
                    release_update_id=shared_id,
                    spec_source=campaign,
                    reverts=update,
                    reason=reason,
                    requested_by="auto" if automatic else "fleet-manager",
                    now_ms=now_ms,
                )
                sent += 1
        logger.info(
            "campaign rollback",
            extra={"campaign_id": campaign_id, "sent": sent, "missing": missing, "reason": reason},
        )
        if sent == 0:
            self.finish_if_done(campaign_id)
        return self._d.campaigns.get(campaign_id)

    def finish_if_done(self, campaign_id: str) -> bool:
        """A rolling-back campaign with no rollback still in flight is rolled back."""
        campaign = self._d.campaigns.get(campaign_id)
        if campaign.status is not CampaignStatus.ROLLING_BACK:
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
    raise InvalidField("version", "the vehicle has no earlier installed version on record")
