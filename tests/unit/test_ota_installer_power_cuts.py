"""A power cut at every step of the installation, one run each: the vehicle
always comes back on a good partition and reports the version it really runs."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ota_flash_harness import (
    NEW,
    OLD,
    SimVehicle,
    good_slots_intact,
    image,
    runs_a_safe_slot,
    true_version,
)

from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.ota.agent.bootloader import Slot, SlotState
from v2c.vehicle_sim.ota.agent.steps import InstallStep, PowerCut, PowerPlan
from v2c.vehicle_sim.ota.device.faults import (
    BootFailure,
    FaultRule,
    VehicleFaults,
    VerificationFailure,
)
from v2c.vehicle_sim.ota.device.installer import Installer
from v2c.vehicle_sim.ota.device.package import build_package
from v2c.vehicle_sim.ota.device.session import InstallOutcome, InstallSession

BEFORE_ARMED = {
    InstallStep.PRECHECK,
    InstallStep.BACKUP,
    InstallStep.EXTRACT,
    InstallStep.WRITE,
    InstallStep.BOOT_FLAGS,
}
HAPPY_STEPS = [s for s in InstallStep if s is not InstallStep.ROLLBACK]


def cases() -> list[tuple[InstallStep, bool]]:
    out = []
    for step in InstallStep:
        out.append((step, False))
        if step.writes_flash:
            out.append((step, True))
    return out


def assert_finished_on_a_good_slot(installer: Installer, outcome: InstallOutcome) -> None:
    env = installer.flash.read_env()
    slot = installer.running.slot
    assert env.upgrade_available is False
    assert env.boot_partition is slot
    assert env.state(slot) is SlotState.GOOD
    assert outcome.installed_version == true_version(installer) == installer.installed_version()


@pytest.mark.parametrize(("step", "torn"), cases(), ids=lambda v: str(v))
def test_a_power_cut_at_every_step_recovers_on_a_good_slot_with_the_true_version(
    tmp_path: Path, step: InstallStep, torn: bool
) -> None:
    # Given a vehicle whose new image fails verification only when the step
    # under test is the rollback (otherwise nothing else goes wrong)
    rolls_back = step is InstallStep.ROLLBACK
    faults = VehicleFaults.of(VerificationFailure()) if rolls_back else VehicleFaults.none()
    vehicle = SimVehicle(tmp_path, faults)

    # When the power fails at the step (or half-way through its flash write;
    # 1 % of an env write lands inside its variables, a truly torn copy)
    with pytest.raises(PowerCut) as cut:
        vehicle.run(PowerPlan(step, torn=torn, fraction=0.01))
    assert (cut.value.step, cut.value.torn) == (step, torn)

    # Then a new process boots a safe slot and reports what that slot holds
    installer, boot = vehicle.power_on()
    assert runs_a_safe_slot(installer)
    assert good_slots_intact(installer)
    expected = OLD if step in BEFORE_ARMED else NEW
    assert boot.running_version == true_version(installer) == installer.installed_version()
    assert true_version(installer) == expected
    assert boot.trial == (step not in BEFORE_ARMED)

    # And resuming ends on a good slot, with an outcome telling the truth
    outcome = InstallSession(installer).resume()
    assert outcome is not None
    assert_finished_on_a_good_slot(installer, outcome)
    if rolls_back:
        assert (outcome.state, outcome.reason, outcome.installed_version) == (
            OTAStatus.ROLLED_BACK,
            OTAStatus.POST_INSTALL_VERIFICATION_FAILED,
            OLD,
        )
    else:
        assert (outcome.state, outcome.installed_version) == (OTAStatus.COMPLETED, NEW)
        assert outcome.attempts == (2 if step in BEFORE_ARMED else 1)  # installation attempts

    # And the outcome survives until it is acknowledged, across restarts
    again, _ = vehicle.power_on()
    assert InstallSession(again).resume() == outcome
    InstallSession(again).acknowledge()
    assert InstallSession(vehicle.power_on()[0]).resume() is None


@pytest.mark.parametrize("torn", [False, True])
def test_a_power_cut_while_a_broken_image_hangs_still_ends_in_boot_failure(
    tmp_path: Path, torn: bool
) -> None:
    vehicle = SimVehicle(tmp_path, VehicleFaults.of(BootFailure()))
    with pytest.raises(PowerCut):
        vehicle.run(PowerPlan(InstallStep.REBOOT, torn=torn, fraction=0.01))
    installer, boot = vehicle.power_on()
    assert (boot.running_version, boot.fell_back) == (OLD, True)
    assert runs_a_safe_slot(installer)
    outcome = InstallSession(installer).resume()
    assert outcome is not None
    assert (outcome.state, outcome.reason, outcome.attempts) == (
        OTAStatus.ROLLED_BACK,
        OTAStatus.BOOT_FAILURE,
        3,
    )
    assert_finished_on_a_good_slot(installer, outcome)


def test_a_cut_right_after_u_boot_fell_back_still_reports_boot_failure(tmp_path: Path) -> None:
    # Given the power failed before the reboot, and the process that saw
    # U-Boot fall back lost power too, before it could report
    vehicle = SimVehicle(tmp_path, VehicleFaults.of(BootFailure()))
    with pytest.raises(PowerCut):
        vehicle.run(PowerPlan(InstallStep.REBOOT))
    _, first = vehicle.power_on()
    assert first.fell_back
    # When the vehicle powers on again, this boot did not see the fallback
    installer, boot = vehicle.power_on()
    assert (boot.fell_back, boot.running_version) == (False, OLD)
    # Then the outcome is still the boot failure, with U-Boot's attempts
    outcome = InstallSession(installer).resume()
    assert outcome is not None
    assert (outcome.reason, outcome.attempts) == (OTAStatus.BOOT_FAILURE, 3)


@pytest.mark.parametrize("step", [InstallStep.EXTRACT, InstallStep.WRITE])
def test_a_torn_write_over_the_previous_version_never_leaves_it_called_good(
    tmp_path: Path, step: InstallStep
) -> None:
    # Given a completed update: A (old) is the good fallback, B runs
    vehicle = SimVehicle(tmp_path)
    assert vehicle.run().state == OTAStatus.COMPLETED
    InstallSession(vehicle.power_on()[0]).acknowledge()
    vehicle.package.write_bytes(build_package("3.0.0", image("3.0.0")))
    # When the next update's write over A is torn by a power cut
    installer, _ = vehicle.power_on(PowerPlan(step, torn=True))
    with pytest.raises(PowerCut):
        InstallSession(installer).run(vehicle.package, update_id="upd-2", version="3.0.0")
    # Then A is no longer called good, and B still runs
    installer, boot = vehicle.power_on()
    assert good_slots_intact(installer)
    assert vehicle.env().state(Slot.A) is SlotState.UNKNOWN
    assert (boot.slot, boot.running_version) == (Slot.B, NEW)


def test_three_interrupted_installations_give_up(tmp_path: Path) -> None:
    vehicle = SimVehicle(tmp_path)
    with pytest.raises(PowerCut):
        vehicle.run(PowerPlan(InstallStep.WRITE, torn=True))
    for _ in range(2):
        installer, _ = vehicle.power_on(PowerPlan(InstallStep.EXTRACT))
        with pytest.raises(PowerCut):
            InstallSession(installer).resume()
    installer, _ = vehicle.power_on()
    outcome = InstallSession(installer).resume()
    assert outcome is not None
    assert (outcome.state, outcome.reason, outcome.installed_version) == (
        OTAStatus.FAILED,
        OTAStatus.FLASH_WRITE_FAILURE,
        OLD,
    )
    assert "interrupted 3 times" in outcome.detail


cuts = st.lists(
    st.tuples(st.sampled_from(list(InstallStep)), st.booleans(), st.floats(0.0, 0.999)).map(
        lambda t: PowerPlan(t[0], torn=t[1] and t[0].writes_flash, fraction=t[2])
    ),
    max_size=6,
)
fault_sets = st.sampled_from(
    [(), (BootFailure(),), (BootFailure(failed_boots=2),), (VerificationFailure(),)]
)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(fault_sets, cuts)
def test_any_series_of_power_cuts_ends_on_a_good_slot_telling_the_truth(
    rules: tuple[FaultRule, ...], plans: list[PowerPlan]
) -> None:
    # Given a vehicle, its faults, and a power cut in each successive process
    with tempfile.TemporaryDirectory() as tmp:
        vehicle = SimVehicle(Path(tmp), VehicleFaults.of(*rules))
        outcome: InstallOutcome | None = None
        pending = list(plans)
        with contextlib.suppress(PowerCut):
            outcome = vehicle.run(pending.pop(0) if pending else None)
        while outcome is None:
            try:  # U-Boot's own saveenv may be the write the power cut tears
                installer, boot = vehicle.power_on(pending.pop(0) if pending else None)
                # Every boot: a safe slot, reporting its own bytes' version
                assert runs_a_safe_slot(installer)
                assert good_slots_intact(installer)
                assert boot.running_version == true_version(installer)
                outcome = InstallSession(installer).resume()
            except PowerCut:
                continue
            assert outcome is not None

        installer, _ = vehicle.power_on()
        assert_finished_on_a_good_slot(installer, outcome)
        if outcome.state == OTAStatus.COMPLETED:
            assert outcome.installed_version == NEW
        else:
            assert outcome.installed_version == OLD
        if rules == (VerificationFailure(),):
            assert outcome.state != OTAStatus.COMPLETED
        if rules == (BootFailure(),):
            assert outcome.reason in (OTAStatus.BOOT_FAILURE, OTAStatus.FLASH_WRITE_FAILURE)
