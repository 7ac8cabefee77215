"""The acceptance checks as pure functions: each verdict, and the spec's order."""

from __future__ import annotations

import pytest
from ota_agent_harness import (
    DAY_MS,
    MIB,
    SIZE,
    T0_MS,
    good_conditions,
    other_signer,
    signer,
    trusted_keys,
)
from signing_helpers import flip_bit, make_manifest

from v2c.contract.errors import ValidationFailed
from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.handlers.signing.manifest import sign_manifest
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus, OTAUpdateAvailable
from v2c.vehicle_sim.ota.agent.checks import (
    AgentPolicy,
    Decision,
    Stage,
    authenticate,
    check_manifest,
    check_preconditions,
    check_version,
    evaluate,
    utc,
)
from v2c.vehicle_sim.ota.agent.vehicle_state import Gear, VehicleConditions

S = OTAStatus
NOW = T0_MS
POLICY = AgentPolicy()


def manifest(**overrides: object) -> OTAManifest:
    fields: dict[str, object] = {
        "version": "2.5.0",
        "size_bytes": SIZE,
        "min_battery_level": 30,
        "expires_at": NOW + DAY_MS,
        "target_model": "Accord",
        "target_hardware_id": "HW-7",
    }
    fields.update(overrides)
    return make_manifest(**fields)


def signed(**overrides: object) -> OTAUpdateAvailable:
    return sign_manifest(signer(), manifest(**overrides))


@pytest.fixture(scope="module")
def trusted() -> TrustedKeySet:
    return trusted_keys()


def test_a_genuine_manifest_verifies_and_is_accepted(trusted: TrustedKeySet) -> None:
    parsed, verdict = evaluate(signed(), good_conditions(), trusted, POLICY, NOW)
    assert verdict.decision is Decision.ACCEPT
    assert parsed is not None
    assert parsed.version == "2.5.0"


@pytest.mark.parametrize(
    ("field", "index"),
    [("manifest", 5), ("manifest", -1), ("signature", 10), ("signature", -1)],
)
def test_one_flipped_bit_in_manifest_or_signature_is_rejected(
    trusted: TrustedKeySet, field: str, index: int
) -> None:
    notification = signed()
    setattr(notification, field, flip_bit(getattr(notification, field), index))
    result = authenticate(notification, trusted, NOW)
    assert not isinstance(result, OTAManifest)
    assert (result.decision, result.reason) == (
        Decision.REJECT,
        S.SIGNATURE_VERIFICATION_FAILED,
    )


def test_a_key_outside_the_trusted_set_is_rejected(trusted: TrustedKeySet) -> None:
    forged = sign_manifest(other_signer(), manifest())
    result = authenticate(forged, trusted, NOW)
    assert not isinstance(result, OTAManifest)
    assert result.reason == S.SIGNATURE_VERIFICATION_FAILED
    assert "not in the trusted key set" in result.detail


def test_a_key_before_its_window_is_rejected() -> None:
    late = TrustedKeySet([TrustedKey.from_pem(signer().public_key_pem(), utc(NOW + DAY_MS))])
    result = authenticate(signed(), late, NOW)
    assert not isinstance(result, OTAManifest)
    assert result.reason == S.SIGNATURE_VERIFICATION_FAILED


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"expires_at": NOW}, S.MANIFEST_EXPIRED),
        ({"expires_at": NOW - 1}, S.MANIFEST_EXPIRED),
        ({"expires_at": 0}, S.MANIFEST_EXPIRED),
        ({"target_model": "Civic"}, S.MODEL_MISMATCH),
        ({"target_model": ""}, S.MODEL_MISMATCH),
        ({"target_hardware_id": "HW-8"}, S.MODEL_MISMATCH),
        ({"version": "2.4.1"}, S.VERSION_DOWNGRADE),
        ({"version": "2.4.0"}, S.VERSION_DOWNGRADE),
        ({"version": "2.4.1+build.7"}, S.VERSION_DOWNGRADE),
        ({"version": "not-a-version"}, S.REASON_UNSPECIFIED),
    ],
)
def test_manifest_refusals(overrides: dict[str, object], reason: int) -> None:
    verdict = check_manifest(manifest(**overrides), good_conditions(), NOW)
    assert (verdict.decision, verdict.reason) == (Decision.REJECT, reason)
    assert verdict.detail


def test_any_hardware_of_the_model_when_the_manifest_names_none() -> None:
    verdict = check_manifest(manifest(target_hardware_id=""), good_conditions(), NOW)
    assert verdict.accepted


def test_semver_precedence_not_text_order_decides_newer() -> None:
    assert check_version(manifest(version="2.10.0"), "2.9.0").accepted
    assert not check_version(manifest(version="2.9.0"), "2.10.0").accepted
    assert not check_version(manifest(version="2.5.0-rc.1"), "2.5.0").accepted


def test_a_signed_rollback_may_go_down_but_not_below_a_floor() -> None:
    rollback = manifest(version="2.3.0", is_rollback=True)
    assert check_version(rollback, "2.4.1").accepted
    floored = manifest(version="2.3.0", is_rollback=True, min_installed_version="2.4.0")
    verdict = check_version(floored, "2.4.1")
    assert verdict.reason == S.VERSION_DOWNGRADE
    assert "floor" in verdict.detail
    # The vehicle's own floor (from an update it completed) binds an older manifest too.
    assert check_version(rollback, "2.4.1", rollback_floor="2.4.0").reason == (S.VERSION_DOWNGRADE)


def test_storage_must_cover_the_package_and_the_larger_buffer() -> None:
    m = manifest(size_bytes=100 * MIB)
    # Fixed 50 MiB beats 10 % of 100 MiB: the FMEA's "100MB + 50MB buffer".
    assert POLICY.required_storage(100 * MIB) == 150 * MIB
    assert POLICY.required_storage(1000 * MIB) == 1100 * MIB
    enough = good_conditions(free_storage_bytes=150 * MIB)
    short = good_conditions(free_storage_bytes=150 * MIB - 1)
    assert check_preconditions(m, enough, POLICY, Stage.ACCEPT).accepted
    verdict = check_preconditions(m, short, POLICY, Stage.ACCEPT)
    assert (verdict.decision, verdict.reason) == (Decision.REJECT, S.INSUFFICIENT_STORAGE)
    # Storage no longer matters once the package is on board.
    assert check_preconditions(m, short, POLICY, Stage.INSTALL).accepted


def test_low_battery_defers_unless_charging() -> None:
    m = manifest(min_battery_level=30)
    low = good_conditions(battery_percent=25)
    verdict = check_preconditions(m, low, POLICY, Stage.ACCEPT)
    assert (verdict.decision, verdict.reason, verdict.retry_after_s) == (
        Decision.DEFER,
        S.INSUFFICIENT_BATTERY,
        3600,
    )
    assert check_preconditions(m, low.with_(charging=True), POLICY, Stage.ACCEPT).accepted
    strict = AgentPolicy(charging_satisfies_battery=False)
    assert not check_preconditions(m, low.with_(charging=True), strict, Stage.ACCEPT).accepted
    assert check_preconditions(m, low.with_(battery_percent=30), POLICY, Stage.ACCEPT).accepted


@pytest.mark.parametrize(
    "changes",
    [{"speed_kmh": 65.0, "gear": Gear.DRIVE}, {"ignition_on": True}, {"gear": Gear.NEUTRAL}],
)
def test_vehicle_in_use_defers_unless_the_manifest_allows_driving(
    changes: dict[str, object],
) -> None:
    busy = good_conditions(**changes)
    verdict = check_preconditions(manifest(), busy, POLICY, Stage.INSTALL)
    assert (verdict.decision, verdict.reason) == (Decision.DEFER, S.VEHICLE_IN_USE)
    assert verdict.retry_after_s == POLICY.in_use_retry_after_s
    allowed = manifest(can_install_while_driving=True)
    assert check_preconditions(allowed, busy, POLICY, Stage.INSTALL).accepted
    # The download may run while driving when the policy says so.
    relaxed = AgentPolicy(defer_download_while_in_use=False)
    assert check_preconditions(manifest(), busy, relaxed, Stage.ACCEPT).accepted
    assert not check_preconditions(manifest(), busy, relaxed, Stage.INSTALL).accepted


def test_a_critical_dtc_blocks_only_the_installation() -> None:
    sick = good_conditions(critical_dtcs=("P0601",))
    assert check_preconditions(manifest(), sick, POLICY, Stage.ACCEPT).accepted
    verdict = check_preconditions(manifest(), sick, POLICY, Stage.INSTALL)
    assert (verdict.decision, verdict.reason) == (Decision.REJECT, S.CRITICAL_DTC_PRESENT)
    assert "P0601" in verdict.detail


def test_refusals_for_good_come_before_deferrals(trusted: TrustedKeySet) -> None:
    # Low battery, moving, short of storage and a downgrade at once: the
    # downgrade is reported, because waiting would not change it.
    everything_wrong = good_conditions(
        battery_percent=5, speed_kmh=80, gear=Gear.DRIVE, free_storage_bytes=0
    )
    _, verdict = evaluate(signed(version="2.0.0"), everything_wrong, trusted, POLICY, NOW)
    assert verdict.reason == S.VERSION_DOWNGRADE
    _, verdict = evaluate(signed(), everything_wrong, trusted, POLICY, NOW)
    assert verdict.reason == S.INSUFFICIENT_STORAGE
    _, verdict = evaluate(
        signed(), everything_wrong.with_(free_storage_bytes=10 * SIZE), trusted, POLICY, NOW
    )
    assert verdict.reason == S.INSUFFICIENT_BATTERY


def test_conditions_and_policy_refuse_nonsense() -> None:
    with pytest.raises(ValidationFailed):
        VehicleConditions(installed_version="two", model="Accord", free_storage_bytes=0)
    with pytest.raises(ValidationFailed):
        good_conditions(battery_percent=101)
    with pytest.raises(ValidationFailed):
        good_conditions(speed_kmh=-1)
    with pytest.raises(ValidationFailed):
        AgentPolicy(progress_step_percent=0)
    assert good_conditions().parked
    assert not good_conditions(speed_kmh=3).parked
