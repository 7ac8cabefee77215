"""The partial package on disk: what a resume trusts after a crash or a torn write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from v2c.contract.errors import InvalidField
from v2c.vehicle_sim.ota.device.partial import (
    SLOT_OFFSETS,
    SLOT_SIZE,
    PartialDownload,
    decode_slot,
    decode_state,
    encode_slot,
    package_path,
)

DATA = bytes(range(256)) * 1024  # 256 KiB
SHA = hashlib.sha256(DATA).hexdigest()


def partial(tmp_path: Path, sha: str = SHA) -> PartialDownload:
    return PartialDownload(tmp_path, "ota-1", len(DATA), sha)


def committed(tmp_path: Path, upto: int) -> PartialDownload:
    """Given: `upto` bytes written and committed, as the downloader does."""
    p = partial(tmp_path)
    f, offset, _ = p.open_for_resume()
    with f:
        assert offset == 0
        f.write(DATA[:upto])
        p.commit(f, upto)
    return p


def test_a_resume_reopens_at_the_committed_offset_with_the_prefix_hashed(tmp_path: Path) -> None:
    committed(tmp_path, 100_000)
    f, offset, hasher = partial(tmp_path).open_for_resume()
    with f:
        assert (offset, f.tell()) == (100_000, 100_000)
        assert hasher.hexdigest() == hashlib.sha256(DATA[:100_000]).hexdigest()


def test_bytes_beyond_the_committed_offset_are_cut_off(tmp_path: Path) -> None:
    p = committed(tmp_path, 100_000)
    with p.part_path.open("ab") as torn:  # a write that never got its commit
        torn.write(b"garbage")
    f, offset, _ = partial(tmp_path).open_for_resume()
    with f:
        assert offset == 100_000
    assert p.part_path.stat().st_size == 100_000


def test_a_state_claiming_more_than_the_disk_holds_restarts_from_zero(tmp_path: Path) -> None:
    p = committed(tmp_path, 100_000)
    with p.part_path.open("r+b") as shrunk:
        shrunk.truncate(50_000)
    f, offset, _ = partial(tmp_path).open_for_resume()
    with f:
        assert offset == 0


@pytest.mark.parametrize(
    "state",
    ["{not json", json.dumps({"format": 99, "offset": 10}), json.dumps([1, 2])],
    ids=["corrupt", "other-format", "not-an-object"],
)
def test_an_unreadable_state_is_discarded(tmp_path: Path, state: str) -> None:
    p = committed(tmp_path, 100_000)
    p.state_path.write_text(state)
    assert partial(tmp_path).committed_offset() == 0
    assert not p.state_path.exists()
    assert not p.part_path.exists()


def test_a_state_for_another_package_is_discarded(tmp_path: Path) -> None:
    committed(tmp_path, 100_000)
    assert partial(tmp_path, sha="0" * 64).committed_offset() == 0


def test_finish_renames_and_verified_package_rechecks_the_hash(tmp_path: Path) -> None:
    p = committed(tmp_path, 0)
    f, _, _ = p.open_for_resume()
    f.write(DATA)
    assert p.finish(f) == package_path(tmp_path, "ota-1")
    assert not p.part_path.exists()
    assert not p.state_path.exists()
    assert p.verified_package()
    assert not partial(tmp_path, sha="0" * 64).verified_package()


@pytest.mark.parametrize("bad", ["../etc/passwd", ".hidden", "a/b", "", "x" * 200])
def test_an_update_id_that_is_not_a_plain_file_name_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidField):
        PartialDownload(tmp_path, bad, 1, SHA)


def test_commits_update_the_state_in_place_alternating_two_slots(tmp_path: Path) -> None:
    p = committed(tmp_path, 65_536)  # the first commit creates the file: slot 1
    inode = p.state_path.stat().st_ino
    assert decode_state(p.state_path.read_bytes()) == (p.identity, [65_536, None])
    f, offset, _ = partial(tmp_path).open_for_resume()
    with f:
        f.write(DATA[offset:196_608])
        resumed = partial(tmp_path)
        assert resumed.committed_offset() == 65_536
        resumed.commit(f, 131_072)  # the other slot, never the newest
        assert decode_state(p.state_path.read_bytes())[1] == [65_536, 131_072]
        resumed.commit(f, 196_608)  # and back: the older of the two
    assert decode_state(p.state_path.read_bytes())[1] == [196_608, 131_072]
    assert p.state_path.stat().st_ino == inode  # no new file per commit
    assert partial(tmp_path).committed_offset() == 196_608


def test_a_torn_slot_falls_back_to_the_previous_commit(tmp_path: Path) -> None:
    # Given a commit of 131072 whose slot write was torn by a power cut
    p = committed(tmp_path, 65_536)
    with p.state_path.open("r+b") as state:
        state.seek(SLOT_OFFSETS[1])
        state.write(encode_slot(131_072)[:12] + b"\0" * 18)
    # Then the other slot's commit counts, and the bytes beyond it are cut off
    f, offset, hasher = partial(tmp_path).open_for_resume()
    with f:
        assert offset == 65_536
        assert hasher.hexdigest() == hashlib.sha256(DATA[:65_536]).hexdigest()


def test_a_slot_detects_any_change_to_its_offset() -> None:
    slot = encode_slot(10_485_760)
    assert decode_slot(slot) == 10_485_760
    assert len(slot) == SLOT_SIZE
    assert decode_slot(slot.replace(b"1048", b"1049")) is None
    assert decode_slot(b" " * SLOT_SIZE) is None


def test_a_format_1_state_file_is_discarded(tmp_path: Path) -> None:
    p = committed(tmp_path, 100_000)
    p.state_path.unlink()
    legacy = tmp_path / "ota-1.state.json"
    legacy.write_text(json.dumps({"format": 1, "offset": 100_000}))
    f, offset, _ = partial(tmp_path).open_for_resume()
    with f:
        assert offset == 0
    assert not legacy.exists()
