"""Vehicle onboarding and inventory (issue #14): register (one, or in bulk), list and search,
show, edit attributes, decommission.

Registration answers 201 when it created the vehicle or issued it a
certificate (with `Location`), 200 when the vehicle was registered already
(same key: the same certificate again; `v2c.handlers.vehicles.rules` has
the table); the certificate PEM is in the answer whenever the request had a
CSR. Bulk registration answers 200 with one result per row, whatever each
row's fate. Lists page with `cursor`/`limit` (`v2c.handlers.api.pagination`).
Timestamps are RFC 3339 (UTC); 0 ("never") is null.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from urllib.parse import quote

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, Field

from v2c.contract.errors import InvalidField
from v2c.handlers.api.app import API_PREFIX, OtaApi
from v2c.handlers.api.auth import header
from v2c.handlers.api.errors import error_response
from v2c.handlers.api.pagination import (
    CursorField,
    decode_cursor,
    encode_cursor,
    page_headers,
    query_digest,
)
from v2c.handlers.api.services import ApiServices, require
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.updates.record import VehicleUpdate
from v2c.handlers.vehicles import rules
from v2c.handlers.vehicles.record import Certificate, VehicleRecord, VehicleStatus
from v2c.handlers.vehicles.requests import (
    MAX_BULK_ROWS,
    VIN_REGEX,
    Decommission,
    Region,
    VehicleIn,
    VehiclePatch,
    parse_rows,
)
from v2c.handlers.vehicles.service import RowResult, VehicleService

BASE: Final = f"{API_PREFIX}/vehicles"
TAGS: Final = ["vehicles"]
MAX_LIST: Final = 200
VehicleId = Annotated[str, Path(pattern=VIN_REGEX, description="vehicle id (VIN-...)")]
RFC3339: Final = (
    r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:\d{2})?)?$"
)
Timestamp = Query(pattern=RFC3339, description="RFC 3339, e.g. 2026-01-31T12:00:00Z")
CURSOR_FIELDS: Final = {
    "vehicle_id": CursorField(str, re.compile(VIN_REGEX)),
    "model": CursorField(str, max_chars=100),
    "year": CursorField(int, high=rules.MAX_YEAR),
}
BULK_BODY: Final = {
    "description": (
        f"At most {MAX_BULK_ROWS} vehicles: a JSON array of the single registration's body, or "
        "CSV with a header row (vin, model, region, year; optional csr, make, hardware_id, "
        "installed_version; every other column an attribute; a CSR's line breaks may be written "
        "\\n). Behind API Gateway keep a request with CSRs to about 500 rows: it must answer "
        "within 29 s (AWS IoT takes four requests per certificate) and in at most 6 MB."
    ),
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "array",
                "maxItems": MAX_BULK_ROWS,
                # Each row as the single registration's body (`VehicleIn`); a row
                # that is not one fails alone, in its result, so the request's
                # schema does not refuse it.
                "items": {"description": "a VehicleIn; a row that is not one fails alone"},
            }
        },
        "text/csv": {"schema": {"type": "string"}},
    },
}


def iso(ms: int) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def epoch_ms(text: str | None, name: str) -> int | None:
    """An RFC 3339 time (a date alone: its midnight; no zone: UTC) in epoch ms."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.upper())
    except ValueError:
        raise InvalidField(name, "not an RFC 3339 time such as 2026-01-31T12:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


class CertificateOut(BaseModel):
    certificate_id: str
    issued_at: str | None
    expires_at: str | None
    revoked_at: str | None
    pem: str | None = Field(default=None, description="in registration answers to a CSR")


class VehicleOut(BaseModel):
    vehicle_id: str
    model: str
    region: str
    year: int
    make: str
    hardware_id: str
    installed_version: str
    groups: list[str]
    attributes: dict[str, str]
    status: VehicleStatus
    certificate: CertificateOut | None
    registered_at: str | None
    registered_by: str
    decommissioned_at: str | None
    decommissioned_by: str
    decommission_reason: str
    last_seen_at: str | None = Field(description="the last report the registry recorded")


class ActiveUpdate(BaseModel):
    update_id: str
    state: UpdateState
    from_version: str
    to_version: str
    campaign_id: str | None
    updated_at: str | None


class VehicleDetail(VehicleOut):
    active_update: ActiveUpdate | None
    last_report_at: str | None = Field(description="the last OTA status report")
    last_telemetry_at: str | None = Field(description="the newest stored telemetry sample")


class VehiclePage(BaseModel):
    items: list[VehicleOut]
    next_cursor: str | None


class Registered(VehicleOut):
    outcome: rules.RegistrationOutcome
    warnings: list[str]


class BulkRowOut(BaseModel):
    row: int
    vehicle_id: str
    status: int
    outcome: rules.RegistrationOutcome | None = None
    certificate: CertificateOut | None = None
    reason: str | None = None
    detail: str | None = None
    warnings: list[str] = Field(default_factory=list)


class BulkRegistered(BaseModel):
    created: int = Field(description="rows answered 201: new vehicles or certificates")
    updated: int
    unchanged: int
    failed: int
    results: list[BulkRowOut]


class Decommissioned(VehicleOut):
    already_decommissioned: bool
    cancelled_updates: list[str]
    not_cancellable_updates: list[str] = Field(description="being installed: the vehicle ends them")


def certificate_out(cert: Certificate | None, *, with_pem: bool = False) -> CertificateOut | None:
    if cert is None:
        return None
    return CertificateOut(
        certificate_id=cert.certificate_id,
        issued_at=iso(cert.issued_at_ms),
        expires_at=iso(cert.expires_at_ms),
        revoked_at=iso(cert.revoked_at_ms),
        pem=cert.pem if with_pem else None,
    )


def vehicle_fields(record: VehicleRecord, *, with_pem: bool = False) -> dict[str, Any]:
    return {
        "vehicle_id": record.vehicle_id,
        "model": record.model,
        "region": record.region,
        "year": record.year,
        "make": record.make,
        "hardware_id": record.hardware_id,
        "installed_version": record.installed_version,
        "groups": sorted(record.groups),
        "attributes": dict(record.attributes),
        "status": record.status,
        "certificate": certificate_out(record.certificate, with_pem=with_pem),
        "registered_at": iso(record.registered_at_ms),
        "registered_by": record.registered_by,
        "decommissioned_at": iso(record.decommissioned_at_ms),
        "decommissioned_by": record.decommissioned_by,
        "decommission_reason": record.decommission_reason,
        "last_seen_at": iso(record.last_seen_at_ms),
    }


def active_update(update: VehicleUpdate | None) -> ActiveUpdate | None:
    if update is None:
        return None
    return ActiveUpdate(
        update_id=update.device_update_id,
        state=update.state,
        from_version=update.from_version,
        to_version=update.to_version,
        campaign_id=update.campaign_id,
        updated_at=iso(update.updated_at_ms),
    )


def row_out(result: RowResult) -> BulkRowOut:
    error = result.error
    return BulkRowOut(
        row=result.number,
        vehicle_id=result.vehicle_id,
        status=result.status,
        outcome=result.outcome,
        certificate=certificate_out(result.certificate, with_pem=True),
        reason=None if error is None else error.reason,
        detail=None if error is None else error.detail,
        warnings=list(result.warnings),
    )


def bulk_registered(results: list[RowResult]) -> BulkRegistered:
    counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}
    for result in results:
        if result.error is not None:
            counts["failed"] += 1
        elif result.outcome is rules.RegistrationOutcome.UNCHANGED:
            counts["unchanged"] += 1
        elif result.status == 201:
            counts["created"] += 1
        else:
            counts["updated"] += 1
    return BulkRegistered(**counts, results=[row_out(r) for r in results])


def register(app: OtaApi, services: ApiServices) -> None:
    def vehicles() -> VehicleService:
        return require(services.vehicles, "vehicles")

    def principal() -> str:
        who = app.context.get("principal")
        return str(getattr(who, "id", "")) if who is not None else ""

    @app.post(
        BASE,
        status_code=201,
        tags=TAGS,
        summary="Register a vehicle (with a CSR: issue its certificate)",
        description=(
            "201 when the vehicle is new (or decommissioned before) or gets a new certificate, "
            "200 when it was registered already with the same key (the same certificate "
            "again) or without a CSR. Another key for an active vehicle with a certificate is "
            "409 unless `replace` is true (the old certificate is then revoked)."
        ),
        responses={
            201: {"description": "Registered: a new vehicle, or a new certificate"},
            200: {"description": "Registered already (`outcome` unchanged or updated)"},
        },
        openapi_extensions={"x-v2c-errors": [503]},
    )
    def register_vehicle(body: VehicleIn) -> Response[Registered]:
        result = vehicles().register(body.registration(), principal())
        assert result.record is not None
        assert result.outcome is not None
        out = Registered(
            **vehicle_fields(result.record, with_pem=result.with_certificate),
            outcome=result.outcome,
            warnings=list(result.warnings),
        )
        headers = {"Location": f"{BASE}/{quote(result.vehicle_id)}"} if result.status == 201 else {}
        return Response(result.status, content_types.APPLICATION_JSON, out, headers=headers)

    @app.post(
        f"{BASE}/bulk",
        tags=TAGS,
        summary="Register many vehicles from JSON or CSV (per-row results, never all-or-nothing)",
        openapi_extensions={"requestBody": BULK_BODY, "x-v2c-errors": [413, 415]},
    )
    def register_bulk(
        replace: Annotated[
            bool, Query(description="every row with a CSR may replace another key's certificate")
        ] = False,
    ) -> BulkRegistered:
        service = vehicles()
        event = app.current_event
        content_type = header(event.raw_event, "Content-Type") or "application/json"
        body = event.decoded_body or ""
        rows = parse_rows(body, content_type, replace)
        return bulk_registered(service.register_rows(rows, principal()))

    def bulk_is_post_only() -> Response[str]:
        """`/vehicles/bulk` is a path of its own: another method on it is 405,
        not the vehicle routes' 400 for a vehicle id "bulk"."""
        return error_response(
            405,
            "method not allowed here; allowed: POST",
            "method_not_allowed",
            headers={"Allow": "POST"},
        )

    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"):
        app.route(f"{BASE}/bulk", method=method, include_in_schema=False)(bulk_is_post_only)

    @app.get(
        BASE,
        tags=TAGS,
        summary="List and search vehicles (cursor pagination, Link header)",
        description=(
            "Filters combine with AND. `last_seen_before` also matches vehicles never seen; "
            "`certificate_expires_before` matches active vehicles whose certificate (not "
            "revoked) expires before that time: the ones to renew. "
            "A page may hold fewer than `limit` items while `next_cursor` is set (each request "
            "reads a bounded part of the registry); follow `next_cursor` (or the `Link` "
            'header\'s `rel="next"`) until it is null. A cursor is valid with the filters it '
            "was made for only (400 otherwise)."
        ),
    )
    def list_vehicles(
        model: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        region: Annotated[Region | None, Query()] = None,
        installed_version: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        status: Annotated[VehicleStatus | None, Query()] = None,
        attribute: Annotated[
            list[str] | None,
            Query(max_length=10, description="key=value; repeat for more (all must match)"),
        ] = None,
        last_seen_before: Annotated[str | None, Timestamp] = None,
        last_seen_after: Annotated[str | None, Timestamp] = None,
        vin_prefix: Annotated[str | None, Query(max_length=21, pattern=r"^[A-Za-z0-9-]*$")] = None,
        certificate_expires_before: Annotated[str | None, Timestamp] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
        cursor: Annotated[str | None, Query(max_length=2000)] = None,
    ) -> Response[VehiclePage]:
        service = vehicles()
        params: dict[str, Any] = {
            "model": model,
            "region": region,
            "installed_version": installed_version,
            "status": status.value if status is not None else None,
            "attribute": list(attribute or []),
            "last_seen_before": last_seen_before,
            "last_seen_after": last_seen_after,
            "vin_prefix": vin_prefix,
            "certificate_expires_before": certificate_expires_before,
        }
        query = rules.VehicleQuery(
            model=model,
            region=region,
            installed_version=installed_version,
            status=status,
            attributes=tuple(rules.parse_attribute_filter(a) for a in attribute or []),
            last_seen_before_ms=epoch_ms(last_seen_before, "last_seen_before"),
            last_seen_after_ms=epoch_ms(last_seen_after, "last_seen_after"),
            vin_prefix=None if vin_prefix is None else rules.normalize_vin_prefix(vin_prefix),
            certificate_expires_before_ms=epoch_ms(
                certificate_expires_before, "certificate_expires_before"
            ),
        )
        digest = query_digest(params)
        required = ("vehicle_id", "model", "year") if model is not None else ("vehicle_id",)
        start = (
            None
            if cursor is None
            else decode_cursor(cursor, CURSOR_FIELDS, query=digest, required=required)
        )
        page = service.list(query, limit, start)
        next_cursor = None if page.next_key is None else encode_cursor(page.next_key, digest)
        body = VehiclePage(
            items=[VehicleOut(**vehicle_fields(r)) for r in page.records], next_cursor=next_cursor
        )
        headers = page_headers({**params, "limit": limit}, next_cursor)
        return Response(200, content_types.APPLICATION_JSON, body, headers=headers)

    @app.get(
        f"{BASE}/<vehicle_id>", tags=TAGS, summary="One vehicle: versions, update, certificate"
    )
    def get_vehicle(vehicle_id: VehicleId) -> VehicleDetail:
        view = vehicles().show(vehicle_id)
        fields = vehicle_fields(view.record)
        fields["last_seen_at"] = iso(view.last_seen_ms)
        return VehicleDetail(
            **fields,
            active_update=active_update(view.active_update),
            last_report_at=iso(view.last_report_ms),
            last_telemetry_at=iso(view.last_telemetry_ms),
        )

    @app.patch(
        f"{BASE}/<vehicle_id>",
        tags=TAGS,
        summary="Edit a vehicle's attributes (merge; null removes), hardware id or make",
    )
    def patch_vehicle(vehicle_id: VehicleId, body: VehiclePatch) -> VehicleOut:
        record = vehicles().patch(vehicle_id, body.attributes, body.hardware_id, body.make)
        return VehicleOut(**vehicle_fields(record))

    @app.delete(
        f"{BASE}/<vehicle_id>",
        tags=TAGS,
        summary="Decommission a vehicle: certificate revoked, updates cancelled, never targeted",
        description=(
            "Idempotent: a decommissioned vehicle answers 200 again (the revocation and the "
            "cancellations are repeated, harmlessly). Publishes `device.deleted`."
        ),
        openapi_extensions={"x-v2c-errors": [503]},
    )
    def decommission_vehicle(
        vehicle_id: VehicleId,
        reason: Annotated[str, Query(max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")] = "",
    ) -> Decommissioned:
        done = vehicles().decommission(vehicle_id, principal(), Decommission(reason=reason).reason)
        return Decommissioned(
            **vehicle_fields(done.record),
            already_decommissioned=done.already,
            cancelled_updates=list(done.cancelled.cancelled),
            not_cancellable_updates=list(done.cancelled.not_cancellable),
        )
