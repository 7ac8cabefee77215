"""Fault profiles: files validated, selection deterministic, shares accurate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from v2c.contract.errors import ConfigurationError, ValidationFailed
from v2c.vehicle_sim.ota.agent.steps import InstallStep
from v2c.vehicle_sim.ota.device.faults import (
    BootFailure,
    ConnectionLost,
    CriticalDtc,
    FaultMode,
    FaultProfile,
    PowerCutFault,
    VehicleFaults,
)

FLEET = [f"VIN-1HGCM{n:012d}" for n in range(10_000)]
LISTED = "1HGCM82633A004352"


def write(tmp_path: Path, text: str, name: str = "profile.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_builtin_profiles_load() -> None:
    none = FaultProfile.builtin("none")
    assert none.faults.all() == ()
    assert none.for_vehicle(FLEET[0]).modes == frozenset()
    realistic = FaultProfile.builtin("realistic")
    modes = {rule.mode for rule in realistic.faults.all()}
    assert modes == set(FaultMode) - {FaultMode.SIGNATURE_INVALID}
    assert all(0 < rule.share <= 0.05 for rule in realistic.faults.all())
    assert FaultProfile.resolve("realistic") == realistic


def test_a_profile_file_lists_vehicles_and_shares_with_parameters(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
name: bench
seed: s1
faults:
  critical_dtc: {{vins: [{LISTED}], code: P0A1F}}
  connection_lost: {{share: 1.0, at_percent: 40}}
  power_cut: {{share: 0, vins: [VIN-{LISTED}], at_step: boot_flags, torn: true}}
""",
    )
    profile = FaultProfile.load(path)
    listed = profile.for_vehicle(LISTED)  # bare VIN accepted, like the file
    assert listed.vehicle_id == f"VIN-{LISTED}"
    assert listed.modes == {
        FaultMode.CRITICAL_DTC,
        FaultMode.CONNECTION_LOST,
        FaultMode.POWER_CUT,
    }
    dtc = listed.get(CriticalDtc)
    assert dtc is not None
    assert dtc.code == "P0A1F"
    cut = listed.get(PowerCutFault)
    assert cut is not None
    assert (cut.at_step, cut.torn) == (InstallStep.BOOT_FLAGS, True)
    other = profile.for_vehicle(FLEET[1])
    assert other.modes == {FaultMode.CONNECTION_LOST}
    lost = other.get(ConnectionLost)
    assert lost is not None
    assert lost.at_percent == 40
    assert other.get(BootFailure) is None
    assert FaultMode.CONNECTION_LOST in other
    assert FaultMode.BOOT_FAILURE not in other


def test_json_files_have_the_same_format(tmp_path: Path) -> None:
    doc = {"name": "j", "seed": "x", "faults": {"boot_failure": {"share": 0.5}}}
    path = write(tmp_path, json.dumps(doc), "profile.json")
    assert FaultProfile.load(path).faults.boot_failure == BootFailure(share=0.5)


def test_selection_is_deterministic_and_follows_the_seed() -> None:
    first = FaultProfile.parse({"seed": "a", "faults": {"boot_failure": {"share": 0.1}}})
    again = FaultProfile.parse({"seed": "a", "faults": {"boot_failure": {"share": 0.1}}})
    reseeded = FaultProfile.parse({"seed": "b", "faults": {"boot_failure": {"share": 0.1}}})

    def chosen(profile: FaultProfile) -> set[str]:
        return {vin for vin in FLEET[:2000] if FaultMode.BOOT_FAILURE in profile.for_vehicle(vin)}

    assert chosen(first) == chosen(again)
    assert chosen(first) != chosen(reseeded)


@pytest.mark.parametrize("share", [0.01, 0.02, 0.1, 0.5])
def test_the_selected_share_of_10000_vehicles_matches_within_five_sigma(share: float) -> None:
    profile = FaultProfile.parse(
        {"seed": "fleet", "faults": {"boot_failure": {"share": share}, "in_use": {"share": share}}}
    )
    counts = profile.tally(FLEET)
    sigma = math.sqrt(len(FLEET) * share * (1 - share))
    for mode in (FaultMode.BOOT_FAILURE, FaultMode.IN_USE):
        assert abs(counts[mode] - len(FLEET) * share) <= 5 * sigma


def test_modes_are_drawn_independently() -> None:
    profile = FaultProfile.parse(
        {"seed": "x", "faults": {"boot_failure": {"share": 0.5}, "in_use": {"share": 0.5}}}
    )
    both = sum(
        1
        for vin in FLEET
        if {FaultMode.BOOT_FAILURE, FaultMode.IN_USE} <= profile.for_vehicle(vin).modes
    )
    assert abs(both - 2500) <= 5 * math.sqrt(10_000 * 0.25 * 0.75)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("faults: {boot_failur: {share: 0.1}}", "faults.boot_failur: Extra inputs"),
        ("faults: {boot_failure: {share: 1.5}}", "faults.boot_failure.share"),
        ("faults: {boot_failure: {failed_boots: 0}}", "faults.boot_failure.failed_boots"),
        ("faults: {critical_dtc: {code: X9}}", "faults.critical_dtc.code"),
        ("faults: {in_use: {vins: [NOT-A-VIN]}}", "is not a VIN"),
        ("faults: {power_cut: {at_step: lunch}}", "faults.power_cut.at_step"),
        ("faults: {extraction: {kind: melted}}", "faults.extraction.kind"),
        ("colour: red", "colour: Extra inputs"),
        ("- a list", "expected a mapping"),
        ("faults: {boot_failure: [", "not valid syntax"),
        ("", "expected a mapping"),
    ],
)
def test_bad_files_are_refused_naming_the_file_and_the_field(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError, match=problem) as error:
        FaultProfile.load(path)
    assert str(path) in str(error.value)


def test_missing_files_and_unknown_builtins_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        FaultProfile.load(tmp_path / "absent.yaml")
    with pytest.raises(ConfigurationError, match="no built-in fault profile"):
        FaultProfile.builtin("chaos")


def test_vehicle_faults_given_directly() -> None:
    faults = VehicleFaults.of(BootFailure(failed_boots=2), CriticalDtc())
    assert faults.modes == {FaultMode.BOOT_FAILURE, FaultMode.CRITICAL_DTC}
    rule = faults.get(BootFailure)
    assert rule is not None
    assert rule.failed_boots == 2
    with pytest.raises(ConfigurationError):
        VehicleFaults.of(BootFailure(), BootFailure())
    with pytest.raises(ValidationFailed):
        FaultProfile().for_vehicle("nope")
