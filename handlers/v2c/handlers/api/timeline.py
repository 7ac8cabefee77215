"""A campaign's timeline, derived from its record: pure, oldest first.

The campaign item keeps the moments that matter as fields (created,
approved or rejected, start requested, started, finished), its latest gate
decision (`gate`, with `decided_at`), its status and reason, and its stall
flag; no event log. So the timeline is a view of those fields, and shows
only what they still hold:

* one gate decision, the latest: an earlier gate that passed is overwritten
  when the next one is decided;
* a pause or a rollback in progress is dated by the record's last change
  (`updated_at_ms`, or the failed gate's decision, which pauses without
  touching it), a resume is not visible once it happened (the status is
  back to in progress);
* each wave's first notification only when the caller could tell it
  (`wave_first_notified`, from the wave's records: `CampaignUpdatePages.first_notified`);
* a stall is dated by the last progress seen before it.

Events without a time are left out: a timeline entry that cannot say when
would mislead more than it tells.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.domain.lifecycle import CampaignStatus


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    at_ms: int
    kind: str
    detail: str

    @property
    def at(self) -> str:
        """RFC 3339 UTC with milliseconds."""
        moment = datetime.fromtimestamp(self.at_ms / 1000, tz=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _by(who: str | None) -> str:
    return f" by {who}" if who else ""


def _gate_event(gate: Mapping[str, Any]) -> TimelineEvent | None:
    at = gate.get("decided_at")
    if not isinstance(at, int) or at <= 0:
        return None
    verdict = str(gate.get("verdict", ""))
    kind = "gate_passed" if verdict == "pass" else "gate_failed"
    wave = str(gate.get("wave", "")) or "the"
    parts = [f"{wave} gate {'passed' if kind == 'gate_passed' else 'failed'}"]
    if gate.get("reason"):
        parts[0] += f": {gate['reason']}"
    rate, threshold = gate.get("success_rate"), gate.get("success_threshold_percent")
    if rate is not None:
        parts.append(f"success rate {rate}% (threshold {threshold}%)")
    counts = [f"{gate[k]} {k}" for k in ("completed", "failures", "eligible") if k in gate]
    if counts:
        parts.append(", ".join(counts))
    return TimelineEvent(at, kind, "; ".join(parts))


_FINAL: dict[CampaignStatus, str] = {
    CampaignStatus.COMPLETED: "completed",
    CampaignStatus.CANCELLED: "cancelled",
    CampaignStatus.ROLLED_BACK: "rolled_back",
}
_CURRENT: dict[CampaignStatus, str] = {
    CampaignStatus.PAUSED: "paused",
    CampaignStatus.ROLLING_BACK: "rollback_started",
    CampaignStatus.PLANNING_FAILED: "planning_failed",
}


def campaign_timeline(
    campaign: Campaign, wave_first_notified: Mapping[int, int] | None = None
) -> list[TimelineEvent]:
    """What the record tells of the campaign's history, oldest first (ties in
    the order things happen: created before approved before started)."""
    events: list[TimelineEvent] = []

    def add(at_ms: int | None, kind: str, detail: str) -> None:
        if at_ms is not None and at_ms > 0:
            events.append(TimelineEvent(at_ms, kind, detail))

    add(campaign.created_at_ms, "created", f"created{_by(campaign.created_by)}")
    comment = f": {campaign.approval_comment}" if campaign.approval_comment else ""
    add(campaign.approved_at_ms, "approved", f"approved{_by(campaign.approved_by)}{comment}")
    if campaign.rejected_at_ms is not None:
        reason = f": {campaign.status_reason}" if campaign.status_reason else ""
        add(campaign.rejected_at_ms, "rejected", f"rejected{_by(campaign.rejected_by)}{reason}")
    add(campaign.start_requested_at_ms, "start_requested", "start requested while planning")
    add(campaign.started_at_ms, "started", "rollout started")
    for number, at_ms in sorted((wave_first_notified or {}).items()):
        if 0 <= number < len(campaign.waves):
            name = campaign.waves[number].name
            add(at_ms, "wave_started", f"wave {name}: first vehicles notified")
    if campaign.gate:
        gate = _gate_event(campaign.gate)
        if gate is not None:
            events.append(gate)
    if campaign.stalled:
        add(campaign.last_progress_at_ms, "stalled", "no progress since then: flagged stalled")
    reason = campaign.status_reason
    final = _FINAL.get(campaign.status)
    if final is not None:
        add(campaign.finished_at_ms, final, reason or final.replace("_", " "))
    current = _CURRENT.get(campaign.status)
    if current is not None:
        # A failed gate pauses without touching `updated_at`: its decision dates the pause.
        gate_at = (campaign.gate or {}).get("decided_at")
        at_ms = max(campaign.updated_at_ms, gate_at if isinstance(gate_at, int) else 0)
        add(at_ms, current, reason or current.replace("_", " "))
    order = {id(e): n for n, e in enumerate(events)}
    return sorted(events, key=lambda e: (e.at_ms, order[id(e)]))
