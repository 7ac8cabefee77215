"""Fault profiles: which simulated vehicles fail how, so campaigns meet realistic failure mixes.

A profile switches failure modes on for named vehicles or for a share of the
fleet. Selection is a pure function of (seed, mode, vehicle id): a vehicle
is in a mode's share when the first 8 bytes of
`sha256(seed \\0 mode \\0 vehicle_id)`, read as a fraction of 2**64, are below
the share. The same fleet therefore gets the same faults on every run and
in every process (no random state to share), the modes are independent of
each other, and changing the seed draws a new, equally sized sample.

File format (YAML, or JSON with the same structure)::

    name: realistic            # free text, shown in logs
    seed: v2c-realistic-1      # any string; changing it re-draws the sample
    description: ...           # optional
    faults:                    # every key optional; unknown keys are errors
      boot_failure:
        share: 0.02            # 0..1 of the fleet, chosen by the hash above
        vins: [VIN-1HGCM82633A004352]   # and/or these vehicles (bare VINs accepted)
        failed_boots: null     # mode parameters, see the classes below
      critical_dtc: {vins: [1HGCM82633A004352], code: P0601}

Modes (the OTAStatus reason they lead to) and their parameters:

=====================  ==============================  ==============================
mode                   reason                          parameters (default)
=====================  ==============================  ==============================
low_battery            INSUFFICIENT_BATTERY            battery_percent (12)
in_use                 VEHICLE_IN_USE                  speed_kmh (50), duration_s (1800)
low_storage            INSUFFICIENT_STORAGE            free_bytes (50 MiB)
s3_unavailable         S3_UNAVAILABLE                  failures (3) consecutive requests
connection_lost        (download resumes)              at_percent (50), times (1)
checksum_mismatch      CHECKSUM_MISMATCH               times (1) corrupted downloads
signature_invalid      SIGNATURE_VERIFICATION_FAILED   -
critical_dtc           CRITICAL_DTC_PRESENT            code (P0601)
extraction             EXTRACTION_FAILED               kind: corrupt | no_space (corrupt)
flash_write            FLASH_WRITE_FAILURE             - (a bad block; read-back fails)
partition_unavailable  PARTITION_UNAVAILABLE           -
verification_failure   POST_INSTALL_VERIFICATION_...   check (can_bus_communication)
boot_failure           BOOT_FAILURE                    failed_boots (null: every boot)
power_cut              (recovers; never a report)      at_step (write), torn (false)
=====================  ==============================  ==============================

`FaultProfile.load(path)` reads a file; `FaultProfile.builtin("realistic")`
and `builtin("none")` are shipped in `profiles/`; `FaultProfile.resolve(x)`
takes either. Any problem with a file is a `ConfigurationError` naming the
file and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from v2c.contract.errors import ConfigurationError, ValidationFailed
from v2c.contract.topics import VIN_PATTERN
from v2c.vehicle_sim.ota.agent.steps import InstallStep, PostInstallCheck

PROFILE_DIR: Final = Path(__file__).parent / "profiles"
BUILTIN: Final = ("none", "realistic")
MIB: Final = 1024 * 1024
_BARE_VIN: Final = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")


class FaultMode(StrEnum):
    LOW_BATTERY = "low_battery"
    IN_USE = "in_use"
    LOW_STORAGE = "low_storage"
    S3_UNAVAILABLE = "s3_unavailable"
    CONNECTION_LOST = "connection_lost"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    SIGNATURE_INVALID = "signature_invalid"
    CRITICAL_DTC = "critical_dtc"
    EXTRACTION = "extraction"
    FLASH_WRITE = "flash_write"
    PARTITION_UNAVAILABLE = "partition_unavailable"
    VERIFICATION_FAILURE = "verification_failure"
    BOOT_FAILURE = "boot_failure"
    POWER_CUT = "power_cut"


def vehicle_id(vin: str) -> str:
    """`VIN-` + 17 characters; a bare VIN gets its prefix. Raises ValueError."""
    text = vin.strip().upper()
    if _BARE_VIN.fullmatch(text):
        text = f"VIN-{text}"
    if not VIN_PATTERN.fullmatch(text):
        raise ValueError(f"{vin!r} is not a VIN (17 characters, no I, O or Q)")
    return text


def draw(seed: str, mode: FaultMode, vehicle: str) -> float:
    """The vehicle's deterministic lot for `mode`, uniform in [0, 1)."""
    digest = hashlib.sha256(f"{seed}\0{mode.value}\0{vehicle}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class FaultRule(BaseModel):
    """Who has one failure mode: listed vehicles plus a share of the fleet."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: ClassVar[FaultMode]

    share: float = Field(default=0.0, ge=0.0, le=1.0)
    vins: tuple[str, ...] = ()

    @field_validator("vins")
    @classmethod
    def _normalise(cls, vins: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(vehicle_id(v) for v in vins)

    def selects(self, seed: str, vehicle: str) -> bool:
        return vehicle in self.vins or draw(seed, self.mode, vehicle) < self.share


class LowBattery(FaultRule):
    mode = FaultMode.LOW_BATTERY
    battery_percent: float = Field(default=12.0, ge=0.0, le=100.0)


class InUse(FaultRule):
    mode = FaultMode.IN_USE
    speed_kmh: float = Field(default=50.0, gt=0.0)
    duration_s: float = Field(default=1800.0, gt=0.0)


class LowStorage(FaultRule):
    mode = FaultMode.LOW_STORAGE
    free_bytes: int = Field(default=50 * MIB, ge=0)


class S3Unavailable(FaultRule):
    mode = FaultMode.S3_UNAVAILABLE
    failures: int = Field(default=3, ge=1)


class ConnectionLost(FaultRule):
    mode = FaultMode.CONNECTION_LOST
    at_percent: float = Field(default=50.0, gt=0.0, lt=100.0)
    times: int = Field(default=1, ge=1)


class ChecksumMismatch(FaultRule):
    mode = FaultMode.CHECKSUM_MISMATCH
    times: int = Field(default=1, ge=1)


class SignatureInvalid(FaultRule):
    mode = FaultMode.SIGNATURE_INVALID


class CriticalDtc(FaultRule):
    mode = FaultMode.CRITICAL_DTC
    code: str = Field(default="P0601", pattern=r"^[PCBU][0-9A-F]{4}$")


class Extraction(FaultRule):
    mode = FaultMode.EXTRACTION
    kind: Literal["corrupt", "no_space"] = "corrupt"


class FlashWrite(FaultRule):
    mode = FaultMode.FLASH_WRITE


class PartitionUnavailable(FaultRule):
    mode = FaultMode.PARTITION_UNAVAILABLE


class VerificationFailure(FaultRule):
    mode = FaultMode.VERIFICATION_FAILURE
    check: PostInstallCheck = PostInstallCheck.CAN_BUS_COMMUNICATION


class BootFailure(FaultRule):
    """The new image hangs at boot; the watchdog resets it. `failed_boots`:
    only its first n boots hang (n < bootlimit: it boots in the end);
    null: every boot, so the bootloader falls back."""

    mode = FaultMode.BOOT_FAILURE
    failed_boots: int | None = Field(default=None, ge=1)


class PowerCutFault(FaultRule):
    mode = FaultMode.POWER_CUT
    at_step: InstallStep = InstallStep.WRITE
    torn: bool = False


class FaultRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    low_battery: LowBattery | None = None
    in_use: InUse | None = None
    low_storage: LowStorage | None = None
    s3_unavailable: S3Unavailable | None = None
    connection_lost: ConnectionLost | None = None
    checksum_mismatch: ChecksumMismatch | None = None
    signature_invalid: SignatureInvalid | None = None
    critical_dtc: CriticalDtc | None = None
    extraction: Extraction | None = None
    flash_write: FlashWrite | None = None
    partition_unavailable: PartitionUnavailable | None = None
    verification_failure: VerificationFailure | None = None
    boot_failure: BootFailure | None = None
    power_cut: PowerCutFault | None = None

    def all(self) -> tuple[FaultRule, ...]:
        rules = (getattr(self, mode.value) for mode in FaultMode)
        return tuple(rule for rule in rules if rule is not None)


R = TypeVar("R", bound=FaultRule)


@dataclass(frozen=True, slots=True)
class VehicleFaults:
    """The failure modes one vehicle has, with their parameters."""

    vehicle_id: str = ""
    rules: tuple[FaultRule, ...] = ()

    @classmethod
    def none(cls, vehicle: str = "") -> VehicleFaults:
        return cls(vehicle)

    @classmethod
    def of(cls, *rules: FaultRule, vehicle: str = "") -> VehicleFaults:
        """Faults given directly (tests, one-off runs): `of(BootFailure())`."""
        modes = [rule.mode for rule in rules]
        if len(set(modes)) != len(modes):
            raise ConfigurationError("each failure mode can be given once")
        return cls(vehicle, tuple(sorted(rules, key=lambda r: r.mode.value)))

    @property
    def modes(self) -> frozenset[FaultMode]:
        return frozenset(rule.mode for rule in self.rules)

    def __contains__(self, mode: object) -> bool:
        return any(rule.mode == mode for rule in self.rules)

    def get(self, kind: type[R]) -> R | None:
        """The vehicle's rule of this kind, with its parameters, if active."""
        for rule in self.rules:
            if isinstance(rule, kind):
                return rule
        return None


class FaultProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    seed: str = "v2c"
    description: str = ""
    faults: FaultRules = FaultRules()

    def for_vehicle(self, vin: str) -> VehicleFaults:
        try:
            vehicle = vehicle_id(vin)
        except ValueError as exc:
            raise ValidationFailed(str(exc)) from None
        chosen = tuple(rule for rule in self.faults.all() if rule.selects(self.seed, vehicle))
        return VehicleFaults(vehicle, chosen)

    def tally(self, vins: Iterable[str]) -> Counter[FaultMode]:
        """How many of these vehicles have each mode (for logs and demos)."""
        counts: Counter[FaultMode] = Counter()
        for vin in vins:
            counts.update(self.for_vehicle(vin).modes)
        return counts

    @classmethod
    def parse(cls, document: Any, *, source: str = "<profile>") -> FaultProfile:
        if not isinstance(document, dict):
            raise ConfigurationError(f"fault profile {source}: expected a mapping at the top")
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigurationError(f"fault profile {source}: {problems}") from None

    @classmethod
    def load(cls, path: Path | str) -> FaultProfile:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"fault profile {file}: cannot read: {exc}") from exc
        try:
            document = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"fault profile {file}: not valid syntax: {exc}") from None
        return cls.parse(document, source=str(file))

    @classmethod
    def builtin(cls, name: str) -> FaultProfile:
        if name not in BUILTIN:
            raise ConfigurationError(
                f"no built-in fault profile {name!r}: expected one of {', '.join(BUILTIN)}"
            )
        return cls.load(PROFILE_DIR / f"{name}.yaml")

    @classmethod
    def resolve(cls, name_or_path: str) -> FaultProfile:
        """A built-in profile by name, else a profile file (for CLI options)."""
        if name_or_path in BUILTIN:
            return cls.builtin(name_or_path)
        return cls.load(name_or_path)
