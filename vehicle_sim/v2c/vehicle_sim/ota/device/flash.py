"""The vehicle's modelled A/B flash, on disk in one directory per vehicle.

Layout under the vehicle directory::

    boot/uboot.env          U-Boot environment, copy 1  (crc32 | flags | key=value\\0...\\0)
    boot/uboot.env.redund   U-Boot environment, copy 2
    slot_a.img, slot_b.img  the two root partitions: a small header + the image bytes
    data/ota/               the data partition: staging image, journals

The environment is U-Boot's redundant format (`CONFIG_SYS_REDUNDAND_ENVIRONMENT`,
`CONFIG_ENV_SIZE` 8 KiB): each copy is a little-endian CRC-32 of its data, a
one-byte flags counter and the data. `fw_setenv` writes the copy that is *not*
current, with the flags one higher, so a write torn by a power cut breaks at
most that copy's CRC and the reader falls back to the other, intact, older
copy (U-Boot's `env_check_redund` rules, wrap of the counter included). Both
copies bad cannot come from one torn write; if it happens anyway the reader
uses the default environment, as U-Boot does.

A slot holds `V2CSLOT1`, a 4-byte header length, a JSON header (version,
SHA-256 and size of the image) and the image. A slot is written in place, as
a raw partition is: a torn write leaves a slot whose bytes do not match its
header, which `read_slot` rejects and which therefore cannot boot.

The simulated faults live here, in the device, not in the installer: a bad
block (`flash_write`) silently garbles one byte of a slot write, so only the
installer's read-back check can find it; `extraction` garbles (or runs out of
space for) the staging image; `partition_unavailable` makes the partition the
bootloader does not boot unreadable. Host-side, every file is replaced
atomically (temp file, fsync, `os.replace`, fsync of the directory): a crash
of the simulator itself never produces a torn file; only the modelled power
cut does, and it does so on purpose. `durable=False` skips the fsyncs (still
atomic against a crash of the process, not against the host losing power):
for fleet simulations and property tests, where fsync is most of the cost.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

from v2c.contract.errors import CodecError
from v2c.vehicle_sim.atomic import atomic_write, fsync_dir
from v2c.vehicle_sim.ota.agent.bootloader import BootEnv, Slot, SlotState
from v2c.vehicle_sim.ota.agent.steps import InstallStep, PowerCut, PowerPlan
from v2c.vehicle_sim.ota.device.faults import Extraction, FaultMode, VehicleFaults

ENV_SIZE: Final = 0x2000  # CONFIG_ENV_SIZE: crc (4) + flags (1) + data
_ENV_DATA: Final = ENV_SIZE - 5
SLOT_MAGIC: Final = b"V2CSLOT1"
CHUNK: Final = 1 << 20
_COPIES: Final = ("uboot.env", "uboot.env.redund")
_NULS: Final = bytes(ENV_SIZE)


@dataclass(frozen=True, slots=True)
class SlotImage:
    """What a slot holds, read from its header and checked against its bytes."""

    slot: Slot
    version: str
    sha256: str  # hex
    size: int


@dataclass(frozen=True, slots=True)
class EnvCopy:
    index: int  # 0 or 1
    flags: int
    env: BootEnv | None  # None: bad CRC or unreadable


# --- the environment's bytes (pure) -----------------------------------------


def encode_env(env: BootEnv, flags: int) -> bytes:
    text = b"".join(f"{k}={v}".encode() + b"\0" for k, v in sorted(env.to_vars().items()))
    if len(text) + 1 > _ENV_DATA:
        raise CodecError("boot environment larger than CONFIG_ENV_SIZE")
    data = text + b"\0" * (_ENV_DATA - len(text))
    return struct.pack("<IB", zlib.crc32(data), flags & 0xFF) + data


def decode_env(blob: bytes) -> tuple[int, BootEnv | None]:
    """(flags, env); env None when the CRC or the contents are bad."""
    if len(blob) != ENV_SIZE:
        return (blob[4] if len(blob) > 4 else 0), None
    crc, flags = struct.unpack_from("<IB", blob)
    data = blob[5:]
    if zlib.crc32(data) != crc:
        return flags, None
    variables: dict[str, str] = {}
    # The variables end at the first empty entry ("\0\0"): split only what
    # comes before it, not the thousands of NULs that pad the copy.
    for entry in data.split(b"\0\0", 1)[0].split(b"\0"):
        if not entry:
            break
        key, sep, value = entry.decode("utf-8", "replace").partition("=")
        if sep:
            variables[key] = value
    try:
        return flags, BootEnv.from_vars(variables)
    except CodecError:
        return flags, None


def current_copy(copies: tuple[EnvCopy, EnvCopy]) -> EnvCopy | None:
    """U-Boot's choice between the two copies (env_check_redund)."""
    first, second = copies
    if first.env is None or second.env is None:
        valid = [c for c in copies if c.env is not None]
        return valid[0] if valid else None
    if first.flags == 0xFF and second.flags == 0:
        return second
    if second.flags == 0xFF and first.flags == 0:
        return first
    return second if second.flags > first.flags else first


# --- the device --------------------------------------------------------------


def _sync(f: BinaryIO, durable: bool) -> None:
    f.flush()
    if durable:
        os.fsync(f.fileno())


class Flash:
    """One vehicle's flash. `power` is the simulated supply (a plan of where
    it fails); `faults` the device's failure modes."""

    def __init__(
        self,
        root: Path,
        *,
        faults: VehicleFaults | None = None,
        power: PowerPlan | None = None,
        durable: bool = True,
    ) -> None:
        self.root = Path(root)
        self.durable = durable
        self.faults = faults or VehicleFaults.none()
        self.power = power or PowerPlan()
        self.boot_dir = self.root / "boot"
        self.data_dir = self.root / "data" / "ota"
        self._env_paths = tuple(os.path.join(self.boot_dir, name) for name in _COPIES)
        # Per copy, the last bytes read (as `_env_key`) and what they decode
        # to: a copy is re-read on every access (anything may have written
        # it) but decoded only when its bytes changed.
        self._env_seen: list[tuple[tuple[int, bytes], EnvCopy] | None] = [None, None]
        self._slot_paths = {slot: self.root / f"slot_{slot.value.lower()}.img" for slot in Slot}

    @classmethod
    def provision(
        cls,
        root: Path,
        version: str,
        image: bytes,
        *,
        bootlimit: int = 3,
        faults: VehicleFaults | None = None,
        power: PowerPlan | None = None,
        durable: bool = True,
    ) -> Flash:
        """A factory-fresh vehicle: `image` in slot A (good), slot B empty."""
        root = Path(root)
        for sub in (root / "boot", root / "data" / "ota"):
            sub.mkdir(parents=True, exist_ok=True)
        flash = cls(root, faults=faults, power=power, durable=durable)
        staging = flash.data_dir / "factory.img"
        atomic_write(staging, image, durable=durable)
        flash.write_slot(Slot.A, version, staging)
        staging.unlink()
        flash.slot_path(Slot.B).write_bytes(b"")
        env = BootEnv(bootlimit=bootlimit, slot_a_state=SlotState.GOOD)
        flash.write_env(env)
        return flash

    # -- environment ----------------------------------------------------------

    def _env_copies(self) -> tuple[EnvCopy, EnvCopy]:
        return self._env_copy(0), self._env_copy(1)

    def _env_copy(self, index: int) -> EnvCopy:
        """Copy `index` as it is on disk now; decoded again only if its bytes
        differ from the last read (the same bytes decode the same)."""
        blob = _read_or_empty(self._env_paths[index])
        key = _env_key(blob)
        seen = self._env_seen[index]
        if seen is not None and seen[0] == key:
            return seen[1]
        flags, env = decode_env(blob) if blob else (0, None)
        copy = EnvCopy(index, flags, env)
        self._env_seen[index] = (key, copy)
        return copy

    def read_env(self) -> BootEnv:
        """The current environment, or U-Boot's default if no copy is valid."""
        chosen = current_copy(self._env_copies())
        if chosen is None or chosen.env is None:
            return BootEnv()
        return chosen.env

    def write_env(self, env: BootEnv, *, step: InstallStep | None = None) -> None:
        """`saveenv`: write the non-current copy with the next flags value. A
        power plan for `step` may tear this write (then `PowerCut`)."""
        copies = self._env_copies()
        chosen = current_copy(copies)
        target = 0 if chosen is None else 1 - chosen.index
        flags = 0 if chosen is None else (chosen.flags + 1) & 0xFF
        blob = encode_env(env, flags)
        path = self._env_paths[target]
        cut = self._tear(step, len(blob))
        if cut is not None:
            old = _read_or_empty(path)
            old = old.ljust(len(blob), b"\xff")  # erased flash reads 0xFF
            atomic_write(path, blob[: cut[1]] + old[cut[1] :], durable=self.durable)
            raise PowerCut(cut[0], torn=True)
        atomic_write(path, blob, durable=self.durable)

    def _tear(self, step: InstallStep | None, nbytes: int) -> tuple[InstallStep, int] | None:
        """(step, bytes that land) if the supply fails during this write."""
        if step is None:
            return None
        tear = self.power.tear_after(step, nbytes)
        return None if tear is None else (step, tear)

    # -- slots ----------------------------------------------------------------

    def slot_path(self, slot: Slot) -> Path:
        return self._slot_paths[slot]

    def probe(self, slot: Slot) -> bool:
        """Whether the partition can be opened for writing."""
        if (
            FaultMode.PARTITION_UNAVAILABLE in self.faults
            and slot is not self.read_env().boot_partition
        ):
            return False
        path = self.slot_path(slot)
        return path.is_file() and os.access(path, os.R_OK | os.W_OK)

    def write_slot(
        self, slot: Slot, version: str, source: Path, *, step: InstallStep | None = None
    ) -> None:
        """Write `source` (the image) into `slot`, in place, then fsync. The
        write is not checked here: the caller reads it back."""
        size = source.stat().st_size
        digest = hashlib.sha256()
        with source.open("rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
        header = json.dumps(
            {"version": version, "sha256": digest.hexdigest(), "size": size},
            separators=(",", ":"),
        ).encode()
        prefix = SLOT_MAGIC + struct.pack(">I", len(header)) + header
        total = len(prefix) + size
        cut = self._tear(step, total)
        limit = total if cut is None else cut[1]
        path = self.slot_path(slot)
        with path.open("wb") as out, source.open("rb") as f:
            written = _copy(out, [prefix], limit)
            _copy(out, iter(lambda: f.read(CHUNK), b""), limit - written)
            _sync(out, self.durable)
        if cut is not None:
            raise PowerCut(cut[0], torn=True)
        if FaultMode.FLASH_WRITE in self.faults and size > 0:
            # a bad block: one byte did not take
            _flip_byte(path, len(prefix) + size // 2, self.durable)

    def read_slot(self, slot: Slot) -> SlotImage | None:
        """The slot's image if its bytes match its header, else None (empty,
        torn or garbled): what the bootloader can load."""
        path = self.slot_path(slot)
        try:
            with path.open("rb") as f:
                head = f.read(len(SLOT_MAGIC) + 4)
                if len(head) < len(SLOT_MAGIC) + 4 or not head.startswith(SLOT_MAGIC):
                    return None
                (length,) = struct.unpack(">I", head[len(SLOT_MAGIC) :])
                if length > 4096:
                    return None
                meta: dict[str, Any] = json.loads(f.read(length))
                version, expected, size = str(meta["version"]), str(meta["sha256"]), meta["size"]
                digest, seen = hashlib.sha256(), 0
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    digest.update(chunk)
                    seen += len(chunk)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if seen != size or digest.hexdigest() != expected:
            return None
        return SlotImage(slot, version, expected, int(size))

    # -- data partition -------------------------------------------------------

    @property
    def staging_path(self) -> Path:
        return self.data_dir / "staging.img"

    def write_staging(
        self, chunks: Iterable[bytes], size: int, *, step: InstallStep | None = None
    ) -> str:
        """Stream the extracted image to the staging file; its SHA-256 (hex) as
        written. The `extraction` fault garbles a byte or runs out of space."""
        fault = self.faults.get(Extraction)
        cut = self._tear(step, max(size, 1))
        limit = size if cut is None else cut[1]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.staging_path
        with path.open("wb") as out:
            if fault is not None and fault.kind == "no_space":
                _copy(out, chunks, size // 2)
                raise OSError(errno.ENOSPC, "no space left on the data partition")
            _copy(out, chunks, limit)
            _sync(out, self.durable)
        if cut is not None:
            raise PowerCut(cut[0], torn=True)
        if fault is not None and size > 0:
            _flip_byte(path, size // 2, self.durable)
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def read_record(self, name: str) -> dict[str, Any] | None:
        path = self.data_dir / f"{name}.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return doc if isinstance(doc, dict) else None

    def write_record(self, name: str, doc: dict[str, Any]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        doc_bytes = json.dumps(doc, sort_keys=True).encode()
        atomic_write(self.data_dir / f"{name}.json", doc_bytes, durable=self.durable)

    def remove_record(self, name: str) -> None:
        (self.data_dir / f"{name}.json").unlink(missing_ok=True)
        fsync_dir(self.data_dir, self.durable)


def _env_key(blob: bytes) -> tuple[int, bytes]:
    """A copy's bytes as (length, the bytes before its NUL padding), or
    (length, all of them) if it does not end in NULs: equal keys are equal
    bytes, and a remembered copy holds ~100 bytes, not 8 KiB per vehicle."""
    end = blob.find(b"\0\0", 5)  # after the CRC and flags, which may hold NULs
    if end >= 0 and blob.endswith(_NULS[: len(blob) - end]):
        return len(blob), blob[:end]
    return len(blob), blob


def _read_or_empty(path: str) -> bytes:
    """The file's bytes, or b"" if it is not there (one open, no stat first)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return b""


def _copy(out: BinaryIO, chunks: Iterable[bytes], limit: int) -> int:
    """Write `chunks` to `out` up to `limit` bytes; how many were written."""
    written = 0
    for chunk in chunks:
        if written >= limit:
            break
        part = chunk[: limit - written]
        out.write(part)
        written += len(part)
    return written


def _flip_byte(path: Path, offset: int, durable: bool) -> None:
    """Garble one byte in place (a bad block, a corrupt extraction)."""
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([(byte[0] if byte else 0) ^ 0x5A]))
        _sync(f, durable)
