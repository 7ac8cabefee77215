"""The installed-version distribution of the fleet, per model and region: pure.

`GET /api/v1/fleet/versions` answers from the fleet index (`store`), the
cheapest complete read of the fleet there is: a few compressed objects per
model instead of every registry item. This module folds a snapshot into
counts; it reads the columns as they are, so 100,000 rows cost one pass
and no row objects. Decommissioned (retired) vehicles are left out: the
question is what the active fleet runs. A vehicle with no version on
record counts under `UNKNOWN_VERSION`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from v2c.handlers.ota.fleet_index.codec import Columns

UNKNOWN_VERSION: Final = "unknown"


@dataclass(frozen=True, slots=True)
class VersionGroup:
    model: str
    region: str
    versions: dict[str, int] = field(default_factory=dict)  # version -> vehicles, most first

    @property
    def total(self) -> int:
        return sum(self.versions.values())


@dataclass(frozen=True, slots=True)
class VersionDistribution:
    groups: list[VersionGroup]  # by model, then region

    @property
    def total(self) -> int:
        return sum(g.total for g in self.groups)


def version_distribution(
    models: Mapping[str, Columns], *, model: str | None = None, region: str | None = None
) -> VersionDistribution:
    """Active vehicles per (model, region) and installed version, of `model`
    and `region` only when given."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for name, columns in models.items():
        if model is not None and name != model:
            continue
        for at_region, version, retired in zip(
            columns.region, columns.installed_version, columns.retired, strict=True
        ):
            if retired or (region is not None and at_region != region):
                continue
            tally = counts.setdefault((name, at_region), Counter())
            tally[version or UNKNOWN_VERSION] += 1
    groups = [
        VersionGroup(name, at_region, dict(sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))))
        for (name, at_region), tally in sorted(counts.items())
    ]
    return VersionDistribution(groups)
