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
from typing import TYPE_CHECKING

from v2c.contract.errors import Conflict, InvalidField
from v2c.handlers.ota.campaigns.lifecycle import CampaignCommand, CampaignStatus, next_status
from v2c.handlers.ota.campaigns.record import Campaign, counter_attr
from v2c.handlers.ota.campaigns.release import manifest_for, release_id, sign_release
from v2c.handlers.ota.campaigns.rollback_log import ROLLBACK_PENDING
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec
from v2c.handlers.ota.domain.counters import Counter
from v2c.handlers.ota.domain.update_state import Command, UpdateState
from v2c.handlers.ota.notifier import Notification
from v2c.handlers.ota.ports import Package
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate

if TYPE_CHECKING:
    from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
    from v2c.handlers.ota.campaigns.service import CampaignService

logger = logging.getLogger(__name__)


def send_rollback(
    deps: CampaignServiceDeps,
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
            name="device rollback", firmware_id=package.firmware_id, target_devices=(vehicle_id,)
        )
    )
    campaign_id = spec_source.campaign_id if spec_source is not None else ""
    manifest = manifest_for(package, spec, release_update_id, campaign_id, now_ms, is_rollback=True)
    release = sign_release(deps.signer, manifest)
    current = reverts.to_version if reverts is not None else ""
    update = VehicleUpdate(
        vehicle_id=vehicle_id,
        update_id=release_update_id,
        kind=UpdateKind.ROLLBACK,
        region=region,
        firmware_id=package.firmware_id,
        to_version=package.version,
        from_version=current,
        state=UpdateState.NOTIFIED,
        reverts_update_id=reverts.update_id if reverts is not None else "",
        created_at_ms=now_ms,
        notified_at_ms=now_ms,
        updated_at_ms=now_ms,
        notifications=1,
        reason=reason,
        manifest=release.manifest,
        signature=release.signature,
        key_id=release.key_id,
    )
    if not deps.updates.create(update, None):
        existing = deps.updates.get(vehicle_id, release_update_id)
        if existing.state not in (UpdateState.NOTIFIED,):
            return existing  # already under way: a repeated request changes nothing
        update = existing
    deps.rollbacks.put(
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
    deps.notifier.send(
        Notification(
            vehicle_id=vehicle_id,
            region=region,
            update_id=release_update_id,
            device_update_id=update.device_update_id,
            firmware_id=package.firmware_id,
            manifest=release.manifest,
            signature=release.signature,
            key_id=release.key_id,
        )
    )
    deps.events.publish(
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


def roll_back_campaign(
    service: CampaignService,
    deps: CampaignServiceDeps,
    campaign_id: str,
    *,
    reason: str,
    automatic: bool,
) -> Campaign:
    now_ms = int(deps.clock() * 1000)
    for _ in range(8):
        campaign = deps.campaigns.get(campaign_id)
        target = next_status(campaign.status, CampaignCommand.ROLLBACK)
        moves: dict[str, int] = {}
        if campaign.remaining:
            moves[counter_attr(Counter.PENDING)] = -campaign.remaining
            moves[counter_attr(Counter.CANCELLED)] = campaign.remaining
            for number, wave in enumerate(campaign.waves):
                left = wave.end - max(campaign.cursor, campaign.wave_start(number))
                if left > 0:
                    moves[counter_attr(Counter.PENDING, number)] = -left
                    moves[counter_attr(Counter.CANCELLED, number)] = left
        try:
            campaign = deps.campaigns.update(
                campaign,
                set_values={
                    "status": target.value,
                    "status_reason": reason,
                    "updated_at": now_ms,
                },
                add=moves,
                expect_cursor=True,
            )
            break
        except Conflict:
            continue
    else:
        raise Conflict(f"campaign {campaign_id} keeps changing; try again")
    by_version: dict[str, list[VehicleUpdate]] = defaultdict(list)
    for update in deps.updates.for_campaign(campaign_id):
        if update.state is UpdateState.COMPLETED:
            by_version[update.from_version].append(update)
        else:
            service._apply_command(campaign, update, Command.CANCEL)
    sent = missing = 0
    for version, updates in sorted(by_version.items()):
        package = deps.packages.find_version(campaign.device_model, version) if version else None
        if package is None:
            missing += len(updates)
            deps.alerts.alert(
                "rollback_package_missing",
                campaign_id,
                f"no {campaign.device_model} firmware {version or '(unknown)'} to roll "
                f"{len(updates)} vehicles back to",
            )
            continue
        shared_id = release_id(campaign_id, f"rollback/{version}")
        for update in updates:
            send_rollback(
                deps,
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
        finish_rollback_if_done(deps, campaign_id)
    return deps.campaigns.get(campaign_id)


def finish_rollback_if_done(deps: CampaignServiceDeps, campaign_id: str) -> bool:
    """A rolling-back campaign with no rollback still in flight is rolled back."""
    campaign = deps.campaigns.get(campaign_id)
    if campaign.status is not CampaignStatus.ROLLING_BACK:
        return False
    rows = deps.rollbacks.for_campaign(campaign_id)
    if any(r.get("status") == ROLLBACK_PENDING for r in rows):
        return False
    try:
        deps.campaigns.update(
            campaign,
            set_values={
                "status": CampaignStatus.ROLLED_BACK.value,
                "finished_at": int(deps.clock() * 1000),
            },
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
