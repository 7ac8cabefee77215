"""Campaign gauges, read from the campaigns table when Prometheus scrapes.

A campaign's counters live in its DynamoDB item (moved atomically with each
update record: `domain.counters`), so the gauges are not kept in the process:
a custom collector reads the campaigns on each scrape and turns them into

* `v2c_ota_campaign_status{campaign_id, status}`: 1 for the current status;
* `v2c_ota_campaign_updates{campaign_id, state}`: the eight counters and `total`;
* `v2c_ota_campaign_wave_updates{campaign_id, wave, state}`: the same per wave
  (the wave names the campaign has, e.g. `canary`);
* `v2c_ota_campaign_last_update_timestamp_seconds{campaign_id}`: the
  campaign's last progress (`last_progress_at_ms`: notifications dispatched,
  an update record written with its counter move), else its creation, in
  Unix seconds: a stall alert compares it with `time()`. Never
  `updated_at_ms`: a lease or other bookkeeping write moves that, and is
  not progress.

Bounded: the campaigns not finished, then those finished within the last 24 h,
at most `limit` (500) in all, read with the store's list operation only
(`recent_campaigns`: the `by-status` index, a page per finished status), never
an update record: the cost of a scrape does not grow with the fleet. A read
that fails is logged and the scrape gets no campaign series this time, never
an error: one table hiccup must not take the process's other metrics down.
The API process registers it (`v2c.infra.local.api_metrics`); several API
processes behind one Prometheus show the same values, which `max by` folds.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from typing import Final

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.domain.counters import CampaignCounters
from v2c.handlers.ota.domain.lifecycle import ACTIVE, CampaignStatus
from v2c.handlers.ota.stores import CampaignStore

logger = logging.getLogger(__name__)

MAX_CAMPAIGNS: Final = 500
FINISHED_WINDOW_MS: Final = 24 * 3600 * 1000
FINISHED_PAGE: Final = 100  # the newest of each finished status, one page each
STATES: Final = (*(f.name for f in fields(CampaignCounters)), "total")
# Finished statuses, in the order they are read (after the active ones).
FINISHED: Final = tuple(s for s in CampaignStatus if s not in ACTIVE)

CampaignSource = Callable[[], Iterable[Campaign]]


def finished_at_ms(campaign: Campaign) -> int:
    """When a finished campaign finished (a rejection or a failed plan may
    not record it: their last change then)."""
    return campaign.finished_at_ms or campaign.updated_at_ms or campaign.created_at_ms


def last_change_ms(campaign: Campaign) -> int:
    """The last progress, as the monitor's stall rule reads it: any write to
    the record (a lease, a waiting vehicle touched) is not progress, so
    `updated_at_ms` would keep a stuck campaign looking alive."""
    return campaign.last_progress_at_ms or campaign.created_at_ms


def select_recent(
    campaigns: Iterable[Campaign],
    now_ms: int,
    *,
    limit: int = MAX_CAMPAIGNS,
    window_ms: int = FINISHED_WINDOW_MS,
) -> list[Campaign]:
    """The campaigns to show, in the order given: every one not finished and
    those finished within `window_ms`, the first `limit` of them, each once."""
    kept: dict[str, Campaign] = {}
    for campaign in campaigns:
        if len(kept) >= limit:
            break
        recent = now_ms - finished_at_ms(campaign) <= window_ms
        if campaign.status in ACTIVE or recent:
            kept.setdefault(campaign.campaign_id, campaign)
    return list(kept.values())


def counter_values(counters: CampaignCounters) -> dict[str, int]:
    values = {f.name: int(getattr(counters, f.name)) for f in fields(counters)}
    values["total"] = counters.total
    return values


def families(campaigns: Iterable[Campaign]) -> list[Metric]:
    """The four gauge families of the campaigns (pure: values in, samples out)."""
    status = GaugeMetricFamily(
        "v2c_ota_campaign_status",
        "1 for the campaign's current status",
        labels=["campaign_id", "status"],
    )
    updates = GaugeMetricFamily(
        "v2c_ota_campaign_updates",
        "The campaign's updates by counter (pending ... waiting, and total)",
        labels=["campaign_id", "state"],
    )
    waves = GaugeMetricFamily(
        "v2c_ota_campaign_wave_updates",
        "The campaign's updates per wave by counter",
        labels=["campaign_id", "wave", "state"],
    )
    changed = GaugeMetricFamily(
        "v2c_ota_campaign_last_update_timestamp_seconds",
        "Unix time of the campaign's last progress (else its creation)",
        labels=["campaign_id"],
    )
    for campaign in campaigns:
        cid = campaign.campaign_id
        status.add_metric([cid, campaign.status.value], 1)
        for state, value in counter_values(campaign.counters).items():
            updates.add_metric([cid, state], value)
        for wave, counters in zip(campaign.waves, campaign.wave_counters, strict=False):
            for state, value in counter_values(counters).items():
                waves.add_metric([cid, wave.name, state], value)
        changed.add_metric([cid], last_change_ms(campaign) / 1000)
    return [status, updates, waves, changed]


class CampaignCollector(Collector):
    """The gauges above, for `registry.register(...)`."""

    def __init__(
        self,
        source: CampaignSource,
        *,
        clock: Callable[[], float] = time.time,
        limit: int = MAX_CAMPAIGNS,
    ) -> None:
        self._source = source
        self._clock = clock
        self._limit = limit

    def describe(self) -> Iterable[Metric]:
        """The names without a read: registering costs no table access."""
        return families([])

    def collect(self) -> Iterable[Metric]:
        try:
            now_ms = int(self._clock() * 1000)
            campaigns = select_recent(self._source(), now_ms, limit=self._limit)
        except Exception:  # a scrape must survive a table that does not answer
            logger.warning("campaign metrics not read this scrape", exc_info=True)
            return []
        return families(campaigns)


def recent_campaigns(store: CampaignStore, limit: int = MAX_CAMPAIGNS) -> CampaignSource:
    """A source over the campaign store: the active campaigns (every page of
    each active status, up to `limit`), then the newest page of each finished
    status; `select_recent` keeps those finished within the window."""

    def read() -> Iterator[Campaign]:
        yield from itertools.islice(store.iter_status(*sorted(ACTIVE)), limit)
        for status in FINISHED:
            page, _ = store.list(status, limit=FINISHED_PAGE)
            yield from page

    return read
