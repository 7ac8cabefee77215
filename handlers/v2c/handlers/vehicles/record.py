"""A vehicle as the inventory keeps it: one item of the registry table.

The item is the one `v2c.handlers.ota.fleet.Vehicle` reads (vehicle_id,
make, model, year, region, hardware_id, installed_version, groups,
changed_at) plus what onboarding adds:

| attribute | type | meaning |
|---|---|---|
| status | S | `active` or `decommissioned` (campaigns target active vehicles only) |
| attributes | M of S | free-form, bounded (`rules`) |
| certificate_id, certificate_pem | S | the vehicle's current client certificate |
| certificate_expires_at, certificate_issued_at | N | epoch ms |
| public_key_sha256 | S | the certificate's key (SHA-256 of its SubjectPublicKeyInfo) |
| certificate_revoked_at | N | epoch ms: the issuer revoked it (decommission) |
| previous_certificate_* | S, N | a rotation's old certificate, the same fields (`rotation`) |
| certificate_overlap_ends_at | N | epoch ms: the old certificate is revoked from then on |
| certificate_reported_expires_at, _reported_at | N | the not-after the vehicle reported, when |
| registered_at, registered_by | N, S | first registration (kept on re-registration) |
| decommissioned_at, decommissioned_by, decommission_reason | N, S, S | |
| last_seen_at | N | epoch ms of the last report the registry recorded (status path) |

An item written before onboarding existed (no `status`) is an active
vehicle without a certificate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from v2c.handlers.ota.fleet import Vehicle


class VehicleStatus(StrEnum):
    ACTIVE = "active"
    DECOMMISSIONED = "decommissioned"


@dataclass(frozen=True, slots=True)
class Certificate:
    certificate_id: str
    pem: str = field(repr=False)
    expires_at_ms: int
    issued_at_ms: int
    public_key_sha256: str
    revoked_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class VehicleRecord:
    vehicle_id: str
    model: str
    region: str
    year: int = 0
    make: str = ""
    hardware_id: str = ""
    installed_version: str = ""
    groups: frozenset[str] = frozenset()
    attributes: Mapping[str, str] = field(default_factory=dict, hash=False)
    status: VehicleStatus = VehicleStatus.ACTIVE
    certificate: Certificate | None = None
    registered_at_ms: int = 0
    registered_by: str = ""
    decommissioned_at_ms: int = 0
    decommissioned_by: str = ""
    decommission_reason: str = ""
    last_seen_at_ms: int = 0
    # Certificate rotation (`v2c.handlers.vehicles.rotation`): the certificate
    # the live one replaced, still accepted until `overlap_ends_at_ms`, and the
    # not-after the vehicle reported holding when it last asked.
    previous_certificate: Certificate | None = None
    overlap_ends_at_ms: int = 0
    reported_expires_at_ms: int = 0
    reported_at_ms: int = 0
    changed_at: int = 0  # the store's stamp of the last write (the write condition)

    @property
    def active(self) -> bool:
        return self.status is VehicleStatus.ACTIVE

    def vehicle(self) -> Vehicle:
        """The record as campaign targeting and the fleet index see it."""
        return Vehicle(
            vehicle_id=self.vehicle_id,
            model=self.model,
            region=self.region,
            year=self.year,
            make=self.make,
            hardware_id=self.hardware_id,
            installed_version=self.installed_version,
            groups=self.groups,
            active=self.active,
        )

    def same_content(self, other: VehicleRecord) -> bool:
        """Equal but for the store's stamp: writing `other` over this changes nothing."""
        return replace(other, changed_at=self.changed_at) == self

    def to_item(self) -> dict[str, Any]:
        """Plain values for `ddb.to_item` (None and empty values left out)."""
        values: dict[str, Any] = {
            "vehicle_id": self.vehicle_id,
            "model": self.model,
            "region": self.region,
            "year": self.year,
            "make": self.make,
            "hardware_id": self.hardware_id,
            "installed_version": self.installed_version,
            "groups": set(self.groups) or None,  # DynamoDB has no empty sets
            "attributes": dict(self.attributes) or None,
            "status": self.status.value,
            "registered_at": self.registered_at_ms or None,
            "registered_by": self.registered_by or None,
            "decommissioned_at": self.decommissioned_at_ms or None,
            "decommissioned_by": self.decommissioned_by or None,
            "decommission_reason": self.decommission_reason or None,
            "last_seen_at": self.last_seen_at_ms or None,
            "changed_at": self.changed_at,
        }
        for prefix, cert in (("", self.certificate), ("previous_", self.previous_certificate)):
            if cert is not None:
                values.update(_certificate_item(prefix, cert))
        values.update(
            certificate_overlap_ends_at=self.overlap_ends_at_ms or None,
            certificate_reported_expires_at=self.reported_expires_at_ms or None,
            certificate_reported_at=self.reported_at_ms or None,
        )
        return values

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> VehicleRecord:
        certificate = _certificate_of(item, "")
        raw_status = str(item.get("status", VehicleStatus.ACTIVE.value))
        status = (
            VehicleStatus.DECOMMISSIONED
            if raw_status == VehicleStatus.DECOMMISSIONED
            else VehicleStatus.ACTIVE
        )
        attributes = item.get("attributes") or {}
        return cls(
            vehicle_id=str(item["vehicle_id"]),
            model=str(item.get("model", "")),
            region=str(item.get("region", "")),
            year=int(item.get("year", 0)),
            make=str(item.get("make", "")),
            hardware_id=str(item.get("hardware_id", "")),
            installed_version=str(item.get("installed_version", "")),
            groups=frozenset(str(g) for g in item.get("groups", ())),
            attributes={str(k): str(v) for k, v in dict(attributes).items()},
            status=status,
            certificate=certificate,
            registered_at_ms=int(item.get("registered_at", 0)),
            registered_by=str(item.get("registered_by", "")),
            decommissioned_at_ms=int(item.get("decommissioned_at", 0)),
            decommissioned_by=str(item.get("decommissioned_by", "")),
            decommission_reason=str(item.get("decommission_reason", "")),
            last_seen_at_ms=int(item.get("last_seen_at", 0)),
            previous_certificate=_certificate_of(item, "previous_"),
            overlap_ends_at_ms=int(item.get("certificate_overlap_ends_at", 0)),
            reported_expires_at_ms=int(item.get("certificate_reported_expires_at", 0)),
            reported_at_ms=int(item.get("certificate_reported_at", 0)),
            changed_at=int(item.get("changed_at", 0)),
        )


def _certificate_item(prefix: str, cert: Certificate) -> dict[str, Any]:
    return {
        f"{prefix}certificate_id": cert.certificate_id,
        f"{prefix}certificate_pem": cert.pem,
        f"{prefix}certificate_expires_at": cert.expires_at_ms,
        f"{prefix}certificate_issued_at": cert.issued_at_ms,
        f"{prefix}public_key_sha256": cert.public_key_sha256,
        f"{prefix}certificate_revoked_at": cert.revoked_at_ms or None,
    }


def _certificate_of(item: Mapping[str, Any], prefix: str) -> Certificate | None:
    if not item.get(f"{prefix}certificate_id"):
        return None
    return Certificate(
        certificate_id=str(item[f"{prefix}certificate_id"]),
        pem=str(item.get(f"{prefix}certificate_pem", "")),
        expires_at_ms=int(item.get(f"{prefix}certificate_expires_at", 0)),
        issued_at_ms=int(item.get(f"{prefix}certificate_issued_at", 0)),
        public_key_sha256=str(item.get(f"{prefix}public_key_sha256", "")),
        revoked_at_ms=int(item.get(f"{prefix}certificate_revoked_at", 0)),
    )
