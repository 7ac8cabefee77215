"""Inspect, replay and purge dead-letter records: the logic behind `v2c dlq`
and the `dlq_admin` Lambda, with the redrive paths injected.

Replay sends a record back through the path it failed on (an inbound record to
its rule's handler, an outbound record to the publisher) and deletes it only
after that succeeded, so a crash mid-replay loses nothing; handlers are
idempotent, so a record replayed twice is stored once. A replay that fails
leaves the record in place with one more attempt and the new error; every
record gets its own outcome, so one bad record never hides the others.

A store may replay its own records (`StoreRedrive`): the ingest DLQ sends an
SQS message back onto the queue it came from and deletes it in one pass
(`v2c.handlers.dlq.ingest`), instead of a redrive path and a delete.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from typing import Protocol, runtime_checkable

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import InvalidInput, NotFound, V2CError
from v2c.handlers.dlq.store import DeadLetterStore

Redrive = Callable[[DeadLetterRecord], None]


@runtime_checkable
class StoreRedrive(Protocol):
    """A store that replays its records itself, and removes each one it sent."""

    def redrive_target(self, record: DeadLetterRecord) -> str:
        """Where `record` would go; raises (`InvalidInput`) if it cannot be replayed."""
        ...

    def redrive(self, record: DeadLetterRecord) -> str:
        """Send `record` back and remove it; returns where it went. Raises,
        leaving the record in place, when it was not sent."""
        ...


class ReplayStatus(StrEnum):
    REPLAYED = "replayed"
    FAILED = "failed"
    WOULD_REPLAY = "would_replay"


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    record_id: str
    queue: str
    source: str
    status: ReplayStatus
    detail: str = ""


class DeadLetterService:
    def __init__(
        self,
        stores: Mapping[str, DeadLetterStore],
        redrivers: Mapping[Direction, Redrive],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stores = stores
        self._redrivers = redrivers
        self._clock = clock

    @property
    def queues(self) -> list[str]:
        return sorted(self._stores)

    def _selected(self, queue: str | None) -> list[DeadLetterStore]:
        if queue is None:
            return [self._stores[name] for name in self.queues]
        if queue not in self._stores:
            raise InvalidInput(f"unknown queue {queue!r}: expected one of {self.queues}")
        return [self._stores[queue]]

    def records(
        self, queue: str | None = None, since_ms: int | None = None, reason: str | None = None
    ) -> Iterator[DeadLetterRecord]:
        for store in self._selected(queue):
            for record in store.list():
                if since_ms is not None and record.last_failed_at < since_ms:
                    continue
                if reason is not None and record.reason != reason:
                    continue
                yield record

    def show(self, record_id: str, queue: str | None = None) -> DeadLetterRecord:
        for store in self._selected(queue):
            try:
                return store.get(record_id)
            except NotFound:
                continue
        raise NotFound(f"no dead-letter record {record_id}")

    def depths(self) -> dict[str, int]:
        return {name: self._stores[name].depth() for name in self.queues}

    def replay(
        self,
        *,
        queue: str | None = None,
        record_id: str | None = None,
        replay_all: bool = False,
        dry_run: bool = False,
        limit: int | None = None,
    ) -> list[ReplayOutcome]:
        """`limit`: at most this many records of `replay_all` (bounded work
        per call; as many outcomes as `limit` means more may remain)."""
        if (record_id is None) == (not replay_all):
            raise InvalidInput("replay needs exactly one of a record id or --all")
        if limit is not None and limit < 1:
            raise InvalidInput("a replay limit must be at least 1")
        if record_id is not None:
            records = [self.show(record_id, queue)]
        else:
            records = list(islice(self.records(queue), limit))
        return [self._replay_one(record, dry_run) for record in records]

    def _replay_one(self, record: DeadLetterRecord, dry_run: bool) -> ReplayOutcome:
        def outcome(status: ReplayStatus, detail: str = "") -> ReplayOutcome:
            return ReplayOutcome(record.record_id, record.queue, record.source, status, detail)

        store = self._stores[record.queue]
        if isinstance(store, StoreRedrive):
            return self._replay_in_store(store, record, dry_run, outcome)
        redrive = self._redrivers.get(record.direction)
        if redrive is None:
            return outcome(ReplayStatus.FAILED, f"no redrive path for {record.direction} records")
        if dry_run:
            return outcome(ReplayStatus.WOULD_REPLAY, f"{record.direction} via {record.source}")
        try:
            redrive(record)
        except Exception as exc:  # any failure of the path is this record's outcome
            detail = f"{type(exc).__name__}: {exc}"
            try:
                store.replace(record.with_attempt(exc, int(self._clock() * 1000)))
            except V2CError as store_exc:
                detail += f" (attempt count not updated: {store_exc.detail})"
            return outcome(ReplayStatus.FAILED, detail)
        try:
            store.delete(record.record_id)
        except V2CError as exc:
            # Handled, but still queued: a later replay repeats it, which the
            # idempotent handlers absorb. Reported, so nobody believes it gone.
            return outcome(ReplayStatus.FAILED, f"replayed, but not removed: {exc.detail}")
        return outcome(ReplayStatus.REPLAYED)

    @staticmethod
    def _replay_in_store(
        store: StoreRedrive,
        record: DeadLetterRecord,
        dry_run: bool,
        outcome: Callable[[ReplayStatus, str], ReplayOutcome],
    ) -> ReplayOutcome:
        try:
            if dry_run:
                return outcome(ReplayStatus.WOULD_REPLAY, f"to {store.redrive_target(record)}")
            return outcome(ReplayStatus.REPLAYED, f"to {store.redrive(record)}")
        except V2CError as exc:
            return outcome(ReplayStatus.FAILED, exc.detail)
        except Exception as exc:  # any failure of the path is this record's outcome
            return outcome(ReplayStatus.FAILED, f"{type(exc).__name__}: {exc}")

    def purge(self, older_than_ms: int, queue: str | None = None) -> int:
        """Delete records whose last failure is older than `older_than_ms` (epoch ms)."""
        removed = 0
        for store in self._selected(queue):
            for record in list(store.list()):
                if record.last_failed_at < older_than_ms:
                    store.delete(record.record_id)
                    removed += 1
        return removed
