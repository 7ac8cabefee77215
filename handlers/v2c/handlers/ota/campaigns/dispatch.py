"""Dispatch: notify the next vehicles of a running campaign, wave by wave.

`advance` is the single writer of a campaign's cursor: it holds a lease on
the campaign item, and each notified vehicle is one transaction that writes
its record and moves the cursor and counters, conditioned on the campaign
still running at that cursor. So pause and cancel take effect between two
vehicles, a crashed dispatcher's lease expires and the next one continues
exactly where the cursor stands, and the counters stay exact. What the end
of a wave means (next wave, gate, finish) is `campaign_run.after_wave`'s call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from v2c.contract.errors import Conflict
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.record import Campaign, StatusChange
from v2c.handlers.ota.campaigns.release import manifest_for, sign_release
from v2c.handlers.ota.domain.campaign_run import (
    FailGate,
    Finish,
    NextWave,
    Notify,
    PassGate,
    WaveStep,
    dispatch_open,
    next_step,
    release_due,
)
from v2c.handlers.ota.domain.counters import Counter, CounterDeltas
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.plan import Target
from v2c.handlers.ota.updates.notices import Notices
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdvanceReport:
    notified: int = 0
    dead_lettered: int = 0
    gate: str | None = None
    status: str | None = None


class Dispatcher:
    def __init__(self, deps: CampaignServiceDeps, notices: Notices) -> None:
        self._d = deps
        self._config = deps.config
        self._notices = notices

    def _now_ms(self) -> int:
        return int(self._d.clock() * 1000)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._d.clock(), tz=UTC)

    def _refresh_release(self, campaign: Campaign) -> Campaign:
        now = self._now_ms()
        if not release_due(campaign.release.expires_at_ms, now, self._config.resign_before_ms):
            return campaign
        package = self._d.packages.package(campaign.firmware_id)
        manifest = manifest_for(
            package, campaign.spec, campaign.release.update_id, campaign.campaign_id, now
        )
        return self._d.campaigns.set_release(campaign, sign_release(self._d.signer, manifest))

    def advance(self, campaign_id: str) -> AdvanceReport:
        """Notify as many vehicles as the wave, the gate and the concurrency
        window allow now. Safe to call any time, from anywhere."""
        campaign = self._d.campaigns.get(campaign_id)
        if not dispatch_open(campaign, self._now()):
            return AdvanceReport(status=campaign.status.value)
        owner = self._d.owner
        leased = self._d.campaigns.acquire_lease(
            campaign, owner, self._now_ms(), self._config.lease_ms
        )
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
        for _ in range(self._config.max_batches_per_advance):
            if campaign.status is not CampaignStatus.IN_PROGRESS:
                break
            campaign = self._refresh_release(campaign)
            step = next_step(campaign, self._now_ms())
            if isinstance(step, Notify):
                if step.count == 0:
                    break
                start = campaign.cursor
                for target in self._d.plans.read(campaign.campaign_id, start, start + step.count):
                    outcome = self._notify_next(campaign, target)
                    if outcome is None:
                        return AdvanceReport(notified, dead, gate, "changed")
                    campaign, delivered = outcome
                    notified += 1
                    dead += 0 if delivered else 1
                continue
            gate = step.gate.value if step.gate is not None else None
            moved = self._after_wave(campaign, step)
            if moved is None:
                break
            campaign = moved
        return AdvanceReport(notified, dead, gate, campaign.status.value)

    def _after_wave(self, campaign: Campaign, step: WaveStep) -> Campaign | None:
        """Carry out the end of a wave; the campaign to continue with, or None."""
        match step:
            case NextWave():
                return self._d.campaigns.next_wave(campaign)
            case PassGate(summary=summary):
                moved = self._d.campaigns.pass_gate(campaign, summary)
                logger.info("gate passed", extra={"campaign_id": campaign.campaign_id, **summary})
                self._d.events.publish("campaign.gate_passed", moved.event_detail(gate=summary))
                return moved
            case FailGate(status_reason=reason, alert_detail=detail, summary=summary):
                self._d.campaigns.fail_gate(campaign, reason, summary)
                self._d.alerts.alert("canary_gate_failed", campaign.campaign_id, detail)
            case Finish():
                self._finish(campaign)
        return None

    def _finish(self, campaign: Campaign) -> None:
        change = StatusChange(CampaignStatus.COMPLETED, finished_at_ms=self._now_ms())
        try:
            done = self._d.campaigns.change_status(campaign, change)
        except Conflict:
            return
        counters = {c.value: done.counters.get(c) for c in Counter}
        self._d.events.publish("campaign.completed", done.event_detail(counters=counters))

    def _notify_next(self, campaign: Campaign, target: Target) -> tuple[Campaign, bool] | None:
        """Record and publish the notification of the target at the cursor;
        None if the campaign changed under us (paused, cancelled)."""
        now = self._now_ms()
        wave = campaign.current_wave
        update = VehicleUpdate.notified(
            vehicle_id=target.vehicle_id,
            update_id=campaign.release.update_id,
            now_ms=now,
            kind=UpdateKind.CAMPAIGN,
            firmware_id=campaign.firmware_id,
            to_version=campaign.version,
            from_version=target.installed_version,
            campaign_id=campaign.campaign_id,
            wave=wave,
            region=target.region,
        )
        at_cursor = self._d.campaigns.notify_at_cursor(campaign, now)
        delivered = self._notices.first(update, campaign.release, at_cursor)
        if delivered is None:
            return None
        move = CounterDeltas.move(Counter.PENDING, Counter.IN_PROGRESS)
        waves = list(campaign.wave_counters)
        waves[wave] = waves[wave].apply(move)
        return campaign.evolve(
            cursor=campaign.cursor + 1,
            counters=campaign.counters.apply(move),
            wave_counters=tuple(waves),
        ), delivered
