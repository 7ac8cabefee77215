"""The installation's named steps, its six post-install checks, and the power cut.

Shared by the installer (which walks the steps), the fault profiles (which
name a step to cut the power at) and the tests (which cut the power at every
step, one run each). A step is a *boundary*: a power cut "at" a step happens
when the step begins, after everything the previous steps wrote is on flash;
a *torn* cut at a step that writes flash happens half-way through that write.

The names of the install-phase steps match `effects.InstallStep` (the agent's
progress steps) and `percent` carries the same progress figures, so the
runtime maps one onto the other by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class InstallStep(StrEnum):
    PRECHECK = "precheck"  # critical DTC; the target (inactive) partition is available
    BACKUP = "backup"  # the env forgets the target slot's old state before its bytes change
    EXTRACT = "extract"  # package -> staging image, hash checked against sw-description
    WRITE = "write"  # staging image -> inactive slot, verified by read-back hash
    BOOT_FLAGS = "boot_flags"  # env: boot the new slot on trial (upgrade_available=1)
    REBOOT = "reboot"  # the bootloader, the boot attempts and the watchdog
    VERIFY = "verify"  # the six post-install checks on the new slot
    COMMIT = "commit"  # the new slot marked good, upgrade_available cleared
    ROLLBACK = "rollback"  # verification failed: env back to the fallback, reboot

    @property
    def percent(self) -> int:
        """The progress the FMEA reports when this step begins."""
        return _PERCENT[self]

    @property
    def writes_flash(self) -> bool:
        """Whether a power cut can tear a write at this step."""
        return self in _WRITING


_PERCENT = {
    InstallStep.PRECHECK: 5,
    InstallStep.BACKUP: 10,
    InstallStep.EXTRACT: 20,
    InstallStep.WRITE: 40,
    InstallStep.BOOT_FLAGS: 80,
    InstallStep.REBOOT: 90,
    InstallStep.VERIFY: 95,
    InstallStep.COMMIT: 100,
    InstallStep.ROLLBACK: 95,
}
_WRITING = frozenset(
    {
        InstallStep.BACKUP,
        InstallStep.EXTRACT,
        InstallStep.WRITE,
        InstallStep.BOOT_FLAGS,
        InstallStep.REBOOT,
        InstallStep.COMMIT,
        InstallStep.ROLLBACK,
    }
)


class PostInstallCheck(StrEnum):
    """The FMEA's post-install verification tests, in its order."""

    CAN_BUS_COMMUNICATION = "can_bus_communication"
    ECU_FIRMWARE_VERSION = "ecu_firmware_version"
    DTC_SCAN = "dtc_scan"
    SENSOR_CONNECTIVITY = "sensor_connectivity"
    NETWORK_CONNECTIVITY = "network_connectivity"
    FEATURE_SMOKE_TESTS = "feature_smoke_tests"


class PowerCut(BaseException):
    """The simulated supply failed: the process stops here.

    A `BaseException` on purpose, like `KeyboardInterrupt`: no `except
    Exception` in the agent or the installer may swallow it and carry on, as
    no code carries on when the power goes. Whoever catches it (a test, the
    simulator's vehicle loop) must drop every object of the old process and
    build new ones from disk (`Installer.power_on`).
    """

    def __init__(self, step: InstallStep, *, torn: bool = False) -> None:
        super().__init__(f"power cut at {step.value}{' (torn write)' if torn else ''}")
        self.step = step
        self.torn = torn


@dataclass(slots=True)
class PowerPlan:
    """Where the power will fail, once. `torn`: in the middle of the step's
    flash write (`fraction` of its bytes land), else when the step begins.
    A fired plan is spent: the next process runs on a steady supply."""

    step: InstallStep | None = None
    torn: bool = False
    fraction: float = 0.5
    fired: bool = field(default=False, init=False)

    def reach(self, step: InstallStep) -> None:
        """Called when `step` begins; raises `PowerCut` if the plan says so."""
        if not self.fired and self.step is step and not self.torn:
            self.fired = True
            raise PowerCut(step)

    def tear_after(self, step: InstallStep, nbytes: int) -> int | None:
        """How many of `nbytes` reach flash before the supply fails during
        `step`'s write, or None for a complete write. Arms the plan."""
        if self.fired or self.step is not step or not self.torn:
            return None
        self.fired = True
        return max(0, min(nbytes - 1, int(nbytes * self.fraction)))
