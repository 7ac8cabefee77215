"""What a simulated vehicle is doing over (simulated) time, driven by its faults.

The update agent decides on `VehicleConditions` values; something has to
produce them. On a real vehicle that is the diagnostics service; here it is
this model, a pure function of the simulated time since the vehicle started
and the vehicle's fault set:

* no fault: parked, ignition off, battery at `battery_percent`, plenty of storage;
* `low_battery`: the battery starts at the fault's level, not charging; the
  driver plugs in `plug_in_after_s` later and it charges at
  `charge_percent_per_h` (charging satisfies the agent's battery check);
* `in_use`: driving at the fault's speed, ignition on, gear D, for the
  fault's `duration_s`, then parked;
* `low_storage`: free storage is the fault's `free_bytes`;
* `critical_dtc`: the fault's code is active from the start.

The conditions change at known moments only (plugging in, parking), so the
runtime does not poll: it asks `next_change(now)` and wakes the agent then
(`on_conditions_changed`). Between those moments the battery of a charging
vehicle still rises, and a fresh `at(now)` shows it whenever the agent asks.

When the story starts: at the first update offered, not when the vehicle
boots. A fault that makes the vehicle defer is about the moment an update
arrives ("the car is being driven when the update comes"), and the time
from boot to the first notification is real time (connecting, the cloud
creating the campaign), which at a simulated scale of 500x is many
simulated minutes on a loaded machine and none on an idle one. Until
`begin(now)` (the runtime calls it when the agent first looks at an offered
update) the vehicle stays as it started: driving, or low and unplugged;
the faults' durations count from then, in simulated time only. A model
given `started_at_s` starts at once, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from v2c.vehicle_sim.ota.agent.vehicle_state import Gear, VehicleConditions
from v2c.vehicle_sim.ota.device.faults import (
    CriticalDtc,
    InUse,
    LowBattery,
    LowStorage,
    VehicleFaults,
)

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class ConditionsPlan:
    """The healthy vehicle, and how a faulty one recovers (simulated seconds)."""

    battery_percent: float = 80.0
    free_storage_bytes: int = 16 * GIB
    plug_in_after_s: float = 900.0  # a low-battery vehicle is plugged in 15 minutes later
    charge_percent_per_h: float = 40.0


class VehicleModel:
    """One vehicle's conditions as a function of simulated time.

    `installed_version` is the one mutable part: the runtime sets it from
    the bootloader after every boot, so the agent always sees the version
    the vehicle actually runs.
    """

    def __init__(
        self,
        *,
        model: str,
        installed_version: str,
        faults: VehicleFaults,
        started_at_s: float | None = None,
        hardware_id: str = "",
        plan: ConditionsPlan | None = None,
    ) -> None:
        self.model = model
        self.hardware_id = hardware_id
        self.installed_version = installed_version
        self.faults = faults
        self.started_at_s = started_at_s
        self.plan = plan or ConditionsPlan()
        self._low_battery = faults.get(LowBattery)
        self._in_use = faults.get(InUse)
        storage = faults.get(LowStorage)
        self._free = storage.free_bytes if storage is not None else self.plan.free_storage_bytes
        dtc = faults.get(CriticalDtc)
        self._dtcs = (dtc.code,) if dtc is not None else ()

    @property
    def started(self) -> bool:
        return self.started_at_s is not None

    def begin(self, now_s: float) -> bool:
        """Start the faults' story at `now_s` (the first offered update);
        True the first time, False once it runs."""
        if self.started_at_s is not None:
            return False
        self.started_at_s = now_s
        return True

    @property
    def plugged_in_at_s(self) -> float | None:
        if self._low_battery is None or self.started_at_s is None:
            return None
        return self.started_at_s + self.plan.plug_in_after_s

    @property
    def parks_at_s(self) -> float | None:
        if self._in_use is None or self.started_at_s is None:
            return None
        return self.started_at_s + self._in_use.duration_s

    def at(self, now_s: float) -> VehicleConditions:
        battery, charging = self.plan.battery_percent, False
        plug = self.plugged_in_at_s  # None: not low, or the story has not started
        if self._low_battery is not None:
            battery = self._low_battery.battery_percent
            if plug is not None and now_s >= plug:
                charging = True
                gained = (now_s - plug) / 3600 * self.plan.charge_percent_per_h
                battery = min(100.0, battery + gained)
        parks = self.parks_at_s  # None: not in use, or driving until the story starts
        driving = self._in_use is not None and (parks is None or now_s < parks)
        return VehicleConditions(
            installed_version=self.installed_version,
            model=self.model,
            hardware_id=self.hardware_id,
            free_storage_bytes=self._free,
            battery_percent=round(battery, 1),
            charging=charging,
            speed_kmh=self._in_use.speed_kmh if driving and self._in_use else 0.0,
            ignition_on=driving,
            gear=Gear.DRIVE if driving else Gear.PARK,
            critical_dtcs=self._dtcs,
        )

    def next_change(self, now_s: float) -> float | None:
        """The next simulated moment the agent should hear about, if any."""
        moments = [t for t in (self.plugged_in_at_s, self.parks_at_s) if t is not None]
        upcoming = [t for t in moments if t > now_s]
        return min(upcoming) if upcoming else None
