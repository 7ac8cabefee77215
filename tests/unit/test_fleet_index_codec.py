"""The fleet index's pure parts: shards and deltas as bytes and keys, and folding changes."""

from __future__ import annotations

import itertools
import random

import pytest

from v2c.handlers.ota.fleet_index.codec import (
    SHARDS,
    Columns,
    IndexRow,
    IndexUnreadable,
    Patch,
    body_key,
    decode_delta,
    decode_shard,
    encode_delta,
    encode_shard,
    fold_rebuild,
    model_of_token,
    model_token,
    parse_delta_key,
    patch_key,
    shard_of,
)

REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")


def rows(n: int, model: str = "Accord", stamp: int = 1_000) -> list[IndexRow]:
    return [
        IndexRow(
            f"VIN-1HGBH41JXMN{i:06d}",
            model,
            REGIONS[i % 3],
            2019 + i % 5,
            "Honda",
            f"hw-{i % 2}",
            "1.0.0" if i % 4 else "2.0.0",
            ("beta",) if i % 7 == 0 else (),
            stamp + i,
        )
        for i in range(n)
    ]


def columns(rs: list[IndexRow], model: str = "Accord") -> Columns:
    c = Columns(model)
    c.apply(rs)
    return c


def test_a_shard_round_trips_sorted_and_compact() -> None:
    original = rows(2_000)
    shuffled = original[:]
    random.Random(7).shuffle(shuffled)
    body = encode_shard(columns(shuffled), shard=3)
    decoded = decode_shard(body, "Accord")
    assert list(decoded.rows()) == sorted(original, key=lambda r: r.vehicle_id)
    assert encode_shard(columns(original), 3) == body  # the same rows, the same bytes
    assert len(body) < 20 * len(original)  # dictionary-coded, zstd: bytes, not items


def test_an_empty_shard_round_trips() -> None:
    assert len(decode_shard(encode_shard(Columns("Accord"), 0), "Accord")) == 0


@pytest.mark.parametrize(
    "body",
    [b"", b"not zstd", encode_shard(Columns("Civic"), 0)],
    ids=["empty", "garbage", "another model"],
)
def test_a_shard_that_is_not_ours_is_unreadable(body: bytes) -> None:
    with pytest.raises(IndexUnreadable):
        decode_shard(body, "Accord")


def test_a_newer_row_replaces_an_older_one_and_never_the_reverse() -> None:
    (row,) = rows(1)
    c = columns([row])
    newer = IndexRow(row.vehicle_id, "Accord", "eu-west-1", 2030, stamp=row.stamp + 1)
    older = IndexRow(row.vehicle_id, "Accord", "us-east-1", 1990, stamp=row.stamp - 1)
    assert c.apply([newer]) == 1
    assert c.apply([older]) == 0
    assert list(c.rows()) == [newer]


def test_a_patch_moves_an_older_row_only_and_never_invents_one() -> None:
    (row,) = rows(1)
    c = columns([row])
    assert c.apply([Patch(row.vehicle_id, "3.0.0", row.stamp - 5)]) == 0
    assert c.apply([Patch("VIN-1HGBH41JXMN999999", "3.0.0", row.stamp + 5)]) == 0
    assert c.apply([Patch(row.vehicle_id, "3.0.0", row.stamp + 5)]) == 1
    assert c.row(0).installed_version == "3.0.0"
    assert c.row(0).stamp == row.stamp + 5
    assert len(c) == 1


def test_folding_is_independent_of_order_and_repetition() -> None:
    base = rows(5)
    v0, v1 = base[0].vehicle_id, base[1].vehicle_id
    changes: list[IndexRow | Patch] = [
        Patch(v0, "2.0.0", 5_000),
        Patch(v0, "2.1.0", 6_000),
        IndexRow(v1, "Accord", "eu-west-1", 2025, stamp=5_500),
        Patch(v1, "9.9.9", 5_400),  # older than the row above: lost to it
        IndexRow("VIN-1HGBH41JXMN500000", "Accord", "us-east-1", stamp=4_000),
    ]
    results = set()
    for order in itertools.permutations(changes):
        c = columns(base)
        c.apply(order)
        c.apply(order)  # again: nothing moves
        results.add(tuple(sorted(c.rows(), key=lambda r: r.vehicle_id)))
    assert len(results) == 1
    (folded,) = results
    by_id = {r.vehicle_id: r for r in folded}
    assert by_id[v0].installed_version == "2.1.0"
    assert by_id[v1].region == "eu-west-1"
    assert by_id[v1].installed_version == ""
    assert "VIN-1HGBH41JXMN500000" in by_id


@pytest.mark.parametrize("version", ["2.0.0", "", "1.0.0-rc.1+build.7", "wéird/ver sion.."])
def test_a_patch_is_its_key(version: str) -> None:
    patch = Patch("VIN-1HGBH41JXMN000001", version, 1_733_000_000_123)
    key = patch_key(patch)
    assert key is not None
    assert "/" not in key
    assert parse_delta_key(key).patch == patch
    assert parse_delta_key(key).stamp == patch.stamp


def test_a_version_too_long_for_a_key_goes_in_a_body() -> None:
    patch = Patch("VIN-1HGBH41JXMN000001", "1." * 200, 5)
    assert patch_key(patch) is None
    name = parse_delta_key(body_key(5, "abc"))
    assert name.patch is None
    assert name.stamp == 5


def test_a_delta_body_round_trips() -> None:
    rs = rows(3)
    patches = [Patch(rs[0].vehicle_id, "2.0.0", 9_000)]
    assert decode_delta(encode_delta(rs, patches), "Accord") == [*rs, *patches]


@pytest.mark.parametrize("name", ["x", "12.q.a", "12.p.VIN", "12.b", "ab.b.c"])
def test_a_delta_key_that_is_not_ours_is_unreadable(name: str) -> None:
    with pytest.raises(IndexUnreadable):
        parse_delta_key(name)


@pytest.mark.parametrize("model", ["Accord", "", "Model S/X", "Zoë 2", "a=b%c"])
def test_a_model_is_one_key_segment(model: str) -> None:
    token = model_token(model)
    assert "/" not in token
    assert model_of_token(token) == model


def test_shards_are_stable_and_spread() -> None:
    ids = [r.vehicle_id for r in rows(1_600)]
    counts = [0] * SHARDS
    for v in ids:
        counts[shard_of(v)] += 1
    assert shard_of(ids[0]) == shard_of(ids[0])
    assert min(counts) > 1_600 / SHARDS / 2


def test_a_rebuild_keeps_changes_newer_than_its_scan_and_drops_the_rest() -> None:
    scanned = rows(3, stamp=1_000)
    elsewhere = "VIN-1HGBH41JXMN600000"  # the table has it in another model now
    current = columns(
        [
            IndexRow(scanned[0].vehicle_id, "Accord", "eu-west-1", stamp=5_000),  # newer
            IndexRow(scanned[1].vehicle_id, "Accord", "eu-west-1", stamp=500),  # older
            IndexRow(elsewhere, "Accord", "eu-west-1", stamp=2_500),
            IndexRow("VIN-1HGBH41JXMN700000", "Accord", "eu-west-1", stamp=900),  # gone
            IndexRow("VIN-1HGBH41JXMN800000", "Accord", "eu-west-1", stamp=3_000),  # new
        ]
    )
    stamps = {r.vehicle_id: r.stamp for r in scanned} | {elsewhere: 2_600}
    rebuilt = fold_rebuild(current, scanned, started_ms=2_000, table_stamps=stamps)
    by_id = {r.vehicle_id: r for r in rebuilt.rows()}
    assert by_id[scanned[0].vehicle_id].stamp == 5_000
    assert by_id[scanned[1].vehicle_id] == scanned[1]
    assert by_id[scanned[2].vehicle_id] == scanned[2]
    assert elsewhere not in by_id
    assert "VIN-1HGBH41JXMN700000" not in by_id
    assert "VIN-1HGBH41JXMN800000" in by_id
