"""The partial package on the vehicle's disk, and the offset it is good up to.

Three files per update in the download directory:

* `<update_id>.part`: the bytes received so far;
* `<update_id>.state.json`: `{"format", "update_id", "expected_size",
  "sha256", "offset"}`, the number of bytes of the `.part` file that are
  known good;
* `<update_id>.swu`: the complete, verified package (the `.part` renamed).

The state never claims bytes that are not on disk: a commit writes the
bytes, fsyncs the `.part` file, and only then replaces the state file
(temporary file, fsync, `os.replace`). A power cut at any point leaves
either the old state or the new one, each true of the `.part` file; bytes of
the `.part` beyond the state's offset (a torn write) are cut off on resume.

The state names the package by its signed size and SHA-256, never by URL:
a presigned URL expires and the cloud sends a new one, and the download
resumes with it. A state for another package (same update id, different
size or hash) is discarded, not resumed.

SHA-256's running state cannot be saved with hashlib, so a resume re-hashes
the committed prefix from disk, streaming (memory bounded by `READ_SIZE`).

Blocking file I/O: the async downloader runs these methods in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import IO, Any, Final

from v2c.contract.errors import InvalidField
from v2c.vehicle_sim.atomic import atomic_write_json, fsync_dir, temp_path

STATE_FORMAT: Final = 1
READ_SIZE: Final = 1024 * 1024
PART_SUFFIX: Final = ".part"
STATE_SUFFIX: Final = ".state.json"
PACKAGE_SUFFIX: Final = ".swu"
# The update id names files: no separators, no leading dot, bounded.
_SAFE_ID: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


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
        self.package_path = self.dir / f"{update_id}{PACKAGE_SUFFIX}"

    # -- resume --------------------------------------------------------------
    def committed_offset(self) -> int:
        """The offset the state file vouches for, 0 when there is none or it
        belongs to another package (then the stale files are removed)."""
        try:
            state = json.loads(self.state_path.read_text("utf-8"))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError):
            state = None
        if not self._matches(state):
            self.discard()
            return 0
        offset: int = state["offset"]
        return offset

    def _matches(self, state: Any) -> bool:
        return (
            isinstance(state, dict)
            and state.get("format") == STATE_FORMAT
            and state.get("update_id") == self.update_id
            and state.get("expected_size") == self.expected_size
            and state.get("sha256") == self.sha256_hex
            and isinstance(state.get("offset"), int)
            and 0 <= state["offset"] <= self.expected_size
        )

    def open_for_resume(self) -> tuple[IO[bytes], int, Any]:
        """Open the `.part` file at the committed offset, with the prefix hashed.

        Returns (file positioned at the offset, offset, SHA-256 of the prefix).
        A `.part` shorter than its state (it cannot happen with the commit
        order above, but disks lie) restarts from 0.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        offset = self.committed_offset()
        if offset and (not self.part_path.exists() or self.part_path.stat().st_size < offset):
            self.discard()
            offset = 0
        f = open(self.part_path, "r+b" if offset else "w+b")  # noqa: SIM115 (caller closes)
        try:
            f.truncate(offset)  # drop bytes no state vouches for
            hasher = hash_file(self.part_path, offset) if offset else hashlib.sha256()
            f.seek(offset)
        except BaseException:
            f.close()
            raise
        return f, offset, hasher

    # -- progress ------------------------------------------------------------
    def commit(self, f: IO[bytes], offset: int) -> None:
        """Make `offset` bytes of the `.part` durable, then say so in the state."""
        f.flush()
        if self.fsync:
            os.fsync(f.fileno())
        state = {
            "format": STATE_FORMAT,
            "update_id": self.update_id,
            "expected_size": self.expected_size,
            "sha256": self.sha256_hex,
            "offset": offset,
        }
        atomic_write_json(self.state_path, state, durable=self.fsync)

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
            temp_path(self.state_path),
            self.package_path,
        ):
            path.unlink(missing_ok=True)

    def _sync_dir(self) -> None:
        """Make a rename durable (POSIX: fsync the directory)."""
        with contextlib.suppress(OSError):  # some file systems refuse O_RDONLY dirs
            fsync_dir(self.dir, self.fsync)
