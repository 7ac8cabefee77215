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

Beta firmware (BR-OTA-009) goes to vehicles that opted in only: the
eligible targets of a beta package are checked against the registry table
(`beta_opt_in`, which the index does not carry) and the others are left out
as `beta_not_opted_in`, a count in the campaign's `excluded` like the
other reasons. The table is read for the targets alone (BatchGetItem, 100
a request); while answering a creation at most `BETA_CHECK_INLINE` targets
are checked, more go to the planner, whose time is not the caller's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Final

from v2c.contract.errors import NotFound
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec
from v2c.handlers.ota.domain.campaign_run import Eligibility, eligible_targets
from v2c.handlers.ota.fleet import Vehicle, pinned_model
from v2c.handlers.ota.fleet_index.select import FleetSnapshot, resolve
from v2c.handlers.ota.ports import PackageCatalog
from v2c.handlers.ota.stores import FleetDirectory

DEVICES_FROM_TABLE: Final = 1_000  # 10 BatchGetItem requests
BETA_CHECK_INLINE: Final = 1_000  # beta targets checked while answering: 10 BatchGetItems
BETA_EXCLUDED: Final = "beta_not_opted_in"


def beta_gate(eligibility: Eligibility, opted_in: Collection[str]) -> Eligibility:
    """A beta package's targets: the eligible vehicles in `opted_in` only;
    the others counted as `beta_not_opted_in` (BR-OTA-009)."""
    kept = tuple(t for t in eligibility.targets if t.vehicle_id in opted_in)
    excluded = dict(eligibility.excluded)
    excluded[BETA_EXCLUDED] = excluded.get(BETA_EXCLUDED, 0) + len(eligibility.targets) - len(kept)
    return replace(eligibility, targets=kept, excluded=excluded)


def no_targets_detail(
    device_model: str, version: str, excluded: Mapping[str, int], *, is_beta: bool
) -> str:
    """Why a campaign has no target, the beta rule first when it is the cause."""
    base = (
        f"no registered {device_model} vehicle below {version} matches the targets "
        f"({sum(excluded.values())} excluded: {dict(excluded)})"
    )
    left_out = excluded.get(BETA_EXCLUDED, 0)
    if not is_beta or not left_out:
        return base
    return (
        f"firmware {version} is a beta release (BR-OTA-009): {left_out} matching "
        f"vehicle(s) have not opted in to beta firmware (beta_opt_in); {base}"
    )


def package_is_beta(packages: PackageCatalog, firmware_id: str) -> bool:
    """The package's beta flag; a package no longer found counts as beta, so
    that a lookup gap can only narrow a rollout, never widen one."""
    try:
        return packages.package(firmware_id).is_beta
    except NotFound:
        return True


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
        is_beta: bool = False,
    ) -> Resolution:
        """The eligible targets of `spec` for a package of `device_model` at
        `version`; with `max_index_bytes`, None instead of reading more.
        `is_beta`: only vehicles that opted in (BR-OTA-009)."""
        devices = spec.target_devices
        devices_in_index = len(devices) > DEVICES_FROM_TABLE
        scope = index_scope(spec, devices_in_index)
        size = self._fleet.index_size(scope) if scope != frozenset() else 0
        if size is None:  # a registry without an index: the table, as before
            vehicles = self._fleet.select(spec.filter_expr, devices, spec.target_groups)
            eligible = eligible_targets(vehicles, device_model, version)
            if is_beta:
                eligible = beta_gate(eligible, {v.vehicle_id for v in vehicles if v.beta_opt_in})
            return Resolution(eligible, indexed=False)
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
        if is_beta:
            if max_index_bytes is not None and len(eligibility.targets) > BETA_CHECK_INLINE:
                return Resolution(None, indexed=True)  # the planner checks them
            eligibility = beta_gate(eligibility, self._opted_in(eligibility))
        return Resolution(eligibility, indexed=True)

    def _opted_in(self, eligibility: Eligibility) -> set[str]:
        """The eligible targets that opted in to beta, read from the table."""
        ids = [t.vehicle_id for t in eligibility.targets]
        return {v for v, vehicle in self._fleet.get_many(ids).items() if vehicle.beta_opt_in}

    def _listed(self, devices: tuple[str, ...]) -> list[Vehicle]:
        """The listed vehicles from the table; decommissioned ones are no targets."""
        return [v for v in self._fleet.get_many(devices).values() if v.active]
