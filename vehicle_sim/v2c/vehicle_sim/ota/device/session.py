"""A whole installation in one call that survives power cuts: the simulator without the agent.

The update agent drives the installer effect by effect and keeps its own
state. This session does the same walk in one call, for demos, fleet
simulations that only need the install phase, and the power-cut tests: a
journal on the data partition (written atomically) says which update was
under way; the flash says how far it got. After a power cut,
`Installer.power_on` boots the vehicle and `InstallSession.resume()` ends the
walk from what it finds:

* the commit landed (the target runs, not on trial, good): COMPLETED;
* the target is on trial: verify, then commit or roll back;
* the target was abandoned (bad): ROLLED_BACK, BOOT_FAILURE, or
  POST_INSTALL_VERIFICATION_FAILED if the journal recorded that verdict;
* otherwise the bootloader was never armed: the vehicle runs the old slot
  and the installation starts again (at most `max_attempts` times).

The outcome is kept in the journal until `acknowledge()`, so an outcome a
power cut kept from being reported is reported after the restart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

from v2c.contract.errors import Conflict
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.ota.agent.bootloader import Slot, SlotState
from v2c.vehicle_sim.ota.device.installer import BootReport, Installer

JOURNAL: Final = "install_session"
State: TypeAlias = OTAStatus.State.ValueType
Reason: TypeAlias = OTAStatus.Reason.ValueType


@dataclass(frozen=True, slots=True)
class InstallOutcome:
    """A terminal result, as the vehicle reports it."""

    update_id: str
    state: State  # COMPLETED, FAILED or ROLLED_BACK
    reason: Reason  # REASON_UNSPECIFIED for COMPLETED
    installed_version: str  # what the vehicle actually runs afterwards
    running_slot: str
    attempts: int = 0  # boot attempts (BOOT_FAILURE) or installation attempts
    install_duration_s: float = 0.0  # simulated: start of PRECHECK to the outcome
    verification_duration_s: float = 0.0
    detail: str = ""

    def to_status(self, status: OTAStatus | None = None) -> OTAStatus:
        """Fill an `OTAStatus` (header and sequence are the reporter's)."""
        out = status if status is not None else OTAStatus()
        out.update_id = self.update_id
        out.state = self.state
        out.reason = self.reason
        out.installed_version = self.installed_version
        out.attempts = self.attempts
        out.install_duration_ms = round(self.install_duration_s * 1000)
        out.error_detail = self.detail
        if self.state == OTAStatus.COMPLETED:
            out.progress_percent = 100
        return out

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> InstallOutcome:
        return cls(**doc)


class InstallSession:
    def __init__(self, installer: Installer, *, max_attempts: int = 3) -> None:
        self.installer = installer
        self.flash = installer.flash
        self.max_attempts = max_attempts

    def run(
        self, package: Path, *, update_id: str, version: str, sha256: str | None = None
    ) -> InstallOutcome:
        """Install, reboot, verify, commit or roll back: the outcome."""
        if self.flash.read_record(JOURNAL) is not None:
            raise Conflict("an installation is under way: resume() it first")
        journal: dict[str, Any] = {
            "update_id": update_id,
            "package": str(package),
            "version": version,
            "sha256": sha256,
            "started_at": self.installer.clock.now(),
            "attempts": 0,
            "target": self.installer.running.slot.other.value,
            "verification_failed": False,
            "detail": "",
            "verification_s": 0.0,
            "outcome": None,
        }
        return self._install(journal)

    def resume(self) -> InstallOutcome | None:
        """After `Installer.power_on`: the pending outcome (None: nothing was
        under way). An outcome is returned again until `acknowledge()`."""
        journal = self.flash.read_record(JOURNAL)
        if journal is None:
            return None
        if journal["outcome"] is not None:
            return InstallOutcome.from_json(journal["outcome"])
        return self._after_boot(journal, self.installer.running)

    def acknowledge(self) -> None:
        """The outcome was reported: forget the installation."""
        self.flash.remove_record(JOURNAL)

    # -- the walk -------------------------------------------------------------

    def _install(self, journal: dict[str, Any]) -> InstallOutcome:
        journal["attempts"] += 1
        journal["target"] = self.installer.running.slot.other.value
        self.flash.write_record(JOURNAL, journal)
        result = self.installer.install(
            Path(journal["package"]), version=journal["version"], sha256=journal["sha256"]
        )
        if result.failure is not None:
            return self._finish(journal, OTAStatus.FAILED, result.failure, result.detail)
        return self._after_boot(journal, self.installer.reboot())

    def _after_boot(self, journal: dict[str, Any], boot: BootReport) -> InstallOutcome:
        target = Slot(journal["target"])
        env = self.flash.read_env()
        if boot.slot is not target and env.state(target) is SlotState.BAD:
            if journal["verification_failed"]:
                return self._finish(
                    journal,
                    OTAStatus.ROLLED_BACK,
                    OTAStatus.POST_INSTALL_VERIFICATION_FAILED,
                    journal["detail"],
                )
            # U-Boot falls back only after bootlimit failed boots; if the power
            # failed after altbootcmd, this boot no longer saw them.
            attempts = boot.boot_attempts if boot.fell_back else env.bootlimit
            detail = f"the new slot failed {attempts} boots"
            return self._finish(
                journal, OTAStatus.ROLLED_BACK, OTAStatus.BOOT_FAILURE, detail, attempts
            )
        if boot.slot is target and boot.trial:
            if not journal["verification_failed"]:
                verification = self.installer.verify(journal["version"])
                journal["verification_s"] = verification.duration_s
                if verification.ok:
                    self.installer.commit()
                    return self._finish(journal, OTAStatus.COMPLETED, OTAStatus.REASON_UNSPECIFIED)
                journal["verification_failed"], journal["detail"] = True, verification.detail
                self.flash.write_record(JOURNAL, journal)  # the verdict, before acting on it
            return self._after_boot(journal, self.installer.roll_back())
        if boot.slot is target and env.state(target) is SlotState.GOOD:
            return self._finish(journal, OTAStatus.COMPLETED, OTAStatus.REASON_UNSPECIFIED)
        # The bootloader was never armed: the old slot runs; install again.
        if journal["attempts"] >= self.max_attempts:
            detail = f"the installation was interrupted {journal['attempts']} times"
            return self._finish(journal, OTAStatus.FAILED, OTAStatus.FLASH_WRITE_FAILURE, detail)
        return self._install(journal)

    def _finish(
        self,
        journal: dict[str, Any],
        state: State,
        reason: Reason,
        detail: str = "",
        attempts: int | None = None,
    ) -> InstallOutcome:
        """The outcome, kept in the journal. `attempts`: boot attempts for a
        BOOT_FAILURE, else the installation attempts."""
        outcome = InstallOutcome(
            update_id=journal["update_id"],
            state=state,
            reason=reason,
            installed_version=self.installer.installed_version(),
            running_slot=self.installer.running.slot.value,
            attempts=attempts if attempts is not None else journal["attempts"],
            install_duration_s=self.installer.clock.now() - journal["started_at"],
            verification_duration_s=journal["verification_s"],
            detail=detail,
        )
        journal["outcome"] = outcome.to_json()
        self.flash.write_record(JOURNAL, journal)
        return outcome
