"""One way to replace a file on the vehicle's "flash" so a power cut leaves the old or the new.

The agent's state, the A/B flash's environment and records, and a partial
download's resume state are all written the same way: a temporary file
beside the target, fsync, `os.replace`, then fsync of the directory so the
rename itself survives. `durable=False` skips the fsyncs (the replace stays
atomic against a crash of the process, not against a power loss), for
fleet simulations and property tests, where fsync is most of the cost.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

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


def temp_path(path: Path) -> Path:
    """Where `atomic_write` stages `path` (what a power cut may leave behind)."""
    return path.with_name(f".{path.name}.tmp")


def atomic_write(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o644) -> None:
    """Temp file, fsync, `os.replace`, fsync of the directory. `mode` from
    the temp file's creation on (a private key: 0o600, never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.unlink(missing_ok=True)  # a leftover keeps its mode: start from none
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as f:
        f.write(data)
        f.flush()
        if durable:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent, durable)


def atomic_write_json(path: Path, doc: Any, *, durable: bool = True) -> None:
    atomic_write(path, json.dumps(doc, separators=(",", ":")).encode(), durable=durable)


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
