"""The inventory's use cases: register (one, or many with per-row results), list and search,
show, edit attributes, decommission.

Registering many is one pipeline for any count (a single registration is a
list of one): read every VIN's record in `BatchGetItem`s, decide each row
(`rules.plan_registration`), issue the certificates the decisions ask for in
one issuer call (the local issuer admits them to the broker in a few
messages; AWS IoT takes one request per step and vehicle), write the
records in transactions of 100 (`repository.save`), then revoke the
certificates replaced. A row that fails says why in its result and the
others go on: a bulk request is never all-or-nothing. A row whose write
lost a race has its new certificate revoked again.

Decommission, in this order so that a crash anywhere leaves the vehicle
out of campaigns and a retry finishes the rest (every step is idempotent):
the record marked decommissioned (campaign targeting skips it from then
on), the certificate revoked and the broker identity removed (issuer), the
active updates cancelled, `device.deleted` published for the OTA side
(`v2c.handlers.ota.device_events`, which cancels again, idempotently).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from v2c.contract.errors import Conflict, InvalidField, NotFound, V2CError
from v2c.handlers.ota.device_events import DEVICE_DELETED, Cancelled
from v2c.handlers.ota.updates.record import VehicleUpdate
from v2c.handlers.vehicles import rules
from v2c.handlers.vehicles.ports import (
    CertificateIssuer,
    EventPublisher,
    IssueRequest,
    NoSightings,
    Sightings,
    VehicleUpdates,
    revoke_quietly,
)
from v2c.handlers.vehicles.record import Certificate, VehicleRecord
from v2c.handlers.vehicles.repository import InventoryRepository, Key, Page
from v2c.handlers.vehicles.requests import Row
from v2c.handlers.vehicles.rules import Registration, RegistrationOutcome, VehicleQuery

logger = logging.getLogger(__name__)

CREATED_STATUS: Final = 201
OK_STATUS: Final = 200


@dataclass(frozen=True, slots=True)
class RowResult:
    """One registration's result: the record and outcome, or the error."""

    number: int
    vehicle_id: str
    outcome: RegistrationOutcome | None = None
    record: VehicleRecord | None = None
    with_certificate: bool = False  # the request had a CSR: answer the certificate
    error: V2CError | None = None
    warnings: tuple[str, ...] = ()

    @property
    def status(self) -> int:
        if self.error is not None:
            return self.error.http_status
        return CREATED_STATUS if self.outcome in rules.NEW_CERTIFICATE else OK_STATUS

    @property
    def certificate(self) -> Certificate | None:
        if self.record is None or not self.with_certificate:
            return None
        return self.record.certificate


@dataclass(frozen=True, slots=True)
class VehicleView:
    record: VehicleRecord
    active_update: VehicleUpdate | None
    last_report_ms: int
    last_telemetry_ms: int

    @property
    def last_seen_ms(self) -> int:
        return max(self.record.last_seen_at_ms, self.last_report_ms, self.last_telemetry_ms)


@dataclass(frozen=True, slots=True)
class Decommissioned:
    record: VehicleRecord
    already: bool  # it was decommissioned before this call
    cancelled: Cancelled = field(default_factory=lambda: Cancelled((), ()))


class VehicleService:
    def __init__(
        self,
        repository: InventoryRepository,
        issuer: CertificateIssuer,
        updates: VehicleUpdates,
        events: EventPublisher,
        *,
        sightings: Sightings | None = None,
        clock: Callable[[], float] = time.time,
        regions: Collection[str] | None = None,
    ) -> None:
        self._repo = repository
        # The deployment's regions (`VEHICLE_REGIONS`, the template's
        # VehicleRegions): a subset of the contract's; None: all of them.
        self._regions = frozenset(regions) if regions is not None else None
        self._issuer = issuer
        self._updates = updates
        self._events = events
        self._sightings = sightings or NoSightings()
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- registration ----------------------------------------------------------------

    def register(self, request: Registration, actor: str) -> RowResult:
        """One vehicle; its error raised (400, 409, 503) rather than reported."""
        (result,) = self.register_rows([Row(1, request.vehicle_id, request)], actor)
        if result.error is not None:
            raise result.error
        return result

    def register_rows(self, rows: Sequence[Row], actor: str) -> list[RowResult]:
        """Every row's result, in order; rows naming a VIN an earlier row
        named are refused (one outcome per vehicle per request)."""
        results: dict[int, RowResult] = {}
        todo: list[tuple[int, Row, Registration]] = []
        seen: set[str] = set()
        for i, row in enumerate(rows):
            if row.registration is None:
                error = row.error or V2CError("no registration")
                results[i] = RowResult(row.number, row.vehicle_id, error=error)
            elif self._regions is not None and row.registration.region not in self._regions:
                deployed = ", ".join(sorted(self._regions))
                refused = InvalidField("region", f"this deployment serves {deployed} only")
                results[i] = RowResult(row.number, row.vehicle_id, error=refused)
            elif row.vehicle_id in seen:
                duplicate = Conflict(f"{row.vehicle_id} is in this request more than once")
                results[i] = RowResult(row.number, row.vehicle_id, error=duplicate)
            else:
                seen.add(row.vehicle_id)
                todo.append((i, row, row.registration))
        if todo:
            results.update(self._register(todo, actor))
        return [results[i] for i in range(len(rows))]

    def _register(
        self, todo: Sequence[tuple[int, Row, Registration]], actor: str
    ) -> dict[int, RowResult]:
        now = self._now_ms()
        existing = self._repo.get_many(request.vehicle_id for _, _, request in todo)
        results: dict[int, RowResult] = {}
        plans: dict[int, rules.Plan] = {}
        for i, row, request in todo:
            try:
                plans[i] = rules.plan_registration(existing.get(row.vehicle_id), request, now)
            except V2CError as exc:
                results[i] = RowResult(row.number, row.vehicle_id, error=exc)
        wanted = [(i, request) for i, _, request in todo if i in plans and plans[i].issue]
        issued = self._issue(wanted)
        changes: list[tuple[VehicleRecord | None, VehicleRecord]] = []
        pending: list[tuple[int, Row, RegistrationOutcome, bool]] = []
        for i, row, request in todo:
            if i not in plans:
                continue
            got = issued.get(i)
            if isinstance(got, V2CError):
                results[i] = RowResult(row.number, row.vehicle_id, error=got)
                continue
            before = existing.get(row.vehicle_id)
            after = rules.registered(before, request, got, now, actor)
            outcome = rules.settle(plans[i], before, after)
            with_cert = request.csr is not None
            if outcome is RegistrationOutcome.UNCHANGED and before is not None:
                results[i] = RowResult(row.number, row.vehicle_id, outcome, before, with_cert)
                continue
            changes.append((before, after))
            pending.append((i, row, outcome, with_cert))
        stored = self._repo.save(changes) if changes else []
        for (i, row, outcome, with_cert), record in zip(pending, stored, strict=True):
            new_cert = issued.get(i)
            if record is None:
                if isinstance(new_cert, Certificate):
                    revoke_quietly(self._issuer, row.vehicle_id, new_cert)
                lost = Conflict(f"{row.vehicle_id} changed while it was registered; try again")
                results[i] = RowResult(row.number, row.vehicle_id, error=lost)
                continue
            warnings: tuple[str, ...] = ()
            old = plans[i].revoke
            if old is not None and not revoke_quietly(self._issuer, row.vehicle_id, old):
                warnings = (f"certificate {old.certificate_id} could not be revoked yet",)
            results[i] = RowResult(
                row.number, row.vehicle_id, outcome, record, with_cert, warnings=warnings
            )
        return results

    def _issue(
        self, wanted: Sequence[tuple[int, Registration]]
    ) -> dict[int, Certificate | V2CError]:
        if not wanted:
            return {}
        requests = []
        for _, request in wanted:
            assert request.csr is not None  # `plan.issue` only with a CSR
            requests.append(
                IssueRequest(
                    request.vehicle_id,
                    request.csr.pem,
                    request.csr.public_key_sha256,
                    request.model,
                    request.region,
                    request.year,
                )
            )
        try:
            answers = self._issuer.issue(requests)
        except V2CError as exc:  # the issuer itself is down: every row says so
            return {i: exc for i, _ in wanted}
        return {i: answer for (i, _), answer in zip(wanted, answers, strict=True)}

    # -- inventory -------------------------------------------------------------------

    def list(self, query: VehicleQuery, limit: int, start: Key | None = None) -> Page:
        return self._repo.page(query, limit, start)

    def _record(self, vehicle_id: str) -> VehicleRecord:
        rules.check_vin(vehicle_id)
        record = self._repo.get(vehicle_id)
        if record is None:
            raise NotFound(f"vehicle {vehicle_id} is not registered")
        return record

    def show(self, vehicle_id: str) -> VehicleView:
        record = self._record(vehicle_id)
        active = self._updates.active(vehicle_id)
        return VehicleView(
            record,
            active[-1] if active else None,
            self._updates.last_report_ms(vehicle_id),
            self._sightings.last_telemetry_ms(vehicle_id),
        )

    def patch(
        self,
        vehicle_id: str,
        attributes: dict[str, str | None] | None,
        hardware_id: str | None = None,
        make: str | None = None,
    ) -> VehicleRecord:
        rules.check_vin(vehicle_id)
        before = self._repo.get(vehicle_id)
        after = rules.patched(before, vehicle_id, attributes, hardware_id, make)
        assert before is not None  # `patched` raised NotFound otherwise
        if before.same_content(after):
            return before
        (stored,) = self._repo.save([(before, after)])
        if stored is None:
            raise Conflict(f"{vehicle_id} changed meanwhile; read it again and retry")
        return stored

    def decommission(self, vehicle_id: str, actor: str, reason: str = "") -> Decommissioned:
        before = self._record(vehicle_id)
        record = rules.decommissioned(before, vehicle_id, self._now_ms(), actor, reason)
        if record is not before:
            (stored,) = self._repo.save([(before, record)])
            if stored is None:
                raise Conflict(f"{vehicle_id} changed meanwhile; try again")
            record = stored
        self._issuer.decommission(vehicle_id, record.certificate)
        revoked = rules.revoked(record, self._now_ms())
        if revoked is not record:
            (stored,) = self._repo.save([(record, revoked)])
            record = stored or record
        cancelled = self._updates.cancel_all(vehicle_id, "vehicle decommissioned")
        self._events.publish(DEVICE_DELETED, deleted_detail(record))
        return Decommissioned(record, already=not before.active, cancelled=cancelled)


def deleted_detail(record: VehicleRecord) -> dict[str, Any]:
    """The `device.deleted` event's detail."""
    cert = record.certificate
    return {
        "vehicle_id": record.vehicle_id,
        "model": record.model,
        "region": record.region,
        "certificate_id": cert.certificate_id if cert is not None else None,
        "decommissioned_at_ms": record.decommissioned_at_ms,
        "decommissioned_by": record.decommissioned_by,
        "reason": record.decommission_reason,
    }
