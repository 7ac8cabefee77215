"""`GET /api/v1/fleet/versions`: which firmware versions the active fleet runs, per
model and region, from the fleet index (`ota.fleet_index.versions`).

The index is the cheapest complete read of the fleet (a few compressed
objects per model: ~20 requests for 100,000 vehicles, `fleet_index.store`)
and eventually consistent with the registry: a version reported a moment
ago may show on the next poll. `model` narrows the read to that model's
objects; `region` only filters the fold.
"""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, Field

from v2c.handlers.api.app import API_PREFIX, OtaApi
from v2c.handlers.api.services import ApiServices, ServiceNotConfigured, require
from v2c.handlers.ota.fleet_index.versions import UNKNOWN_VERSION, version_distribution


class VersionGroupOut(BaseModel):
    model: str
    region: str
    total: int = Field(description="active vehicles of this model in this region")
    versions: dict[str, int] = Field(
        description=f"installed version -> vehicles, most first (`{UNKNOWN_VERSION}`: none known)"
    )


class FleetVersions(BaseModel):
    total: int = Field(description="active vehicles counted, all groups")
    groups: list[VersionGroupOut] = Field(description="by model, then region")


def register(app: OtaApi, services: ApiServices) -> None:
    @app.get(
        f"{API_PREFIX}/fleet/versions",
        tags=["fleet"],
        summary="Installed-version distribution of the active fleet, per model and region",
    )
    def fleet_versions(
        model: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        region: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    ) -> FleetVersions:
        fleet = require(services.fleet, "fleet")
        try:
            snapshot = fleet.snapshot(None if model is None else [model])
        except RuntimeError as exc:  # a registry without an index (`FleetRegistry.snapshot`)
            raise ServiceNotConfigured("this deployment keeps no fleet index") from exc
        found = version_distribution(snapshot.models, model=model, region=region)
        return FleetVersions(
            total=found.total,
            groups=[
                VersionGroupOut(model=g.model, region=g.region, total=g.total, versions=g.versions)
                for g in found.groups
            ],
        )
