"""Statistics endpoints (PRD E5): the fleet's and one campaign's (`v2c.handlers.ota.stats`)."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path

from v2c.handlers.api.app import OTA_PREFIX, OtaApi
from v2c.handlers.api.services import ApiServices, require

CampaignId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="campaign id")]


def register(app: OtaApi, services: ApiServices) -> None:
    @app.get(
        f"{OTA_PREFIX}/stats",
        tags=["stats"],
        summary="Fleet-wide update statistics",
        description=(
            "Campaign counts; update counts by status, in and outside campaigns; success rate; "
            "the last 24 hours; average update time in minutes; data transferred by completed "
            "updates; by firmware version and device type (BR-OTA-041 to 045). Record-derived "
            "figures read at most a bounded number of records: `records_complete` says "
            "whether all were read."
        ),
    )
    def fleet_stats() -> dict[str, Any]:
        return require(services.stats, "stats").fleet()

    @app.get(
        f"{OTA_PREFIX}/stats/campaigns/<campaign_id>",
        tags=["stats"],
        summary="One campaign's statistics (BR-OTA-041 to 045)",
    )
    def campaign_stats(campaign_id: CampaignId) -> dict[str, Any]:
        return require(services.stats, "stats").campaign(campaign_id)
