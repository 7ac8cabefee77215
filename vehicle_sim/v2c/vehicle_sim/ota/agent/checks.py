"""Whether the vehicle takes an update: accept, reject or defer, in the spec's order.

Pure functions of (notification, vehicle conditions, trusted keys, policy,
now). They decide; the agent reports. The order follows the FMEA's phase 2,
with the signature first: signature (`authenticate`), then the agent's own
concurrency check, then what the signed manifest says about this vehicle
(expiry, model and hardware, version, the update steps it names), then storage, and only then the
conditions that pass by themselves (battery, vehicle in use). Every reason to
refuse for good is found before a reason to wait, so a deferred update is not
later refused for something that was already true. Concurrency comes after
the signature (the FMEA put it first because it needs no cryptography): a
REJECTED UPDATE_IN_PROGRESS is final for the update it names, and an
unverified message must not end a real update.

What the signature check does *not* do: it never trusts a field it has not
verified. The manifest is parsed from the exact signed bytes after the
signature verifies (`verify_manifest`), and only public keys are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final, TypeAlias

from v2c.contract.errors import InvalidInput, ValidationFailed
from v2c.contract.keyset import TrustedKeySet
from v2c.contract.manifest import verify_manifest
from v2c.contract.semver import SemVer
from v2c.v1.ota_pb2 import OTAManifest, OTAStatus, OTAUpdateAvailable
from v2c.vehicle_sim.ota.agent import update_steps
from v2c.vehicle_sim.ota.agent.vehicle_state import VehicleConditions

Reason: TypeAlias = OTAStatus.Reason.ValueType

MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class AgentPolicy:
    """Every limit the agent applies, in one place (like TUF's UpdaterConfig)."""

    # Free storage must cover the package plus a buffer: the larger of a fixed
    # amount (the FMEA's "Required: 100MB + 50MB buffer") and a share of it.
    storage_buffer_bytes: int = 50 * MIB
    storage_buffer_ratio: float = 0.10
    # When the agent retries a deferred update by itself if nothing changes
    # before (the FMEA: INSUFFICIENT_BATTERY with retry_after 3600).
    battery_retry_after_s: int = 3600
    in_use_retry_after_s: int = 600
    # Plugged in, the installation does not drain the battery (the FMEA's
    # mitigation: "opportunistic charging detection, install during charging").
    charging_satisfies_battery: bool = True
    # The FMEA checks "vehicle in use" before the download starts; False lets
    # the download run while driving and defers only the installation.
    defer_download_while_in_use: bool = True
    # The agent's own deadline for the download, pauses included (the FMEA's
    # "Update Agent [Timeout: 3600s]"); the downloader has its own retries.
    download_timeout_s: int = 3600
    # Power cuts during the installation restart it (the A/B design keeps the
    # running slot intact); after this many attempts the update fails.
    max_install_attempts: int = 3
    # Download progress is reported at least every this many percent.
    progress_step_percent: int = 10
    # How many update ids and notification fingerprints the agent remembers.
    remembered_updates: int = 64
    remembered_notifications: int = 256
    # How many cloud command ids the agent remembers having acted on.
    remembered_commands: int = 256
    # Fingerprints of notifications that failed verification, kept apart.
    remembered_unverified: int = 64

    def __post_init__(self) -> None:
        if self.storage_buffer_bytes < 0 or not 0 <= self.storage_buffer_ratio <= 10:
            raise ValidationFailed("the storage buffer must be non-negative")
        if not 1 <= self.progress_step_percent <= 100:
            raise ValidationFailed("the progress step must be within 1-100 %")
        if self.max_install_attempts < 1 or self.remembered_updates < 1:
            raise ValidationFailed("attempt and memory limits must be at least 1")
        if min(self.battery_retry_after_s, self.in_use_retry_after_s) < 1:
            raise ValidationFailed("retry delays must be at least one second")
        if self.download_timeout_s < 1 or self.remembered_notifications < 1:
            raise ValidationFailed("the download timeout and memory must be positive")
        if self.remembered_unverified < 1 or self.remembered_commands < 1:
            raise ValidationFailed(
                "the memories of unverified notifications and commands must be positive"
            )

    def required_storage(self, size_bytes: int) -> int:
        buffer = max(self.storage_buffer_bytes, int(size_bytes * self.storage_buffer_ratio))
        return size_bytes + buffer


class Decision(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"  # for good: the update will not happen on this notification
    DEFER = "defer"  # not now: the agent retries when the condition clears


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    reason: Reason = OTAStatus.REASON_UNSPECIFIED
    detail: str = ""
    retry_after_s: int = 0

    @property
    def accepted(self) -> bool:
        return self.decision is Decision.ACCEPT


ACCEPT: Final = Verdict(Decision.ACCEPT)


def reject(reason: Reason, detail: str) -> Verdict:
    return Verdict(Decision.REJECT, reason, detail)


def defer(reason: Reason, detail: str, retry_after_s: int) -> Verdict:
    return Verdict(Decision.DEFER, reason, detail, retry_after_s)


class Stage(StrEnum):
    """Where a deferral happens: before the download or before the installation."""

    ACCEPT = "accept"
    INSTALL = "install"


def utc(now_ms: int) -> datetime:
    return datetime.fromtimestamp(now_ms / 1000, tz=UTC)


def authenticate(
    notification: OTAUpdateAvailable, trusted: TrustedKeySet, now_ms: int
) -> OTAManifest | Verdict:
    """The verified manifest, or a rejection SIGNATURE_VERIFICATION_FAILED.

    An unknown key, a key outside its validity window, a bad signature and
    signed bytes that do not parse are all the same verdict for the cloud:
    the vehicle did not get an update it can trust.
    """
    try:
        return verify_manifest(
            notification.manifest,
            notification.signature,
            notification.key_id,
            trusted=trusted,
            now=utc(now_ms),
        )
    except InvalidInput as exc:  # SignatureInvalid and its kin, CodecError
        return reject(OTAStatus.SIGNATURE_VERIFICATION_FAILED, exc.detail)


def check_manifest(
    manifest: OTAManifest,
    conditions: VehicleConditions,
    now_ms: int,
    *,
    rollback_floor: str = "",
) -> Verdict:
    """What a verified manifest says about this vehicle: expiry, target, version.

    `rollback_floor` is the highest anti-rollback floor of an update this
    vehicle completed: a later signed rollback cannot go below it even if its
    own manifest names a lower floor (an old, validly signed manifest
    replayed must not undo a security fix).
    """
    if manifest.expires_at <= 0:
        return reject(OTAStatus.MANIFEST_EXPIRED, "the manifest carries no expiry")
    if now_ms >= manifest.expires_at:
        return reject(
            OTAStatus.MANIFEST_EXPIRED,
            f"the manifest expired at {utc(manifest.expires_at).isoformat()}",
        )
    if not manifest.target_model or manifest.target_model != conditions.model:
        return reject(
            OTAStatus.MODEL_MISMATCH,
            f"the update targets model {manifest.target_model!r}, this is {conditions.model!r}",
        )
    if manifest.target_hardware_id and manifest.target_hardware_id != conditions.hardware_id:
        return reject(
            OTAStatus.MODEL_MISMATCH,
            f"the update targets hardware {manifest.target_hardware_id!r}, "
            f"this is {conditions.hardware_id!r}",
        )
    verdict = check_version(manifest, conditions.installed_version, rollback_floor)
    if verdict.accepted:
        refused = update_steps.refusal(manifest)
        if refused:
            return reject(OTAStatus.PRE_UPDATE_STEP_FAILED, refused)
    return verdict


def check_version(manifest: OTAManifest, installed: str, rollback_floor: str = "") -> Verdict:
    """Newer than installed, or a signed rollback, or a signed re-flash
    (`force_update`, BR-OTA-026: the same or an older version); never below
    a floor, whatever the manifest says."""
    try:
        target = SemVer.parse(manifest.version)
        current = SemVer.parse(installed)
        floors = [
            SemVer.parse(text) for text in (manifest.min_installed_version, rollback_floor) if text
        ]
    except ValidationFailed as exc:
        return reject(OTAStatus.REASON_UNSPECIFIED, exc.detail)
    for floor in floors:
        if target < floor:
            return reject(
                OTAStatus.VERSION_DOWNGRADE,
                f"{manifest.version} is below the anti-rollback floor {floor}",
            )
    if manifest.force_update:
        return ACCEPT
    if target == current:
        return reject(OTAStatus.VERSION_DOWNGRADE, f"already running {installed}")
    if target < current and not manifest.is_rollback:
        return reject(
            OTAStatus.VERSION_DOWNGRADE,
            f"{manifest.version} is older than the installed {installed}",
        )
    return ACCEPT


def check_storage(
    manifest: OTAManifest, conditions: VehicleConditions, policy: AgentPolicy
) -> Verdict:
    required = policy.required_storage(manifest.size_bytes)
    if conditions.free_storage_bytes < required:
        return reject(
            OTAStatus.INSUFFICIENT_STORAGE,
            f"{conditions.free_storage_bytes} bytes free, {required} required",
        )
    return ACCEPT


def check_battery(
    manifest: OTAManifest, conditions: VehicleConditions, policy: AgentPolicy
) -> Verdict:
    if conditions.battery_percent >= manifest.min_battery_level:
        return ACCEPT
    if conditions.charging and policy.charging_satisfies_battery:
        return ACCEPT
    return defer(
        OTAStatus.INSUFFICIENT_BATTERY,
        f"battery {conditions.battery_percent:g} % below {manifest.min_battery_level} %",
        policy.battery_retry_after_s,
    )


def check_in_use(
    manifest: OTAManifest, conditions: VehicleConditions, policy: AgentPolicy
) -> Verdict:
    if manifest.can_install_while_driving or not conditions.in_use:
        return ACCEPT
    return defer(
        OTAStatus.VEHICLE_IN_USE,
        f"speed {conditions.speed_kmh:g} km/h, ignition "
        f"{'on' if conditions.ignition_on else 'off'}, gear {conditions.gear.value}",
        policy.in_use_retry_after_s,
    )


def check_preconditions(
    manifest: OTAManifest,
    conditions: VehicleConditions,
    policy: AgentPolicy,
    stage: Stage,
) -> Verdict:
    """The conditions of the moment, for accepting (before the download) or
    for installing (the package is on board: storage no longer matters, a
    critical DTC does)."""
    if stage is Stage.ACCEPT:
        storage = check_storage(manifest, conditions, policy)
        if not storage.accepted:
            return storage
    battery = check_battery(manifest, conditions, policy)
    if not battery.accepted:
        return battery
    if stage is Stage.INSTALL or policy.defer_download_while_in_use:
        in_use = check_in_use(manifest, conditions, policy)
        if not in_use.accepted:
            return in_use
    if stage is Stage.INSTALL and conditions.critical_dtcs:
        return reject(
            OTAStatus.CRITICAL_DTC_PRESENT,
            f"critical DTC {', '.join(conditions.critical_dtcs)}: service required",
        )
    return ACCEPT


def evaluate(
    notification: OTAUpdateAvailable,
    conditions: VehicleConditions,
    trusted: TrustedKeySet,
    policy: AgentPolicy,
    now_ms: int,
    *,
    rollback_floor: str = "",
) -> tuple[OTAManifest | None, Verdict]:
    """`authenticate`, then `judge`. The manifest is returned only once its
    signature verified."""
    manifest = authenticate(notification, trusted, now_ms)
    if isinstance(manifest, Verdict):
        return None, manifest
    return manifest, judge(manifest, conditions, policy, now_ms, rollback_floor=rollback_floor)


def judge(
    manifest: OTAManifest,
    conditions: VehicleConditions,
    policy: AgentPolicy,
    now_ms: int,
    *,
    rollback_floor: str = "",
) -> Verdict:
    """Everything after the signature and the concurrency check, in order,
    on a verified manifest."""
    verdict = check_manifest(manifest, conditions, now_ms, rollback_floor=rollback_floor)
    if verdict.accepted:
        verdict = check_preconditions(manifest, conditions, policy, Stage.ACCEPT)
    return verdict
