"""The partial package on the vehicle's disk, and the offset it is good up to.

Three files per update in the download directory:

* `<update_id>.part`: the bytes received so far;
* `<update_id>.state`: which package the `.part` belongs to and how many of
  its bytes are known good (layout below);
* `<update_id>.swu`: the complete, verified package (the `.part` renamed).

The state never claims bytes that are not on disk: a commit writes the
bytes, fsyncs the `.part` file, and only then records the new offset (and
fsyncs the state). Bytes of the `.part` beyond the recorded offset (a torn
write, or granules received after the last commit) are cut off on resume.

State layout (format 2). Replacing a whole state file per commit (temporary
file, fsync, `os.replace`) costs a file creation and a rename, about 1.5 ms
on a loaded disk: more than receiving a 1 MiB chunk on a fast link. So the
file is created once per download (at its first commit) and then updated
in place:

* bytes 0-511: the package's identity, JSON padded with spaces
  (`{"format", "update_id", "expected_size", "sha256"}`), written when the
  file is created and never again;
* two offset slots at bytes 512 and 1024 (separate disk sectors), each
  `"<offset, 20 digits> <crc32, 8 hex>\\n"`. A commit overwrites the slot
  that does not hold the newest offset, so a write torn by a power cut can
  only spoil that one slot (its CRC no longer matches): the other still
  holds the previous commit. Offsets only grow within one file, so the
  newest valid slot is the one with the largest offset.

A file that cannot be parsed, or that names another package (same update
id, different size or hash), is discarded with its `.part`, and the
download restarts from 0: the package is named by its signed size and
SHA-256, never by URL, so a new presigned URL resumes the same file.

SHA-256's running state cannot be saved with hashlib, so a resume re-hashes
the committed prefix from disk, streaming (memory bounded by `READ_SIZE`);
a prefix corrupted on disk then fails the final digest check.

Blocking file I/O: the async downloader runs the slow methods (open, resume
hash, durable commits, finish) in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import zlib
from pathlib import Path
from typing import IO, Any, Final

from v2c.contract.errors import InvalidField
from v2c.vehicle_sim.atomic import fsync_dir, temp_path

STATE_FORMAT: Final = 2
READ_SIZE: Final = 1024 * 1024
PART_SUFFIX: Final = ".part"
STATE_SUFFIX: Final = ".state"
LEGACY_STATE_SUFFIX: Final = ".state.json"  # format 1, replaced per commit: discarded
PACKAGE_SUFFIX: Final = ".swu"
HEADER_SIZE: Final = 512
SLOT_OFFSETS: Final = (512, 1024)
SLOT_SIZE: Final = 30  # 20 digits, a space, 8 hex digits, a newline
# The update id names files: no separators, no leading dot, bounded.
_SAFE_ID: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_SLOT: Final = re.compile(rb"^(\d{20}) ([0-9a-f]{8})\n$")


def package_path(dest_dir: Path, update_id: str) -> Path:
    """Where the verified package of `update_id` lands."""
    return Path(dest_dir) / f"{_checked(update_id)}{PACKAGE_SUFFIX}"


def _checked(update_id: str) -> str:
    if not _SAFE_ID.match(update_id):
        raise InvalidField("update_id", "not usable as a file name")
    return update_id


def hash_file(path: Path, length: int | None = None) -> Any:
    """A SHA-256 object fed with the first `length` bytes (all, if None) of `path`."""
    hasher = hashlib.sha256()
    remaining = length
    with path.open("rb") as f:
        while remaining is None or remaining > 0:
            block = f.read(READ_SIZE if remaining is None else min(READ_SIZE, remaining))
            if not block:
                break
            hasher.update(block)
            if remaining is not None:
                remaining -= len(block)
    if remaining:
        raise OSError(f"{path} is shorter than {length} bytes")
    return hasher


# -- the state file's bytes (pure) ---------------------------------------------
def encode_slot(offset: int) -> bytes:
    """One offset slot: the offset and a CRC-32 that exposes a torn write."""
    digits = b"%020d" % offset
    return b"%s %08x\n" % (digits, zlib.crc32(digits))


def decode_slot(raw: bytes) -> int | None:
    """The offset a slot holds, or None for a blank, torn or foreign one."""
    match = _SLOT.match(raw)
    if match is None or int(match[2], 16) != zlib.crc32(match[1]):
        return None
    return int(match[1])


def encode_state(identity: dict[str, Any], offset: int) -> bytes:
    """A new state file: the identity header, the first slot holding `offset`."""
    header = json.dumps(identity, separators=(",", ":")).encode()
    if len(header) >= HEADER_SIZE:
        raise InvalidField("update_id", "too long for the state header")
    body = header.ljust(SLOT_OFFSETS[0], b" ") + encode_slot(offset)
    return body.ljust(SLOT_OFFSETS[1], b" ") + b" " * (SLOT_SIZE - 1) + b"\n"


def decode_state(raw: bytes) -> tuple[Any, list[int | None]]:
    """(the identity header, or None if unreadable; each slot's offset, None if invalid)."""
    try:
        identity = json.loads(raw[:HEADER_SIZE].decode("utf-8"))
    except ValueError:
        identity = None
    slots = [decode_slot(raw[at : at + SLOT_SIZE]) for at in SLOT_OFFSETS]
    return identity, slots


class PartialDownload:
    """The on-disk state of one update's download (not shared between tasks)."""

    def __init__(
        self,
        dest_dir: Path,
        update_id: str,
        expected_size: int,
        sha256_hex: str,
        *,
        fsync: bool = True,
    ) -> None:
        self.dir = Path(dest_dir)
        self.update_id = _checked(update_id)
        self.expected_size = expected_size
        self.sha256_hex = sha256_hex
        self.fsync = fsync
        self.part_path = self.dir / f"{update_id}{PART_SUFFIX}"
        self.state_path = self.dir / f"{update_id}{STATE_SUFFIX}"
        self.legacy_state_path = self.dir / f"{update_id}{LEGACY_STATE_SUFFIX}"
        self.package_path = self.dir / f"{update_id}{PACKAGE_SUFFIX}"
        self._next_slot = 1  # the slot the next commit overwrites

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "update_id": self.update_id,
            "expected_size": self.expected_size,
            "sha256": self.sha256_hex,
        }

    # -- resume --------------------------------------------------------------
    def committed_offset(self) -> int:
        """The offset the state file vouches for, 0 when there is none or it
        belongs to another package (then the stale files are removed)."""
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            self.legacy_state_path.unlink(missing_ok=True)  # a format-1 state: not resumed
            return 0
        except OSError:
            raw = b""
        identity, slots = decode_state(raw)
        valid = [s for s in slots if s is not None and 0 <= s <= self.expected_size]
        if identity != self.identity or not valid:
            self.discard()
            return 0
        offset = max(valid)
        self._next_slot = 1 - slots.index(offset)
        return offset

    def prepare(self) -> tuple[IO[bytes], int, Any] | None:
        """None when the verified package is here already, else `open_for_resume()`:
        what a download call does first, in one trip to a worker thread."""
        return None if self.verified_package() else self.open_for_resume()

    def open_for_resume(self) -> tuple[IO[bytes], int, Any]:
        """Open the `.part` file at the committed offset, with the prefix hashed.

        Returns (file positioned at the offset, offset, SHA-256 of the prefix).
        A `.part` shorter than its state (it cannot happen with the commit
        order above, but disks lie) restarts from 0. A download from 0 has
        no state file until its first commit creates it: the request is
        under way by then, and creating a file (~0.5-3 ms on a busy disk)
        overlaps the transfer instead of delaying it.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        offset = self.committed_offset()
        if offset and (not self.part_path.exists() or self.part_path.stat().st_size < offset):
            self.discard()
            offset = 0
        f = open(self.part_path, "r+b" if offset else "w+b")  # noqa: SIM115 (caller closes)
        try:
            if offset:
                # Drop bytes no state vouches for. Only here: on ext4 a file
                # truncated to 0 bytes is flushed to disk when it is closed
                # (auto_da_alloc), a write-back nobody asked for ("w+b" on a
                # new file does not count as a truncation).
                f.truncate(offset)
                hasher = hash_file(self.part_path, offset)
                f.seek(offset)
            else:  # the state file comes with the first commit
                hasher = hashlib.sha256()
        except BaseException:
            f.close()
            raise
        return f, offset, hasher

    # -- progress ------------------------------------------------------------
    def commit(self, f: IO[bytes], offset: int) -> None:
        """Make `offset` bytes of the `.part` durable, then say so in the state.

        Without fsync it is a flush and one 30-byte `pwrite`, cheap enough
        for the event loop; with fsync the downloader runs it in a thread.
        """
        f.flush()
        if self.fsync:
            os.fsync(f.fileno())
        try:
            fd = os.open(self.state_path, os.O_WRONLY)
        except FileNotFoundError:  # the first commit of a download from 0
            self._create_state(offset)
            return
        try:
            os.pwrite(fd, encode_slot(offset), SLOT_OFFSETS[self._next_slot])
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self._next_slot = 1 - self._next_slot

    def _create_state(self, offset: int) -> None:
        """A new state file. Written in place, not replaced: a torn one does
        not parse, is discarded, and the download restarts from 0, as it
        would have without the file."""
        with self.state_path.open("wb") as out:
            out.write(encode_state(self.identity, offset))
            out.flush()
            if self.fsync:
                os.fsync(out.fileno())
        self._next_slot = 1
        self._sync_dir()

    def finish(self, f: IO[bytes]) -> Path:
        """The package is complete and verified: rename it into place."""
        f.flush()
        if self.fsync:
            os.fsync(f.fileno())
        f.close()
        os.replace(self.part_path, self.package_path)
        self.state_path.unlink(missing_ok=True)
        self._sync_dir()
        return self.package_path

    def verified_package(self) -> bool:
        """True when the final package is already here and matches (a restart
        after the rename but before the agent heard of it)."""
        try:
            if self.package_path.stat().st_size != self.expected_size:
                return False
            digest: str = hash_file(self.package_path).hexdigest()
        except OSError:
            return False
        return digest == self.sha256_hex

    def discard(self) -> None:
        """Delete the partial file, its state and any finished package."""
        for path in (
            self.part_path,
            self.state_path,
            self.legacy_state_path,
            temp_path(self.legacy_state_path),
            self.package_path,
        ):
            path.unlink(missing_ok=True)

    def _sync_dir(self) -> None:
        """Make a rename or a new file durable (POSIX: fsync the directory)."""
        with contextlib.suppress(OSError):  # some file systems refuse O_RDONLY dirs
            fsync_dir(self.dir, self.fsync)
