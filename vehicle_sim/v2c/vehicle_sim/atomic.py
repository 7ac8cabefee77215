"""One way to replace a file on the vehicle's "flash" so a power cut leaves the old or the new.

The agent's state, the A/B flash's environment and records, and a partial
download's resume state are all written the same way: a temporary file
beside the target, fsync, `os.replace`, then fsync of the directory so the
rename itself survives. `durable=False` skips the fsyncs (the replace stays
atomic against a crash of the process, not against a power loss), for
fleet simulations and property tests, where fsync is most of the cost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)


def fsync_dir(path: Path, durable: bool = True) -> None:
    """Make a rename (or a new file) in `path` survive a power loss."""
    if not durable:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(name: str) -> str:
    """The name `atomic_write` stages a file called `name` under."""
    return f".{name}.tmp"


def temp_path(path: Path) -> Path:
    """Where `atomic_write` stages `path` (what a power cut may leave behind)."""
    return path.with_name(temp_name(path.name))


def atomic_write(path: Path | str, data: bytes, *, durable: bool = True, mode: int = 0o644) -> None:
    """Temp file, fsync, `os.replace`, fsync of the directory. `mode` from
    the temp file's creation on (a private key: 0o600, never readable by others).

    The agent saves its state for every report, so this is on the fleet
    simulator's hot path: plain `str` paths and raw descriptors, and the
    directory made and a leftover temp file removed only when creating the
    temp file says they are needed (the same files result)."""
    target = os.fspath(path)
    head, name = os.path.split(target)
    tmp = os.path.join(head, temp_name(name))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        descriptor = os.open(tmp, flags, mode)
    except FileExistsError:  # a leftover keeps its mode: start from none
        os.unlink(tmp)
        descriptor = os.open(tmp, flags, mode)
    except FileNotFoundError:  # the directory is not there yet
        os.makedirs(head, exist_ok=True)
        descriptor = os.open(tmp, flags, mode)
    try:
        if not durable and data and _FALLOCATE is not None:
            _reserve(_FALLOCATE, descriptor, len(data))
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        if durable:
            os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(tmp, target)
    if durable:
        fsync_dir(Path(head or "."))


# Without fsync, ext4 (auto_da_alloc) starts writing the temp file's delayed
# blocks back when `os.replace` puts it over an existing file, and the rename
# waits for that: most of a small replace's CPU and ~0.2 ms of the event
# loop's time per agent save. Blocks allocated up front are not delayed, so
# the rename does not flush them. The file is the same; only a power loss
# (which `durable=False` does not promise to survive) can tell the two apart.
_FALLOCATE: Final = getattr(os, "posix_fallocate", None)


def _reserve(fallocate: Callable[[int, int, int], None], descriptor: int, size: int) -> None:
    with contextlib.suppress(OSError):  # a file system without it: written as before
        fallocate(descriptor, 0, size)


# One encoder, made once: `json.dumps` with `separators` builds a new one per call.
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"))


def atomic_write_json(path: Path | str, doc: Any, *, durable: bool = True) -> None:
    atomic_write(path, _COMPACT.encode(doc).encode(), durable=durable)


def read_json(path: Path) -> dict[str, Any] | None:
    """What `atomic_write_json` left at `path`: None if absent or unreadable
    (a file this module wrote is never torn, but one from elsewhere may be)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        logger.warning("unreadable %s; ignored", path)
        return None
    return doc if isinstance(doc, dict) else None
