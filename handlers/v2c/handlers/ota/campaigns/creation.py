"""Creating a campaign: validate, target, plan, sign, persist; all or nothing.

The plan chunks go to S3 and the release is signed before the one
conditional PutItem that makes the campaign visible. A signing outage (503)
or any earlier failure leaves no campaign behind; a retry with the same
idempotency key produces the same campaign id and either finds the finished
campaign or redoes the work.
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
from v2c.handlers.ota.campaigns.record import Campaign, Release
from v2c.handlers.ota.campaigns.release import manifest_for, release_id, sign_release
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec, parse_campaign_spec
from v2c.handlers.ota.domain.campaign_run import eligible_targets
from v2c.handlers.ota.domain.counters import CampaignCounters
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.plan import RolloutPlan, plan_rollout
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
        vehicles = self._d.fleet.select(spec.filter_expr, spec.target_devices, spec.target_groups)
        eligible = eligible_targets(vehicles, package.device_model, package.version)
        targets, excluded = eligible.targets, eligible.excluded
        if not targets:
            raise InvalidField(
                "target_filter",
                f"no registered {package.device_model} vehicle below {package.version} matches "
                f"the targets ({sum(excluded.values())} excluded: {excluded})",
            )
        plan = plan_rollout(spec, targets, seed=campaign_id)
        now_ms = int(self._d.clock() * 1000)
        manifest = manifest_for(package, spec, release_id(campaign_id), campaign_id, now_ms)
        release = sign_release(self._d.signer, manifest)  # SigningUnavailable: nothing written yet
        self._d.plans.write(campaign_id, plan.targets)
        campaign = self._new_campaign(campaign_id, spec, package, release, plan, now_ms, created_by)
        try:
            self._d.campaigns.put_new(campaign)
        except Conflict:
            existing = self._d.campaigns.get(campaign_id)
            return CreationReport(existing, created=False)
        self._d.events.publish(
            "campaign.created", campaign.event_detail(strategy=spec.deployment_strategy.value)
        )
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
