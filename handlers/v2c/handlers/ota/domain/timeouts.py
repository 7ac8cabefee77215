"""When the monitor must look at an update again: its deadline, or its next check while waiting.

Two kinds of update need the cloud to act without a report arriving:

* in flight (`IN_FLIGHT`: notified up to verifying, DEFERRED included) with
  a timeout (BR-OTA-018 a campaign's `timeout_minutes`, BR-OTA-025 a device
  update's own): due at `notified_at + timeout`. A vehicle waiting for its
  conditions (DEFERRED) is not timed out before that either, and not after
  it spared: the deadline is the one promise the cloud makes the fleet
  manager. A re-notification (a retry) starts a new deadline.
* waiting (WAITING: busy with another update, BR-OTA-014/023): due for a
  look every `wait_recheck_ms` since it was last looked at, to be notified
  once the vehicle is free.

The repository stores `due_at(...)` on the record, with a shard
(`due_shard`), in a sparse index (`by-due`): a record not due for anything
carries neither and is not in it. So a monitor pass reads the updates whose
time came, oldest first, a bounded number per pass, instead of every update
of every running campaign each minute. The index is eventually consistent:
the monitor reads each record again and asks `deadline_passed` /
`recheck_due` on what it read before acting.

Pure: values in, decisions out.
"""

from __future__ import annotations

import zlib
from enum import StrEnum
from typing import Final, Protocol

from v2c.handlers.ota.domain.update_state import IN_FLIGHT, UpdateState

MINUTE_MS: Final = 60_000
# How often a waiting vehicle is looked at (one read of its records each time).
WAIT_RECHECK_MS: Final = MINUTE_MS
# Shards of the due index: a 100,000-vehicle dispatch writes a due time per
# record, which one partition key value would take at 1,000 writes a second.
DUE_SHARDS: Final = 8
# What one monitor pass handles at most, per kind (bounded work per minute).
MAX_DUE_PER_PASS: Final = 500


class DueKind(StrEnum):
    TIMEOUT = "timeout"
    WAITING = "waiting"


class Timed(Protocol):
    """What the due time reads of an update record (`VehicleUpdate` is one)."""

    @property
    def vehicle_id(self) -> str: ...
    @property
    def state(self) -> UpdateState: ...
    @property
    def notified_at_ms(self) -> int: ...
    @property
    def timeout_ms(self) -> int: ...
    @property
    def updated_at_ms(self) -> int: ...


def timeout_ms(minutes: int) -> int:
    return minutes * MINUTE_MS


def due_kind(update: Timed) -> DueKind | None:
    """What the monitor has to do about `update` once due, or None: nothing."""
    if update.state in IN_FLIGHT and update.timeout_ms > 0 and update.notified_at_ms > 0:
        return DueKind.TIMEOUT
    if update.state is UpdateState.WAITING:
        return DueKind.WAITING
    return None


def due_at(update: Timed, recheck_ms: int = WAIT_RECHECK_MS) -> int | None:
    """When the monitor must look at `update` (epoch ms), or None: never."""
    kind = due_kind(update)
    if kind is DueKind.TIMEOUT:
        return update.notified_at_ms + update.timeout_ms
    if kind is DueKind.WAITING:
        return update.updated_at_ms + recheck_ms
    return None


def due_shard(kind: DueKind, vehicle_id: str, shards: int = DUE_SHARDS) -> str:
    """The index partition of a due record: its kind and a stable shard of its vehicle."""
    return f"{kind.value}#{zlib.crc32(vehicle_id.encode()) % shards}"


def shards_of(kind: DueKind, shards: int = DUE_SHARDS) -> list[str]:
    return [f"{kind.value}#{n}" for n in range(shards)]


def deadline_passed(update: Timed, now_ms: int) -> bool:
    """In flight with a timeout, and past its deadline, as read now."""
    due = due_at(update)
    return due_kind(update) is DueKind.TIMEOUT and due is not None and due <= now_ms


def recheck_due(update: Timed, now_ms: int, recheck_ms: int = WAIT_RECHECK_MS) -> bool:
    """Waiting, and not looked at for `recheck_ms`."""
    due = due_at(update, recheck_ms)
    return due_kind(update) is DueKind.WAITING and due is not None and due <= now_ms
