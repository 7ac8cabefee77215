"""Campaign and fleet statistics (E5, BR-OTA-041 to 045).

Counts come from the campaign counters (exact, maintained by the status
transactions); durations, failure reasons and bytes from the per-vehicle
records of the campaign (one Query on the by-campaign index).

The global view (`GET /stats`, PRD E5-US1) sums the counters of every
campaign (the campaigns table: cheap as the fleet grows), adds the updates
made outside campaigns (single, bulk, device rollbacks), and adds what only
the records know: the last 24 hours, the average update time in minutes,
the data transferred, and the breakdowns by firmware version and device
type (`update_summary`, pure). Those come from one bounded read of the
records (`updates.scan`: at most `max_records` read, the answer says
`records_complete`); without a record source they are absent and the
counts are the campaigns' alone, as before. A firmware's success rate
(`GET /firmware/{id}`, BR-OTA-010) is the same fold over its records.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any, Final

from v2c.contract.errors import NotFound
from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.domain.counters import CampaignCounters, Counter
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.ports import PackageCatalog
from v2c.handlers.ota.stores import CampaignStore, UpdateStore
from v2c.handlers.ota.update_summary import PackageFacts, UpdateSummary, rate
from v2c.handlers.ota.updates.scan import UpdateRecords

FAILED_STATES = frozenset(
    {UpdateState.FAILED, UpdateState.REJECTED, UpdateState.ROLLED_BACK, UpdateState.TIMED_OUT}
)
# Records one statistics answer reads at most (see `updates.scan` for the cost).
MAX_RECORDS: Final = 100_000
ACTIVE_STATUSES: Final = (CampaignStatus.IN_PROGRESS, CampaignStatus.PAUSED)
FAILED_CAMPAIGNS: Final = (CampaignStatus.ROLLED_BACK, CampaignStatus.PLANNING_FAILED)


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
    def __init__(
        self,
        campaigns: CampaignStore,
        updates: UpdateStore,
        *,
        records: UpdateRecords | None = None,
        packages: PackageCatalog | None = None,
        clock: Callable[[], float] = time.time,
        max_records: int = MAX_RECORDS,
    ) -> None:
        self._campaigns = campaigns
        self._updates = updates
        self._records = records
        self._packages = packages
        self._clock = clock
        self.max_records = max_records

    def _package_facts(self, firmware_id: str) -> PackageFacts | None:
        if self._packages is None:
            return None
        try:
            package = self._packages.package(firmware_id)
        except NotFound:
            return None
        return PackageFacts(package.size_bytes, package.device_model)

    def _summary(self, firmware_id: str | None = None) -> tuple[UpdateSummary, bool] | None:
        """The records folded (one bounded read), and whether all were read."""
        if self._records is None:
            return None
        summary = UpdateSummary(int(self._clock() * 1000), self._package_facts)
        outcome = self._records.scan(summary.add, limit=self.max_records, firmware_id=firmware_id)
        return summary, outcome.complete

    def firmware_success_rate(self, firmware_id: str) -> float | None:
        """BR-OTA-041 over the package's updates, in and outside campaigns
        (None while none finished, or without a record source)."""
        found = self._summary(firmware_id)
        if found is None:
            return None
        tally = found[0].all_updates
        return rate(tally.completed, tally.failed)

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
            # the dashboard contract's name for the same tally (issue #16)
            "failures_by_reason": dict(reasons.most_common()),
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
        found = self._summary()
        if found is not None:  # updates outside campaigns count too (PRD E5-US1 AC2)
            total = _add(total, found[0].outside_campaigns)
        active = sum(by_status[s.value] for s in ACTIVE_STATUSES)
        answer: dict[str, Any] = {
            "campaigns": sum(by_status.values()),
            "campaigns_by_status": dict(by_status),
            "active_campaigns": active,
            "updates": counters_json(total),
            # the PRD's flat names (E5-US1's example answer)
            "total_campaigns": sum(by_status.values()),
            "completed_campaigns": by_status[CampaignStatus.COMPLETED.value],
            "failed_campaigns": sum(by_status[s.value] for s in FAILED_CAMPAIGNS),
            "total_updates": total.total,
            "pending_updates": total.get(Counter.PENDING) + total.get(Counter.WAITING),
            "in_progress_updates": total.get(Counter.IN_PROGRESS),
            "completed_updates": total.get(Counter.COMPLETED),
            "failed_updates": total.failures,
            "success_rate": _round(total.success_rate),
        }
        if found is not None:
            summary, complete = found
            answer.update(summary.to_json())
            answer["records_read"] = summary.records
            answer["records_complete"] = complete
        return answer


def _sizes(campaign: Campaign) -> list[int]:
    return [w.end - campaign.wave_start(n) for n, w in enumerate(campaign.waves)]


def _add(a: CampaignCounters, b: CampaignCounters) -> CampaignCounters:
    return CampaignCounters(**{c.value: a.get(c) + b.get(c) for c in Counter})
