"""Campaign endpoints (PRD E2): create, list, get, and the lifecycle commands.

The request body is declared as `CampaignSpec` for validation and the
OpenAPI document; the service parses the raw JSON again with the clock, so
the one rule a schema cannot state ("a scheduled start lies in the future")
is checked too. Every command answers the campaign as it is afterwards.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from v2c.handlers.api.app import OTA_PREFIX, OtaApi
from v2c.handlers.api.models import RequestModel
from v2c.handlers.api.pagination import page_headers
from v2c.handlers.api.services import ApiServices, require
from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.stats import counters_json

CampaignId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="campaign id")]


class Counters(BaseModel):
    pending: int
    in_progress: int
    completed: int
    failed: int
    rolled_back: int
    cancelled: int
    timed_out: int = Field(default=0, description="ended past the deadline, no retry left")
    waiting: int = Field(default=0, description="held back: busy with another update")
    total: int
    success_rate: float | None
    failure_rate: float | None
    progress_percent: float | None


class WaveOut(BaseModel):
    name: str
    size: int
    gated: bool
    counters: Counters


class CampaignOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaign_id: str
    name: str
    status: CampaignStatus
    status_reason: str
    strategy: str
    firmware_id: str
    version: str
    device_model: str
    target_count: int
    counters: Counters
    failures_by_reason: dict[str, int] | None = Field(
        default=None,
        description="failed, rejected, rolled back and timed-out updates by reason (a missing "
        "reason named by the state), counted with the counters; null for a campaign created "
        "before they were counted: fold its records with GET /stats/campaigns/{id}",
    )
    waves: list[WaveOut]
    current_wave: int
    gate: dict[str, Any] | None
    requires_approval: bool
    approved_by: str | None
    approved_at: int | None
    approval_comment: str = Field(default="", description="what the approver said, if anything")
    rejected_by: str | None = Field(
        default=None, description="the approver who rejected it (status rejected)"
    )
    rejected_at: int | None = None
    start_requested_at: int | None = Field(
        default=None, description="a start asked for while planning: it starts once planned"
    )
    created_by: str
    created_at: int
    started_at: int | None
    finished_at: int | None
    stalled: bool
    release_update_id: str
    spec: dict[str, Any]


class CampaignCreated(CampaignOut):
    created: bool = Field(description="false when the Idempotency-Key found an earlier creation")
    excluded: dict[str, int] = Field(description="registry matches left out, by reason")


class CampaignPage(BaseModel):
    items: list[CampaignOut]
    next_cursor: str | None


class Approval(RequestModel):
    """An optional comment only: the approver is the authenticated principal
    (an `approver` role, never the campaign's creator). A body naming
    `approved_by` is refused with 400, so a client cannot believe it chose the name."""

    comment: str | None = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="before")
    @classmethod
    def _no_approver_field(cls, data: Any) -> Any:
        if isinstance(data, dict) and "approved_by" in data:
            raise ValueError(
                "approved_by is the authenticated principal; it cannot be sent in the body"
            )
        return data


class Reason(RequestModel):
    # BR-OTA-035: a rollback's reason is required and recorded
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S")


class Rejection(RequestModel):
    """Why the approver rejects the campaign (required: a no without a reason
    teaches the fleet manager nothing). The rejecter is the principal, as for
    approval."""

    reason: str = Field(min_length=1, max_length=500, pattern=r"\S")


def campaign_out(campaign: Campaign) -> CampaignOut:
    sizes = [w.end - campaign.wave_start(n) for n, w in enumerate(campaign.waves)]
    return CampaignOut(
        campaign_id=campaign.campaign_id,
        name=campaign.name,
        status=campaign.status,
        status_reason=campaign.status_reason,
        strategy=campaign.spec.deployment_strategy.value,
        firmware_id=campaign.firmware_id,
        version=campaign.version,
        device_model=campaign.device_model,
        target_count=campaign.target_count,
        counters=Counters(**counters_json(campaign.counters)),
        failures_by_reason=campaign.failures_by_reason,
        waves=[
            WaveOut(name=w.name, size=size, gated=w.gated, counters=Counters(**counters_json(c)))
            for w, size, c in zip(campaign.waves, sizes, campaign.wave_counters, strict=True)
        ],
        current_wave=campaign.current_wave,
        gate=campaign.gate,
        requires_approval=campaign.spec.requires_approval,
        approved_by=campaign.approved_by,
        approved_at=campaign.approved_at_ms,
        approval_comment=campaign.approval_comment,
        rejected_by=campaign.rejected_by,
        rejected_at=campaign.rejected_at_ms,
        start_requested_at=campaign.start_requested_at_ms,
        created_by=campaign.created_by,
        created_at=campaign.created_at_ms,
        started_at=campaign.started_at_ms,
        finished_at=campaign.finished_at_ms,
        stalled=campaign.stalled,
        release_update_id=campaign.release.update_id,
        spec=campaign.spec.model_dump(mode="json", exclude_unset=True),
    )


def register(app: OtaApi, services: ApiServices) -> None:
    base = f"{OTA_PREFIX}/campaigns"

    def principal() -> str:
        who = app.context.get("principal")
        return str(getattr(who, "id", "")) if who is not None else ""

    @app.post(
        base,
        status_code=201,
        tags=["campaigns"],
        summary="Create a campaign",
        description=(
            "Answers within ~0.5 s whatever the fleet size. A campaign over few vehicles is "
            "planned while answering: status `created`, with its targets and waves. A larger "
            "one answers status `planning` (no targets yet, `excluded` empty): its targets are "
            "resolved and planned within seconds, after which GET shows it `created`, or "
            "`planning_failed` with the reason in `status_reason` (e.g. no eligible vehicle). "
            "A start asked for while it is planning is recorded (`start_requested_at`) and "
            "carried out once it is planned; approve answers 409 until it is created."
        ),
        openapi_extensions={"x-v2c-errors": [409, 503]},
    )
    def create_campaign(
        body: CampaignSpec,
        idempotency_key: Annotated[
            str | None,
            Header(alias="Idempotency-Key", min_length=1, max_length=200),
        ] = None,
    ) -> CampaignCreated:
        service = require(services.campaigns, "campaigns")
        raw = app.current_event.json_body
        report = service.create(raw, created_by=principal(), idempotency_key=idempotency_key)
        out = campaign_out(report.campaign).model_dump()
        return CampaignCreated(**out, created=report.created, excluded=dict(report.excluded))

    @app.get(
        base,
        tags=["campaigns"],
        summary="List campaigns",
        openapi_extensions={"x-v2c-errors": [404]},  # a cursor naming no page
    )
    def list_campaigns(
        status: Annotated[CampaignStatus | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, Query(max_length=2000)] = None,
    ) -> Response[CampaignPage]:
        service = require(services.campaigns, "campaigns")
        page, next_cursor = service.list_campaigns(status, limit, cursor)
        body = CampaignPage(items=[campaign_out(c) for c in page], next_cursor=next_cursor)
        params = {"status": status.value if status is not None else None, "limit": limit}
        headers = page_headers(params, next_cursor)  # the API's one style (`api.pagination`)
        return Response(200, content_types.APPLICATION_JSON, body, headers=headers)

    @app.get(f"{base}/<campaign_id>", tags=["campaigns"], summary="Get a campaign")
    def get_campaign(campaign_id: CampaignId) -> CampaignOut:
        return campaign_out(require(services.campaigns, "campaigns").get(campaign_id))

    @app.post(
        f"{base}/<campaign_id>/start",
        tags=["campaigns"],
        summary="Start a campaign",
        description=(
            "A campaign still planning answers as it is (`planning`, with "
            "`start_requested_at`) and starts as soon as it is planned; one that requires "
            "approval must be approved first (409)."
        ),
        openapi_extensions={"x-v2c-errors": [409]},
    )
    def start_campaign(campaign_id: CampaignId) -> CampaignOut:
        return campaign_out(require(services.campaigns, "campaigns").start(campaign_id))

    @app.post(
        f"{base}/<campaign_id>/pause",
        tags=["campaigns"],
        summary="Pause a campaign",
        openapi_extensions={"x-v2c-errors": [409]},
    )
    def pause_campaign(campaign_id: CampaignId) -> CampaignOut:
        service = require(services.campaigns, "campaigns")
        return campaign_out(service.pause(campaign_id, f"paused by {principal() or 'an operator'}"))

    @app.post(
        f"{base}/<campaign_id>/resume",
        tags=["campaigns"],
        summary="Resume a paused campaign",
        openapi_extensions={"x-v2c-errors": [409]},
    )
    def resume_campaign(campaign_id: CampaignId) -> CampaignOut:
        return campaign_out(require(services.campaigns, "campaigns").resume(campaign_id))

    @app.post(
        f"{base}/<campaign_id>/cancel",
        tags=["campaigns"],
        summary="Cancel a campaign",
        openapi_extensions={"x-v2c-errors": [409]},
    )
    def cancel_campaign(campaign_id: CampaignId) -> CampaignOut:
        service = require(services.campaigns, "campaigns")
        return campaign_out(
            service.cancel(campaign_id, f"cancelled by {principal() or 'an operator'}")
        )

    @app.post(
        f"{base}/<campaign_id>/approve",
        tags=["campaigns"],
        summary="Approve a campaign that requires approval (role approver; not its creator)",
        description=(
            "The approver recorded is the authenticated principal; the principal that "
            "created the campaign cannot approve it (403). The body is optional: an optional "
            "`comment`, stored as `approval_comment`; `approved_by` in it is refused (400)."
        ),
        openapi_extensions={"x-v2c-errors": [409]},
    )
    def approve_campaign(campaign_id: CampaignId, body: Approval | None = None) -> CampaignOut:
        service = require(services.campaigns, "campaigns")
        comment = body.comment if body is not None and body.comment else ""
        return campaign_out(service.approve(campaign_id, principal(), comment))

    @app.post(
        f"{base}/<campaign_id>/reject",
        tags=["campaigns"],
        summary="Reject a campaign awaiting approval (role approver)",
        description=(
            "The campaign ends `rejected` (final) with the `reason` as `status_reason` and "
            "the authenticated principal as `rejected_by`; nobody is notified. Only a "
            "campaign that requires approval and is `created`, not yet approved, can be "
            "rejected (409 otherwise: cancel an approved or running one)."
        ),
        openapi_extensions={"x-v2c-errors": [409]},
    )
    def reject_campaign(campaign_id: CampaignId, body: Rejection) -> CampaignOut:
        service = require(services.campaigns, "campaigns")
        return campaign_out(service.reject(campaign_id, principal(), body.reason))

    @app.post(
        f"{base}/<campaign_id>/rollback",
        tags=["campaigns"],
        summary="Roll a campaign back",
        description=(
            "`reason` is required (BR-OTA-035). Vehicles in flight get a signed ROLL_BACK "
            "command; those that completed get a signed rollback manifest (priority critical), "
            "as does one that completes while the campaign rolls back; trigger `manual`."
        ),
        openapi_extensions={"x-v2c-errors": [409, 503]},
    )
    def rollback_campaign(campaign_id: CampaignId, body: Reason) -> CampaignOut:
        service = require(services.campaigns, "campaigns")
        return campaign_out(service.rollback(campaign_id, reason=body.reason))
