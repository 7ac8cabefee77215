"""`GET /api/v1/me`: who the credential is and what it may do, for a page that
shows only the buttons its user may press.

The permissions are `v2c.handlers.api.roles.permissions`, computed from
`allowed_roles` on the routes the server authorizes, so the page can never
offer what the server refuses by role. The approver-not-creator rule
depends on the campaign: the server still answers its 403 per campaign.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from v2c.contract.errors import NotAuthorized
from v2c.handlers.api.app import API_PREFIX, OtaApi
from v2c.handlers.api.auth import Principal
from v2c.handlers.api.roles import permissions
from v2c.handlers.api.services import ApiServices


def _permission(name: str) -> Any:
    return Field(alias=name, description=f"the caller's roles allow `{name}`")


class Permissions(BaseModel):
    """One boolean per command the dashboard offers (`roles.PERMISSIONS`)."""

    model_config = ConfigDict(populate_by_name=True)

    campaign_start: bool = _permission("campaign.start")
    campaign_pause: bool = _permission("campaign.pause")
    campaign_resume: bool = _permission("campaign.resume")
    campaign_cancel: bool = _permission("campaign.cancel")
    campaign_approve: bool = _permission("campaign.approve")
    campaign_reject: bool = _permission("campaign.reject")
    campaign_rollback: bool = _permission("campaign.rollback")
    dlq_read: bool = _permission("dlq.read")
    dlq_replay: bool = _permission("dlq.replay")


class Me(BaseModel):
    principal: str = Field(description="the authenticated principal (never the secret)")
    roles: list[str] = Field(description="the credential's roles, sorted")
    permissions: Permissions


def register(app: OtaApi, services: ApiServices) -> None:
    @app.get(
        f"{API_PREFIX}/me",
        tags=["auth"],
        summary="The caller: principal, roles and what they allow",
        description=(
            "`permissions` says, per command, whether the credential's roles allow it, "
            "from the same table the server enforces. Approving one's own campaign is "
            "still refused per campaign (403) even where `campaign.approve` is true."
        ),
    )
    def me() -> Me:
        who = app.context.get("principal")
        if not isinstance(who, Principal):  # only a public path has none; this one is not
            raise NotAuthorized("authentication required")
        return Me(
            principal=who.id,
            roles=sorted(role.value for role in who.roles),
            permissions=Permissions.model_validate(permissions(who.roles)),
        )
