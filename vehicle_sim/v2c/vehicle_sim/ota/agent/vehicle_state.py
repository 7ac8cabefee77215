"""What the vehicle knows about itself when it decides on an update.

The update agent never reads sensors: the simulator (or, on a real vehicle,
the diagnostics service) hands it a `VehicleConditions` value, and a new one
whenever something changes. A frozen value makes every decision a function
of (message, conditions, now), which is what lets the agent be tested
without I/O and its decisions be replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from v2c.contract.errors import ValidationFailed
from v2c.contract.semver import SemVer


class Gear(StrEnum):
    PARK = "P"
    REVERSE = "R"
    NEUTRAL = "N"
    DRIVE = "D"


@dataclass(frozen=True, slots=True)
class VehicleConditions:
    """A snapshot of the vehicle as the update agent sees it."""

    installed_version: str  # the version the vehicle runs now
    model: str
    free_storage_bytes: int  # on the update cache (data) partition
    hardware_id: str = ""
    battery_percent: float = 100.0
    charging: bool = False  # plugged in: the supply does not depend on the battery
    speed_kmh: float = 0.0
    ignition_on: bool = False
    gear: Gear = Gear.PARK
    critical_dtcs: tuple[str, ...] = ()  # e.g. ("P0601",): block an installation

    def __post_init__(self) -> None:
        # A vehicle that cannot name its own version would make every version
        # check meaningless: refuse it here, at the edge, not per decision.
        SemVer.parse(self.installed_version)
        if not self.model:
            raise ValidationFailed("the vehicle must know its model")
        if not 0 <= self.battery_percent <= 100:
            raise ValidationFailed(f"battery {self.battery_percent} % is not within 0-100")
        if self.speed_kmh < 0:
            raise ValidationFailed(f"speed {self.speed_kmh} km/h is negative")
        if self.free_storage_bytes < 0:
            raise ValidationFailed("free storage cannot be negative")

    @property
    def parked(self) -> bool:
        return self.gear is Gear.PARK and self.speed_kmh == 0

    @property
    def in_use(self) -> bool:
        """Moving, in gear or with the ignition on: the FMEA's "vehicle in use"."""
        return self.speed_kmh > 0 or self.ignition_on or self.gear is not Gear.PARK

    def with_(self, **changes: Any) -> VehicleConditions:
        """A copy with some fields changed (the simulator's one way to move)."""
        return replace(self, **changes)
