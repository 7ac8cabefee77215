"""The U-Boot environment on the modelled flash: CRC, two copies, torn writes."""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v2c.vehicle_sim.ota.agent.bootloader import BootEnv, Slot, SlotState, arm_trial, commit
from v2c.vehicle_sim.ota.agent.steps import InstallStep, PowerCut, PowerPlan
from v2c.vehicle_sim.ota.device.flash import (
    ENV_SIZE,
    EnvCopy,
    Flash,
    current_copy,
    decode_env,
    encode_env,
)

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=40)
GOOD_A = BootEnv(slot_a_state=SlotState.GOOD)
TRIAL_B = arm_trial(GOOD_A, Slot.B)


def provisioned(root: Path, power: PowerPlan | None = None, *, durable: bool = True) -> Flash:
    return Flash.provision(root, "1.0.0", b"factory image" * 100, power=power, durable=durable)


def test_an_env_copy_is_crc32_flags_and_nul_separated_variables() -> None:
    blob = encode_env(TRIAL_B, flags=7)
    assert len(blob) == ENV_SIZE
    crc, flags = struct.unpack_from("<IB", blob)
    assert (crc, flags) == (zlib.crc32(blob[5:]), 7)
    assert b"upgrade_available=1\0" in blob
    assert b"boot_partition=B\0" in blob
    assert decode_env(blob) == (7, TRIAL_B)


def test_one_flipped_bit_fails_the_crc() -> None:
    blob = bytearray(encode_env(TRIAL_B, flags=1))
    blob[100] ^= 0x01
    assert decode_env(bytes(blob)) == (1, None)


def test_writes_alternate_between_the_copies_with_rising_flags(tmp_path: Path) -> None:
    flash = provisioned(tmp_path)
    flash.write_env(TRIAL_B)
    flash.write_env(commit(TRIAL_B))
    first = decode_env((flash.boot_dir / "uboot.env").read_bytes())
    second = decode_env((flash.boot_dir / "uboot.env.redund").read_bytes())
    # provision wrote copy 1 (flags 0), then copy 2 (1), then copy 1 (2)
    assert first == (2, commit(TRIAL_B))
    assert second == (1, TRIAL_B)
    assert flash.read_env() == commit(TRIAL_B)


def test_the_flags_counter_wraps_as_in_u_boot() -> None:
    older = EnvCopy(0, 0xFF, GOOD_A)
    newer = EnvCopy(1, 0x00, TRIAL_B)
    assert current_copy((older, newer)) is newer
    assert current_copy((newer, older)) is newer
    tie = current_copy((EnvCopy(0, 3, GOOD_A), EnvCopy(1, 3, TRIAL_B)))
    assert tie is not None
    assert tie.index == 0


def test_both_copies_bad_gives_the_default_environment(tmp_path: Path) -> None:
    flash = provisioned(tmp_path)
    for name in ("uboot.env", "uboot.env.redund"):
        (flash.boot_dir / name).write_bytes(b"\xff" * ENV_SIZE)
    assert flash.read_env() == BootEnv()


def test_a_write_torn_inside_the_variables_leaves_the_previous_environment(
    tmp_path: Path,
) -> None:
    flash = provisioned(tmp_path, PowerPlan(InstallStep.BOOT_FLAGS, torn=True, fraction=0.01))
    flash.write_env(TRIAL_B)
    with pytest.raises(PowerCut):
        flash.write_env(commit(TRIAL_B), step=InstallStep.BOOT_FLAGS)
    assert Flash(tmp_path).read_env() == TRIAL_B


@SETTINGS
@given(st.floats(min_value=0.0, max_value=0.9999))
def test_a_torn_env_write_reads_as_the_old_or_the_new_environment(fraction: float) -> None:
    # A tear after the last byte that differs is a complete write: the new
    # env; any earlier tear breaks that copy's CRC: the old env. Never else.
    with tempfile.TemporaryDirectory() as tmp:
        plan = PowerPlan(InstallStep.BOOT_FLAGS, torn=True, fraction=fraction)
        flash = provisioned(Path(tmp), plan, durable=False)
        flash.write_env(TRIAL_B)
        with pytest.raises(PowerCut):
            flash.write_env(commit(TRIAL_B), step=InstallStep.BOOT_FLAGS)
        assert Flash(Path(tmp)).read_env() in (TRIAL_B, commit(TRIAL_B))


@SETTINGS
@given(st.lists(st.tuples(st.booleans(), st.floats(0.0, 0.9999)), min_size=1, max_size=12))
def test_any_sequence_of_torn_and_whole_writes_reads_the_last_whole_one(
    writes: list[tuple[bool, float]],
) -> None:
    # Given a series of env writes, some torn by a power cut at any byte,
    # the reader finds the last complete write, or the torn one if every
    # byte that differs landed: never a mix, never the default env.
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        provisioned(root, durable=False)
        last = Flash(root).read_env()
        for index, (torn, fraction) in enumerate(writes):
            env = BootEnv(bootcount=index + 1, upgrade_available=True, slot_b_state=SlotState.GOOD)
            plan = PowerPlan(InstallStep.REBOOT, torn=torn, fraction=fraction)
            flash = Flash(root, power=plan, durable=False)
            try:
                flash.write_env(env, step=InstallStep.REBOOT)
            except PowerCut:
                assert torn
                now = Flash(root).read_env()
                assert now in (last, env)
                last = now
            else:
                last = env
            assert Flash(root).read_env() == last


def test_provision_leaves_slot_a_good_and_slot_b_empty(tmp_path: Path) -> None:
    flash = provisioned(tmp_path)
    image = flash.read_slot(Slot.A)
    assert image is not None
    assert image.version == "1.0.0"
    assert flash.read_slot(Slot.B) is None
    assert flash.read_env() == BootEnv(slot_a_state=SlotState.GOOD)


def test_a_slot_whose_bytes_differ_from_its_header_does_not_read(tmp_path: Path) -> None:
    flash = provisioned(tmp_path)
    path = flash.slot_path(Slot.A)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert flash.read_slot(Slot.A) is None
