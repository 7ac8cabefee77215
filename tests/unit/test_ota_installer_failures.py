"""Installation on the modelled A/B flash: one test per FMEA row, and the happy path."""

from __future__ import annotations

from dataclasses import astuple, fields
from pathlib import Path

import pytest
from ota_flash_harness import NEW, OLD, SimVehicle, image, runs_a_safe_slot, true_version

from v2c.contract.errors import Conflict
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.errors import Unbootable
from v2c.vehicle_sim.ota.agent import effects
from v2c.vehicle_sim.ota.agent.bootloader import Slot, SlotState
from v2c.vehicle_sim.ota.agent.steps import InstallStep, PostInstallCheck
from v2c.vehicle_sim.ota.device.clock import ScaledClock
from v2c.vehicle_sim.ota.device.faults import (
    BootFailure,
    CriticalDtc,
    Extraction,
    FlashWrite,
    PartitionUnavailable,
    VehicleFaults,
    VerificationFailure,
)
from v2c.vehicle_sim.ota.device.installer import BootReport, InstallTimings
from v2c.vehicle_sim.ota.device.package import build_package
from v2c.vehicle_sim.ota.device.session import InstallSession

ARM_STEPS = [
    InstallStep.PRECHECK,
    InstallStep.BACKUP,
    InstallStep.EXTRACT,
    InstallStep.WRITE,
    InstallStep.BOOT_FLAGS,
]


def assert_untouched(vehicle: SimVehicle) -> None:
    """Still on the old slot, committed, and it boots there again."""
    installer, boot = vehicle.power_on()
    assert (boot.slot, boot.running_version, boot.trial) == (Slot.A, OLD, False)
    assert true_version(installer) == OLD
    env = vehicle.env()
    assert env.upgrade_available is False
    assert env.state(Slot.A) is SlotState.GOOD


def test_a_clean_installation_completes_on_the_new_slot_with_simulated_durations(
    tmp_path: Path,
) -> None:
    vehicle = SimVehicle(tmp_path)
    outcome = vehicle.run()

    assert outcome.state == OTAStatus.COMPLETED
    assert outcome.reason == OTAStatus.REASON_UNSPECIFIED
    assert (outcome.installed_version, outcome.running_slot) == (NEW, "B")
    t = InstallTimings()
    arm = t.precheck + t.backup + t.extract + t.write + t.boot_flags
    assert outcome.install_duration_s == arm + t.boot + t.verify + t.commit  # 625 s simulated
    assert outcome.verification_duration_s == t.verify
    env = vehicle.env()
    assert (env.boot_partition, env.fallback_partition) == (Slot.B, Slot.A)
    assert env.state(Slot.B) is SlotState.GOOD
    assert env.state(Slot.A) is SlotState.GOOD
    assert env.upgrade_available is False
    assert env.bootcount == 0
    status = outcome.to_status()
    assert (status.state, status.installed_version, status.install_duration_ms) == (
        OTAStatus.COMPLETED,
        NEW,
        625_000,
    )
    # And the next power-on runs the new version, committed.
    installer, boot = vehicle.power_on()
    assert (boot.slot, boot.running_version, boot.trial) == (Slot.B, NEW, False)
    assert runs_a_safe_slot(installer)


def test_the_next_update_goes_to_the_other_slot(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path)
    vehicle.run()
    InstallSession(vehicle.power_on()[0]).acknowledge()
    vehicle.package.write_bytes(build_package("3.0.0", image("3.0.0")))
    installer, _ = vehicle.power_on()
    outcome = InstallSession(installer).run(vehicle.package, update_id="upd-2", version="3.0.0")
    assert (outcome.state, outcome.installed_version, outcome.running_slot) == (
        OTAStatus.COMPLETED,
        "3.0.0",
        "A",
    )
    assert vehicle.env().fallback_partition is Slot.B


def test_install_reports_each_arming_step_with_the_agents_progress(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path)
    installer, _ = vehicle.power_on()
    seen: list[InstallStep] = []
    result = installer.install(vehicle.package, version=NEW, on_step=seen.append)
    assert result.ok
    assert result.target is Slot.B
    assert result.version == NEW
    assert seen == ARM_STEPS
    # The runtime maps these onto the agent's progress steps by name.
    assert [effects.InstallStep[s.name].value for s in seen] == [s.percent for s in seen]


def test_critical_dtc_fails_before_anything_is_written(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path, VehicleFaults.of(CriticalDtc(code="P0601")))
    slot_b_before = vehicle.flash().slot_path(Slot.B).read_bytes()
    outcome = vehicle.run()
    assert (outcome.state, outcome.reason) == (OTAStatus.FAILED, OTAStatus.CRITICAL_DTC_PRESENT)
    assert "P0601" in outcome.detail
    assert outcome.installed_version == OLD
    assert vehicle.flash().slot_path(Slot.B).read_bytes() == slot_b_before
    assert_untouched(vehicle)


@pytest.mark.parametrize("kind", ["corrupt", "no_space"])
def test_extraction_failure_is_detected_and_reported(tmp_path: Path, kind: str) -> None:
    vehicle = SimVehicle(tmp_path, VehicleFaults.of(Extraction(kind=kind)))  # type: ignore[arg-type]
    outcome = vehicle.run()
    assert (outcome.state, outcome.reason) == (OTAStatus.FAILED, OTAStatus.EXTRACTION_FAILED)
    assert ("space" in outcome.detail) == (kind == "no_space")
    assert not vehicle.flash().staging_path.exists()
    assert_untouched(vehicle)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "flipped byte", "not a package", "other version"],
)
def test_a_damaged_package_fails_extraction(tmp_path: Path, damage: str) -> None:
    vehicle = SimVehicle(tmp_path)
    data = bytearray(vehicle.package.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped byte":
        data[len(data) // 2] ^= 0xFF
    elif damage == "not a package":
        data = bytearray(b"garbage" * 100)
    else:
        data = bytearray(build_package("9.9.9", image(NEW)))
    vehicle.package.write_bytes(bytes(data))
    installer, _ = vehicle.power_on()
    result = installer.install(vehicle.package, version=NEW)  # no manifest hash: format checks
    assert result.failure == OTAStatus.EXTRACTION_FAILED
    assert_untouched(vehicle)


def test_a_package_changed_since_download_fails_the_manifest_hash(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path)
    vehicle.package.write_bytes(build_package(NEW, image(NEW, 1000)))  # valid, but not the one
    outcome = vehicle.run()
    assert outcome.reason == OTAStatus.EXTRACTION_FAILED
    assert "SHA-256" in outcome.detail


def test_flash_write_failure_is_found_by_read_back(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path, VehicleFaults.of(FlashWrite()))
    outcome = vehicle.run()
    assert (outcome.state, outcome.reason) == (OTAStatus.FAILED, OTAStatus.FLASH_WRITE_FAILURE)
    assert vehicle.flash().read_slot(Slot.B) is None  # the bad block is really there
    assert vehicle.env().state(Slot.B) is SlotState.UNKNOWN
    assert_untouched(vehicle)


def test_partition_unavailable_fails_the_precheck(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path, VehicleFaults.of(PartitionUnavailable()))
    outcome = vehicle.run()
    assert (outcome.state, outcome.reason) == (OTAStatus.FAILED, OTAStatus.PARTITION_UNAVAILABLE)
    assert_untouched(vehicle)


def test_a_missing_partition_is_unavailable_without_any_fault(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path)
    vehicle.flash().slot_path(Slot.B).unlink()
    assert vehicle.run().reason == OTAStatus.PARTITION_UNAVAILABLE


def test_verification_failure_reverts_to_the_old_slot(tmp_path: Path) -> None:
    faults = VehicleFaults.of(VerificationFailure(check=PostInstallCheck.SENSOR_CONNECTIVITY))
    vehicle = SimVehicle(tmp_path, faults)
    outcome = vehicle.run()
    assert (outcome.state, outcome.reason) == (
        OTAStatus.ROLLED_BACK,
        OTAStatus.POST_INSTALL_VERIFICATION_FAILED,
    )
    assert outcome.detail == "failed: SENSOR_CONNECTIVITY"
    assert (outcome.installed_version, outcome.running_slot) == (OLD, "A")
    assert vehicle.env().state(Slot.B) is SlotState.BAD
    assert_untouched(vehicle)


def test_verification_runs_the_six_checks_and_compares_the_running_version(
    tmp_path: Path,
) -> None:
    vehicle = SimVehicle(tmp_path)
    installer, _ = vehicle.power_on()
    assert installer.install(vehicle.package, version=NEW).ok
    assert installer.reboot().trial
    passed = installer.verify(NEW)
    assert [check for check, _ in passed.results] == list(PostInstallCheck)
    assert passed.ok
    assert passed.detail == "all tests passed (6/6)"
    wrong = installer.verify("2.5.2")  # the ECU runs something else than expected
    assert wrong.failed == (PostInstallCheck.ECU_FIRMWARE_VERSION,)


def test_boot_failure_falls_back_after_three_attempts(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path, VehicleFaults.of(BootFailure()))
    installer, _ = vehicle.power_on()
    assert installer.install(vehicle.package, version=NEW).ok
    start = vehicle.clock.now()

    boot = installer.reboot()

    assert (boot.slot, boot.running_version) == (Slot.A, OLD)
    assert boot.fell_back
    assert not boot.trial
    assert boot.boot_attempts == 3
    assert boot.watchdog_resets == 3
    t = InstallTimings()
    assert vehicle.clock.now() - start == 4 * t.boot + 3 * t.watchdog  # ~6 min, as the FMEA
    env = vehicle.env()
    assert (env.boot_partition, env.upgrade_available, env.bootcount) == (Slot.A, False, 0)
    assert env.state(Slot.B) is SlotState.BAD
    assert true_version(installer) == OLD


def test_boot_failure_is_reported_as_rolled_back_with_its_attempts(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path, VehicleFaults.of(BootFailure()))
    outcome = vehicle.run()
    assert (outcome.state, outcome.reason, outcome.attempts) == (
        OTAStatus.ROLLED_BACK,
        OTAStatus.BOOT_FAILURE,
        3,
    )
    assert outcome.installed_version == OLD
    assert outcome.to_status().attempts == 3


def test_an_image_that_hangs_twice_boots_on_the_third_attempt(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path, VehicleFaults.of(BootFailure(failed_boots=2)))
    installer, _ = vehicle.power_on()
    assert installer.install(vehicle.package, version=NEW).ok
    boot = installer.reboot()
    assert (boot.slot, boot.trial, boot.boot_attempts, boot.watchdog_resets) == (Slot.B, True, 3, 2)
    assert installer.verify(NEW).ok
    installer.commit()
    assert vehicle.env().state(Slot.B) is SlotState.GOOD


@pytest.mark.parametrize(
    ("hangs", "state", "version"),
    [
        (1, OTAStatus.COMPLETED, NEW),
        (2, OTAStatus.COMPLETED, NEW),
        (3, OTAStatus.ROLLED_BACK, OLD),  # bootlimit hangs: U-Boot gives up
    ],
)
def test_an_image_that_hangs_completes_only_within_the_bootlimit(
    tmp_path: Path, hangs: int, state: int, version: str
) -> None:
    vehicle = SimVehicle(tmp_path, VehicleFaults.of(BootFailure(failed_boots=hangs)))
    outcome = vehicle.run()
    assert (outcome.state, outcome.installed_version) == (state, version)


def test_no_installation_while_an_update_is_on_trial(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path)
    installer, _ = vehicle.power_on()
    assert installer.install(vehicle.package, version=NEW).ok
    installer.reboot()
    with pytest.raises(Conflict):  # it would overwrite the fallback
        installer.install(vehicle.package, version=NEW)


def test_commit_is_idempotent_and_roll_back_after_commit_is_refused_by_the_env(
    tmp_path: Path,
) -> None:
    vehicle = SimVehicle(tmp_path)
    installer, _ = vehicle.power_on()
    installer.install(vehicle.package, version=NEW)
    installer.reboot()
    installer.commit()
    installer.commit()  # the agent re-sends CommitUpdate after a lost confirmation
    assert vehicle.env().state(Slot.B) is SlotState.GOOD
    boot = installer.roll_back()  # nothing on trial: the vehicle just reboots where it is
    assert (boot.slot, boot.running_version) == (Slot.B, NEW)


def test_a_vehicle_with_no_bootable_slot_is_unbootable(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path)
    vehicle.flash().slot_path(Slot.A).write_bytes(b"erased")
    with pytest.raises(Unbootable):
        vehicle.power_on()


def test_a_scaled_clock_spends_scaled_real_time_and_reports_simulated_time() -> None:
    slept: list[float] = []
    wall = [1000.0]

    def sleeper(seconds: float) -> None:
        slept.append(seconds)
        wall[0] += seconds

    clock = ScaledClock(0.001, wall=lambda: wall[0], sleeper=sleeper)
    start = clock.now()
    clock.sleep(620.0)
    assert slept == [pytest.approx(0.62)]
    assert clock.now() - start == pytest.approx(620.0)


def test_boot_report_carries_the_agents_boot_result_fields() -> None:
    names = {f.name for f in fields(effects.BootResult)}
    report = BootReport(Slot.B, NEW, trial=True, boot_attempts=1)
    assert names <= {f.name for f in fields(BootReport)}
    converted = effects.BootResult(**{n: getattr(report, n) for n in names})
    assert astuple(converted) == (NEW, True, False, 1)
