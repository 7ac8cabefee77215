"""The installer: FMEA phase 3 on the modelled A/B flash, one port call per agent effect.

Each public method is one effect of the update agent (`effects.py`), so the
runtime maps them one to one:

=====================  =====================================  ====================
effect                 call                                   then the agent's
=====================  =====================================  ====================
StartInstall           `install(package, version=, sha256=,   `on_install_step`,
                       on_step=)` -> InstallResult            `on_install_finished`
Reboot                 `reboot()` -> BootReport               `on_boot_result`
RunVerification        `verify(version)` -> Verification      `on_verification`
CommitUpdate           `commit()`                             `on_committed`
RollBack               `roll_back()` -> BootReport            `on_boot_result`
(process start)        `Installer.power_on(flash, clock)`     `on_start`
=====================  =====================================  ====================

`install` walks PRECHECK (critical DTC, target partition available), BACKUP
(the env stops calling the target good), EXTRACT (package -> staging image,
hash checked), WRITE (staging -> inactive slot, read back and hashed) and
BOOT_FLAGS (env: boot the target on trial, `upgrade_available=1`). Failures
are results with their OTAStatus reason, not exceptions: they are outcomes
the FMEA expects. The slot the vehicle runs is never written, so every
failure, and a power cut anywhere, leaves it bootable.

Booting runs U-Boot's decision (`bootloader.decide`), saves the env when
U-Boot would, and "loads" the slot: a slot whose bytes do not match its
header cannot boot, and a `boot_failure` fault makes the new image hang. A
hang costs the watchdog's timeout and a reset, and the next power-on counts
again, until `bootcount > bootlimit` makes U-Boot fall back. A power cut is
`PowerCut` raised at a step's start, or half-way through its flash write
(`PowerPlan`); afterwards a new `Installer.power_on` reads everything from
disk, as a rebooted vehicle does.

Time is simulated (`SimClock`): every step spends its `InstallTimings` share
of the FMEA's ~620 s installation, and the durations reported are simulated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, TypeAlias

from v2c.contract.errors import CodecError, Conflict
from v2c.contract.semver import SemVer, is_semver
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.errors import Unbootable
from v2c.vehicle_sim.ota.agent.bootloader import (
    BootDecision,
    Slot,
    SlotState,
    arm_trial,
    commit,
    decide,
    fall_back,
    invalidate,
    upgrade_safe_target,
)
from v2c.vehicle_sim.ota.agent.effects import BootResult
from v2c.vehicle_sim.ota.agent.steps import InstallStep, PostInstallCheck
from v2c.vehicle_sim.ota.device.clock import SimClock
from v2c.vehicle_sim.ota.device.faults import (
    BootFailure,
    CriticalDtc,
    VehicleFaults,
    VerificationFailure,
)
from v2c.vehicle_sim.ota.device.flash import Flash
from v2c.vehicle_sim.ota.device.package import PackageReader, file_sha256

Reason: TypeAlias = OTAStatus.Reason.ValueType

MAX_WATCHDOG_RESETS: Final = 16


@dataclass(frozen=True, slots=True)
class InstallTimings:
    """Simulated seconds per step: 5+5+120+420+2 to arm, then a 60 s boot
    and 12 s of checks, about the FMEA's 620 s; the watchdog's 120 s per
    hung boot (three hangs, "~6 minutes")."""

    precheck: float = 5.0
    backup: float = 5.0
    extract: float = 120.0
    write: float = 420.0
    boot_flags: float = 2.0
    boot: float = 60.0
    watchdog: float = 120.0
    verify: float = 12.0
    commit: float = 1.0


class Diagnostics(Protocol):
    """The vehicle's diagnostics, as the installer needs them."""

    def critical_dtcs(self) -> Sequence[str]:
        """Active critical DTCs (a non-empty answer blocks the installation)."""
        ...

    def check(self, check: PostInstallCheck) -> bool:
        """Run one post-install test on the running software."""
        ...


class SimulatedDiagnostics:
    """Diagnostics driven by the vehicle's fault profile."""

    def __init__(self, faults: VehicleFaults) -> None:
        self._faults = faults

    def critical_dtcs(self) -> Sequence[str]:
        dtc = self._faults.get(CriticalDtc)
        return (dtc.code,) if dtc is not None else ()

    def check(self, check: PostInstallCheck) -> bool:
        failure = self._faults.get(VerificationFailure)
        return failure is None or failure.check is not check


@dataclass(frozen=True, slots=True)
class InstallResult:
    """How `install` ended: armed (`failure` None), or failed with a reason."""

    failure: Reason | None
    detail: str = ""
    target: Slot | None = None
    version: str = ""  # the version the package holds (once extracted)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True, slots=True)
class BootReport:
    """What a boot ended on. Same meaning as `effects.BootResult` (whose four
    fields it has, by name), plus the slot and the watchdog resets."""

    slot: Slot
    running_version: str  # read from the image that booted
    trial: bool = False  # the new slot on trial (upgrade_available=1)
    fell_back: bool = False  # U-Boot gave up on the new slot (altbootcmd)
    boot_attempts: int = 0  # trial boot number, or the failed ones before falling back
    watchdog_resets: int = 0
    duration_s: float = 0.0

    def to_agent(self) -> BootResult:
        """What the agent is told of this boot."""
        return BootResult(
            running_version=self.running_version,
            trial=self.trial,
            fell_back=self.fell_back,
            boot_attempts=self.boot_attempts,
        )


@dataclass(frozen=True, slots=True)
class Verification:
    results: tuple[tuple[PostInstallCheck, bool], ...]
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(passed for _, passed in self.results)

    @property
    def failed(self) -> tuple[PostInstallCheck, ...]:
        return tuple(check for check, passed in self.results if not passed)

    @property
    def detail(self) -> str:
        if self.ok:
            return f"all tests passed ({len(self.results)}/{len(self.results)})"
        return "failed: " + ", ".join(check.value.upper() for check in self.failed)


def same_version(a: str, b: str) -> bool:
    if is_semver(a) and is_semver(b):
        return SemVer.parse(a) == SemVer.parse(b)
    return a == b


class Installer:
    """One vehicle's installer over its flash. Not thread-safe."""

    def __init__(
        self,
        flash: Flash,
        clock: SimClock,
        faults: VehicleFaults | None = None,
        *,
        diagnostics: Diagnostics | None = None,
        timings: InstallTimings | None = None,
        max_watchdog_resets: int = MAX_WATCHDOG_RESETS,
    ) -> None:
        self.flash = flash
        self.clock = clock
        # One vehicle, one fault set: the device's faults (bad block, broken
        # partition, extraction) live in the flash, so given faults go there too.
        if faults is not None:
            flash.faults = faults
        self.faults = flash.faults
        self.diagnostics = diagnostics or SimulatedDiagnostics(self.faults)
        self.timings = timings or InstallTimings()
        self._max_resets = max_watchdog_resets
        self._running: BootReport | None = None

    @classmethod
    def power_on(
        cls,
        flash: Flash,
        clock: SimClock,
        faults: VehicleFaults | None = None,
        *,
        diagnostics: Diagnostics | None = None,
        timings: InstallTimings | None = None,
    ) -> tuple[Installer, BootReport]:
        """A new process after power-on (or after a power cut): everything is
        read from disk; U-Boot runs first."""
        installer = cls(flash, clock, faults, diagnostics=diagnostics, timings=timings)
        return installer, installer.boot()

    # -- what runs ------------------------------------------------------------

    @property
    def running(self) -> BootReport:
        if self._running is None:
            raise Conflict("the vehicle has not booted yet: call boot() or power_on()")
        return self._running

    def installed_version(self) -> str:
        """The version of the image the vehicle actually runs, from the slot."""
        image = self.flash.read_slot(self.running.slot)
        if image is None:
            raise Unbootable(f"the running slot {self.running.slot} no longer reads back")
        return image.version

    # -- StartInstall ---------------------------------------------------------

    def install(
        self,
        package: Path,
        *,
        version: str | None = None,
        sha256: str | None = None,
        on_step: Callable[[InstallStep], None] | None = None,
    ) -> InstallResult:
        """Write `package` to the inactive slot and arm the bootloader.
        `version`, `sha256` (hex) come from the verified manifest: the package
        must still hash to it, and hold that version."""
        started = self.clock.now()
        notify = on_step or (lambda _step: None)

        def failed(reason: Reason, detail: str, target: Slot | None = None) -> InstallResult:
            with contextlib.suppress(FileNotFoundError):
                self.flash.staging_path.unlink()
            return InstallResult(reason, detail, target, duration_s=self.clock.now() - started)

        self._enter(InstallStep.PRECHECK, self.timings.precheck, notify)
        env = self.flash.read_env()
        if env.upgrade_available:
            raise Conflict("an update is on trial: commit or roll it back first")
        dtcs = tuple(self.diagnostics.critical_dtcs())
        if dtcs:
            return failed(OTAStatus.CRITICAL_DTC_PRESENT, f"critical DTC {', '.join(dtcs)}")
        target = self.running.slot.other
        if not upgrade_safe_target(env, target) or not self.flash.probe(target):
            return failed(OTAStatus.PARTITION_UNAVAILABLE, f"partition {target} is not available")

        self._enter(InstallStep.BACKUP, self.timings.backup, notify)
        self.flash.write_env(invalidate(env, target), step=InstallStep.BACKUP)

        self._enter(InstallStep.EXTRACT, self.timings.extract, notify)
        try:
            if sha256 is not None and file_sha256(package) != sha256.lower():
                raise CodecError("the package changed since its download (SHA-256)")
            with PackageReader(package) as reader:
                description = reader.description
                written = self.flash.write_staging(
                    reader.chunks(), description.size, step=InstallStep.EXTRACT
                )
                reader.check(written)
        except (CodecError, OSError) as exc:
            return failed(OTAStatus.EXTRACTION_FAILED, f"extraction failed: {exc}", target)
        if version is not None and not same_version(description.version, version):
            detail = f"the package holds {description.version}, the manifest says {version}"
            return failed(OTAStatus.EXTRACTION_FAILED, detail, target)

        self._enter(InstallStep.WRITE, self.timings.write, notify)
        try:
            self.flash.write_slot(
                target, description.version, self.flash.staging_path, step=InstallStep.WRITE
            )
        except OSError as exc:
            return failed(OTAStatus.FLASH_WRITE_FAILURE, f"flash write failed: {exc}", target)
        image = self.flash.read_slot(target)
        if image is None or image.sha256 != description.sha256:
            detail = f"partition {target} does not read back what was written (bad blocks)"
            return failed(OTAStatus.FLASH_WRITE_FAILURE, detail, target)

        self._enter(InstallStep.BOOT_FLAGS, self.timings.boot_flags, notify)
        self.flash.write_env(arm_trial(self.flash.read_env(), target), step=InstallStep.BOOT_FLAGS)
        self.flash.staging_path.unlink(missing_ok=True)
        return InstallResult(
            None, "", target, description.version, duration_s=self.clock.now() - started
        )

    # -- Reboot / power-on ----------------------------------------------------

    def reboot(self) -> BootReport:
        """The agent's reboot into the armed slot."""
        self._enter(InstallStep.REBOOT, 0.0)
        return self.boot()

    def boot(self) -> BootReport:
        """Power-on: U-Boot, the kernel, and the watchdog if the kernel hangs,
        until something runs."""
        started = self.clock.now()
        resets = 0
        fell_back: BootDecision | None = None
        while True:
            decision = decide(self.flash.read_env())
            if decision.save_env:
                self.flash.write_env(decision.env, step=InstallStep.REBOOT)
            if decision.fell_back:
                fell_back = decision
            self.clock.sleep(self.timings.boot)
            image = self.flash.read_slot(decision.slot)
            if image is not None and not self._hangs(decision):
                self._running = BootReport(
                    slot=decision.slot,
                    running_version=image.version,
                    trial=decision.attempt > 0,
                    fell_back=fell_back is not None,
                    boot_attempts=(
                        fell_back.failed_attempts if fell_back is not None else decision.attempt
                    ),
                    watchdog_resets=resets,
                    duration_s=self.clock.now() - started,
                )
                return self._running
            self.clock.sleep(self.timings.watchdog)  # the watchdog bites: reset
            resets += 1
            if resets > self._max_resets:
                raise Unbootable(f"no slot boots after {resets} watchdog resets")

    def _hangs(self, decision: BootDecision) -> bool:
        failure = self.faults.get(BootFailure)
        if failure is None or decision.attempt == 0:
            return False  # only the image on trial carries the defect
        return failure.failed_boots is None or decision.attempt <= failure.failed_boots

    # -- RunVerification / CommitUpdate / RollBack ---------------------------

    def verify(self, version: str) -> Verification:
        """The six post-install tests on the running slot; the firmware-version
        test also compares what runs with `version`."""
        started = self.clock.now()
        self._enter(InstallStep.VERIFY, self.timings.verify)
        results = []
        for check in PostInstallCheck:
            passed = self.diagnostics.check(check)
            if check is PostInstallCheck.ECU_FIRMWARE_VERSION:
                passed = passed and same_version(self.installed_version(), version)
            results.append((check, passed))
        return Verification(tuple(results), duration_s=self.clock.now() - started)

    def commit(self) -> None:
        """Mark the running trial slot good and end the trial. Repeating a
        commit that already landed is harmless."""
        self._enter(InstallStep.COMMIT, self.timings.commit)
        env = self.flash.read_env()
        running = self.running.slot
        if not env.upgrade_available:
            if env.boot_partition is running and env.state(running) is SlotState.GOOD:
                return
            raise Conflict("no trial to commit")
        if env.boot_partition is not running:
            raise Conflict(f"the trial slot is {env.boot_partition}, the vehicle runs {running}")
        self.flash.write_env(commit(env), step=InstallStep.COMMIT)

    def roll_back(self) -> BootReport:
        """Abandon the trial slot and reboot into the fallback."""
        self._enter(InstallStep.ROLLBACK, self.timings.commit)
        env = self.flash.read_env()
        if env.upgrade_available:
            self.flash.write_env(fall_back(env), step=InstallStep.ROLLBACK)
        return self.boot()

    def _enter(
        self,
        step: InstallStep,
        seconds: float,
        notify: Callable[[InstallStep], None] | None = None,
    ) -> None:
        self.flash.power.reach(step)
        if notify is not None:
            notify(step)
        self.clock.sleep(seconds)
