"""Onboarding and inventory decisions: values in, decisions out (no I/O, no clock).

Registration is idempotent per VIN and key. The decision, given what the
registry holds for the VIN (`plan_registration`):

| registry holds | request | outcome | certificate |
|---|---|---|---|
| nothing, or a decommissioned vehicle | CSR | created / reactivated | issued |
| nothing, or a decommissioned vehicle | no CSR | created / reactivated | none |
| an active vehicle without a certificate | CSR | certified | issued |
| an active vehicle, same key | CSR | unchanged / updated | the same one again (1) |
| an active vehicle, another key | CSR | 409, unless `replace` | issued, old revoked (2) |
| an active vehicle | no CSR | unchanged / updated | kept |
| an active vehicle with a certificate | another region | 409: decommission, register again | |

(1) A fresh one when it expires within `RENEW_WITHIN_MS` (outcome renewed;
the old one revoked). (2) Outcome replaced. Without a CSR the vehicle is in
the inventory only (no identity on the broker).

"updated" means the inventory fields changed (model, region, year, make,
hardware id, attributes, installed version); "unchanged" writes nothing,
so a fleet registered twice costs reads only. A field left out of a
request keeps its stored value (new vehicles: `installed_version` 1.0.0,
no attributes). Why 409 for another key: a second device claiming a VIN
that already has a working identity is either a replaced ECU (say so with
`replace`) or an impostor; silently re-issuing would hand the VIN's topics
to whoever asked last.

Decommission (`decommissioned`) keeps the item for the record (status
`decommissioned`, when and by whom), drops nothing a later audit needs, and
is idempotent: a second call finds it decommissioned and repeats only the
idempotent side effects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from v2c.contract.errors import Conflict, InvalidField, InvalidTopic, NotFound
from v2c.contract.topics import KNOWN_REGIONS, validate_region, validate_vin
from v2c.handlers.vehicles.csr import CsrFacts
from v2c.handlers.vehicles.record import Certificate, VehicleRecord, VehicleStatus

DEFAULT_VERSION: Final = "1.0.0"
RENEW_WITHIN_MS: Final = 30 * 24 * 3600 * 1000
MAX_ATTRIBUTES: Final = 32
MAX_ATTRIBUTE_VALUE: Final = 256
MAX_ATTRIBUTES_BYTES: Final = 4096
ATTRIBUTE_KEY: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
TEXT: Final = re.compile(r"^[^\x00-\x1f\x7f]*$")  # no control characters
VERSION: Final = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
MIN_YEAR: Final = 1900
MAX_YEAR: Final = 2100


class RegistrationOutcome(StrEnum):
    CREATED = "created"
    REACTIVATED = "reactivated"
    CERTIFIED = "certified"
    RENEWED = "renewed"
    REPLACED = "replaced"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


NEW_CERTIFICATE: Final = frozenset(
    {
        RegistrationOutcome.CREATED,
        RegistrationOutcome.REACTIVATED,
        RegistrationOutcome.CERTIFIED,
        RegistrationOutcome.RENEWED,
        RegistrationOutcome.REPLACED,
    }
)


@dataclass(frozen=True, slots=True)
class Registration:
    """One vehicle to register, checked (`registration`)."""

    vehicle_id: str
    model: str
    region: str
    year: int
    make: str | None = None  # None: keep the stored value (new: "")
    hardware_id: str | None = None
    installed_version: str | None = None
    attributes: Mapping[str, str] | None = None
    csr: CsrFacts | None = None
    replace: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """What registering takes: a new certificate or not, and which old one
    to revoke once the new one is recorded."""

    outcome: RegistrationOutcome
    issue: bool
    revoke: Certificate | None = None


def _text(name: str, value: str, most: int, *, empty: bool = True) -> str:
    if not empty and not value.strip():
        raise InvalidField(name, "must not be empty")
    if len(value) > most or not TEXT.fullmatch(value):
        raise InvalidField(name, f"at most {most} characters, no control characters")
    return value


def check_region(region: str) -> str:
    try:
        validate_region(region)
    except InvalidTopic as exc:
        raise InvalidField("region", exc.detail) from exc
    if region not in KNOWN_REGIONS:
        raise InvalidField("region", f"the fleet operates in {', '.join(KNOWN_REGIONS)} only")
    return region


def check_vin(vehicle_id: str) -> str:
    try:
        return validate_vin(vehicle_id)
    except InvalidTopic as exc:
        raise InvalidField("vehicle_id", exc.detail) from exc


def check_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """Bounded free-form attributes: keys `ATTRIBUTE_KEY`, text values."""
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidField("attributes", f"at most {MAX_ATTRIBUTES} attributes")
    size = 0
    for key, value in attributes.items():
        if not isinstance(key, str) or not ATTRIBUTE_KEY.fullmatch(key):
            raise InvalidField("attributes", f"{str(key)[:64]!r} is not an attribute name")
        if not isinstance(value, str):
            raise InvalidField(f"attributes.{key}", "must be a string")
        _text(f"attributes.{key}", value, MAX_ATTRIBUTE_VALUE)
        size += len(key.encode()) + len(value.encode())
    if size > MAX_ATTRIBUTES_BYTES:
        raise InvalidField("attributes", f"at most {MAX_ATTRIBUTES_BYTES} bytes in all")
    return dict(attributes)


def registration(
    vehicle_id: str,
    model: str,
    region: str,
    year: int,
    *,
    make: str | None = None,
    hardware_id: str | None = None,
    installed_version: str | None = None,
    attributes: Mapping[str, str] | None = None,
    csr: CsrFacts | None = None,
    replace: bool = False,
) -> Registration:
    """A checked registration; `InvalidField` (400) naming the first bad field."""
    check_vin(vehicle_id)
    _text("model", model, 100, empty=False)
    check_region(region)
    if isinstance(year, bool) or not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidField("year", f"a year from {MIN_YEAR} to {MAX_YEAR}")
    if make is not None:
        _text("make", make, 100)
    if hardware_id is not None:
        _text("hardware_id", hardware_id, 100)
    if installed_version is not None and not VERSION.fullmatch(installed_version):
        raise InvalidField("installed_version", "not a semantic version (MAJOR.MINOR.PATCH)")
    checked = None if attributes is None else check_attributes(attributes)
    if csr is not None and csr.common_name != vehicle_id:
        raise InvalidField("csr", f"the common name must be the vehicle id {vehicle_id}")
    return Registration(
        vehicle_id, model, region, year, make, hardware_id, installed_version, checked, csr, replace
    )


def plan_registration(existing: VehicleRecord | None, request: Registration, now_ms: int) -> Plan:
    """The decision of the module docstring's table; `Conflict` for another
    key on an active vehicle without `replace`."""
    if existing is None:
        return Plan(RegistrationOutcome.CREATED, issue=request.csr is not None)
    if not existing.active:
        return Plan(RegistrationOutcome.REACTIVATED, issue=request.csr is not None)
    current = existing.certificate
    if current is not None and request.region != existing.region:
        # The broker identity is bound to the region (the thing's attribute,
        # which the IoT policy reads): a registry-only move would leave the
        # vehicle on topics its notifications no longer use.
        raise Conflict(
            f"vehicle {existing.vehicle_id} is certified in {existing.region}; decommission "
            f"it and register it again to move it to {request.region}"
        )
    csr = request.csr
    if csr is None:
        return Plan(RegistrationOutcome.UPDATED, issue=False)
    if current is None:
        return Plan(RegistrationOutcome.CERTIFIED, issue=True)
    if csr.public_key_sha256 == current.public_key_sha256:
        if current.expires_at_ms - now_ms <= RENEW_WITHIN_MS:
            return Plan(RegistrationOutcome.RENEWED, issue=True, revoke=current)
        return Plan(RegistrationOutcome.UPDATED, issue=False)
    if not request.replace:
        raise Conflict(
            f"vehicle {existing.vehicle_id} is registered with another key "
            f"(certificate {current.certificate_id}); set replace to revoke it and issue one "
            "for this key"
        )
    return Plan(RegistrationOutcome.REPLACED, issue=True, revoke=current)


def registered(
    existing: VehicleRecord | None,
    request: Registration,
    certificate: Certificate | None,
    now_ms: int,
    actor: str,
) -> VehicleRecord:
    """The record after registering `request`; `certificate`: the one issued
    now (None: keep the current one, if the vehicle is active)."""
    active_before = existing if existing is not None and existing.active else None
    kept = active_before.certificate if active_before is not None else None
    base = existing or VehicleRecord(request.vehicle_id, request.model, request.region)
    return replace(
        base,
        model=request.model,
        region=request.region,
        year=request.year,
        make=request.make if request.make is not None else base.make,
        hardware_id=request.hardware_id if request.hardware_id is not None else base.hardware_id,
        installed_version=(
            request.installed_version
            or (active_before.installed_version if active_before is not None else "")
            or DEFAULT_VERSION
        ),
        attributes=(
            dict(request.attributes)
            if request.attributes is not None
            else dict(active_before.attributes)
            if active_before is not None
            else {}
        ),
        status=VehicleStatus.ACTIVE,
        certificate=certificate if certificate is not None else kept,
        registered_at_ms=active_before.registered_at_ms if active_before is not None else now_ms,
        registered_by=active_before.registered_by if active_before is not None else actor,
        decommissioned_at_ms=0,
        decommissioned_by="",
        decommission_reason="",
    )


def settle(plan: Plan, before: VehicleRecord | None, after: VehicleRecord) -> RegistrationOutcome:
    """`plan`'s outcome, or UNCHANGED when the record would not change."""
    if (
        plan.outcome is RegistrationOutcome.UPDATED
        and before is not None
        and before.same_content(after)
    ):
        return RegistrationOutcome.UNCHANGED
    return plan.outcome


def patched(
    existing: VehicleRecord | None,
    vehicle_id: str,
    attributes: Mapping[str, str | None] | None,
    hardware_id: str | None,
    make: str | None,
) -> VehicleRecord:
    """The record after a PATCH: `attributes` merged (JSON merge patch: a
    null value removes the attribute), `hardware_id` and `make` replaced."""
    if existing is None:
        raise NotFound(f"vehicle {vehicle_id} is not registered")
    if not existing.active:
        raise Conflict(f"vehicle {vehicle_id} is decommissioned")
    merged = dict(existing.attributes)
    for key, value in (attributes or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if hardware_id is not None:
        _text("hardware_id", hardware_id, 100)
    if make is not None:
        _text("make", make, 100)
    return replace(
        existing,
        attributes=check_attributes(merged),
        hardware_id=existing.hardware_id if hardware_id is None else hardware_id,
        make=existing.make if make is None else make,
    )


def decommissioned(
    existing: VehicleRecord | None, vehicle_id: str, now_ms: int, actor: str, reason: str
) -> VehicleRecord:
    """The record once decommissioned (the same record if it already is)."""
    if existing is None:
        raise NotFound(f"vehicle {vehicle_id} is not registered")
    if not existing.active:
        return existing
    return replace(
        existing,
        status=VehicleStatus.DECOMMISSIONED,
        decommissioned_at_ms=now_ms,
        decommissioned_by=actor,
        decommission_reason=reason,
    )


def revoked(record: VehicleRecord, now_ms: int) -> VehicleRecord:
    """The record once its certificate is revoked (no-op without one)."""
    cert = record.certificate
    if cert is None or cert.revoked_at_ms:
        return record
    return replace(record, certificate=replace(cert, revoked_at_ms=now_ms))


# -- search ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VehicleQuery:
    """The inventory's filters; empty ones match everything. `last_seen_*`
    compare `last_seen_at` (0, never seen, counts as before any time)."""

    model: str | None = None
    region: str | None = None
    installed_version: str | None = None
    status: VehicleStatus | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    last_seen_before_ms: int | None = None
    last_seen_after_ms: int | None = None
    vin_prefix: str | None = None
    # Certificates due for renewal (spec 000/001's certificate-expiry failure
    # mode): a vehicle whose live certificate expires before this time.
    certificate_expires_before_ms: int | None = None

    def matches(self, record: VehicleRecord) -> bool:
        checks = (
            self.model is None or record.model == self.model,
            self.region is None or record.region == self.region,
            self.installed_version is None or record.installed_version == self.installed_version,
            self.status is None or record.status is self.status,
            self.vin_prefix is None or record.vehicle_id.startswith(self.vin_prefix),
            self.last_seen_before_ms is None or record.last_seen_at_ms < self.last_seen_before_ms,
            self.last_seen_after_ms is None or record.last_seen_at_ms > self.last_seen_after_ms,
        )
        if not all(checks):
            return False
        if self.certificate_expires_before_ms is not None:
            cert = record.certificate
            live = cert is not None and not cert.revoked_at_ms and record.active
            if not live or cert is None or cert.expires_at_ms >= self.certificate_expires_before_ms:
                return False
        return all(record.attributes.get(k) == v for k, v in self.attributes)


def parse_attribute_filter(text: str) -> tuple[str, str]:
    """`key=value` (the first `=` splits) as a filter pair."""
    key, sep, value = text.partition("=")
    if not sep or not ATTRIBUTE_KEY.fullmatch(key):
        raise InvalidField("attribute", f"{text[:80]!r} is not key=value with an attribute name")
    return key, value


VIN_PREFIX: Final = re.compile(r"^(VIN-)?[A-HJ-NPR-Z0-9]{0,17}$")


def normalize_vin_prefix(prefix: str) -> str:
    """A VIN prefix as vehicle ids start (`5V2C` -> `VIN-5V2C`)."""
    upper = prefix.upper()
    if not VIN_PREFIX.fullmatch(upper):
        raise InvalidField("vin_prefix", "letters and digits of a VIN (no I, O, Q), after VIN-")
    return upper if upper.startswith("VIN-") else f"VIN-{upper}"
