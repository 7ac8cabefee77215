"""Who a campaign targets: the spec's devices, groups and filter, resolved
over the fleet index (or, for a registry without one, the table).

Shared by creation (which resolves while answering when the index is small
enough to read within the answer's budget) and the planner (which always
does). Which part of the index a campaign reads is decided here, purely:

* a filter that pins `model = 'X'`, without groups or an index-resolved
  device list, reads model X alone;
* groups, a long device list or an unpinned filter read every model (the
  excluded counts name the other models' matches, as before);
* a short device list (`DEVICES_FROM_TABLE` or fewer) is read from the
  registry table itself, exactly, as it was: a handful of listed vehicles
  need no index, and a vehicle registered a moment ago is found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from v2c.handlers.ota.domain.campaign_rules import CampaignSpec
from v2c.handlers.ota.domain.campaign_run import Eligibility, eligible_targets
from v2c.handlers.ota.fleet import Vehicle, pinned_model
from v2c.handlers.ota.fleet_index.select import FleetSnapshot, resolve
from v2c.handlers.ota.stores import FleetDirectory

DEVICES_FROM_TABLE: Final = 1_000  # 10 BatchGetItem requests


@dataclass(frozen=True, slots=True)
class Resolution:
    """The eligible targets, or None when the index was larger than the
    budget (resolve after answering); `indexed` False: the table was read."""

    eligibility: Eligibility | None
    indexed: bool


def index_scope(spec: CampaignSpec, devices_in_index: bool) -> frozenset[str] | None:
    """The models whose index partitions a spec reads (None: every model;
    empty: none, the listed devices are all there is)."""
    expr = spec.filter_expr
    if spec.target_groups or devices_in_index:
        return None
    if expr is None:
        return frozenset()
    model = pinned_model(expr)
    return None if model is None else frozenset({model})


class Targeting:
    def __init__(self, fleet: FleetDirectory) -> None:
        self._fleet = fleet

    def resolve(
        self,
        spec: CampaignSpec,
        device_model: str,
        version: str,
        *,
        max_index_bytes: int | None = None,
    ) -> Resolution:
        """The eligible targets of `spec` for a package of `device_model` at
        `version`; with `max_index_bytes`, None instead of reading more."""
        devices = spec.target_devices
        devices_in_index = len(devices) > DEVICES_FROM_TABLE
        scope = index_scope(spec, devices_in_index)
        size = self._fleet.index_size(scope) if scope != frozenset() else 0
        if size is None:  # a registry without an index: the table, as before
            vehicles = self._fleet.select(spec.filter_expr, devices, spec.target_groups)
            return Resolution(eligible_targets(vehicles, device_model, version), indexed=False)
        if max_index_bytes is not None and size > max_index_bytes:
            return Resolution(None, indexed=True)
        listed = [] if devices_in_index else self._listed(devices)
        snapshot = self._fleet.snapshot(scope) if scope != frozenset() else FleetSnapshot({})
        eligibility = resolve(
            snapshot,
            spec.filter_expr,
            device_model,
            version,
            groups=spec.target_groups,
            devices=devices if devices_in_index else (),
            listed=listed,
        )
        return Resolution(eligibility, indexed=True)

    def _listed(self, devices: tuple[str, ...]) -> list[Vehicle]:
        """The listed vehicles from the table; decommissioned ones are no targets."""
        return [v for v in self._fleet.get_many(devices).values() if v.active]
