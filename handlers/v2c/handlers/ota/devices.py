"""Updates of one vehicle at a time: outside campaigns (single and bulk,
E3-US1/E3-US5), and the per-update commands (cancel, retry, rollback).

A device update is signed like a campaign release; a bulk update signs
once for all its vehicles. Commands go through the same state machine as
status reports, so a cancel that races an install, or a retry of an update
that is not failed, is refused with 409 and the reason.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import ConfigDict, Field, field_validator

from v2c.contract.errors import Conflict, InvalidField, NotFound, V2CError
from v2c.contract.semver import SemVer
from v2c.contract.topics import validate_vin
from v2c.handlers.api.models import RequestModel
from v2c.handlers.ota.campaigns.deps import CampaignServiceDeps
from v2c.handlers.ota.campaigns.record import Release
from v2c.handlers.ota.campaigns.release import manifest_for, release_id, sign_release
from v2c.handlers.ota.campaigns.rollback import previous_version
from v2c.handlers.ota.campaigns.service import CampaignService
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec, Priority
from v2c.handlers.ota.domain.update_state import TERMINAL, Command, UpdateState
from v2c.handlers.ota.domain.validation import validate
from v2c.handlers.ota.fleet import Vehicle
from v2c.handlers.ota.ports import Package
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate

MAX_BULK: Final = 100


VehicleIdText = Annotated[str, Field(pattern=r"^VIN-[A-HJ-NPR-Z0-9]{17}$")]


class DeviceUpdateRequest(RequestModel):
    model_config = ConfigDict(frozen=True)

    firmware_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    priority: Priority = Field(default=Priority.NORMAL, strict=False)
    force: bool = False  # BR-OTA-026: also when the vehicle runs this version or newer
    min_battery_level: int = Field(default=30, ge=0, le=100)
    can_install_while_driving: bool = False


class BulkUpdateRequest(DeviceUpdateRequest):
    device_ids: list[VehicleIdText] = Field(min_length=1, max_length=MAX_BULK)

    @field_validator("device_ids")
    @classmethod
    def _vins(cls, value: list[str]) -> list[str]:
        for vehicle_id in value:
            validate_vin(vehicle_id)
        if len(set(value)) != len(value):
            raise ValueError("lists a vehicle twice")
        return value


class RollbackRequest(RequestModel):
    model_config = ConfigDict(frozen=True)

    # default: the version before the last completed update
    version: str | None = Field(default=None, pattern=r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
    reason: str = Field(default="manual rollback", min_length=1, max_length=500)


@dataclass(frozen=True, slots=True)
class BulkResult:
    vehicle_id: str
    ok: bool
    update: VehicleUpdate | None = None
    status: int = 201
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"device_id": self.vehicle_id, "status": self.status}
        if self.update is not None:
            data["update_id"] = self.update.device_update_id
        if self.detail:
            data["detail"] = self.detail
        return data


class DeviceService:
    def __init__(self, deps: CampaignServiceDeps, campaigns: CampaignService) -> None:
        self._d = deps
        self._campaigns = campaigns

    def _now_ms(self) -> int:
        return int(self._d.clock() * 1000)

    def _vehicle(self, vehicle_id: str) -> Vehicle:
        validate_vin(vehicle_id)
        vehicle = self._d.fleet.get(vehicle_id)
        if vehicle is None:
            raise NotFound(f"vehicle {vehicle_id} is not registered")
        if not vehicle.active:
            raise Conflict(f"vehicle {vehicle_id} is decommissioned")
        return vehicle

    def _package(self, firmware_id: str) -> Package:
        try:
            package = self._d.packages.package(firmware_id)
        except NotFound:
            raise InvalidField("firmware_id", f"no firmware {firmware_id!r}") from None
        if not package.available:
            raise InvalidField("firmware_id", f"firmware {firmware_id} is {package.status}")
        if not self._d.packages.package_exists(firmware_id):
            raise InvalidField("firmware_id", f"the package of {firmware_id} is missing from S3")
        return package

    def history(self, vehicle_id: str) -> list[VehicleUpdate]:
        validate_vin(vehicle_id)
        return self._d.updates.for_vehicle(vehicle_id)

    def get(self, device_update_id: str) -> VehicleUpdate:
        if len(device_update_id) != 32 or not all(
            c in "0123456789abcdef" for c in device_update_id
        ):
            raise NotFound(f"update {device_update_id!r} not found")
        return self._d.updates.by_device_update_id(device_update_id)

    def _check_eligible(self, vehicle: Vehicle, package: Package, force: bool) -> None:
        if vehicle.model != package.device_model:
            raise InvalidField(
                "firmware_id",
                f"firmware for {package.device_model} does not fit a {vehicle.model}",
            )
        active = [u for u in self.history(vehicle.vehicle_id) if u.state not in TERMINAL]
        if active:
            raise Conflict(
                f"vehicle {vehicle.vehicle_id} already has update {active[0].device_update_id} "
                f"{active[0].state.value}"
            )
        if not force and vehicle.installed_version:
            try:
                current = SemVer.parse(vehicle.installed_version)
            except V2CError:
                return
            if current >= SemVer.parse(package.version):
                raise Conflict(
                    f"vehicle {vehicle.vehicle_id} runs {vehicle.installed_version}; "
                    f"set force to install {package.version}"
                )

    def _spec(
        self, request: DeviceUpdateRequest, package: Package, vehicles: tuple[str, ...]
    ) -> CampaignSpec:
        """The manifest settings of an update outside a campaign."""
        return CampaignSpec(
            name="device update",
            firmware_id=package.firmware_id,
            target_devices=vehicles,
            priority=request.priority,
            min_battery_level=request.min_battery_level,
            can_install_while_driving=request.can_install_while_driving,
        )

    def update_device(self, vehicle_id: str, body: object) -> VehicleUpdate:
        request = validate(DeviceUpdateRequest, body, subject="device update")
        vehicle = self._vehicle(vehicle_id)
        package = self._package(request.firmware_id)
        self._check_eligible(vehicle, package, request.force)
        release = self._sign(package, self._spec(request, package, (vehicle_id,)))
        return self._send_new(vehicle, package, release)

    def bulk_update(self, body: object) -> list[BulkResult]:
        request = validate(BulkUpdateRequest, body, subject="bulk update")
        package = self._package(request.firmware_id)
        release = self._sign(package, self._spec(request, package, tuple(request.device_ids)))
        results: list[BulkResult] = []
        for vehicle_id in request.device_ids:
            try:
                vehicle = self._vehicle(vehicle_id)
                self._check_eligible(vehicle, package, request.force)
                update = self._send_new(vehicle, package, release)
            except V2CError as exc:
                results.append(
                    BulkResult(vehicle_id, False, status=exc.http_status, detail=exc.detail)
                )
            else:
                results.append(BulkResult(vehicle_id, True, update))
        return results

    def _sign(self, package: Package, spec: CampaignSpec) -> Release:
        manifest = manifest_for(package, spec, uuid.uuid4().hex, "", self._now_ms())
        return sign_release(self._d.signer, manifest)

    def _send_new(self, vehicle: Vehicle, package: Package, release: Release) -> VehicleUpdate:
        update = VehicleUpdate.notified(
            vehicle_id=vehicle.vehicle_id,
            update_id=release.update_id,
            now_ms=self._now_ms(),
            kind=UpdateKind.DEVICE,
            firmware_id=package.firmware_id,
            to_version=package.version,
            from_version=vehicle.installed_version,
            region=vehicle.region,
            manifest=release.manifest,
            signature=release.signature,
            key_id=release.key_id,
        )
        if self._campaigns.notices.first(update, release) is None:
            raise Conflict(f"update {update.device_update_id} exists already")
        return update

    def _command(self, update: VehicleUpdate, command: Command, max_retries: int) -> VehicleUpdate:
        commands = self._campaigns.commands
        return commands.apply(update, command, max_retries=max_retries, strict=True).update

    def cancel(self, device_update_id: str) -> VehicleUpdate:
        update = self.get(device_update_id)
        cancelled = self._command(update, Command.CANCEL, 0)
        self._d.events.publish(
            "update.cancelled",
            {
                "vehicle_id": update.vehicle_id,
                "update_id": device_update_id,
                "campaign_id": update.campaign_id,
            },
        )
        return cancelled

    def retry(self, device_update_id: str) -> VehicleUpdate:
        update = self.get(device_update_id)
        max_retries = (
            self._campaigns.get(update.campaign_id).spec.max_retries if update.campaign_id else 3
        )
        pending = self._command(update, Command.RETRY, max_retries)
        notified = self._command(pending, Command.NOTIFY, max_retries)
        refreshed = self._d.updates.get(notified.vehicle_id, notified.update_id)
        self._campaigns.notices.send(refreshed)
        return refreshed

    def rollback(self, vehicle_id: str, body: object) -> VehicleUpdate:
        request = validate(RollbackRequest, body or {}, subject="rollback")
        vehicle = self._vehicle(vehicle_id)
        history = self.history(vehicle_id)
        active = [u for u in history if u.state not in TERMINAL]
        if active:
            raise Conflict(
                f"vehicle {vehicle_id} has update {active[0].device_update_id} "
                f"{active[0].state.value}; cancel it first"
            )
        version = request.version or previous_version(history)
        if vehicle.installed_version and version == vehicle.installed_version:
            raise Conflict(f"vehicle {vehicle_id} already runs {version}")
        package = self._d.packages.find_version(vehicle.model, version)
        if package is None:
            raise InvalidField("version", f"no {vehicle.model} firmware {version} to roll back to")
        last = next((u for u in reversed(history) if u.state is UpdateState.COMPLETED), None)
        rollback_id = release_id(uuid.uuid4().hex, f"rollback/{version}")
        return self._campaigns.rollbacks.send(
            vehicle_id=vehicle_id,
            region=vehicle.region,
            package=package,
            release_update_id=rollback_id,
            spec_source=None,
            reverts=last,
            reason=request.reason,
            requested_by="fleet-manager",
            now_ms=self._now_ms(),
        )
