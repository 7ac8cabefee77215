"""Dispatch: notify the next vehicles of a running campaign, wave by wave, a chunk at a time.

`advance` is the single writer of a campaign's cursor: it holds a lease on
the campaign item and walks the current wave in steps (`next_step`: the
batch the wave, the batch size and the concurrency window allow now), each
step in chunks of at most `CampaignConfig.notify_chunk` (99) targets. A
chunk is one `TransactWriteItems`: the campaign item's update (cursor += k,
pending -= k and in progress += k for the campaign and its wave, last
progress), conditioned on the campaign still running at this cursor and
wave, plus k new per-vehicle records, each conditioned on not existing;
99 records and the campaign item fill DynamoDB's 100-item limit. Then the
chunk's notifications go out together, pipelined at QoS 2 by the sink (a
window in flight, not one PUBCOMP before the next PUBLISH), each delivered
or dead-lettered on its own; the release is signed once per campaign (and
again only near its expiry, checked before each chunk).

What this guarantees:

* Pause and cancel take effect between chunks: their conditional write
  moves the status (or, for a cancel, also counts the unnotified targets at
  the cursor it read), so the next chunk's condition fails, nothing of that
  chunk is written or sent, and `advance` stops with "changed". At most the
  chunk already written is still published after a pause.
* No vehicle is notified twice by dispatch: a chunk is recorded whole or
  not at all, only at the cursor it was read with; a crashed dispatcher's
  lease expires and the next one continues exactly where the cursor stands.
* The counters stay exact: each chunk moves them by exactly its size, in
  the same transaction as its records.
* Crash safety: records are written before anything is published. A crash
  between a chunk's write and its publishes leaves those vehicles recorded
  as notified without a message; they count as in progress, the monitor
  flags the campaign stalled when nothing moves, and re-notifying them (the
  update's retry, `Notices.send`) heals it. A message is never sent for a
  vehicle without a record (its reports would have nothing to land on).
  A dead-lettered notification is the same case, waiting in the OTA DLQ
  for `v2c dlq replay`.

One active update per vehicle (BR-OTA-014/023, `campaigns.coordination`):
before a chunk is recorded, each vehicle's other records are weighed. A
vehicle busy with an update of equal or higher rank (or installing one) is
recorded all the same, then held back (WAITING, counted `waiting`, never
a failure) instead of notified; the monitor notifies it once it is free. A
lower-rank update not yet installing is cancelled (`cancelled` in its own
campaign, a signed CANCEL_UPDATE to the vehicle) before the notification.
Every record carries the campaign's timeout (`timeout_ms`, BR-OTA-018),
which the monitor enforces (`campaigns.timeouts`).

What the end of a wave means (next wave, gate, finish) is
`campaign_run.after_wave`'s call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from v2c.contract.errors import Conflict
from v2c.handlers.ota.campaigns.coordination import Coordinator
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
from v2c.handlers.ota.domain.counters import Counter
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.plan import Target
from v2c.handlers.ota.domain.timeouts import timeout_ms
from v2c.handlers.ota.updates.commands import UpdateCommands
from v2c.handlers.ota.updates.notices import Notices
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdvanceReport:
    notified: int = 0
    dead_lettered: int = 0
    gate: str | None = None
    status: str | None = None
    waiting: int = 0  # recorded but held back: busy with another update


class Dispatcher:
    def __init__(
        self,
        deps: CampaignServiceDeps,
        notices: Notices,
        coordinator: Coordinator | None = None,
    ) -> None:
        self._d = deps
        self._config = deps.config
        self._notices = notices
        self._coordinator = coordinator or Coordinator(
            deps,
            UpdateCommands(deps.campaigns, deps.updates, deps.clock, deps.config.conflict_retries),
            notices,
        )

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
        notified = dead = waiting = 0
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
                targets = self._d.plans.read(campaign.campaign_id, start, start + step.count)
                if not targets:
                    break  # a plan shorter than its waves: nothing to notify
                for chunk in chunked(targets, self._config.notify_chunk):
                    campaign = self._refresh_release(campaign)
                    outcome = self._notify_chunk(campaign, chunk)
                    if outcome is None:
                        return AdvanceReport(notified, dead, gate, "changed", waiting)
                    campaign, delivered, held = outcome
                    notified += len(delivered)
                    dead += delivered.count(False)
                    waiting += held
                continue
            gate = step.gate.value if step.gate is not None else None
            moved = self._after_wave(campaign, step)
            if moved is None:
                break
            campaign = moved
        return AdvanceReport(notified, dead, gate, campaign.status.value, waiting)

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

    def _notify_chunk(
        self, campaign: Campaign, targets: Sequence[Target]
    ) -> tuple[Campaign, list[bool], int] | None:
        """Record the chunk at the cursor (one write with the cursor and
        counter move), hold back the vehicles busy with another update,
        then publish to the others; the campaign as it stands after, per
        notified target whether its message was delivered (False:
        dead-lettered), and how many were held back. None if the campaign
        changed under us (paused, cancelled, another dispatcher): nothing
        recorded, nothing sent."""
        now = self._now_ms()
        wave = campaign.current_wave
        updates = [
            VehicleUpdate.notified(
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
                timeout_ms=timeout_ms(campaign.spec.timeout_minutes),
            )
            for target in targets
        ]
        count = len(updates)
        verdicts = self._coordinator.screen(campaign, updates)
        at_cursor = self._d.campaigns.notify_at_cursor(campaign, now, count)
        if not self._d.updates.create_many(updates, at_cursor):
            return None
        go, held = self._coordinator.carry_out(campaign, updates, verdicts)
        delivered = self._notices.send_many(go, campaign.release) if go else []
        moves = [
            {Counter.PENDING: -count, Counter.IN_PROGRESS: count},
            {Counter.IN_PROGRESS: -len(held), Counter.WAITING: len(held)},
        ]
        counters, waves = campaign.counters, list(campaign.wave_counters)
        for move in moves:
            counters = counters.moved(move)
            waves[wave] = waves[wave].moved(move)
        return (
            campaign.evolve(
                cursor=campaign.cursor + count,
                counters=counters,
                wave_counters=tuple(waves),
                last_progress_at_ms=now,
            ),
            delivered,
            len(held),
        )


def chunked(targets: Sequence[Target], size: int) -> list[Sequence[Target]]:
    """`targets` in consecutive chunks of `size` (the last one shorter)."""
    if size < 1:
        raise ValueError(f"a chunk holds at least one target, not {size}")
    return [targets[i : i + size] for i in range(0, len(targets), size)]
