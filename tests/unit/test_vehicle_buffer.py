"""The vehicle's persistent buffer and sequence counter, on a temporary SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from v2c.contract.errors import ConfigurationError
from v2c.vehicle_sim.buffer import OfflineBuffer

VIN = "VIN-1HGBH41JXMN109186"
OTHER_VIN = "VIN-2HGBH41JXMN109187"


def payload(epoch: int, sequence: int) -> bytes:
    return f"{epoch}/{sequence}".encode()


def fill(buffer: OfflineBuffer, count: int, at: float = 0.0) -> list[int]:
    return [buffer.append(payload, enqueued_at=at).dropped for _ in range(count)]


def open_buffer(path: Path, capacity: int = 1000, epoch: int = 7) -> OfflineBuffer:
    return OfflineBuffer(path, VIN, capacity=capacity, epoch_source=lambda: epoch)


def test_samples_come_back_in_order_with_consecutive_sequence_numbers(tmp_path: Path) -> None:
    buffer = open_buffer(tmp_path / "b.db")
    fill(buffer, 5)
    rows = buffer.peek(limit=10)
    assert [r.sequence for r in rows] == [1, 2, 3, 4, 5]
    assert [r.payload for r in rows] == [payload(7, n) for n in range(1, 6)]
    assert [r.row_id for r in rows] == sorted(r.row_id for r in rows)
    assert [r.sequence for r in buffer.peek(after_row_id=rows[1].row_id, limit=2)] == [3, 4]
    buffer.close()


def test_overflow_drops_the_oldest_and_counts_every_drop(tmp_path: Path) -> None:
    buffer = open_buffer(tmp_path / "b.db", capacity=1000)
    drops = fill(buffer, 1200)
    assert len(buffer) == 1000
    assert buffer.dropped_total == 200 == sum(drops)
    assert drops[:1000] == [0] * 1000
    assert buffer.peek(limit=1)[0].sequence == 201  # the first 200 dropped
    assert buffer.peek(limit=1000)[-1].sequence == 1200
    buffer.close()


def test_only_acknowledged_rows_are_deleted_and_the_rest_stay_in_order(tmp_path: Path) -> None:
    buffer = open_buffer(tmp_path / "b.db")
    fill(buffer, 4)
    rows = buffer.peek(limit=4)
    assert buffer.delete([rows[1].row_id, rows[3].row_id]) == 2
    assert [r.sequence for r in buffer.peek()] == [1, 3]
    assert len(buffer) == 2
    assert buffer.delete([rows[1].row_id]) == 0  # already gone: ignored
    assert buffer.delete([]) == 0
    buffer.close()


def test_buffer_counter_and_drop_total_survive_a_process_restart(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    first = open_buffer(path, capacity=10, epoch=7)
    fill(first, 12)
    first.close()

    second = open_buffer(path, capacity=10, epoch=99)  # the clock moved: ignored
    assert len(second) == 10
    assert second.dropped_total == 2
    assert second.epoch == 7
    assert [r.sequence for r in second.peek()] == list(range(3, 13))
    appended = second.append(payload, enqueued_at=1.0)
    assert (appended.sample.epoch, appended.sample.sequence) == (7, 13)
    assert second.dropped_total == 3
    second.close()


def test_sequence_continues_after_restart_even_when_the_buffer_was_emptied(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    first = open_buffer(path)
    fill(first, 3)
    first.delete([r.row_id for r in first.peek()])
    first.close()
    second = open_buffer(path)
    assert len(second) == 0
    assert second.append(payload, enqueued_at=0).sample.sequence == 4
    second.close()


def test_lost_buffer_file_starts_a_new_larger_epoch(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    first = open_buffer(path, epoch=1_700_000_000)
    fill(first, 3)
    first.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    second = open_buffer(path, epoch=1_700_000_500)
    assert (second.epoch, second.next_sequence) == (1_700_000_500, 1)
    second.close()


def test_corrupt_buffer_file_is_kept_aside_and_a_new_epoch_begins(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    path.write_bytes(b"torn write on flash " * 100)
    buffer = open_buffer(path, epoch=42)
    assert buffer.recovered_from == tmp_path / "b.db.corrupt-1"
    assert buffer.recovered_from.read_bytes().startswith(b"torn write")
    assert (buffer.epoch, len(buffer)) == (42, 0)
    fill(buffer, 1)
    buffer.close()


def test_clock_set_back_still_gives_an_epoch_above_the_buffered_samples(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    first = open_buffer(path, epoch=500)
    fill(first, 2)
    first._db.execute("DELETE FROM meta WHERE key = 'epoch'")  # the counter is lost
    first.close()
    second = open_buffer(path, epoch=100)
    assert second.epoch == 501
    assert len(second) == 2  # the old epoch's samples are still sent
    second.close()


def test_buffer_of_another_vehicle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    open_buffer(path).close()
    with pytest.raises(ConfigurationError, match=VIN):
        OfflineBuffer(path, OTHER_VIN)


def test_reopening_with_a_smaller_capacity_drops_the_oldest_and_counts_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    first = open_buffer(path, capacity=10)
    fill(first, 10)
    first.close()
    second = open_buffer(path, capacity=4)
    assert (len(second), second.dropped_total) == (4, 6)
    assert [r.sequence for r in second.peek()] == [7, 8, 9, 10]
    second.close()


def test_a_failing_sample_builder_stores_nothing_and_uses_no_sequence(tmp_path: Path) -> None:
    buffer = open_buffer(tmp_path / "b.db", capacity=1)
    fill(buffer, 1)

    def broken(epoch: int, sequence: int) -> bytes:
        raise RuntimeError("serializer failed")

    with pytest.raises(RuntimeError):
        buffer.append(broken, enqueued_at=0)
    assert (len(buffer), buffer.dropped_total, buffer.next_sequence) == (1, 0, 2)
    buffer.close()


def test_buffer_file_is_in_wal_mode(tmp_path: Path) -> None:
    buffer = open_buffer(tmp_path / "b.db")
    assert buffer._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    buffer.close()
