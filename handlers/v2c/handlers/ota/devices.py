"""Updates of one vehicle at a time: outside campaigns (single and bulk,
E3-US1/E3-US5), and the per-update commands (cancel, retry, rollback).

A device update is signed like a campaign release; a bulk update signs
once for all its vehicles. Its own limits are stored on each record:
`max_retries` (BR-OTA-024, 0-10, default 3) caps retries, `timeout_minutes`
(BR-OTA-025, 5-1440, default 60) is kept as `timeout_ms` for the monitor to
enforce; `force_update` (BR-OTA-026, alias `force`) skips the cloud's version
check and goes inside the signed manifest, so the vehicle re-flashes a
version it already runs. Commands go through the same state machine as
status reports, so a cancel that races an install, or a retry of an update
that is not failed, is refused with 409 and the reason; a cancel the cloud
accepts is also sent to the vehicle (a signed CANCEL_UPDATE).

A device rollback (BR-OTA-032) goes only to a version the vehicle's history
shows it ran (`rollback_rules.versions_ran`), with a reason (BR-OTA-035)
and the trigger `manual`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Final

from pydantic import AliasChoices, ConfigDict, Field, field_validator

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
from v2c.handlers.ota.domain.rollback_rules import RollbackTrigger, versions_ran
from v2c.handlers.ota.domain.update_state import IN_FLIGHT, Command, UpdateState
from v2c.handlers.ota.domain.update_steps import StepSpec, check_steps
from v2c.handlers.ota.domain.validation import validate
from v2c.handlers.ota.events import update_cancelled_detail
from v2c.handlers.ota.fleet import Vehicle
from v2c.handlers.ota.metrics import DEVICE_TRIGGER, rollback_started
from v2c.handlers.ota.ports import Package
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.handlers.ota.vehicle_commands import CommandTarget, cancel_update

MAX_BULK: Final = 100


VehicleIdText = Annotated[str, Field(pattern=r"^VIN-[A-HJ-NPR-Z0-9]{17}$")]


class DeviceUpdateRequest(RequestModel):
    model_config = ConfigDict(frozen=True)

    firmware_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    priority: Priority = Field(default=Priority.NORMAL, strict=False)
    # BR-OTA-026: also when the vehicle runs this version or newer (a re-flash).
    force_update: bool = Field(
        default=False,
        validation_alias=AliasChoices("force_update", "force"),
        description="install even when the vehicle runs this version or newer (alias: force)",
    )
    max_retries: int = Field(default=3, ge=0, le=10)  # BR-OTA-024
    timeout_minutes: int = Field(default=60, ge=5, le=1440)  # BR-OTA-025
    min_battery_level: int = Field(default=30, ge=0, le=100)
    can_install_while_driving: bool = False
    # BR-OTA-027: named steps the vehicle runs before the install and after the commit
    pre_update_steps: list[StepSpec] = Field(default_factory=list)
    post_update_steps: list[StepSpec] = Field(default_factory=list)

    @field_validator("pre_update_steps", "post_update_steps")
    @classmethod
    def _steps(cls, value: list[StepSpec]) -> list[StepSpec]:
        return list(check_steps(tuple(value)))


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
    to_version: str | None = Field(
        default=None,
        pattern=r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$",
        validation_alias=AliasChoices("to_version", "version"),
        description="a version the vehicle ran (alias: version); default: the one before",
    )
    # BR-OTA-035: required, and saying something (not blank)
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S")


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
        if package.is_beta and not vehicle.beta_opt_in:  # BR-OTA-009; `force` does not lift it
            raise InvalidField(
                "firmware_id",
                f"firmware {package.version} is a beta release and vehicle "
                f"{vehicle.vehicle_id} has not opted in to beta firmware (beta_opt_in)",
            )
        if vehicle.model != package.device_model:
            raise InvalidField(
                "firmware_id",
                f"firmware for {package.device_model} does not fit a {vehicle.model}",
            )
        held = _held(self.history(vehicle.vehicle_id))
        if held is not None:
            raise Conflict(
                f"vehicle {vehicle.vehicle_id} already has update {held.device_update_id} "
                f"{held.state.value}"
            )
        if not force and vehicle.installed_version:
            try:
                current = SemVer.parse(vehicle.installed_version)
            except V2CError:
                return
            if current >= SemVer.parse(package.version):
                raise Conflict(
                    f"vehicle {vehicle.vehicle_id} runs {vehicle.installed_version}; "
                    f"set force_update to install {package.version}"
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
            pre_update_steps=tuple(request.pre_update_steps),
            post_update_steps=tuple(request.post_update_steps),
        )

    def update_device(self, vehicle_id: str, body: object) -> VehicleUpdate:
        request = validate(DeviceUpdateRequest, body, subject="device update")
        vehicle = self._vehicle(vehicle_id)
        package = self._package(request.firmware_id)
        self._check_eligible(vehicle, package, request.force_update)
        release = self._sign(
            package, self._spec(request, package, (vehicle_id,)), request.force_update
        )
        return self._send_new(vehicle, package, release, request)

    def bulk_update(self, body: object) -> list[BulkResult]:
        request = validate(BulkUpdateRequest, body, subject="bulk update")
        package = self._package(request.firmware_id)
        release = self._sign(
            package, self._spec(request, package, tuple(request.device_ids)), request.force_update
        )
        results: list[BulkResult] = []
        for vehicle_id in request.device_ids:
            try:
                vehicle = self._vehicle(vehicle_id)
                self._check_eligible(vehicle, package, request.force_update)
                update = self._send_new(vehicle, package, release, request)
            except V2CError as exc:
                results.append(
                    BulkResult(vehicle_id, False, status=exc.http_status, detail=exc.detail)
                )
            else:
                results.append(BulkResult(vehicle_id, True, update))
        return results

    def _sign(self, package: Package, spec: CampaignSpec, force_update: bool) -> Release:
        manifest = manifest_for(package, spec, uuid.uuid4().hex, "", self._now_ms())
        # Inside the signature: the vehicle takes a version that is not newer
        # only on the cloud's signed word (the anti-rollback floor still holds).
        manifest.force_update = force_update
        return sign_release(self._d.signer, manifest)

    def _send_new(
        self,
        vehicle: Vehicle,
        package: Package,
        release: Release,
        request: DeviceUpdateRequest,
    ) -> VehicleUpdate:
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
            max_retries=request.max_retries,
            timeout_ms=request.timeout_minutes * 60_000,
        )
        if self._campaigns.notices.first(update, release) is None:
            raise Conflict(f"update {update.device_update_id} exists already")
        return update

    def _command(self, update: VehicleUpdate, command: Command, max_retries: int) -> VehicleUpdate:
        commands = self._campaigns.commands
        return commands.apply(update, command, max_retries=max_retries, strict=True).update

    def cancel(self, device_update_id: str) -> VehicleUpdate:
        """Cancel one update (409 once installing) and tell its vehicle: a
        CANCEL_UPDATE naming it, so the vehicle stops a download the cloud's
        record alone could not stop."""
        update = self.get(device_update_id)
        cancelled = self._command(update, Command.CANCEL, 0)
        command = cancel_update(
            campaign_id=update.campaign_id,
            update_id=update.update_id,
            reason="cancelled by a fleet manager",
            now_ms=self._now_ms(),
            vehicle_id=update.vehicle_id,
        )
        self._d.commands.send(command, [CommandTarget(update.vehicle_id, update.region)])
        self._d.events.publish("update.cancelled", update_cancelled_detail(cancelled))
        return cancelled

    def retry(self, device_update_id: str) -> VehicleUpdate:
        update = self.get(device_update_id)
        if update.state is UpdateState.TIMED_OUT:
            # The vehicle was sent a signed cancel for this update and refuses
            # it for good (a cancel is final on the vehicle): a retry would be
            # answered CAMPAIGN_CANCELLED. A new update is the way to try again.
            raise Conflict(
                f"update {device_update_id} timed out and was cancelled on the vehicle; "
                "start a new update (POST /devices/{id}/update) to try again"
            )
        if update.max_retries is not None:
            max_retries = update.max_retries
        elif update.campaign_id:
            max_retries = self._campaigns.get(update.campaign_id).spec.max_retries
        else:
            max_retries = 3
        pending = self._command(update, Command.RETRY, max_retries)
        notified = self._command(pending, Command.NOTIFY, max_retries)
        refreshed = self._d.updates.get(notified.vehicle_id, notified.update_id)
        self._campaigns.notices.send(refreshed)
        return refreshed

    def rollback(self, vehicle_id: str, body: object) -> VehicleUpdate:
        request = validate(RollbackRequest, body or {}, subject="rollback")
        vehicle = self._vehicle(vehicle_id)
        history = self.history(vehicle_id)
        held = _held(history)
        if held is not None:
            raise Conflict(
                f"vehicle {vehicle_id} has update {held.device_update_id} "
                f"{held.state.value}; cancel it first"
            )
        version = request.to_version or previous_version(history)
        if vehicle.installed_version and version == vehicle.installed_version:
            raise Conflict(f"vehicle {vehicle_id} already runs {version}")
        if version not in versions_ran(history):
            raise InvalidField(
                "to_version",
                f"vehicle {vehicle_id} never ran {version}: a rollback goes only to a "
                "version in its update history",
            )
        package = self._d.packages.find_version(vehicle.model, version)
        if package is None:
            raise InvalidField(
                "to_version", f"no {vehicle.model} firmware {version} to roll back to"
            )
        last = next((u for u in reversed(history) if u.state is UpdateState.COMPLETED), None)
        rollback_id = release_id(uuid.uuid4().hex, f"rollback/{version}")
        sent = self._campaigns.rollbacks.send(
            vehicle_id=vehicle_id,
            region=vehicle.region,
            package=package,
            release_update_id=rollback_id,
            spec_source=None,
            reverts=last,
            reason=request.reason,
            trigger=RollbackTrigger.MANUAL,
            now_ms=self._now_ms(),
        )
        rollback_started(DEVICE_TRIGGER)
        return sent


def _held(history: list[VehicleUpdate]) -> VehicleUpdate | None:
    """The update the vehicle holds now (notified and not ended), if any. A
    campaign's record only queued for the vehicle (pending, or waiting behind
    another update) does not block a fleet manager's device update or
    rollback: those outrank campaigns, and the queued record waits for them
    (`campaigns.coordination`)."""
    return next((u for u in history if u.state in IN_FLIGHT), None)
