"""Test-only routes in the shapes the firmware and campaign routes take.

They exercise the frame (a `RequestModel` body, path and query parameters,
404 and 409 from domain errors, 201 answers) under schemathesis before the
real route modules exist, and show how a route module is written.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, Field

from v2c.contract.errors import Conflict, NotFound
from v2c.handlers.api import OTA_PREFIX, OtaApi
from v2c.handlers.api.models import RequestModel

SAMPLE = f"{OTA_PREFIX}/samples"

SampleId = Annotated[str, Path(min_length=1, max_length=64, description="a sample's id")]


class SampleIn(RequestModel):
    name: str = Field(min_length=1, max_length=100)
    firmware_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    target_devices: list[str] = Field(default_factory=list, max_length=100)
    strategy: Literal["immediate", "staged", "canary"] = "staged"
    failure_threshold_percent: int = Field(default=20, ge=0, le=100)
    auto_rollback: bool = True


class SampleOut(BaseModel):
    sample_id: str
    name: str
    status: Literal["created", "running"]
    created_by: str


class SampleList(BaseModel):
    samples: list[SampleOut]
    count: int
    limit: int
    offset: int


def register(app: OtaApi) -> None:
    store: dict[str, SampleOut] = {}

    def find(sample_id: str) -> SampleOut:
        try:
            return store[sample_id]
        except KeyError:
            raise NotFound(f"sample {sample_id} not found") from None

    @app.post(SAMPLE, status_code=201, tags=["samples"])
    def create_sample(body: SampleIn) -> SampleOut:
        sample_id = f"smp_{len(store):016x}"
        principal = app.context["principal"]
        store[sample_id] = SampleOut(
            sample_id=sample_id, name=body.name, status="created", created_by=principal.id
        )
        return store[sample_id]

    @app.get(f"{SAMPLE}/<sample_id>", tags=["samples"])
    def get_sample(sample_id: SampleId) -> SampleOut:
        return find(sample_id)

    @app.post(f"{SAMPLE}/<sample_id>/start", tags=["samples"])
    def start_sample(sample_id: SampleId) -> SampleOut:
        sample = find(sample_id)
        if sample.status == "running":
            raise Conflict("sample already started")
        sample.status = "running"
        return sample

    @app.get(SAMPLE, tags=["samples"])
    def list_samples(
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
        status: Annotated[Literal["created", "running"] | None, Query()] = None,
    ) -> SampleList:
        found = [s for s in store.values() if status is None or s.status == status]
        page = found[offset : offset + limit]
        return SampleList(samples=page, count=len(page), limit=limit, offset=offset)

    @app.delete(f"{SAMPLE}/<sample_id>", tags=["samples"])
    def delete_sample(sample_id: SampleId) -> dict[str, Any]:
        find(sample_id)
        del store[sample_id]
        return {"deleted": sample_id}
