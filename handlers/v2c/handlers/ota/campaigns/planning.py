"""Planning a campaign that creation persisted as `planning`: resolve, plan, store, publish.

Runs after creation answered (`planning_queue`), or from the monitor's
pass for a campaign whose planner never came or died. One planner at a
time: it takes the campaign's lease (the dispatcher's, free while a
campaign is not running) for `CampaignConfig.planning_lease_ms`, far more
than planning 100,000 targets takes, and its one final write is
conditioned on the campaign still planning under that lease. So:

* two planners (an invoke and the monitor) never both write a plan: the
  second finds the lease taken and leaves;
* a planner that died leaves the lease to expire; the monitor plans again,
  deterministically (the order is a pure function of the targets and the
  campaign id), overwriting the same plan chunks;
* a cancel while planning wins: the final write finds the campaign
  cancelled and changes nothing (its chunks stay unreferenced, as those of a
  creation that died half-way).

The outcome is `created` with its target count, waves and counters, or
`planning_failed` with the reason (no registered vehicle is eligible). A
start requested while planning (`CampaignService.start`) is carried out
right after: the final write keeps the request, so a start that raced the
plan is never lost (and the monitor starts a planned campaign whose queued
start did not happen).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping

from v2c.contract.errors import TransientError, V2CError
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.campaigns.targeting import Targeting, no_targets_detail, package_is_beta
from v2c.handlers.ota.concurrency import StaleWrite
from v2c.handlers.ota.domain.counters import CampaignCounters
from v2c.handlers.ota.domain.lifecycle import CampaignCommand, CampaignStatus, next_status
from v2c.handlers.ota.domain.plan import RolloutPlan, plan_rollout

logger = logging.getLogger(__name__)


def with_plan(campaign: Campaign, plan: RolloutPlan, now_ms: int) -> Campaign:
    """A planning campaign with its plan: created, every target pending."""
    return campaign.evolve(
        status=next_status(campaign.status, CampaignCommand.FINISH_PLANNING),
        target_count=plan.size,
        waves=plan.waves,
        counters=CampaignCounters(pending=plan.size),
        wave_counters=tuple(CampaignCounters(pending=n) for n in plan.wave_sizes()),
        updated_at_ms=now_ms,
        last_progress_at_ms=now_ms,
        lease_owner="",
        lease_until_ms=0,
        revision=campaign.revision + 1,
    )


class CampaignPlanner:
    def __init__(
        self, deps: CampaignServiceDeps, start: Callable[[str], object] | None = None
    ) -> None:
        self._d = deps
        self._targeting = Targeting(deps.fleet)
        self._start = start  # carries out a start requested while planning

    def _now_ms(self) -> int:
        return int(self._d.clock() * 1000)

    def plan(self, campaign_id: str) -> Campaign:
        """Plan the campaign if it is planning and no other planner holds
        it; the campaign as it is afterwards (a `TransientError` leaves it
        planning, for the next attempt)."""
        campaign = self._d.campaigns.get(campaign_id)
        if campaign.status is not CampaignStatus.PLANNING:
            return campaign
        owner = f"planner:{uuid.uuid4().hex}"
        ttl = self._d.config.planning_lease_ms
        leased = self._d.campaigns.acquire_lease(campaign, owner, self._now_ms(), ttl)
        if leased is None:
            return campaign  # another planner has it
        if leased.status is not CampaignStatus.PLANNING:
            self._d.campaigns.release_lease(campaign_id, owner)
            return leased
        try:
            planned, excluded = self._planned(leased)
        except TransientError:
            self._d.campaigns.release_lease(campaign_id, owner)
            raise
        try:
            stored = self._d.campaigns.finish_planning(leased, planned)
        except StaleWrite:
            logger.info(
                "campaign changed while planning (cancelled?)", extra={"campaign_id": campaign_id}
            )
            return self._d.campaigns.get(campaign_id)
        stored = self._announce(stored, excluded)
        logger.info(
            "campaign planned",
            extra={
                "campaign_id": campaign_id,
                "status": stored.status.value,
                "targets": stored.target_count,
            },
        )
        return stored

    def _announce(self, stored: Campaign, excluded: Mapping[str, int]) -> Campaign:
        """Publish the outcome; carry out a start requested while planning."""
        if stored.status is not CampaignStatus.CREATED:
            reason = stored.status_reason
            self._d.events.publish("campaign.planning_failed", stored.event_detail(reason=reason))
            return stored
        detail = stored.event_detail(strategy=stored.spec.deployment_strategy.value)
        self._d.events.publish("campaign.created", {**detail, "excluded": dict(excluded)})
        if stored.start_requested_at_ms is None or self._start is None:
            return stored
        try:
            self._start(stored.campaign_id)
        except V2CError as exc:  # the monitor tries the queued start again
            logger.warning(
                "queued start failed: %s", exc, extra={"campaign_id": stored.campaign_id}
            )
        return self._d.campaigns.get(stored.campaign_id)

    def _planned(self, leased: Campaign) -> tuple[Campaign, dict[str, int]]:
        beta = package_is_beta(self._d.packages, leased.firmware_id)  # BR-OTA-009
        resolution = self._targeting.resolve(
            leased.spec, leased.device_model, leased.version, is_beta=beta
        )
        eligibility = resolution.eligibility
        assert eligibility is not None  # no budget given: always resolved
        now = self._now_ms()
        if not eligibility.targets:
            failed = leased.evolve(
                status=next_status(leased.status, CampaignCommand.FAIL_PLANNING),
                status_reason=no_targets_detail(
                    leased.device_model, leased.version, eligibility.excluded, is_beta=beta
                ),
                updated_at_ms=now,
                finished_at_ms=now,
                lease_owner="",
                lease_until_ms=0,
                revision=leased.revision + 1,
            )
            return failed, dict(eligibility.excluded)
        plan = plan_rollout(leased.spec, eligibility.targets, seed=leased.campaign_id)
        self._d.plans.write(leased.campaign_id, plan.targets)
        return with_plan(leased, plan, now), dict(eligibility.excluded)
