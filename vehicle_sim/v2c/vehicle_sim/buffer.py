"""The vehicle's persistent telemetry buffer and sequence counter, on its "flash".

Every sample is written here *before* it is sent, and deleted only once the
broker acknowledged it (PUBACK "delivered"). That write-ahead order is what
makes the guarantees simple: a sample is either in this file or acknowledged,
whatever happens in between (connection lost, PUBACK lost, process killed,
ignition off), and flushing after an outage is just sending the file in
order. The in-flight window of the publisher is a view over these rows.

The same transaction that stores a sample advances the sequence counter, so
(epoch, sequence), and with it the sample's derived message id, is never
issued twice: a repeat would make the cloud discard a new sample as a
duplicate of an old one. If the counter is lost (a new or corrupt file), the
buffer starts a new epoch taken from the clock (seconds since 1970, uint32),
which is larger than any epoch this vehicle used before.

Storage is SQLite in WAL mode, one file per vehicle. `durable=True` (the
default) sets `synchronous=FULL`: a commit survives a power loss, which on a
car is the common way to stop. `durable=False` (`synchronous=NORMAL`) still
survives a crash of the process, but a power loss may roll back the last
commits, sequence counter included, and then repeat sequence numbers: for
simulators and benchmarks only.

Overflow drops the *oldest* samples (the newest describe the vehicle now) and
adds them to a persisted counter, so the loss is reported, not silent.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from v2c.contract.errors import ConfigurationError
from v2c.vehicle_sim.metrics import SIM_METRICS

DEFAULT_CAPACITY: Final = 1000
_MAX_EPOCH: Final = 2**32 - 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def clock_epoch() -> int:
    """A new epoch: the current Unix time in seconds, as a uint32."""
    return max(1, min(_MAX_EPOCH, int(time.time())))


@dataclass(frozen=True, slots=True)
class BufferedSample:
    row_id: int  # increases with every append, never reused: the send order
    epoch: int
    sequence: int
    enqueued_at: float  # seconds, from the caller's clock
    payload: bytes  # the serialized Telemetry


@dataclass(frozen=True, slots=True)
class Appended:
    sample: BufferedSample
    dropped: int  # the oldest samples this append pushed out


class OfflineBuffer:
    """A bounded FIFO of serialized samples in one SQLite file, safe across threads."""

    def __init__(
        self,
        path: Path,
        vehicle_id: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        durable: bool = True,
        epoch_source: Callable[[], int] = clock_epoch,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.path = Path(path)
        self.vehicle_id = vehicle_id
        self.capacity = capacity
        self.recovered_from: Path | None = None  # where a corrupt file was moved
        self._lock = threading.Lock()
        self._epoch_source = epoch_source
        try:
            self._db = self._open(durable)
        except sqlite3.DatabaseError:
            # Not a database any more (torn write, flash wear): keep it for a
            # post-mortem, start over in a new epoch.
            self.recovered_from = self._quarantine()
            self._db = self._open(durable)
        self._depth = 0
        self._epoch = 0
        self._next_sequence = 0
        self._dropped_total = 0
        self._load_state()
        SIM_METRICS.track_buffer(self)  # the exporter's deepest buffer, read on scrape

    # -- opening -----------------------------------------------------------
    def _open(self, durable: bool) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchone()
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            db.executescript(_SCHEMA)
            db.execute("SELECT count(*) FROM samples").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _quarantine(self) -> Path:
        suffix = 1
        while (target := self.path.with_name(f"{self.path.name}.corrupt-{suffix}")).exists():
            suffix += 1
        self.path.rename(target)
        for extra in ("-wal", "-shm"):
            Path(f"{self.path}{extra}").unlink(missing_ok=True)
        return target

    def _load_state(self) -> None:
        db = self._db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        owner = meta.get("vehicle_id")
        if owner is not None and owner != self.vehicle_id:
            raise ConfigurationError(f"{self.path} is the buffer of {owner}, not {self.vehicle_id}")
        with self._transaction():
            if "epoch" not in meta or "next_sequence" not in meta:
                # Samples left without a counter belong to a lost epoch; they
                # keep their own ids, new ones start a fresh, larger epoch
                # (even if the clock was set back).
                (newest,) = db.execute("SELECT coalesce(max(epoch), 0) FROM samples").fetchone()
                epoch = max(self._epoch_source(), newest + 1)
                if not 1 <= epoch <= _MAX_EPOCH:
                    raise ValueError(f"epoch {epoch} outside 1..2**32-1")
                meta.update(vehicle_id=self.vehicle_id, epoch=str(epoch), next_sequence="1")
                meta.setdefault("dropped_total", "0")
                self._write_meta(meta)
            self._epoch = int(meta["epoch"])
            self._next_sequence = int(meta["next_sequence"])
            self._dropped_total = int(meta.get("dropped_total", "0"))
            (depth,) = db.execute("SELECT count(*) FROM samples").fetchone()
            dropped = 0
            if depth > self.capacity:  # reopened with a smaller capacity
                dropped = self._drop_oldest(depth - self.capacity)
        self._dropped_total += dropped
        self._depth = depth - dropped

    def _write_meta(self, values: dict[str, str]) -> None:
        self._db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # -- state -------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def next_sequence(self) -> int:
        return self._next_sequence

    @property
    def dropped_total(self) -> int:
        """Samples pushed out by overflow since this file was created."""
        return self._dropped_total

    def __len__(self) -> int:
        return self._depth

    # -- operations --------------------------------------------------------
    def append(self, build: Callable[[int, int], bytes], enqueued_at: float) -> Appended:
        """Store the sample `build(epoch, sequence)` returns, with the next sequence number.

        The counter and the sample commit together; the oldest samples are
        dropped first if the buffer is full.
        """
        with self._lock:
            with self._transaction():
                epoch, sequence = self._epoch, self._next_sequence
                payload = build(epoch, sequence)
                dropped = 0
                if self._depth >= self.capacity:
                    dropped = self._drop_oldest(self._depth - self.capacity + 1)
                cursor = self._db.execute(
                    "INSERT INTO samples (epoch, sequence, enqueued_at, payload) "
                    "VALUES (?, ?, ?, ?)",
                    (epoch, sequence, enqueued_at, payload),
                )
                self._write_meta({"next_sequence": str(sequence + 1)})
            # Committed: only now does the in-memory state follow.
            row_id = cursor.lastrowid
            assert row_id is not None
            self._next_sequence = sequence + 1
            self._dropped_total += dropped
            self._depth += 1 - dropped
        return Appended(BufferedSample(row_id, epoch, sequence, enqueued_at, payload), dropped)

    def _drop_oldest(self, count: int) -> int:
        """Inside a transaction: delete the `count` oldest rows, persist the new drop total.

        The caller adds the result to `_dropped_total` and subtracts it from
        `_depth` once the transaction committed.
        """
        cursor = self._db.execute(
            "DELETE FROM samples WHERE id IN (SELECT id FROM samples ORDER BY id LIMIT ?)",
            (count,),
        )
        dropped = cursor.rowcount
        self._write_meta({"dropped_total": str(self._dropped_total + dropped)})
        return dropped

    def peek(self, after_row_id: int = 0, limit: int = 100) -> list[BufferedSample]:
        """Up to `limit` samples with a row id above `after_row_id`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, epoch, sequence, enqueued_at, payload FROM samples "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after_row_id, limit),
            ).fetchall()
        return [BufferedSample(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]

    def delete(self, row_ids: Collection[int]) -> int:
        """Forget acknowledged samples; ids already gone (dropped) are ignored."""
        if not row_ids:
            return 0
        with self._lock:
            with self._transaction():
                cursor = self._db.executemany(
                    "DELETE FROM samples WHERE id = ?", [(row_id,) for row_id in row_ids]
                )
            deleted = cursor.rowcount
            self._depth -= deleted
        return deleted

    def close(self) -> None:
        SIM_METRICS.untrack_buffer(self)
        with self._lock:
            self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
