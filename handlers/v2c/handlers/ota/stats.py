"""Campaign and fleet statistics (E4, BR-OTA-041 to 045).

Counts come from the campaign counters (exact, maintained by the status
transactions); durations, failure reasons and bytes from the per-vehicle
records of the campaign (one Query on the by-campaign index). The global
view sums the counters of every campaign: it reads the campaigns table, not
the records, so it stays cheap as the fleet grows.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.domain.counters import CampaignCounters, Counter
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.stores import CampaignStore, UpdateStore

FAILED_STATES = frozenset({UpdateState.FAILED, UpdateState.REJECTED, UpdateState.ROLLED_BACK})


def counters_json(counters: CampaignCounters) -> dict[str, Any]:
    data: dict[str, Any] = {c.value: counters.get(c) for c in Counter}
    data["total"] = counters.total
    data["success_rate"] = _round(counters.success_rate)
    data["failure_rate"] = _round(counters.failure_rate)
    data["progress_percent"] = _round(counters.progress_percent)
    return data


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _mean(values: list[int]) -> float | None:
    return round(sum(values) / len(values) / 1000, 1) if values else None


class StatsService:
    def __init__(self, campaigns: CampaignStore, updates: UpdateStore) -> None:
        self._campaigns = campaigns
        self._updates = updates

    def campaign(self, campaign_id: str) -> dict[str, Any]:
        campaign = self._campaigns.get(campaign_id)
        durations: list[int] = []
        reasons: Tally[str] = Tally()
        bytes_total = 0
        for update in self._updates.for_campaign(campaign_id):
            bytes_total += update.bytes_downloaded
            if update.state is UpdateState.COMPLETED:
                took = update.total_duration_ms or (update.completed_at_ms - update.notified_at_ms)
                if took > 0:
                    durations.append(took)
            elif update.state in FAILED_STATES:
                reasons[update.reason or update.state.value] += 1
        return {
            "campaign_id": campaign.campaign_id,
            "name": campaign.name,
            "status": campaign.status.value,
            "counters": counters_json(campaign.counters),
            "waves": [
                {"name": wave.name, "size": size, "counters": counters_json(c)}
                for wave, size, c in zip(
                    campaign.waves, _sizes(campaign), campaign.wave_counters, strict=True
                )
            ],
            "gate": campaign.gate,
            "average_update_seconds": _mean(durations),
            "failure_reasons": dict(reasons.most_common()),
            "bytes_transferred": bytes_total,
            "stalled": campaign.stalled,
        }

    def fleet(self) -> dict[str, Any]:
        by_status: Tally[str] = Tally()
        total = CampaignCounters()
        start: str | None = None
        while True:
            page, start = self._campaigns.list(limit=100, start=start)
            for campaign in page:
                by_status[campaign.status.value] += 1
                total = _add(total, campaign.counters)
            if start is None:
                break
        active = sum(
            by_status[s.value] for s in (CampaignStatus.IN_PROGRESS, CampaignStatus.PAUSED)
        )
        return {
            "campaigns": sum(by_status.values()),
            "campaigns_by_status": dict(by_status),
            "active_campaigns": active,
            "updates": counters_json(total),
        }


def _sizes(campaign: Campaign) -> list[int]:
    return [w.end - campaign.wave_start(n) for n, w in enumerate(campaign.waves)]


def _add(a: CampaignCounters, b: CampaignCounters) -> CampaignCounters:
    return CampaignCounters(**{c.value: a.get(c) + b.get(c) for c in Counter})
