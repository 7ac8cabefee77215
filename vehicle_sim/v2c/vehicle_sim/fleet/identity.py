"""The simulated fleet's identities: deterministic VINs, models, regions, years.

Vehicle `i` of a fleet is always the same vehicle: the same VIN, model,
region and year, whatever else changed, so a fault profile (which picks
vehicles by a hash of the VIN) picks the same vehicles on every run, a
second `v2c sim` finds the same directories and certificates, and a test
can name the vehicles it expects. Models and regions are interleaved so that
every (region, model) stratum, which the canary selection samples, gets its
share even in a small fleet.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from v2c.contract.errors import ValidationFailed
from v2c.contract.topics import KNOWN_REGIONS, validate_region, validate_vin

DEFAULT_REGIONS: Final = KNOWN_REGIONS  # the broker refuses vehicles elsewhere
DEFAULT_MODELS: Final = ("Accord", "Civic")
DEFAULT_PREFIX: Final = "5V2CFLT"  # 7 VIN characters; 10 digits follow
MAKE: Final = "Honda"
_PREFIX: Final = re.compile(r"^[A-HJ-NPR-Z0-9]{7}$")


@dataclass(frozen=True, slots=True)
class FleetMember:
    index: int
    vehicle_id: str
    model: str
    region: str
    year: int
    make: str = MAKE


def vin_for(index: int, prefix: str = DEFAULT_PREFIX) -> str:
    if not _PREFIX.fullmatch(prefix):
        raise ValidationFailed(f"VIN prefix {prefix!r}: 7 characters of A-Z 0-9 without I, O, Q")
    if not 0 <= index < 10**10:
        raise ValidationFailed(f"vehicle index {index} out of range")
    return validate_vin(f"VIN-{prefix}{index:010d}")


def resolve_regions(regions: int | Sequence[str]) -> tuple[str, ...]:
    """`3` means the first three default regions; a list is taken as given."""
    if isinstance(regions, int):
        if not 1 <= regions <= len(DEFAULT_REGIONS):
            raise ValidationFailed(f"regions: 1 to {len(DEFAULT_REGIONS)}, or a list of names")
        return DEFAULT_REGIONS[:regions]
    chosen = tuple(validate_region(r) for r in regions)
    if not chosen:
        raise ValidationFailed("at least one region")
    return chosen


def fleet_members(
    n: int,
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    regions: int | Sequence[str] = 3,
    prefix: str = DEFAULT_PREFIX,
    first_year: int = 2021,
) -> list[FleetMember]:
    """The first `n` vehicles of the fleet."""
    if n < 0:
        raise ValidationFailed("the fleet size cannot be negative")
    if not models or any(not m for m in models):
        raise ValidationFailed("at least one model, none empty")
    names = resolve_regions(regions)
    return [
        FleetMember(
            index=i,
            vehicle_id=vin_for(i, prefix),
            model=models[i % len(models)],
            region=names[(i // len(models)) % len(names)],
            year=first_year + i % 4,
        )
        for i in range(n)
    ]
