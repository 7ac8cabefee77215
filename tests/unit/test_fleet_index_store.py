"""`FleetIndex` over an in-memory S3 with S3's atomic conditional writes:
races lost and retried, concurrent writers, deltas, compaction, rebuild."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fake_s3 import FakeS3

from v2c.handlers.ota.fleet_index.codec import IndexRow, Patch
from v2c.handlers.ota.fleet_index.store import FleetIndex

MODEL = "Accord"


def vin(number: int) -> str:
    return f"VIN-1HGBH41JXMN{number:06d}"


def row(number: int, *, model: str = MODEL, version: str = "1.0.0", stamp: int = 1) -> IndexRow:
    return IndexRow(vin(number), model, "us-east-1", 2024, installed_version=version, stamp=stamp)


def ids(index: FleetIndex, model: str = MODEL) -> list[str]:
    snapshot = index.read([model])
    return sorted(snapshot.models[model].vehicle_id) if model in snapshot.models else []


def versions(index: FleetIndex) -> dict[str, str]:
    columns = index.read([MODEL]).models[MODEL]
    return dict(zip(columns.vehicle_id, columns.installed_version, strict=True))


@pytest.fixture
def s3() -> FakeS3:
    return FakeS3()


def index_on(s3: FakeS3, **kwargs: Any) -> FleetIndex:
    return FleetIndex(s3, "bucket", clock=lambda: 10.0, **kwargs)  # type: ignore[arg-type]


def test_registrations_read_back_by_model(s3: FakeS3) -> None:
    index = index_on(s3)
    index.merge([row(i) for i in range(50)] + [row(100, model="Civic")])
    assert ids(index) == [vin(i) for i in range(50)]
    assert ids(index, "Civic") == [vin(100)]
    assert set(index.read().models) == {MODEL, "Civic"}
    assert index.size([MODEL]) < index.size()


def test_a_writer_that_lost_a_race_reads_again_and_keeps_both_changes(s3: FakeS3) -> None:
    first, second = index_on(s3, shards=1), index_on(s3, shards=1)
    first.merge([row(0)])
    s3.before_put = lambda _key: second.merge([row(2)])  # lands between first's read and write
    first.merge([row(1)])
    assert ids(first) == [vin(0), vin(1), vin(2)]


def test_concurrent_writers_lose_nothing(s3: FakeS3) -> None:
    def write(number: int) -> None:
        index = index_on(s3, shards=2, cas_attempts=100)
        for i in range(10):
            index.merge([row(number * 100 + i * 5 + k) for k in range(5)])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ids(index_on(s3, shards=2)) == sorted(
        vin(n * 100 + i) for n in range(6) for i in range(50)
    )


def test_a_shard_that_keeps_losing_races_keeps_the_rows_in_a_delta(s3: FakeS3) -> None:
    index, other = index_on(s3, shards=1, cas_attempts=1), index_on(s3, shards=1)
    index.merge([row(0)])
    s3.before_put = lambda _key: other.merge([row(1)])
    index.merge([row(2)])  # lost its only attempt
    (listed,) = index.listing([MODEL]).values()
    assert len(listed.deltas) == 1
    assert listed.deltas[0].name.patch is None  # rows travel in the body
    assert ids(index) == [vin(0), vin(1), vin(2)]
    assert index.compact() == 1
    assert ids(index) == [vin(0), vin(1), vin(2)]
    assert not index.listing([MODEL])[MODEL].deltas


def test_installed_versions_are_deltas_until_compacted(s3: FakeS3) -> None:
    index = index_on(s3)
    index.merge([row(i) for i in range(5)])
    index.patch({MODEL: [Patch(vin(0), "2.0.0", 5)]})
    index.patch({MODEL: [Patch(vin(1), "2.0.0", 5), Patch(vin(2), "2.1.0", 6)]})
    index.patch({MODEL: [Patch(vin(3), "0.9.0", 0)]})  # older than the row: no effect
    deltas = index.listing([MODEL])[MODEL].deltas
    assert [d.name.patch is not None for d in deltas] == [True, True, False]
    assert s3.objects[deltas[1].key][0] == b""  # a single patch is its key alone
    expected = {vin(0): "2.0.0", vin(1): "2.0.0", vin(2): "2.1.0"}
    assert versions(index) == {**{vin(i): "1.0.0" for i in range(5)}, **expected}
    assert index.compact(min_deltas=4, min_age_ms=60_000) == 0  # too few, too young
    assert index.compact(min_deltas=3) == 3
    assert versions(index) == {**{vin(i): "1.0.0" for i in range(5)}, **expected}


def test_a_read_starts_over_when_a_delta_was_compacted_under_it(s3: FakeS3) -> None:
    index = index_on(s3, shards=1)
    index.merge([row(0)])
    index.patch({MODEL: [Patch(vin(0), "2.0.0", 5), Patch(vin(0), "2.1.0", 6)]})
    compactor = index_on(s3, shards=1)

    def compact_first(key: str) -> None:  # the shard is read (old), then compaction runs
        compactor.compact()

    s3.before_get = compact_first
    assert versions(index) == {vin(0): "2.1.0"}


def test_a_rebuild_marks_the_index_built_and_replaces_what_the_table_lost(s3: FakeS3) -> None:
    index = index_on(s3)
    assert not index.is_built()
    index.merge([row(i, stamp=1) for i in range(3)])
    scanned = [row(0, stamp=1), row(1, version="2.0.0", stamp=2), row(7, stamp=2)]
    assert index.rebuild(scanned, started_ms=5) == 3
    assert index.is_built()
    assert ids(index) == [vin(0), vin(1), vin(7)]  # vin 2 left the table
    assert versions(index)[vin(1)] == "2.0.0"


def test_an_object_that_is_not_the_index_s_is_ignored(s3: FakeS3) -> None:
    index = index_on(s3)
    index.merge([row(0)])
    s3.put_object(Bucket="bucket", Key="fleet-index/v1/m/m=Accord/x/stray", Body=b"?")
    s3.put_object(Bucket="bucket", Key="fleet-index/v1/m/m=Accord/d/nonsense", Body=b"?")
    assert ids(index) == [vin(0)]


def test_a_long_listing_is_read_page_by_page() -> None:
    s3 = FakeS3(page=3)
    index = index_on(s3)
    index.merge([row(i) for i in range(40)])
    for i in range(5):
        index.patch({MODEL: [Patch(vin(i), "2.0.0", 9)]})
    assert len(index.listing([MODEL])[MODEL].deltas) == 5
    assert sum(v == "2.0.0" for v in versions(index).values()) == 5
