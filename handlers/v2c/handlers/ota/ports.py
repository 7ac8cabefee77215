"""What the OTA services need from the outside, as protocols.

The firmware registry, the event bus and the alerting sink are injected, so
the services run the same over moto, AWS or the in-memory fakes of the unit
tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Package:
    """A firmware package as a campaign needs it."""

    firmware_id: str
    name: str
    version: str
    device_model: str
    size_bytes: int
    sha256_hex: str
    available: bool  # not deprecated, recalled or deleted
    status: str = "available"
    hardware_id: str = ""
    min_installed_version: str = ""
    is_beta: bool = False  # BR-OTA-009: deployed to opted-in vehicles only


class PackageCatalog(Protocol):
    def package(self, firmware_id: str) -> Package:
        """The package, or `NotFound`."""
        ...

    def find_version(self, device_model: str, version: str) -> Package | None: ...

    def package_exists(self, firmware_id: str) -> bool:
        """Whether the package object is really in the bucket."""
        ...

    def download_url(self, firmware_id: str, expires_s: int = 3600) -> str: ...


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        """Publish an event; never raises (a failure is logged and counted)."""
        ...


class Alerts(Protocol):
    def alert(self, name: str, campaign_id: str, detail: str) -> None: ...
