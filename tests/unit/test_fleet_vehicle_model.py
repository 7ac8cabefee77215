"""A simulated vehicle's conditions over simulated time, driven by its faults."""

from __future__ import annotations

import pytest

from v2c.vehicle_sim.ota.agent.vehicle_state import Gear
from v2c.vehicle_sim.ota.device.faults import (
    CriticalDtc,
    InUse,
    LowBattery,
    LowStorage,
    VehicleFaults,
)
from v2c.vehicle_sim.ota.device.vehicle_model import ConditionsPlan, VehicleModel

T0 = 1_800_000_000.0


def model(*faults: object, plan: ConditionsPlan | None = None) -> VehicleModel:
    return VehicleModel(
        model="Accord",
        installed_version="1.0.0",
        faults=VehicleFaults.of(*faults),  # type: ignore[arg-type]
        started_at_s=T0,
        plan=plan,
    )


def test_a_healthy_vehicle_is_parked_charged_and_never_changes() -> None:
    vehicle = model()
    now = vehicle.at(T0)
    assert (now.parked, now.in_use, now.charging) == (True, False, False)
    assert now.battery_percent == 80.0
    assert now.critical_dtcs == ()
    assert vehicle.next_change(T0) is None


def test_a_low_battery_vehicle_is_plugged_in_later_and_charges() -> None:
    vehicle = model(LowBattery(battery_percent=12), plan=ConditionsPlan(plug_in_after_s=900))
    assert vehicle.at(T0).battery_percent == 12
    assert not vehicle.at(T0 + 899).charging
    assert vehicle.next_change(T0) == T0 + 900
    plugged = vehicle.at(T0 + 900 + 1800)  # half an hour at 40 %/h
    assert plugged.charging
    assert plugged.battery_percent == pytest.approx(32.0)
    assert vehicle.next_change(T0 + 900) is None
    assert vehicle.at(T0 + 10 * 3600).battery_percent == 100.0


def test_a_vehicle_in_use_drives_for_the_faults_duration_then_parks() -> None:
    vehicle = model(InUse(speed_kmh=45, duration_s=600))
    driving = vehicle.at(T0 + 1)
    assert driving.in_use
    assert (driving.speed_kmh, driving.ignition_on, driving.gear) == (45, True, Gear.DRIVE)
    assert vehicle.next_change(T0) == T0 + 600
    parked = vehicle.at(T0 + 600)
    assert parked.parked
    assert not parked.in_use


def test_storage_and_diagnostic_faults_are_there_from_the_start() -> None:
    vehicle = model(LowStorage(free_bytes=1234), CriticalDtc(code="P0601"))
    now = vehicle.at(T0)
    assert now.free_storage_bytes == 1234
    assert now.critical_dtcs == ("P0601",)


def test_the_version_the_agent_sees_is_the_one_the_runtime_set_after_boot() -> None:
    vehicle = model()
    vehicle.installed_version = "2.0.0"
    assert vehicle.at(T0).installed_version == "2.0.0"


def test_without_a_start_the_faults_story_waits_for_the_first_offered_update() -> None:
    # However much (simulated) time passes before an update is offered, a
    # vehicle in use is still driving and a low one still unplugged: the
    # offer starts the story, so what the agent sees does not depend on how
    # long connecting and creating the campaign took in real time.
    vehicle = VehicleModel(
        model="Accord",
        installed_version="1.0.0",
        faults=VehicleFaults.of(InUse(duration_s=600), LowBattery(battery_percent=12)),
    )
    later = T0 + 10 * 86_400
    assert not vehicle.started
    assert vehicle.at(later).in_use
    assert vehicle.at(later).battery_percent == 12
    assert not vehicle.at(later).charging
    assert vehicle.next_change(later) is None

    assert vehicle.begin(later)
    assert not vehicle.begin(later + 5)  # only the first offer starts it
    assert vehicle.at(later + 599).in_use
    assert vehicle.next_change(later) == later + 600
    assert vehicle.at(later + 600).parked
    assert vehicle.at(later + 900).charging
    assert vehicle.next_change(later + 600) == later + 900
