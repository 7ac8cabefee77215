"""The OTA services' other ports in memory: the plan, the fleet, the package
catalogue, the rollback log, and recorders for notifications, commands and alerts.

Split from `in_memory` (the transactional campaign and update stores): these
hold no races to reproduce, only what the services read and what they sent.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from v2c.contract.errors import NotFound
from v2c.handlers.ota.domain.plan import Target
from v2c.handlers.ota.domain.target_filter import Expr, evaluate
from v2c.handlers.ota.fleet import Vehicle
from v2c.handlers.ota.fleet_index.codec import Columns, IndexRow
from v2c.handlers.ota.fleet_index.select import FleetSnapshot
from v2c.handlers.ota.notifier import Notification
from v2c.handlers.ota.ports import Package
from v2c.handlers.ota.vehicle_commands import CommandTarget
from v2c.v1.command_pb2 import OTACommand


class InMemoryPlanStore:
    def __init__(self) -> None:
        self._plans: dict[str, tuple[Target, ...]] = {}

    def write(self, campaign_id: str, targets: Sequence[Target]) -> int:
        self._plans[campaign_id] = tuple(targets)
        return 1 if targets else 0

    def read(self, campaign_id: str, start: int, stop: int) -> list[Target]:
        return list(self._plans.get(campaign_id, ())[start:stop])


class InMemoryFleet:
    """The registry in memory. With `indexed`, it also answers as a fleet
    index would (`index_size`, `snapshot`), so creation takes the path a
    registry with an index takes (planning after the answer for a large
    fleet); without, creation selects from it as from a table."""

    def __init__(self, vehicles: Iterable[Vehicle] = (), *, indexed: bool = False) -> None:
        self._vehicles: dict[str, Vehicle] = {}
        self._indexed = indexed
        self.put(vehicles)

    def put(self, vehicles: Iterable[Vehicle]) -> int:
        written = 0
        for vehicle in vehicles:
            self._vehicles[vehicle.vehicle_id] = vehicle
            written += 1
        return written

    def get(self, vehicle_id: str) -> Vehicle | None:
        return self._vehicles.get(vehicle_id)

    def get_many(self, vehicle_ids: Iterable[str]) -> dict[str, Vehicle]:
        return {v: self._vehicles[v] for v in vehicle_ids if v in self._vehicles}

    def select(
        self, expr: Expr | None, devices: Iterable[str] = (), groups: Iterable[str] = ()
    ) -> list[Vehicle]:
        chosen = {v: self._vehicles[v] for v in devices if v in self._vehicles}
        chosen = {v: vehicle for v, vehicle in chosen.items() if vehicle.active}
        wanted = frozenset(groups)
        for vehicle in self._vehicles.values():
            if not vehicle.active:
                continue
            if (expr is not None and evaluate(expr, vehicle.attributes())) or (
                wanted & vehicle.groups
            ):
                chosen.setdefault(vehicle.vehicle_id, vehicle)
        return [chosen[v] for v in sorted(chosen)]

    def set_installed_version(self, vehicle_id: str, version: str) -> None:
        vehicle = self._vehicles.get(vehicle_id)
        if vehicle is not None:
            self._vehicles[vehicle_id] = replace(vehicle, installed_version=version)

    def set_installed_versions(self, versions: Mapping[str, str]) -> None:
        for vehicle_id, version in versions.items():
            self.set_installed_version(vehicle_id, version)

    def index_size(self, models: Collection[str] | None = None) -> int | None:
        if not self._indexed:
            return None
        return 40 * sum(1 for v in self._vehicles.values() if models is None or v.model in models)

    def snapshot(self, models: Collection[str] | None = None) -> FleetSnapshot:
        rows: dict[str, list[IndexRow]] = {}
        for vehicle in self._vehicles.values():
            if models is None or vehicle.model in models:
                rows.setdefault(vehicle.model, []).append(vehicle.index_row(0))
        found: dict[str, Columns] = {}
        for model, model_rows in rows.items():
            found[model] = Columns(model)
            found[model].apply(model_rows)
        return FleetSnapshot(found)

    def maintain(self) -> dict[str, int]:
        return {}


class InMemoryRollbackLog:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}

    def put(self, row: dict[str, Any]) -> None:
        self.rows[(row["vehicle_id"], row["rollback_id"])] = dict(row)

    def finish(self, vehicle_id: str, rollback_id: str, status: str, now_ms: int) -> None:
        row = self.rows.get((vehicle_id, rollback_id))
        if row is not None:
            row.update(status=status, finished_at=now_ms)

    def for_campaign(self, campaign_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows.values() if r.get("campaign_id") == campaign_id]


class InMemoryPackages:
    """A firmware catalog; `missing` names packages whose object is not in the bucket."""

    def __init__(self, packages: Iterable[Package] = ()) -> None:
        self.packages = {p.firmware_id: p for p in packages}
        self.missing: set[str] = set()

    def add(self, package: Package) -> Package:
        self.packages[package.firmware_id] = package
        return package

    def package(self, firmware_id: str) -> Package:
        try:
            return self.packages[firmware_id]
        except KeyError:
            raise NotFound(f"firmware {firmware_id} not found") from None

    def find_version(self, device_model: str, version: str) -> Package | None:
        for package in self.packages.values():
            if package.device_model == device_model and package.version == version:
                return package
        return None

    def package_exists(self, firmware_id: str) -> bool:
        return firmware_id in self.packages and firmware_id not in self.missing

    def download_url(self, firmware_id: str, expires_s: int = 3600) -> str:
        return f"memory://firmware/{firmware_id}?expires={expires_s}"


@dataclass
class RecordingNotifier:
    """Keeps every notification; `deliver=False` plays a dead-lettered publish."""

    sent: list[Notification] = field(default_factory=list)
    deliver: bool = True

    chunks: list[int] = field(default_factory=list)  # the size of each `send_many`

    def send(self, note: Notification) -> bool:
        self.sent.append(note)
        return self.deliver

    def send_many(self, notes: Sequence[Notification]) -> list[bool]:
        self.chunks.append(len(notes))
        return [self.send(note) for note in notes]

    def vehicles(self) -> list[str]:
        return [n.vehicle_id for n in self.sent]


@dataclass
class RecordingAlerts:
    alerts: list[tuple[str, str, str]] = field(default_factory=list)

    def alert(self, name: str, campaign_id: str, detail: str) -> None:
        self.alerts.append((name, campaign_id, detail))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.alerts]


@dataclass
class RecordingCommands:
    """A `CommandSender` that keeps what it was asked to send (tests)."""

    sent: list[tuple[OTACommand, tuple[CommandTarget, ...]]] = field(default_factory=list)

    def send(self, command: OTACommand, targets: Sequence[CommandTarget]) -> list[bool]:
        self.sent.append((command, tuple(targets)))
        return [True] * len(targets)

    def to(self, vehicle_id: str) -> list[OTACommand]:
        return [c for c, ts in self.sent if any(t.vehicle_id == vehicle_id for t in ts)]
