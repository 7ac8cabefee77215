"""Creating a campaign: validate, sign, resolve the targets, plan, persist.

Creation answers within ~0.5 s whatever the fleet size (PRD), so it does
only what is bounded while answering: parse and validate the spec, check
the package, sign the release once (a signing outage is a 503 with nothing
written), and, when the fleet index to read is small enough
(`CampaignConfig.inline_index_bytes`), resolve the targets. Then:

* few targets (`inline_max_targets`), or a registry without an index: plan
  now, write the plan chunks to S3, and make the campaign visible in one
  conditional PutItem as `created`, all or nothing, as before; no eligible
  target is a 400;
* otherwise: persist the campaign as `planning` (one conditional PutItem)
  and hand it to the planner (`planning`, `planning_queue`), which moves it
  to `created` or `planning_failed` within seconds.

Idempotency: the key derives the campaign id, so a retry finds the campaign
made before (planning or not) and answers it; a retry racing the first
attempt loses the conditional PutItem and answers the winner's campaign.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from v2c.contract.errors import Conflict, InvalidField, NotFound
from v2c.contract.semver import SemVer
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.planning import with_plan
from v2c.handlers.ota.campaigns.record import Campaign, Release
from v2c.handlers.ota.campaigns.release import manifest_for, release_id, sign_release
from v2c.handlers.ota.campaigns.targeting import Targeting, no_targets_detail
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec, parse_campaign_spec
from v2c.handlers.ota.domain.campaign_run import Eligibility
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.plan import plan_rollout
from v2c.handlers.ota.ports import Package

logger = logging.getLogger(__name__)

_IDEMPOTENCY_NS: Final = uuid.UUID("a3d1f0e2-6b4c-4d8e-9f21-7c5e3b2a1d09")


@dataclass(frozen=True, slots=True)
class CreationReport:
    campaign: Campaign
    created: bool  # False: the idempotency key found this campaign already made
    excluded: Mapping[str, int] = field(default_factory=dict)


class CampaignCreation:
    def __init__(self, deps: CampaignServiceDeps) -> None:
        self._d = deps
        self._targeting = Targeting(deps.fleet)

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

    def create(
        self, data: object, *, created_by: str = "", idempotency_key: str | None = None
    ) -> CreationReport:
        spec = parse_campaign_spec(data, now=datetime.fromtimestamp(self._d.clock(), tz=UTC))
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
        config = self._d.config
        resolution = self._targeting.resolve(
            spec,
            package.device_model,
            package.version,
            max_index_bytes=config.inline_index_bytes,
            is_beta=package.is_beta,
        )
        eligibility = resolution.eligibility
        if eligibility is not None and not eligibility.targets:
            raise InvalidField(
                "target_filter",
                no_targets_detail(
                    package.device_model,
                    package.version,
                    eligibility.excluded,
                    is_beta=package.is_beta,
                ),
            )
        now_ms = int(self._d.clock() * 1000)
        manifest = manifest_for(package, spec, release_id(campaign_id), campaign_id, now_ms)
        release = sign_release(self._d.signer, manifest)  # SigningUnavailable: nothing written yet
        base = self._new_campaign(campaign_id, spec, package, release, now_ms, created_by)
        if eligibility is not None and (
            not resolution.indexed or len(eligibility.targets) <= config.inline_max_targets
        ):
            return self._create_planned(base, eligibility, now_ms)
        return self._create_planning(base)

    def _put(self, campaign: Campaign) -> CreationReport | None:
        """Make the campaign visible; the existing one's report when a
        retry with the same idempotency key got there first."""
        try:
            self._d.campaigns.put_new(campaign)
        except Conflict:
            return CreationReport(self._d.campaigns.get(campaign.campaign_id), created=False)
        return None

    def _create_planned(
        self, base: Campaign, eligibility: Eligibility, now_ms: int
    ) -> CreationReport:
        plan = plan_rollout(base.spec, eligibility.targets, seed=base.campaign_id)
        self._d.plans.write(base.campaign_id, plan.targets)
        campaign = with_plan(base, plan, now_ms).evolve(revision=0)
        existing = self._put(campaign)
        if existing is not None:
            return existing
        strategy = campaign.spec.deployment_strategy.value
        self._d.events.publish("campaign.created", campaign.event_detail(strategy=strategy))
        logger.info(
            "campaign created",
            extra={
                "campaign_id": campaign.campaign_id,
                "targets": plan.size,
                "waves": len(plan.waves),
            },
        )
        return CreationReport(campaign, created=True, excluded=eligibility.excluded)

    def _create_planning(self, base: Campaign) -> CreationReport:
        existing = self._put(base)
        if existing is not None:
            return existing
        strategy = base.spec.deployment_strategy.value
        self._d.events.publish("campaign.planning", base.event_detail(strategy=strategy))
        self._d.planning.submit(base.campaign_id)  # after the event: `campaign.created` follows it
        logger.info("campaign planning", extra={"campaign_id": base.campaign_id})
        return CreationReport(base, created=True)

    @staticmethod
    def _new_campaign(
        campaign_id: str,
        spec: CampaignSpec,
        package: Package,
        release: Release,
        now_ms: int,
        created_by: str,
    ) -> Campaign:
        """The campaign before its plan: planning, no target yet."""
        return Campaign(
            campaign_id=campaign_id,
            spec=spec,
            status=CampaignStatus.PLANNING,
            firmware_id=package.firmware_id,
            version=package.version,
            device_model=package.device_model,
            release=release,
            target_count=0,
            waves=(),
            created_at_ms=now_ms,
            created_by=created_by,
            updated_at_ms=now_ms,
            last_progress_at_ms=now_ms,
        )
