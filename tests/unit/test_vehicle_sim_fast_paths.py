"""The fleet simulator's per-report shortcuts give what the plain way gives.

Each shortcut (the env decoded once per distinct copy, the bounded env
split, the derived report ids, the atomic write with fewer system calls) is
checked against the computation it replaces, or against the files a fresh
process would read.
"""

from __future__ import annotations

import os
import stat
import struct
import tempfile
import uuid
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v2c.contract.errors import CodecError
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.atomic import atomic_write, atomic_write_json, read_json, temp_path
from v2c.vehicle_sim.ota.agent.bootloader import BootEnv, Slot, SlotState
from v2c.vehicle_sim.ota.agent.reports import (
    REASON_NAMES,
    REPORT_NAMESPACE,
    STATE_NAMES,
    UNVERIFIED_NAMESPACE,
    report_message_id,
    unverified_message_id,
    uuid5_bytes,
)
from v2c.vehicle_sim.ota.agent.steps import InstallStep, PowerCut, PowerPlan
from v2c.vehicle_sim.ota.device.flash import ENV_SIZE, Flash, _env_key, decode_env, encode_env

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60)


def decode_env_by_full_split(blob: bytes) -> tuple[int, BootEnv | None]:
    """`decode_env` as it was: every NUL of the padded copy split."""
    if len(blob) != ENV_SIZE:
        return (blob[4] if len(blob) > 4 else 0), None
    crc, flags = struct.unpack_from("<IB", blob)
    data = blob[5:]
    if zlib.crc32(data) != crc:
        return flags, None
    variables: dict[str, str] = {}
    for entry in data.split(b"\0"):
        if not entry:
            break
        key, sep, value = entry.decode("utf-8", "replace").partition("=")
        if sep:
            variables[key] = value
    try:
        return flags, BootEnv.from_vars(variables)
    except CodecError:
        return flags, None


def with_crc(data: bytes, flags: int) -> bytes:
    data = data[: ENV_SIZE - 5].ljust(ENV_SIZE - 5, b"\0")
    return struct.pack("<IB", zlib.crc32(data), flags) + data


ENV_TEXT = st.lists(
    st.sampled_from(
        [
            b"boot_partition=A",
            b"boot_partition=B",
            b"fallback_partition=B",
            b"fallback_partition=A",
            b"bootcount=2",
            b"upgrade_available=1",
            b"slot_b_state=good",
            b"noise",
            b"",
            b"=x",
        ]
    ),
    max_size=10,
).map(lambda entries: b"\0".join(entries))


@SETTINGS
@given(ENV_TEXT, st.binary(max_size=64), st.integers(0, 255))
def test_the_bounded_split_decodes_as_the_full_split(text: bytes, tail: bytes, flags: int) -> None:
    # Variables, maybe an empty entry inside, then padding or trailing bytes:
    # whatever follows the first empty entry never counts.
    for data in (text, text + b"\0\0" + tail, b"\0" + text, text + b"\0" + tail):
        blob = with_crc(data, flags)
        assert decode_env(blob) == decode_env_by_full_split(blob)


def test_a_copy_full_to_the_last_byte_decodes_as_the_full_split() -> None:
    text = b"boot_partition=A\0fallback_partition=B\0"
    data = (text + b"x=" * ENV_SIZE)[: ENV_SIZE - 5]  # no double NUL anywhere
    blob = with_crc(data, 3)
    assert decode_env(blob) == decode_env_by_full_split(blob)
    assert decode_env(blob)[1] is not None


# -- the env read once per distinct copy ---------------------------------------


def fresh_env(root: Path) -> BootEnv:
    """What a process started now reads (nothing remembered)."""
    return Flash(root).read_env()


def on_disk(root: Path) -> tuple[tuple[int, BootEnv | None], ...]:
    boot = root / "boot"
    return tuple(
        decode_env(path.read_bytes()) if path.exists() else (0, None)
        for path in (boot / "uboot.env", boot / "uboot.env.redund")
    )


def envs_with_distinct_fallback() -> st.SearchStrategy[BootEnv]:
    return st.builds(
        lambda slot, count, trial, state: BootEnv(
            boot_partition=slot,
            fallback_partition=slot.other,
            bootcount=count,
            upgrade_available=trial,
            slot_b_state=state,
        ),
        st.sampled_from(Slot),
        st.integers(0, 5),
        st.booleans(),
        st.sampled_from(SlotState),
    )


@SETTINGS
@given(
    st.lists(
        st.tuples(envs_with_distinct_fallback(), st.booleans(), st.floats(0.0, 0.9999)),
        min_size=1,
        max_size=10,
    )
)
def test_one_flash_reads_what_a_fresh_process_reads_after_every_write(
    writes: list[tuple[BootEnv, bool, float]],
) -> None:
    # One long-lived Flash (its decoded copies remembered) against a new one
    # per check: after whole writes, torn writes (a power cut) and the
    # restart that follows, both read the same environment and copies.
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        Flash.provision(root, "1.0.0", b"image" * 50, durable=False)
        kept = Flash(root, durable=False)
        for env, torn, fraction in writes:
            plan = PowerPlan(InstallStep.REBOOT, torn=torn, fraction=fraction)
            writer = Flash(root, power=plan, durable=False) if torn else kept
            try:
                writer.write_env(env, step=InstallStep.REBOOT)
            except PowerCut:
                kept = Flash(root, durable=False)  # the restart after the cut
            assert kept.read_env() == fresh_env(root)
            copies = kept._env_copies()
            assert tuple((c.flags, c.env) for c in copies) == on_disk(root)
            assert Flash(root)._env_copies() == copies


def test_a_copy_changed_behind_the_flash_is_read_as_it_now_is(tmp_path: Path) -> None:
    flash = Flash.provision(tmp_path, "1.0.0", b"image" * 50, durable=False)
    trial = BootEnv(upgrade_available=True, bootcount=1, slot_b_state=SlotState.GOOD)
    flash.write_env(trial)
    assert flash.read_env() == trial
    (flash.boot_dir / "uboot.env.redund").write_bytes(b"\xff" * ENV_SIZE)  # a bad block
    assert flash.read_env() == fresh_env(tmp_path) == BootEnv(slot_a_state=SlotState.GOOD)
    for name in ("uboot.env", "uboot.env.redund"):
        (flash.boot_dir / name).unlink()
    assert flash.read_env() == BootEnv()  # no copy at all: U-Boot's default
    flash.write_env(trial)
    assert flash.read_env() == fresh_env(tmp_path) == trial


# -- report ids -----------------------------------------------------------------


@SETTINGS
@given(st.text(max_size=80))
def test_derived_ids_are_uuid5(name: str) -> None:
    for namespace in (REPORT_NAMESPACE, UNVERIFIED_NAMESPACE):
        expected = uuid.uuid5(namespace, name).bytes
        assert uuid5_bytes(namespace.bytes, name) == expected


def test_report_ids_keep_their_published_values() -> None:
    expected = uuid.uuid5(REPORT_NAMESPACE, "VIN-1/upd-1/3").bytes
    assert report_message_id("VIN-1", "upd-1", 3) == expected
    assert uuid.UUID(bytes=expected).version == 5
    assert unverified_message_id("VIN-1", 2) == uuid.uuid5(UNVERIFIED_NAMESPACE, "VIN-1/2").bytes


# -- atomic writes ----------------------------------------------------------------


@pytest.mark.parametrize("durable", [False, True])
def test_an_atomic_write_makes_its_directory_and_leaves_no_temp_file(
    tmp_path: Path, durable: bool
) -> None:
    target = tmp_path / "deep" / "er" / "agent.json"
    atomic_write_json(target, {"format": 1, "updates": []}, durable=durable)
    assert target.read_bytes() == b'{"format":1,"updates":[]}'
    atomic_write_json(str(target), {"format": 1}, durable=durable)
    assert read_json(target) == {"format": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["agent.json"]


@pytest.mark.parametrize("durable", [False, True])
def test_a_leftover_temp_file_is_replaced_with_the_mode_asked_for(
    tmp_path: Path, durable: bool
) -> None:
    target = tmp_path / "vehicle.key"
    leftover = temp_path(target)
    leftover.write_bytes(b"half a key from before a power cut")
    os.chmod(leftover, 0o666)
    atomic_write(target, b"the key", durable=durable, mode=0o600)
    assert target.read_bytes() == b"the key"
    assert stat.S_IMODE(target.stat().st_mode) & 0o077 == 0
    assert not leftover.exists()


def test_an_empty_file_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.write_bytes(b"old")
    atomic_write(target, b"", durable=False)
    assert target.read_bytes() == b""


def test_the_runtime_names_every_state_and_reason_as_the_enums_do() -> None:
    assert {n: OTAStatus.State.Name(n) for n in OTAStatus.State.values()} == STATE_NAMES
    assert {n: OTAStatus.Reason.Name(n) for n in OTAStatus.Reason.values()} == REASON_NAMES


@SETTINGS
@given(st.binary(max_size=40), st.binary(max_size=40), st.integers(0, 60), st.integers(0, 60))
def test_env_copies_with_the_same_key_are_the_same_bytes(
    head_a: bytes, head_b: bytes, pad_a: int, pad_b: int
) -> None:
    # What the flash remembers of a copy identifies it exactly: same key,
    # same bytes; different bytes, different keys (padding included).
    blob_a, blob_b = head_a + b"\0" * pad_a, head_b + b"\0" * pad_b
    assert (_env_key(blob_a) == _env_key(blob_b)) == (blob_a == blob_b)
    assert len(_env_key(encode_env(BootEnv(), 1))[1]) < 200
