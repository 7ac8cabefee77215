"""Campaigns: create (validate, target, plan, sign, persist), run the
lifecycle, dispatch notifications wave by wave, and react to outcomes.

Creation is all-or-nothing from the outside: the plan chunks go to S3 and
the release is signed before the one conditional PutItem that makes the
campaign visible. A signing outage (503) or any earlier failure leaves no
campaign behind; a retry with the same idempotency key produces the same
campaign id and either finds the finished campaign or redoes the work.

Dispatch (`advance`) is the single writer of a campaign's cursor: it holds a
lease on the campaign item, and each notified vehicle is one transaction
that writes its record and moves the cursor and counters, conditioned on
the campaign still running at that cursor. So pause and cancel take effect
between two vehicles, a crashed dispatcher's lease expires and the next one
continues exactly where the cursor stands, and the counters stay exact.
`advance` is called after start/resume, after every terminal report (to
refill the concurrency window) and by the periodic monitor.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from v2c.contract.errors import Conflict, Forbidden, InvalidField, NotFound
from v2c.contract.semver import SemVer
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.lifecycle import CampaignCommand, CampaignStatus, next_status
from v2c.handlers.ota.campaigns.model_types import Target
from v2c.handlers.ota.campaigns.plan import RolloutPlan, plan_rollout
from v2c.handlers.ota.campaigns.record import Campaign, Release, counter_attr
from v2c.handlers.ota.campaigns.release import manifest_for, release_id, sign_release
from v2c.handlers.ota.campaigns.rollback import roll_back_campaign
from v2c.handlers.ota.domain.campaign_health import (
    HealthAction,
    HealthPolicy,
    campaign_stalled,
    evaluate_health,
)
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec, parse_campaign_spec
from v2c.handlers.ota.domain.canary import GateVerdict, evaluate_gate
from v2c.handlers.ota.domain.counters import CampaignCounters, Counter, CounterDeltas
from v2c.handlers.ota.domain.rollout import next_batch_size
from v2c.handlers.ota.domain.update_state import Command, UpdateState, apply_command
from v2c.handlers.ota.fleet import Vehicle
from v2c.handlers.ota.notifier import Notification
from v2c.handlers.ota.ports import Package
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate

logger = logging.getLogger(__name__)

RESIGN_BEFORE_MS: Final = 24 * 3600 * 1000
LEASE_MS: Final = 60_000
MAX_BATCHES_PER_ADVANCE: Final = 50
CONFLICT_RETRIES: Final = 8
_IDEMPOTENCY_NS: Final = uuid.UUID("a3d1f0e2-6b4c-4d8e-9f21-7c5e3b2a1d09")


class SelfApproval(Forbidden):
    """The campaign's creator tried to approve it (separation of duties)."""

    reason = "self_approval"


@dataclass(frozen=True, slots=True)
class CreationReport:
    campaign: Campaign
    created: bool  # False: the idempotency key found this campaign already made
    excluded: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AdvanceReport:
    notified: int = 0
    dead_lettered: int = 0
    gate: str | None = None
    status: str | None = None


class CampaignService:
    def __init__(self, deps: CampaignServiceDeps) -> None:
        self._d = deps

    # -- helpers -------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._d.clock() * 1000)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._d.clock(), tz=UTC)

    def get(self, campaign_id: str) -> Campaign:
        return self._d.campaigns.get(campaign_id)

    def list_campaigns(
        self, status: CampaignStatus | None = None, limit: int = 50, start: str | None = None
    ) -> tuple[list[Campaign], str | None]:
        return self._d.campaigns.list(status, limit=limit, start=start)

    def _event(self, detail_type: str, campaign: Campaign, **extra: Any) -> None:
        detail = {
            "campaign_id": campaign.campaign_id,
            "name": campaign.name,
            "status": campaign.status.value,
            "firmware_id": campaign.firmware_id,
            "version": campaign.version,
            "target_count": campaign.target_count,
            **extra,
        }
        self._d.events.publish(detail_type, detail)

    # -- creation ------------------------------------------------------------

    def _package_for(self, spec: CampaignSpec) -> Package:
        try:
            package = self._d.packages.package(spec.firmware_id)
        except NotFound:
            raise InvalidField("firmware_id", f"no firmware {spec.firmware_id!r}") from None
        if not package.available:
            raise InvalidField(
                "firmware_id", f"firmware {spec.firmware_id} is {package.status}, not available"
            )
        if spec.version is not None and SemVer.parse(spec.version) != SemVer.parse(package.version):
            raise InvalidField(
                "version", f"{spec.version} is not the firmware's version {package.version}"
            )
        if not self._d.packages.package_exists(spec.firmware_id):
            raise InvalidField(
                "firmware_id", f"the package of firmware {spec.firmware_id} is missing from S3"
            )
        return package

    @staticmethod
    def _eligible(vehicles: list[Vehicle], package: Package) -> tuple[list[Target], dict[str, int]]:
        targets: list[Target] = []
        excluded = {"other_model": 0, "up_to_date": 0}
        new = SemVer.parse(package.version)
        for v in vehicles:
            if v.model != package.device_model:
                excluded["other_model"] += 1
                continue
            try:
                current = SemVer.parse(v.installed_version) if v.installed_version else None
            except Exception:
                current = None
            if current is not None and current >= new:
                excluded["up_to_date"] += 1
                continue
            targets.append(Target(v.vehicle_id, v.region, v.model, v.installed_version))
        return targets, excluded

    def create(
        self, data: object, *, created_by: str = "", idempotency_key: str | None = None
    ) -> CreationReport:
        spec = parse_campaign_spec(data, now=self._now())
        if idempotency_key:
            campaign_id = uuid.uuid5(_IDEMPOTENCY_NS, idempotency_key).hex
            try:
                existing = self._d.campaigns.get(campaign_id)
            except NotFound:
                pass
            else:
                if existing.spec != spec:
                    raise Conflict("this idempotency key was used for another campaign")
                return CreationReport(existing, created=False)
        else:
            campaign_id = uuid.uuid4().hex
        package = self._package_for(spec)
        vehicles = self._d.fleet.select(spec.filter_expr, spec.target_devices, spec.target_groups)
        targets, excluded = self._eligible(vehicles, package)
        if not targets:
            raise InvalidField(
                "target_filter",
                f"no registered {package.device_model} vehicle below {package.version} matches "
                f"the targets ({sum(excluded.values())} excluded: {excluded})",
            )
        plan = plan_rollout(spec, targets, seed=campaign_id)
        now_ms = self._now_ms()
        manifest = manifest_for(package, spec, release_id(campaign_id), campaign_id, now_ms)
        release = sign_release(self._d.signer, manifest)  # SigningUnavailable: nothing written yet
        self._d.plans.write(campaign_id, plan.targets)
        campaign = self._new_campaign(campaign_id, spec, package, release, plan, now_ms, created_by)
        try:
            self._d.campaigns.put_new(campaign)
        except Conflict:
            existing = self._d.campaigns.get(campaign_id)
            return CreationReport(existing, created=False)
        self._event("campaign.created", campaign, strategy=spec.deployment_strategy.value)
        logger.info(
            "campaign created",
            extra={"campaign_id": campaign_id, "targets": plan.size, "waves": len(plan.waves)},
        )
        return CreationReport(campaign, created=True, excluded=excluded)

    @staticmethod
    def _new_campaign(
        campaign_id: str,
        spec: CampaignSpec,
        package: Package,
        release: Release,
        plan: RolloutPlan,
        now_ms: int,
        created_by: str,
    ) -> Campaign:
        return Campaign(
            campaign_id=campaign_id,
            spec=spec,
            status=CampaignStatus.CREATED,
            firmware_id=package.firmware_id,
            version=package.version,
            device_model=package.device_model,
            release=release,
            target_count=plan.size,
            waves=plan.waves,
            created_at_ms=now_ms,
            created_by=created_by,
            counters=CampaignCounters(pending=plan.size),
            wave_counters=tuple(CampaignCounters(pending=n) for n in plan.wave_sizes()),
            updated_at_ms=now_ms,
            last_progress_at_ms=now_ms,
        )

    # -- lifecycle -----------------------------------------------------------

    def _command(
        self,
        campaign_id: str,
        command: CampaignCommand,
        changes: Callable[[Campaign], Mapping[str, Any]] = lambda _c: {},
        *,
        add: Callable[[Campaign], Mapping[str, int]] = lambda _c: {},
        expect_cursor: bool = False,
    ) -> Campaign:
        for _ in range(CONFLICT_RETRIES):
            campaign = self._d.campaigns.get(campaign_id)
            target = next_status(
                campaign.status,
                command,
                requires_approval=campaign.spec.requires_approval,
                approved=campaign.approved,
            )
            values = {"status": target.value, "updated_at": self._now_ms(), **changes(campaign)}
            try:
                return self._d.campaigns.update(
                    campaign, set_values=values, add=add(campaign), expect_cursor=expect_cursor
                )
            except Conflict:
                continue  # changed meanwhile: decide again on what is there now
        raise Conflict(f"campaign {campaign_id} keeps changing; try again")

    def approve(self, campaign_id: str, approver: str) -> Campaign:
        """Record `approver` (the authenticated principal, never a name a
        client typed) as the campaign's approver. Separation of duties: the
        principal that created the campaign cannot approve it (403)."""
        if not approver.strip():
            raise InvalidField("approved_by", "must name the approver")
        now = self._now_ms()

        def approval(campaign: Campaign) -> dict[str, Any]:
            if campaign.created_by and campaign.created_by == approver.strip():
                raise SelfApproval("the creator of a campaign cannot approve it")
            return {"approved_by": approver.strip(), "approved_at": now}

        return self._command(campaign_id, CampaignCommand.APPROVE, approval)

    def start(self, campaign_id: str) -> Campaign:
        now = self._now_ms()
        campaign = self._command(
            campaign_id,
            CampaignCommand.START,
            lambda _c: {"started_at": now, "last_progress_at": now},
        )
        self._event("campaign.started", campaign)
        self.advance(campaign_id)
        return self._d.campaigns.get(campaign_id)

    def pause(self, campaign_id: str, reason: str = "paused by a fleet manager") -> Campaign:
        return self._command(
            campaign_id, CampaignCommand.PAUSE, lambda _c: {"status_reason": reason}
        )

    def resume(self, campaign_id: str) -> Campaign:
        self._command(
            campaign_id,
            CampaignCommand.RESUME,
            lambda _c: {"status_reason": "", "last_progress_at": self._now_ms()},
        )
        self.advance(campaign_id)
        return self._d.campaigns.get(campaign_id)

    def cancel(self, campaign_id: str, reason: str = "cancelled by a fleet manager") -> Campaign:
        """Stop the campaign: targets never notified count as cancelled at
        once; notified updates not yet installing are cancelled one by one
        (an update already installing finishes: E3-US3)."""

        def unnotified(c: Campaign) -> dict[str, int]:
            moves: dict[str, int] = {}
            remaining = c.remaining
            if remaining:
                moves[counter_attr(Counter.PENDING)] = -remaining
                moves[counter_attr(Counter.CANCELLED)] = remaining
            for number, _wave in enumerate(c.waves):
                left = c.waves[number].end - max(c.cursor, c.wave_start(number))
                if left > 0:
                    moves[counter_attr(Counter.PENDING, number)] = -left
                    moves[counter_attr(Counter.CANCELLED, number)] = left
            return moves

        now = self._now_ms()
        campaign = self._command(
            campaign_id,
            CampaignCommand.CANCEL,
            lambda _c: {"status_reason": reason, "finished_at": now},
            add=unnotified,
            expect_cursor=True,
        )
        cancelled = 0
        for update in self._d.updates.for_campaign(campaign_id):
            if self._apply_command(campaign, update, Command.CANCEL):
                cancelled += 1
        self._event("update.cancelled", campaign, cancelled_updates=cancelled, reason=reason)
        return self._d.campaigns.get(campaign_id)

    def _apply_command(self, campaign: Campaign, update: VehicleUpdate, command: Command) -> bool:
        """Apply a cloud command to one record with its counter move; True if it changed."""
        for _ in range(CONFLICT_RETRIES):
            transition = apply_command(
                update.machine, command, max_retries=campaign.spec.max_retries
            )
            if not transition.changed:
                return False
            now = self._now_ms()
            after = update.with_machine(transition.after, updated_at_ms=now, reason=command.value)
            counters = self._d.campaigns.counter_update(
                campaign.campaign_id, transition.deltas.nonzero(), update.wave, now
            )
            try:
                self._d.updates.save(update, after, counters)
            except Conflict:
                update = self._d.updates.get(update.vehicle_id, update.update_id)
                continue
            return True
        raise Conflict(f"update {update.update_id} of {update.vehicle_id} keeps changing")

    # -- dispatch ------------------------------------------------------------

    def _may_dispatch_now(self, campaign: Campaign) -> bool:
        spec = campaign.spec
        now = self._now()
        if spec.scheduled_start is not None and now < spec.scheduled_start:
            return False
        return spec.maintenance_window is None or spec.maintenance_window.contains(now)

    def _refresh_release(self, campaign: Campaign) -> Campaign:
        """Re-sign a release close to its expiry (a long staged campaign outlives it)."""
        now = self._now_ms()
        if campaign.release.expires_at_ms - now > RESIGN_BEFORE_MS:
            return campaign
        package = self._d.packages.package(campaign.firmware_id)
        manifest = manifest_for(
            package, campaign.spec, campaign.release.update_id, campaign.campaign_id, now
        )
        release = sign_release(self._d.signer, manifest)
        return self._d.campaigns.update(campaign, set_values={"release": release.to_item()})

    def advance(self, campaign_id: str) -> AdvanceReport:
        """Notify as many vehicles as the wave, the gate and the concurrency
        window allow now. Safe to call any time, from anywhere."""
        campaign = self._d.campaigns.get(campaign_id)
        if campaign.status is not CampaignStatus.IN_PROGRESS or not self._may_dispatch_now(
            campaign
        ):
            return AdvanceReport(status=campaign.status.value)
        owner = self._d.owner
        leased = self._d.campaigns.acquire_lease(campaign, owner, self._now_ms(), LEASE_MS)
        if leased is None:
            return AdvanceReport(status=campaign.status.value)
        try:
            return self._dispatch(leased)
        except Conflict:
            # Another writer (a report passing the same gate, a pause, a
            # cancel) moved the campaign between our read and our write:
            # what it decided stands, and the next advance starts from it.
            return AdvanceReport(status="changed")
        finally:
            self._d.campaigns.release_lease(campaign_id, owner)

    def _dispatch(self, campaign: Campaign) -> AdvanceReport:
        notified = dead = 0
        gate: str | None = None
        for _ in range(MAX_BATCHES_PER_ADVANCE):
            if campaign.status is not CampaignStatus.IN_PROGRESS:
                break
            campaign = self._refresh_release(campaign)
            wave = campaign.waves[campaign.current_wave]
            if campaign.cursor >= wave.end:
                moved, gate = self._after_wave(campaign)
                if moved is None:
                    break
                campaign = moved
                continue
            n = next_batch_size(
                campaign.counters.in_progress,
                wave.end - campaign.cursor,
                campaign.spec.batch_size,
                campaign.spec.max_concurrent_updates,
            )
            if n == 0:
                break
            targets = self._d.plans.read(campaign.campaign_id, campaign.cursor, campaign.cursor + n)
            for target in targets:
                outcome = self._notify_next(campaign, target)
                if outcome is None:
                    return AdvanceReport(notified, dead, gate, "changed")
                campaign, delivered = outcome
                notified += 1
                dead += 0 if delivered else 1
        return AdvanceReport(notified, dead, gate, campaign.status.value)

    def _after_wave(self, campaign: Campaign) -> tuple[Campaign | None, str | None]:
        """The current wave is fully notified: pass its gate, or finish."""
        number = campaign.current_wave
        wave = campaign.waves[number]
        if number == len(campaign.waves) - 1:
            if campaign.counters.outstanding == 0:
                self._finish(campaign)
            return None, None
        if not wave.gated:
            moved = self._d.campaigns.update(
                campaign, set_values={"current_wave": number + 1}, expect_wave=True
            )
            return moved, None
        decision = evaluate_gate(campaign.wave_counters[number], campaign.spec.gate_thresholds())
        summary = {
            "wave": wave.name,
            "verdict": decision.verdict.value,
            "reason": decision.reason,
            "success_rate": decision.success_rate,
            "completed": decision.completed,
            "failures": decision.failures,
            "finished": decision.finished,
            "eligible": decision.eligible,
            "decided_at": self._now_ms(),
        }
        if decision.verdict is GateVerdict.WAIT:
            return None, decision.verdict.value
        if decision.verdict is GateVerdict.PASS:
            moved = self._d.campaigns.update(
                campaign,
                set_values={"current_wave": number + 1, "gate": _json(summary)},
                expect_wave=True,
            )
            logger.info("gate passed", extra={"campaign_id": campaign.campaign_id, **summary})
            self._event("campaign.gate_passed", moved, gate=summary)
            return moved, decision.verdict.value
        self._d.campaigns.update(
            campaign,
            set_values={
                "status": CampaignStatus.PAUSED.value,
                "status_reason": f"{wave.name} gate failed: {decision.reason}",
                "gate": _json(summary),
            },
            expect_wave=True,
        )
        self._d.alerts.alert("canary_gate_failed", campaign.campaign_id, decision.reason)
        return None, decision.verdict.value

    def _finish(self, campaign: Campaign) -> None:
        try:
            done = self._d.campaigns.update(
                campaign,
                set_values={
                    "status": CampaignStatus.COMPLETED.value,
                    "finished_at": self._now_ms(),
                },
            )
        except Conflict:
            return
        self._event("campaign.completed", done, counters=_counters_json(done.counters))

    def _notify_next(self, campaign: Campaign, target: Target) -> tuple[Campaign, bool] | None:
        """Record and publish the notification of the target at the cursor;
        None if the campaign changed under us (paused, cancelled)."""
        index = campaign.cursor
        wave = campaign.current_wave
        now = self._now_ms()
        update = VehicleUpdate(
            vehicle_id=target.vehicle_id,
            update_id=campaign.release.update_id,
            kind=UpdateKind.CAMPAIGN,
            firmware_id=campaign.firmware_id,
            to_version=campaign.version,
            from_version=target.installed_version,
            campaign_id=campaign.campaign_id,
            wave=wave,
            region=target.region,
            state=UpdateState.NOTIFIED,
            created_at_ms=now,
            notified_at_ms=now,
            updated_at_ms=now,
            notifications=1,
        )
        move = {
            "Update": {
                "TableName": self._d.campaigns.table,
                "Key": {"campaign_id": {"S": campaign.campaign_id}},
                "UpdateExpression": "SET #cursor = :next, last_progress_at = :now "
                "ADD #p :minus, #i :plus, #wp :minus, #wi :plus",
                "ConditionExpression": "#status = :running AND #cursor = :at AND current_wave = :w",
                "ExpressionAttributeNames": {
                    "#cursor": "cursor",
                    "#status": "status",
                    "#p": counter_attr(Counter.PENDING),
                    "#i": counter_attr(Counter.IN_PROGRESS),
                    "#wp": counter_attr(Counter.PENDING, wave),
                    "#wi": counter_attr(Counter.IN_PROGRESS, wave),
                },
                "ExpressionAttributeValues": {
                    ":next": {"N": str(index + 1)},
                    ":at": {"N": str(index)},
                    ":w": {"N": str(wave)},
                    ":now": {"N": str(now)},
                    ":running": {"S": CampaignStatus.IN_PROGRESS.value},
                    ":minus": {"N": "-1"},
                    ":plus": {"N": "1"},
                },
            }
        }
        if not self._d.updates.create(update, move):
            return None
        delivered = self._send(campaign.release, update, target.region)
        counters = campaign.counters.apply(_notified_delta())
        waves = list(campaign.wave_counters)
        waves[wave] = waves[wave].apply(_notified_delta())
        return campaign.evolve(
            cursor=index + 1, counters=counters, wave_counters=tuple(waves)
        ), delivered

    def _send(self, release: Release, update: VehicleUpdate, region: str) -> bool:
        note = Notification(
            vehicle_id=update.vehicle_id,
            region=region,
            update_id=update.update_id,
            device_update_id=update.device_update_id,
            firmware_id=update.firmware_id,
            manifest=release.manifest,
            signature=release.signature,
            key_id=release.key_id,
        )
        return self._d.notifier.send(note)

    # -- outcomes and monitoring --------------------------------------------

    def on_outcome(self, campaign_id: str) -> HealthAction:
        """After a report that moved the rates: pause or roll back when the
        thresholds say so, else keep the rollout going."""
        campaign = self._d.campaigns.get(campaign_id)
        if campaign.status not in (CampaignStatus.IN_PROGRESS, CampaignStatus.PAUSED):
            return HealthAction.CONTINUE
        decision = evaluate_health(campaign.counters, self.health_policy(campaign))
        if decision.action is HealthAction.ROLLBACK:
            self._d.alerts.alert("campaign_auto_rollback", campaign_id, decision.reason)
            self.rollback(campaign_id, reason=decision.reason, automatic=True)
        elif decision.action is HealthAction.PAUSE:
            if campaign.status is CampaignStatus.IN_PROGRESS:
                try:
                    self._d.campaigns.update(
                        campaign,
                        set_values={
                            "status": CampaignStatus.PAUSED.value,
                            "status_reason": decision.reason,
                        },
                    )
                except Conflict:
                    return decision.action
                self._d.alerts.alert("campaign_auto_paused", campaign_id, decision.reason)
        elif campaign.status is CampaignStatus.IN_PROGRESS:
            self.advance(campaign_id)
        return decision.action

    @staticmethod
    def health_policy(campaign: Campaign) -> HealthPolicy:
        """The campaign's thresholds. During a gated wave the gate decides
        on that wave alone; the campaign-wide policy still guards the rest."""
        return campaign.spec.health_policy()

    def rollback(
        self, campaign_id: str, *, reason: str = "rollback requested", automatic: bool = False
    ) -> Campaign:
        """Stop the rollout and send every vehicle that completed the update a
        signed rollback to the version it ran before (BR-OTA-034)."""
        return roll_back_campaign(self, self._d, campaign_id, reason=reason, automatic=automatic)

    def monitor(self, now_ms: int | None = None) -> dict[str, Any]:
        """The periodic pass (every minute): advance running campaigns (a
        scheduled start, a reopened maintenance window, a lost lease), flag
        stalled ones and finish rollbacks."""
        now_ms = now_ms if now_ms is not None else self._now_ms()
        now = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
        seen = advanced = stalled = 0
        for campaign in self._d.campaigns.iter_status(CampaignStatus.IN_PROGRESS):
            seen += 1
            report = self.advance(campaign.campaign_id)
            advanced += report.notified
            fresh = self._d.campaigns.get(campaign.campaign_id)
            last = datetime.fromtimestamp(fresh.last_progress_at_ms / 1000, tz=UTC)
            if not fresh.stalled and campaign_stalled(fresh.counters, last, now):
                try:
                    self._d.campaigns.update(fresh, set_values={"stalled": True})
                except Conflict:
                    continue
                stalled += 1
                self._d.alerts.alert(
                    "campaign_stalled",
                    fresh.campaign_id,
                    f"no progress since {last.isoformat()} "
                    f"({fresh.counters.outstanding} updates outstanding)",
                )
        return {"campaigns": seen, "notified": advanced, "stalled": stalled}


def _notified_delta() -> CounterDeltas:
    return CounterDeltas.move(Counter.PENDING, Counter.IN_PROGRESS)


def _counters_json(counters: CampaignCounters) -> dict[str, int]:
    return {c.value: counters.get(c) for c in Counter}


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value)
