"""Small value types shared by the campaign plan, store and service."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    """A vehicle as the plan keeps it: enough to stratify and to notify."""

    vehicle_id: str
    region: str
    model: str
    installed_version: str = ""

    def to_json(self) -> list[str]:
        return [self.vehicle_id, self.region, self.model, self.installed_version]

    @classmethod
    def from_json(cls, row: list[str]) -> Target:
        return cls(*row[:4])
