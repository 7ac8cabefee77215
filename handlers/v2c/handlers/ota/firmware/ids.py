"""The deterministic firmware id (BR-OTA-004).

`firmware_id = hex(SHA-256(f"{name}:{version}:{device_model}"))[:32]`: the
same package metadata always names the same record, so a retried upload
finds the record its first attempt wrote instead of creating a twin. 32 hex
characters are 128 bits: collisions between distinct packages are not a
practical concern.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

FIRMWARE_ID_LENGTH: Final = 32
FIRMWARE_ID_PATTERN: Final = re.compile(r"[0-9a-f]{32}")


def firmware_id(name: str, version: str, device_model: str) -> str:
    """The id of the package `name` at `version` for `device_model`.

    The inputs are taken as given (the metadata model strips them first):
    hashing is the only step, so any other implementation of BR-OTA-004
    computes the same id."""
    text = f"{name}:{version}:{device_model}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FIRMWARE_ID_LENGTH]


def is_firmware_id(text: str) -> bool:
    """Whether `text` has the shape of a firmware id (cheap check before a read)."""
    return FIRMWARE_ID_PATTERN.fullmatch(text) is not None
