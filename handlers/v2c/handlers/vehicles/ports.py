"""What the vehicle service needs from the world, as Protocols.

The service decides; these do: issue and revoke certificates (AWS IoT Core
in a deployment, the stack's CA and broker locally), read and cancel a
vehicle's OTA updates (the OTA services), read when a vehicle last sent
telemetry, publish domain events. Each has a fake or a second
implementation, so the service runs over moto, AWS or memory alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from v2c.contract.errors import V2CError
from v2c.handlers.ota.device_events import Cancelled
from v2c.handlers.ota.updates.record import VehicleUpdate
from v2c.handlers.vehicles.record import Certificate


@dataclass(frozen=True, slots=True)
class IssueRequest:
    """A certificate to issue for a vehicle, from its checked CSR."""

    vehicle_id: str
    csr_pem: str
    public_key_sha256: str
    model: str
    region: str
    year: int


IssueResult = Certificate | V2CError
"""Per request: the certificate, or why it could not be issued (the others go on)."""


class CertificateIssuer(Protocol):
    """Issues vehicles' client certificates and takes them back."""

    def issue(self, requests: Sequence[IssueRequest]) -> list[IssueResult]:
        """A certificate (CN = the vehicle id) per request, in order, each
        valid for the vehicle's broker identity (policy attached, admitted)."""
        ...

    def revoke(self, vehicle_id: str, certificate: Certificate) -> None:
        """Revoke one certificate (replaced or renewed); the vehicle stays."""
        ...

    def decommission(self, vehicle_id: str, certificate: Certificate | None) -> None:
        """Revoke the certificate and remove the vehicle's broker identity
        (the thing, the broker client): idempotent."""
        ...


def revoke_quietly(issuer: CertificateIssuer, vehicle_id: str, certificate: Certificate) -> bool:
    """Revoke, logging instead of raising: a revocation that fails must not undo
    the registration or rotation that asked for it (the old certificate stays
    listed as active, and the next pass or rotation tries again)."""
    try:
        issuer.revoke(vehicle_id, certificate)
    except V2CError as exc:
        logging.getLogger(__name__).error(
            "certificate not revoked",
            extra={
                "vehicle_id": vehicle_id,
                "certificate_id": certificate.certificate_id,
                "error": exc.detail,
            },
        )
        return False
    return True


class VehicleUpdates(Protocol):
    def active(self, vehicle_id: str) -> list[VehicleUpdate]:
        """The vehicle's updates that have not ended, oldest first."""
        ...

    def last_report_ms(self, vehicle_id: str) -> int:
        """When the vehicle's last OTA status report was recorded (0: never)."""
        ...

    def cancel_all(self, vehicle_id: str, reason: str) -> Cancelled:
        """Cancel every cancellable update of the vehicle (idempotent)."""
        ...


class Sightings(Protocol):
    def last_telemetry_ms(self, vehicle_id: str) -> int:
        """When the cloud last stored a telemetry sample of the vehicle (0: never)."""
        ...


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: dict[str, Any]) -> None: ...


class NoSightings:
    """A deployment without the telemetry table: no telemetry is known."""

    def last_telemetry_ms(self, vehicle_id: str) -> int:
        return 0
