"""The A/B boot decision, with U-Boot's boot-count semantics, as pure functions.

What U-Boot does on every power-on with `CONFIG_BOOTCOUNT_LIMIT` and the
environment as the counter's store (`CONFIG_BOOTCOUNT_ENV`,
drivers/bootcount/bootcount_env.c), which is the design of spec 002 §5:

* `bootcount_load`: the stored `bootcount` counts only while
  `upgrade_available=1`; otherwise it reads as 0 (and is never written, to
  spare the flash).
* `bootcount_inc`: it is incremented on every boot, and saved (`saveenv`)
  only while `upgrade_available=1`.
* If `bootcount > bootlimit`, U-Boot runs `altbootcmd` instead of `bootcmd`.
  Ours is the spec's script::

      setenv boot_partition ${fallback_partition}
      setenv upgrade_available 0; setenv bootcount 0; saveenv

  (and it marks the abandoned slot bad, so the agent can tell afterwards).

With `bootlimit=3` (the FMEA's `max_attempts: 3`) a broken update boots
three times, the watchdog resets it each time, and the fourth power-on
boots the fallback: "boot_attempts = 3 (MAX EXCEEDED)", then rollback.

Linux's side (`fw_setenv` after the health checks) is here too, as the env
transitions `invalidate`, `arm_trial`, `commit` and `fall_back`. Which slot
is good is kept in the same environment, so one atomic env write changes
the boot target and the slot states together: there is no instant at which
they disagree. The decision never reads the slot states (U-Boot does not);
they are for the agent, and `consistent` states what every transition keeps.

Issue #7's boot flags map onto U-Boot's names: active = `boot_partition`,
fallback = `fallback_partition`, boot_attempts = `bootcount`,
max_attempts = `bootlimit`, and `upgrade_available` as is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from v2c.contract.errors import CodecError, ValidationFailed

DEFAULT_BOOTLIMIT: Final = 3


class Slot(StrEnum):
    A = "A"
    B = "B"

    @property
    def other(self) -> Slot:
        return Slot.B if self is Slot.A else Slot.A


class SlotState(StrEnum):
    GOOD = "good"  # committed: it booted and passed the post-install checks
    BAD = "bad"  # abandoned: it failed to boot or failed verification
    UNKNOWN = "unknown"  # empty, being written, or on trial


@dataclass(frozen=True, slots=True)
class BootEnv:
    """The variables of the U-Boot environment that the A/B scheme uses."""

    boot_partition: Slot = Slot.A
    fallback_partition: Slot = Slot.B
    bootcount: int = 0
    bootlimit: int = DEFAULT_BOOTLIMIT
    upgrade_available: bool = False
    slot_a_state: SlotState = SlotState.UNKNOWN
    slot_b_state: SlotState = SlotState.UNKNOWN

    def __post_init__(self) -> None:
        if self.boot_partition is self.fallback_partition:
            raise ValidationFailed("boot_partition and fallback_partition must differ")
        if self.bootcount < 0:
            raise ValidationFailed("bootcount cannot be negative")
        # U-Boot reads bootlimit=0 as "feature off": a trial that never falls
        # back. No vehicle may run that way, so it is refused, not modelled.
        if self.bootlimit < 1:
            raise ValidationFailed("bootlimit must be at least 1")

    def state(self, slot: Slot) -> SlotState:
        return self.slot_a_state if slot is Slot.A else self.slot_b_state

    def with_state(self, slot: Slot, state: SlotState) -> BootEnv:
        if slot is Slot.A:
            return replace(self, slot_a_state=state)
        return replace(self, slot_b_state=state)

    @property
    def trial_slot(self) -> Slot | None:
        """The slot booted on trial, if an upgrade is pending."""
        return self.boot_partition if self.upgrade_available else None

    def to_vars(self) -> dict[str, str]:
        """The environment as `fw_printenv` would print it."""
        return {
            "boot_partition": self.boot_partition.value,
            "fallback_partition": self.fallback_partition.value,
            "bootcount": str(self.bootcount),
            "bootlimit": str(self.bootlimit),
            "upgrade_available": "1" if self.upgrade_available else "0",
            "slot_a_state": self.slot_a_state.value,
            "slot_b_state": self.slot_b_state.value,
        }

    @classmethod
    def from_vars(cls, env: dict[str, str]) -> BootEnv:
        """Parse `to_vars` output; unknown variables are ignored, as U-Boot does."""
        try:
            return cls(
                boot_partition=Slot(env["boot_partition"]),
                fallback_partition=Slot(env["fallback_partition"]),
                bootcount=int(env.get("bootcount", "0")),
                bootlimit=int(env.get("bootlimit", str(DEFAULT_BOOTLIMIT))),
                upgrade_available=env.get("upgrade_available", "0") == "1",
                slot_a_state=SlotState(env.get("slot_a_state", SlotState.UNKNOWN.value)),
                slot_b_state=SlotState(env.get("slot_b_state", SlotState.UNKNOWN.value)),
            )
        except (KeyError, ValueError, ValidationFailed) as exc:
            raise CodecError(f"unusable boot environment: {exc}") from exc


def consistent(env: BootEnv) -> bool:
    """The invariant every transition below keeps: the slot U-Boot will boot
    without trial is good, and during a trial the fallback is good."""
    if env.upgrade_available:
        return env.state(env.fallback_partition) is SlotState.GOOD
    return env.state(env.boot_partition) is SlotState.GOOD


@dataclass(frozen=True, slots=True)
class BootDecision:
    """What one power-on does.

    `env` is the environment after U-Boot ran (`save_env`: it called
    `saveenv`, so the flash must be written before the kernel starts).
    `attempt` is the trial boot's number (1..bootlimit), 0 for a normal boot.
    `fell_back`: `altbootcmd` ran; `failed_attempts` trial boots preceded it.
    """

    slot: Slot
    env: BootEnv
    save_env: bool
    attempt: int = 0
    fell_back: bool = False
    failed_attempts: int = 0


def decide(env: BootEnv) -> BootDecision:
    """One power-on of U-Boot: which slot boots, and the environment after.

    U-Boot saves twice when it falls back (the incremented bootcount, then
    `altbootcmd`'s saveenv); one save of the final environment is equivalent,
    since a power cut between the two would make the next boot fall back too.
    """
    count = (env.bootcount if env.upgrade_available else 0) + 1
    if count > env.bootlimit:
        after = fall_back(env)
        return BootDecision(
            slot=after.boot_partition,
            env=after,
            save_env=True,
            fell_back=True,
            failed_attempts=count - 1,
        )
    if env.upgrade_available:
        after = replace(env, bootcount=count)
        return BootDecision(slot=after.boot_partition, env=after, save_env=True, attempt=count)
    return BootDecision(slot=env.boot_partition, env=env, save_env=False)


# --- Linux's side: what the installer writes with fw_setenv ------------------


def invalidate(env: BootEnv, slot: Slot) -> BootEnv:
    """Before a slot's bytes change, the env stops calling it good. Never the
    slot the env would boot without trial, or during a trial its fallback."""
    if not upgrade_safe_target(env, slot):
        raise ValidationFailed(f"slot {slot} is the one the vehicle depends on")
    return env.with_state(slot, SlotState.UNKNOWN)


def upgrade_safe_target(env: BootEnv, slot: Slot) -> bool:
    """Whether `slot` may be overwritten: no trial is pending and it is not
    the slot U-Boot boots."""
    return not env.upgrade_available and slot is not env.boot_partition


def arm_trial(env: BootEnv, target: Slot) -> BootEnv:
    """Boot `target` on trial; the slot running now becomes the fallback."""
    if not upgrade_safe_target(env, target):
        raise ValidationFailed(f"cannot put slot {target} on trial from this environment")
    return replace(
        env.with_state(target, SlotState.UNKNOWN),
        boot_partition=target,
        fallback_partition=env.boot_partition,
        bootcount=0,
        upgrade_available=True,
    )


def commit(env: BootEnv) -> BootEnv:
    """The trial slot passed its checks: it is good, and the trial is over."""
    if not env.upgrade_available:
        raise ValidationFailed("no trial to commit")
    return replace(
        env.with_state(env.boot_partition, SlotState.GOOD),
        bootcount=0,
        upgrade_available=False,
    )


def fall_back(env: BootEnv) -> BootEnv:
    """`altbootcmd`, and the agent's revert after a failed verification:
    boot the fallback, abandon the trial slot."""
    if not env.upgrade_available:
        raise ValidationFailed("no trial to fall back from")
    return replace(
        env.with_state(env.boot_partition, SlotState.BAD),
        boot_partition=env.fallback_partition,
        fallback_partition=env.boot_partition,
        bootcount=0,
        upgrade_available=False,
    )
