"""The A/B boot decision follows U-Boot's bootcount/bootlimit/altbootcmd semantics."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v2c.contract.errors import CodecError, ValidationFailed
from v2c.vehicle_sim.ota.agent.bootloader import (
    BootEnv,
    Slot,
    SlotState,
    arm_trial,
    commit,
    consistent,
    decide,
    fall_back,
    invalidate,
)

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)
COMMITTED_A = BootEnv(slot_a_state=SlotState.GOOD)


def test_a_committed_env_boots_its_slot_without_counting_or_saving() -> None:
    # Given no upgrade pending, U-Boot's bootcount_env neither reads nor saves the count.
    decision = decide(replace(COMMITTED_A, bootcount=7))
    assert decision.slot is Slot.A
    assert decision.save_env is False
    assert decision.attempt == 0
    assert decision.fell_back is False


def test_a_trial_boots_bootlimit_times_then_altbootcmd_boots_the_fallback() -> None:
    env = arm_trial(COMMITTED_A, Slot.B)
    seen = []
    for _ in range(3):  # three hung boots: the watchdog resets each
        decision = decide(env)
        assert decision.save_env
        seen.append((decision.slot, decision.attempt))
        env = decision.env
    assert seen == [(Slot.B, 1), (Slot.B, 2), (Slot.B, 3)]
    assert env.bootcount == 3

    decision = decide(env)  # bootcount 4 > bootlimit 3
    assert decision.fell_back
    assert decision.slot is Slot.A
    assert decision.failed_attempts == 3
    assert decision.env.upgrade_available is False
    assert decision.env.bootcount == 0
    assert decision.env.state(Slot.B) is SlotState.BAD
    assert decision.env.boot_partition is Slot.A
    assert decision.env.fallback_partition is Slot.B


def test_commit_ends_the_trial_and_marks_the_slot_good() -> None:
    env = decide(arm_trial(COMMITTED_A, Slot.B)).env
    committed = commit(env)
    assert committed.boot_partition is Slot.B
    assert committed.state(Slot.B) is SlotState.GOOD
    assert committed.state(Slot.A) is SlotState.GOOD  # the previous version stays as fallback
    assert (committed.upgrade_available, committed.bootcount) == (False, 0)
    assert decide(committed).slot is Slot.B


def test_transitions_refuse_to_touch_the_slot_the_vehicle_depends_on() -> None:
    with pytest.raises(ValidationFailed):
        invalidate(COMMITTED_A, Slot.A)
    with pytest.raises(ValidationFailed):
        arm_trial(COMMITTED_A, Slot.A)
    trial = arm_trial(COMMITTED_A, Slot.B)
    with pytest.raises(ValidationFailed):
        arm_trial(trial, Slot.A)  # would overwrite the fallback during a trial
    with pytest.raises(ValidationFailed):
        commit(COMMITTED_A)
    with pytest.raises(ValidationFailed):
        fall_back(COMMITTED_A)


def test_env_values_are_validated_and_parsed_like_fw_printenv() -> None:
    with pytest.raises(ValidationFailed):
        BootEnv(boot_partition=Slot.A, fallback_partition=Slot.A)
    with pytest.raises(ValidationFailed):
        BootEnv(bootlimit=0)  # U-Boot's "feature off": never on a vehicle
    env = arm_trial(COMMITTED_A, Slot.B)
    assert BootEnv.from_vars(env.to_vars()) == env
    assert env.to_vars()["upgrade_available"] == "1"
    with pytest.raises(CodecError):
        BootEnv.from_vars({"boot_partition": "C", "fallback_partition": "A"})


# --- properties ---------------------------------------------------------------

slots = st.sampled_from(list(Slot))
states = st.sampled_from(list(SlotState))


@st.composite
def consistent_envs(draw: st.DrawFn) -> BootEnv:
    """Any environment the transitions can reach: the slot booted without
    trial is good; during a trial the fallback is good."""
    boot = draw(slots)
    limit = draw(st.integers(1, 5))
    trial = draw(st.booleans())
    env = BootEnv(
        boot_partition=boot,
        fallback_partition=boot.other,
        bootcount=draw(st.integers(0, limit + 2)) if trial else draw(st.integers(0, 9)),
        bootlimit=limit,
        upgrade_available=trial,
    )
    good = boot.other if trial else boot
    env = env.with_state(good, SlotState.GOOD)
    other_state = SlotState.UNKNOWN if trial else draw(states)
    return env.with_state(good.other, other_state)


@dataclass(frozen=True)
class Event:
    """What follows a boot: it ran and (on trial) passed its checks and was
    committed; it hung (watchdog); the power failed before any commit; or
    the power failed during U-Boot's saveenv (the write is lost)."""

    kind: str  # "ok", "hang", "cut", "torn", "verify_fail", "install"


events = st.lists(
    st.sampled_from(["ok", "hang", "cut", "torn", "verify_fail", "install"]).map(Event),
    max_size=40,
)


@SETTINGS
@given(consistent_envs(), events)
def test_every_boot_runs_a_good_slot_or_the_trial_within_the_limit(
    env: BootEnv, sequence: list[Event]
) -> None:
    for event in sequence:
        decision = decide(env)
        chosen_good = env.state(decision.slot) is SlotState.GOOD
        on_trial = (
            env.upgrade_available
            and decision.slot is env.boot_partition
            and 1 <= decision.attempt <= env.bootlimit
        )
        assert chosen_good or on_trial
        if env.upgrade_available and env.bootcount >= env.bootlimit:
            assert decision.fell_back
            assert decision.slot is env.fallback_partition
        assert consistent(decision.env)

        after = env if event.kind == "torn" else decision.env
        if event.kind == "ok" and after.upgrade_available:
            after = commit(after)
        elif event.kind == "verify_fail" and after.upgrade_available:
            after = fall_back(after)
        elif event.kind == "install" and not after.upgrade_available:
            after = arm_trial(
                invalidate(after, after.boot_partition.other), after.fallback_partition
            )
        assert consistent(after)
        env = after


@SETTINGS
@given(consistent_envs(), st.lists(st.sampled_from(["hang", "cut", "torn"]), max_size=30))
def test_after_more_than_bootlimit_failed_boots_the_fallback_runs(
    env: BootEnv, failures: list[str]
) -> None:
    # Given a fresh trial (the running slot good), any mix of hangs and power
    # cuts; a torn saveenv leaves the count where it was, so it does not count.
    running = env.boot_partition
    base = BootEnv(
        boot_partition=running, fallback_partition=running.other, bootlimit=env.bootlimit
    ).with_state(running, SlotState.GOOD)
    start = arm_trial(base, running.other)
    fallback = start.fallback_partition
    counted = 0
    current = start
    for failure in failures:
        decision = decide(current)
        if counted >= start.bootlimit:
            assert decision.slot is fallback
            assert decision.env.upgrade_available is False
        else:
            assert decision.slot is start.boot_partition
            assert decision.attempt == counted + 1
        if failure != "torn":
            current = decision.env
            counted += 1
