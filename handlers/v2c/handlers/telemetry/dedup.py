"""Duplicate detection: an in-process window in front of the store's own keys.

Three layers, cheapest first (the measurements behind the choice are in
docs/adr/0001-telemetry-dedup.md):

1. within a batch: a sample repeated inside one batch is kept once
   (`first_occurrences`); BatchWriteItem would refuse the duplicate key;
2. `DedupWindow`: message ids this process stored in the last 5 minutes.
   Free, and it catches the common case, a QoS 1 redelivery or a batch
   resent after a lost PUBACK reaching the same process;
3. the durable check, in the store: the operational record's key *is* the
   sample's identity, so a conditional put (single path) or one BatchGetItem
   per batch (batch path) finds what another process, or this one before a
   restart, already stored. Whatever slips through a race between two
   concurrent deliveries is rewritten onto the same key: stored once anyway.

An id enters the window only after its writes succeeded: a write that failed
and went to the DLQ must not make the redelivery look like a duplicate.

Pure apart from the lock: the clock is injected.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Final, TypeVar

DEFAULT_WINDOW_S: Final = 300.0  # the spec's 5-minute dedup window
# ~25 MB of ids; at 333 msg/s per process that is the whole window, beyond it
# the oldest ids leave early and the durable check takes over.
DEFAULT_MAX_ENTRIES: Final = 100_000

T = TypeVar("T")


class DedupWindow:
    """Message ids seen in the last `window_s` seconds, at most `max_entries`.

    Thread-safe: the gateway runs handlers on a thread pool and they share
    one window.
    """

    def __init__(
        self,
        window_s: float = DEFAULT_WINDOW_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or max_entries <= 0:
            raise ValueError("window_s and max_entries must be positive")
        self.window_s = window_s
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._expiry)

    def seen(self, message_id: str) -> bool:
        with self._lock:
            now = self._clock()
            self._expire(now)
            return message_id in self._expiry

    def add(self, message_ids: Iterable[str]) -> None:
        """Remember ids whose writes succeeded; re-adding one restarts its window."""
        with self._lock:
            now = self._clock()
            expiry = now + self.window_s
            for message_id in message_ids:
                self._expiry[message_id] = expiry
                self._expiry.move_to_end(message_id)
            self._expire(now)
            while len(self._expiry) > self.max_entries:
                self._expiry.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._expiry:
            oldest, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                return
            del self._expiry[oldest]


def first_occurrences(items: Sequence[T], key: Callable[[T], Hashable]) -> tuple[list[T], list[T]]:
    """(the first item of each key, in order; every later repeat)."""
    seen: set[Hashable] = set()
    first: list[T] = []
    repeats: list[T] = []
    for item in items:
        k = key(item)
        if k in seen:
            repeats.append(item)
        else:
            seen.add(k)
            first.append(item)
    return first, repeats


def partition(items: Iterable[T], is_duplicate: Callable[[T], bool]) -> tuple[list[T], list[T]]:
    """(items that are new, items that are duplicates), order kept."""
    new: list[T] = []
    duplicates: list[T] = []
    for item in items:
        (duplicates if is_duplicate(item) else new).append(item)
    return new, duplicates
