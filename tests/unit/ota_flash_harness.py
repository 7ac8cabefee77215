"""A simulated vehicle on a temporary A/B flash, for the installer tests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from v2c.vehicle_sim.ota.agent.bootloader import BootEnv, SlotState
from v2c.vehicle_sim.ota.agent.steps import PowerPlan
from v2c.vehicle_sim.ota.device.clock import ManualClock
from v2c.vehicle_sim.ota.device.faults import VehicleFaults
from v2c.vehicle_sim.ota.device.flash import Flash
from v2c.vehicle_sim.ota.device.installer import BootReport, Installer
from v2c.vehicle_sim.ota.device.package import build_package
from v2c.vehicle_sim.ota.device.session import InstallOutcome, InstallSession

OLD, NEW = "2.0.0", "2.5.1"


def image(version: str, size: int = 64 * 1024) -> bytes:
    """Distinct, deterministic image bytes per version."""
    seed = hashlib.sha256(version.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@dataclass
class SimVehicle:
    root: Path
    faults: VehicleFaults = field(default_factory=VehicleFaults.none)
    durable: bool = False
    clock: ManualClock = field(default_factory=ManualClock)

    def __post_init__(self) -> None:
        Flash.provision(self.root / "flash", OLD, image(OLD), durable=self.durable)
        self.package = self.root / "update.swu"
        self.package.write_bytes(build_package(NEW, image(NEW)))
        self.package_sha256 = hashlib.sha256(self.package.read_bytes()).hexdigest()

    def flash(self, power: PowerPlan | None = None) -> Flash:
        """The flash as a new process sees it, with this run's power supply."""
        return Flash(self.root / "flash", faults=self.faults, power=power, durable=self.durable)

    def power_on(self, power: PowerPlan | None = None) -> tuple[Installer, BootReport]:
        return Installer.power_on(self.flash(power), self.clock, self.faults)

    def env(self) -> BootEnv:
        return self.flash().read_env()

    def run(self, power: PowerPlan | None = None) -> InstallOutcome:
        installer, _ = self.power_on(power)
        return InstallSession(installer).run(
            self.package, update_id="upd-1", version=NEW, sha256=self.package_sha256
        )


def runs_a_safe_slot(installer: Installer) -> bool:
    """Good in the env, or the trial U-Boot may still try."""
    env = installer.flash.read_env()
    slot = installer.running.slot
    if slot is not env.boot_partition:
        return False  # the next power-on would boot something else
    if env.upgrade_available:
        return 1 <= env.bootcount <= env.bootlimit
    return env.state(slot) is SlotState.GOOD


def true_version(installer: Installer) -> str:
    """What the running slot's bytes are, read independently of the report."""
    image_ = installer.flash.read_slot(installer.running.slot)
    assert image_ is not None
    return image_.version


def good_slots_intact(installer: Installer) -> bool:
    """The env never calls a slot good whose bytes do not read back."""
    env = installer.flash.read_env()
    return all(
        installer.flash.read_slot(slot) is not None
        for slot in (env.boot_partition, env.fallback_partition)
        if env.state(slot) is SlotState.GOOD
    )
