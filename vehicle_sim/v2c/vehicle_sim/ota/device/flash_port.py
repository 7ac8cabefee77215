"""The installer as an asyncio port: disk work in a worker thread, simulated time on the loop.

The installer (`installer.py`) is synchronous and spends simulated time
through its clock. Here that clock is a `StepClock`: the installer runs
through at disk speed in one short `asyncio.to_thread` call, recording when
each step began; the port then replays the steps at those simulated moments
and returns when the simulated time of the whole call has passed. A hundred
vehicles installing at once therefore hold no thread while they "wait", and
their reports carry the FMEA's durations (620 s to install), not the
milliseconds the disk took.

A `PowerCut` (the fault profile's `power_cut`) ends a call the same way: the
steps before it are replayed, time runs to the moment of the cut, and the
exception reaches the runtime, which drops everything and boots again from
disk (`power_on`), as a vehicle does. The plan fires once per vehicle: a
marker file keeps a rebuilt runtime from cutting the power again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from v2c.vehicle_sim.ota.agent.steps import InstallStep, PowerCut, PowerPlan
from v2c.vehicle_sim.ota.device.faults import PowerCutFault, VehicleFaults
from v2c.vehicle_sim.ota.device.flash import Flash
from v2c.vehicle_sim.ota.device.installer import (
    BootReport,
    Installer,
    InstallResult,
    InstallTimings,
    Verification,
)
from v2c.vehicle_sim.ota.device.sim_time import SimTime, StepClock

T = TypeVar("T")
FLASH_DIR: Final = "flash"
POWER_CUT_MARKER: Final = "power_cut.fired"
StepCallback = Callable[[InstallStep], None]


def factory_image(vehicle_id: str, version: str, size: int) -> bytes:
    """The image a vehicle leaves the factory with (deterministic, `size` bytes)."""
    seed = f"v2c factory image {vehicle_id} {version}\n".encode()
    return (seed * (size // len(seed) + 1))[:size]


class FlashPort:
    """One vehicle's flash and installer, awaited from the event loop."""

    def __init__(
        self,
        directory: Path,
        faults: VehicleFaults,
        sim: SimTime,
        *,
        durable: bool = False,
        timings: InstallTimings | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.root = self.directory / FLASH_DIR
        self.faults = faults
        self.sim = sim
        self.durable = durable
        self.timings = timings
        self.clock = StepClock(sim)
        self._installer: Installer | None = None
        self._lock = asyncio.Lock()

    # -- power -------------------------------------------------------------------

    @property
    def provisioned(self) -> bool:
        return (self.root / "boot" / "uboot.env").exists()

    @property
    def installer(self) -> Installer:
        if self._installer is None:
            raise RuntimeError("the vehicle is not powered on")
        return self._installer

    @property
    def packages_dir(self) -> Path:
        return self.root / "data" / "ota" / "packages"

    def _power_plan(self) -> PowerPlan:
        fault = self.faults.get(PowerCutFault)
        if fault is None or (self.directory / POWER_CUT_MARKER).exists():
            return PowerPlan()
        return PowerPlan(step=fault.at_step, torn=fault.torn)

    def power_cut_happened(self) -> None:
        """The plan fired: never again for this vehicle (survives a rebuild)."""
        (self.directory / POWER_CUT_MARKER).write_text("1\n", encoding="utf-8")

    async def power_on(self, provision: tuple[str, bytes] | None = None) -> BootReport:
        """Boot from disk (provisioning a factory-fresh flash with `(version,
        image)` first if there is none). A power cut during this boot's own
        flash writes is taken, and the vehicle boots again."""
        while True:
            plan = self._power_plan()

            def boot(_record: StepCallback, plan: PowerPlan = plan) -> tuple[Installer, BootReport]:
                if not self.provisioned:
                    if provision is None:
                        raise RuntimeError(f"no flash at {self.root} and nothing to provision")
                    version, image = provision
                    Flash.provision(self.root, version, image, durable=self.durable)
                flash = Flash(self.root, faults=self.faults, power=plan, durable=self.durable)
                return Installer.power_on(flash, self.clock, self.faults, timings=self.timings)

            try:
                self._installer, report = await self._call(boot)
            except PowerCut:
                self.power_cut_happened()
                continue
            return report

    def power_off(self) -> None:
        """Drop the installer (its flash state is all on disk)."""
        self._installer = None

    # -- the agent's effects ---------------------------------------------------

    async def install(
        self, package: Path, version: str, sha256_hex: str, on_step: StepCallback
    ) -> InstallResult:
        installer = self.installer
        return await self._call(
            lambda record: installer.install(
                package, version=version, sha256=sha256_hex, on_step=record
            ),
            on_step,
        )

    async def reboot(self) -> BootReport:
        installer = self.installer
        return await self._call(lambda _record: installer.reboot())

    async def verify(self, version: str) -> Verification:
        installer = self.installer
        return await self._call(lambda _record: installer.verify(version))

    async def commit(self) -> None:
        installer = self.installer
        await self._call(lambda _record: installer.commit())

    async def roll_back(self) -> BootReport:
        installer = self.installer
        return await self._call(lambda _record: installer.roll_back())

    def running_version(self) -> str:
        return self.installer.installed_version()

    # -- one call ------------------------------------------------------------

    async def _call(
        self, fn: Callable[[StepCallback], T], on_step: StepCallback | None = None
    ) -> T:
        """Run `fn(record)` in a worker thread, then let its simulated time pass
        on the loop, replaying the steps it recorded as they began."""
        async with self._lock:
            steps: list[tuple[InstallStep, float]] = []
            guard = threading.Lock()

            def record(step: InstallStep) -> None:
                with guard:
                    steps.append((step, self.clock.now()))

            self.clock.begin()
            try:
                try:
                    result = await asyncio.to_thread(fn, record)
                except PowerCut:
                    self._installer = None
                    await self._replay(steps, on_step)
                    raise
                await self._replay(steps, on_step)
                return result
            finally:
                self.clock.end()

    async def _replay(
        self, steps: list[tuple[InstallStep, float]], on_step: StepCallback | None
    ) -> None:
        ended = self.clock.now()
        for step, at in steps:
            await self.sim.sleep_until(at)
            if on_step is not None:
                on_step(step)
        await self.sim.sleep_until(ended)
