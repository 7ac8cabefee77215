"""A campaign as the live dashboard follows it: its per-vehicle updates, a page at a
time (`ota.updates.campaign_page`), and its timeline (`api.timeline`).

Both answer 404 for an unknown campaign. The updates page in vehicle order,
filtered by wave (by name, as the campaign names its waves) and state,
with the API's one cursor style (`api.pagination`: `{"v": vehicle_id,
"u": update_id}`, bound to the campaign and the filters).
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, Field

from v2c.contract.errors import InvalidField
from v2c.handlers.api.app import OTA_PREFIX, OtaApi
from v2c.handlers.api.pagination import (
    CursorField,
    decode_cursor,
    encode_cursor,
    page_headers,
    query_digest,
)
from v2c.handlers.api.routes.devices import UpdateOut, update_out
from v2c.handlers.api.services import ApiServices, require
from v2c.handlers.api.timeline import campaign_timeline
from v2c.handlers.ota.campaigns.record import Campaign
from v2c.handlers.ota.domain.update_state import UpdateState

CampaignId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="campaign id")]
MAX_LIMIT: Final = 200
DEFAULT_LIMIT: Final = 50
# A timeline dates each wave's first notification from the campaign's
# records only while it has at most this many (a read of two attributes each).
TIMELINE_RECORDS: Final = 500
_ID: Final = re.compile(r"[0-9A-Za-z_./:-]{1,128}")
CURSOR_FIELDS: Final = {"v": CursorField(str, _ID, 128), "u": CursorField(str, _ID, 128)}


class CampaignUpdateOut(UpdateOut):
    wave_name: str | None = Field(default=None, description="the name of the wave (`wave`)")


class CampaignUpdatePage(BaseModel):
    items: list[CampaignUpdateOut]
    next_cursor: str | None = Field(description="the next page's cursor; null on the last page")


class TimelineEventOut(BaseModel):
    at: str = Field(description="RFC 3339 UTC, milliseconds")
    kind: str = Field(
        description="created, approved, rejected, start_requested, started, wave_started, "
        "gate_passed, gate_failed, stalled, paused, rollback_started, planning_failed, "
        "completed, cancelled, rolled_back"
    )
    detail: str


class TimelineOut(BaseModel):
    campaign_id: str
    events: list[TimelineEventOut] = Field(description="oldest first")


def wave_number(campaign: Campaign, name: str) -> int:
    """The index of the wave called `name`; 400 naming `wave` if there is none."""
    for number, wave in enumerate(campaign.waves):
        if wave.name == name:
            return number
    known = ", ".join(w.name for w in campaign.waves) or "none"
    raise InvalidField("wave", f"the campaign has no wave {name[:64]!r} (waves: {known})")


def register(app: OtaApi, services: ApiServices) -> None:
    base = f"{OTA_PREFIX}/campaigns/<campaign_id>"

    @app.get(
        f"{base}/updates",
        tags=["campaigns"],
        summary="A campaign's per-vehicle updates, a page at a time (cursor, Link header)",
        description=(
            "In vehicle order; `wave` (a wave's name) and `state` filter. A page reads at "
            "most a bounded number of records: with a selective filter it may hold fewer "
            "than `limit` items and still have a `next_cursor`. Vehicles not notified yet "
            "have no record (the campaign's `pending` counter)."
        ),
    )
    def campaign_updates(
        campaign_id: CampaignId,
        wave: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        state: Annotated[UpdateState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(max_length=2000)] = None,
    ) -> Response[CampaignUpdatePage]:
        campaign = require(services.campaigns, "campaigns").get(campaign_id)
        pages = require(services.campaign_updates, "campaign updates")
        number = None if wave is None else wave_number(campaign, wave)
        filters = {
            "campaign_id": campaign_id,
            "wave": wave,
            "state": None if state is None else state.value,
        }
        digest = query_digest(filters)
        after = None
        if cursor is not None:
            position = decode_cursor(cursor, CURSOR_FIELDS, query=digest, required=("v", "u"))
            after = (str(position["v"]), str(position["u"]))
        page = pages.page(campaign_id, limit=limit, after=after, wave=number, state=state)
        next_cursor = None
        if page.next_position is not None:
            vehicle_id, update_id = page.next_position
            next_cursor = encode_cursor({"v": vehicle_id, "u": update_id}, digest)
        names = [w.name for w in campaign.waves]
        items = [
            CampaignUpdateOut(
                **update_out(u).model_dump(),
                wave_name=names[u.wave]
                if u.wave is not None and 0 <= u.wave < len(names)
                else None,
            )
            for u in page.items
        ]
        body = CampaignUpdatePage(items=items, next_cursor=next_cursor)
        params = {"wave": wave, "state": filters["state"], "limit": limit}
        headers = page_headers(params, next_cursor)
        return Response(200, content_types.APPLICATION_JSON, body, headers=headers)

    @app.get(
        f"{base}/timeline",
        tags=["campaigns"],
        summary="A campaign's history as far as its record holds it, oldest first",
        description=(
            "Derived from the campaign record: created, approved or rejected, start "
            "requested, started, the latest gate decision, a stall, and the current pause, "
            "rollback or end. Each wave's first notification is included for campaigns of "
            f"at most {TIMELINE_RECORDS} notified vehicles."
        ),
    )
    def campaign_timeline_route(campaign_id: CampaignId) -> TimelineOut:
        campaign = require(services.campaigns, "campaigns").get(campaign_id)
        first = None
        if services.campaign_updates is not None and campaign.cursor <= TIMELINE_RECORDS:
            first = services.campaign_updates.first_notified(campaign_id, TIMELINE_RECORDS)
        events = campaign_timeline(campaign, first)
        return TimelineOut(
            campaign_id=campaign.campaign_id,
            events=[TimelineEventOut(at=e.at, kind=e.kind, detail=e.detail) for e in events],
        )
