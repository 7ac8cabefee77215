"""Device and update endpoints (PRD E3): single and bulk updates outside
campaigns, one update's progress, cancel, retry, device rollback, history."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path
from pydantic import BaseModel, Field

from v2c.handlers.api.app import OTA_PREFIX, OtaApi
from v2c.handlers.api.device_history import (
    HISTORY_LIMIT,
    HistoryCursor,
    HistoryLimit,
    history_answer,
)
from v2c.handlers.api.services import ApiServices, require
from v2c.handlers.ota.devices import BulkUpdateRequest, DeviceUpdateRequest, RollbackRequest
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate

DeviceId = Annotated[str, Path(pattern="^VIN-[A-HJ-NPR-Z0-9]{17}$", description="vehicle id")]
UpdateId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="per-vehicle update id")]


class UpdateOut(BaseModel):
    update_id: str
    release_id: str
    vehicle_id: str
    kind: UpdateKind
    state: UpdateState
    firmware_id: str
    from_version: str
    to_version: str
    campaign_id: str | None = None
    wave: int | None = None
    region: str
    reason: str
    error_detail: str
    progress_percent: int
    bytes_downloaded: int
    retries: int
    max_retries: int | None = Field(
        default=None, description="a device update's retry cap (BR-OTA-024); campaign: its spec"
    )
    timeout_ms: int = Field(
        default=0, description="a device update's time limit from notified (BR-OTA-025); 0: unset"
    )
    last_sequence: int
    installed_version: str
    download_duration_ms: int
    install_duration_ms: int
    total_duration_ms: int
    created_at_ms: int
    notified_at_ms: int
    started_at_ms: int
    completed_at_ms: int
    updated_at_ms: int
    notifications: int


class UpdateList(BaseModel):
    """A vehicle's updates, newest first (PRD E5-US3), one page of them."""

    items: list[UpdateOut]
    next_cursor: str | None = Field(
        default=None, description="the next page's cursor; null on the last page"
    )
    total: int = Field(default=0, description="the vehicle's updates, all pages")
    completed: int = 0
    failed: int = Field(default=0, description="failed, rolled back or timed out")
    success_rate: float | None = Field(
        default=None,
        description="completed / (completed + failed) in percent over all pages (BR-OTA-041); "
        "null while none finished",
    )


class BulkItem(BaseModel):
    device_id: str
    status: int
    update_id: str | None = None
    detail: str | None = None


class BulkOut(BaseModel):
    created: int
    failed: int
    results: list[BulkItem]


def update_out(update: VehicleUpdate) -> UpdateOut:
    data = update.to_json()
    for name in ("decided_by_cloud", "reverts_update_id", "key_id"):
        data.pop(name, None)
    return UpdateOut(**data)


def register(app: OtaApi, services: ApiServices) -> None:
    devices = f"{OTA_PREFIX}/devices"
    updates = f"{OTA_PREFIX}/updates"

    @app.post(
        f"{devices}/bulk/update",
        tags=["devices"],
        summary="Update up to 100 vehicles (per-device results)",
        openapi_extensions={"x-v2c-errors": [503]},
    )
    def bulk_update(body: BulkUpdateRequest) -> BulkOut:
        service = require(services.devices, "devices")
        results = service.bulk_update(body.model_dump(mode="json"))
        items = [BulkItem(**r.to_json()) for r in results]
        created = sum(1 for r in results if r.ok)
        return BulkOut(created=created, failed=len(results) - created, results=items)

    @app.post(
        f"{devices}/<device_id>/update",
        status_code=201,
        tags=["devices"],
        summary="Update one vehicle outside any campaign",
        openapi_extensions={"x-v2c-errors": [409, 503]},
    )
    def update_device(device_id: DeviceId, body: DeviceUpdateRequest) -> UpdateOut:
        service = require(services.devices, "devices")
        return update_out(service.update_device(device_id, body.model_dump(mode="json")))

    @app.post(
        f"{devices}/<device_id>/rollback",
        status_code=201,
        tags=["devices"],
        summary="Roll a vehicle back to an earlier version",
        description=(
            "`to_version` (alias `version`) must be a version the vehicle ran, by its update "
            "history (400 naming `to_version` otherwise; default: the version before its last "
            "completed update); `reason` is required (BR-OTA-035). The rollback is signed at "
            "priority critical and recorded with the trigger `manual`."
        ),
        openapi_extensions={"x-v2c-errors": [409, 503]},
    )
    def rollback_device(device_id: DeviceId, body: RollbackRequest) -> UpdateOut:
        service = require(services.devices, "devices")
        return update_out(service.rollback(device_id, body.model_dump(mode="json")))

    @app.get(
        f"{devices}/<device_id>/updates",
        tags=["devices"],
        summary="A vehicle's updates, newest first (cursor pagination, Link header)",
    )
    def device_history(
        device_id: DeviceId, limit: HistoryLimit = HISTORY_LIMIT, cursor: HistoryCursor = None
    ) -> Response[UpdateList]:
        service = require(services.devices, "devices")
        page, next_cursor, headers = history_answer(
            device_id, service.history(device_id), limit, cursor
        )
        body = UpdateList(
            items=[update_out(u) for u in page.items],
            next_cursor=next_cursor,
            total=page.total,
            completed=page.completed,
            failed=page.failed,
            success_rate=page.success_rate,
        )
        return Response(200, content_types.APPLICATION_JSON, body, headers=headers)

    @app.get(f"{updates}/<update_id>", tags=["updates"], summary="One update's progress")
    def get_update(update_id: UpdateId) -> UpdateOut:
        return update_out(require(services.devices, "devices").get(update_id))

    @app.post(
        f"{updates}/<update_id>/cancel",
        tags=["updates"],
        summary="Cancel an update that is not installing yet; the vehicle is told (signed)",
        openapi_extensions={"x-v2c-errors": [409]},
    )
    def cancel_update(update_id: UpdateId) -> UpdateOut:
        return update_out(require(services.devices, "devices").cancel(update_id))

    @app.post(
        f"{updates}/<update_id>/retry",
        tags=["updates"],
        summary="Retry a failed update",
        openapi_extensions={"x-v2c-errors": [409, 503]},
    )
    def retry_update(update_id: UpdateId) -> UpdateOut:
        return update_out(require(services.devices, "devices").retry(update_id))
