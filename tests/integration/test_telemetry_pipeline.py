"""The telemetry handlers against a real moto server: exactly-once storage, dedup
across paths and restarts, broken batches in the real S3 DLQ."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
import zstandard
from telemetry_support import (
    VINS,
    batch_event,
    build_service,
    dlq_store,
    event,
    register_vehicles,
    single_event,
    stored_keys,
    stored_per_vehicle,
    timestream_records,
)

from v2c.contract.batch_codec import encode_envelope
from v2c.handlers.telemetry.metrics import TelemetryMetrics
from v2c.handlers.telemetry.service import TelemetryService
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.sampler import TelemetrySampler

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


Telemetry = telemetry_pb2.Telemetry
SINGLES_PER_VEHICLE = 100  # 5 vehicles: 500 individual messages
BATCHES_PER_VEHICLE = 2  # 5 vehicles: 10 batches of 25


def _drive(vin: str, seed: int) -> list[Telemetry]:
    return TelemetrySampler(vin, seed=seed).samples(SINGLES_PER_VEHICLE + 25 * BATCHES_PER_VEHICLE)


def _messages_sent(service: TelemetryService, drives: dict[str, list[Telemetry]]) -> None:
    """Every vehicle's first 100 samples alone, the next 50 as two batches;
    eight at a time, as the gateway's worker threads would."""
    with ThreadPoolExecutor(8) as pool:
        singles = [s for drive in drives.values() for s in drive[:SINGLES_PER_VEHICLE]]
        reports = list(pool.map(lambda s: service.ingest(single_event(s)), singles))
        batches = [
            drive[start : start + 25]
            for drive in drives.values()
            for start in range(SINGLES_PER_VEHICLE, len(drive), 25)
        ]
        reports += list(pool.map(lambda b: service.ingest_batch(batch_event(b)), batches))
    assert sum(r.dead_lettered for r in reports) == 0, [r.to_json() for r in reports]


def _metric(metrics: TelemetryMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def drives(aws_stack: AwsStack) -> dict[str, list[Telemetry]]:
    register_vehicles(aws_stack, VINS)
    return {vin: _drive(vin, seed) for seed, vin in enumerate(VINS)}


def test_500_singles_and_10_batches_are_stored_exactly_once_enriched_and_in_the_time_series(
    aws_stack: AwsStack, drives: dict[str, list[Telemetry]]
) -> None:
    service = build_service(aws_stack)
    try:
        _messages_sent(service, drives)
    finally:
        service.close()

    per_vehicle = SINGLES_PER_VEHICLE + 25 * BATCHES_PER_VEHICLE
    assert stored_per_vehicle(aws_stack, VINS) == dict.fromkeys(VINS, per_vehicle)
    keys = stored_keys(aws_stack)
    assert len(keys) == len(set(keys)) == 5 * per_vehicle
    assert len(timestream_records(aws_stack)) == 5 * per_vehicle
    item = aws_stack.aws.client("dynamodb").get_item(
        TableName=aws_stack.names.telemetry_table,
        Key={"vehicle_id": {"S": VINS[1]}, "sample_key": {"S": f"{1:010d}#{120:020d}"}},
    )["Item"]
    assert (item["make"]["S"], item["model"]["S"], item["year"]["N"]) == ("Honda", "Civic", "2021")
    assert item["path"]["S"] == "batch"
    assert dlq_store(aws_stack).depth() == 0


def test_duplicates_across_paths_and_a_restart_are_discarded_and_counted(
    aws_stack: AwsStack, drives: dict[str, list[Telemetry]]
) -> None:
    # Given everything stored once
    first = build_service(aws_stack)
    _messages_sent(first, drives)
    drive = drives[VINS[0]]

    # When: QoS 1 redeliveries of 20 singles, the first batch again, and 10
    # samples of the second batch sent alone (the vehicle's buffer flushed them)
    for sample in drive[:20]:
        first.ingest(single_event(sample, dup=True))
    first.ingest_batch(batch_event(drive[100:125]))
    for sample in drive[130:140]:
        first.ingest(single_event(sample))
    first.close()
    # ... and, after a gateway restart (an empty window), both batches once more
    restarted = build_service(aws_stack)
    restarted.ingest_batch(batch_event(drive[100:125]))
    restarted.ingest_batch(batch_event(drive[125:150]))
    restarted.close()

    # Then nothing is stored twice, and every duplicate is counted
    assert stored_per_vehicle(aws_stack, VINS) == dict.fromkeys(VINS, 150)
    assert len(timestream_records(aws_stack)) == 5 * 150
    duplicates = "v2c_telemetry_duplicate_total"
    assert _metric(first.metrics, duplicates, region="eu-west-1", topic="individual") == 30
    assert _metric(first.metrics, duplicates, region="eu-west-1", topic="batch") == 25
    assert _metric(restarted.metrics, duplicates, region="eu-west-1", topic="batch") == 50
    assert dlq_store(aws_stack).depth() == 0


def _corrupt(good: bytes) -> bytes:
    envelope = telemetry_pb2.TelemetryBatchEnvelope.FromString(good)
    data = bytearray(envelope.payload)
    data[len(data) // 2] ^= 0x55
    envelope.payload = bytes(data)
    envelope.payload_sha256 = hashlib.sha256(envelope.payload).digest()
    return envelope.SerializeToString()


def _wrong_checksum(good: bytes) -> bytes:
    envelope = telemetry_pb2.TelemetryBatchEnvelope.FromString(good)
    envelope.payload_sha256 = hashlib.sha256(b"something else").digest()
    return envelope.SerializeToString()


def _bomb(good: bytes) -> bytes:
    envelope = telemetry_pb2.TelemetryBatchEnvelope.FromString(good)
    envelope.payload = zstandard.ZstdCompressor().compress(b"\x00" * (256 * 1024 * 1024))
    envelope.payload_sha256 = hashlib.sha256(envelope.payload).digest()
    return envelope.SerializeToString()


def _unknown_dictionary(good: bytes) -> bytes:
    envelope = telemetry_pb2.TelemetryBatchEnvelope.FromString(good)
    envelope.dictionary_id = 0x5EED
    return envelope.SerializeToString()


BROKEN: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "corrupted": (_corrupt, "corrupt_payload"),
    "truncated": (lambda good: good[: len(good) - 40], "corrupt_payload"),
    "wrong-checksum": (_wrong_checksum, "checksum_mismatch"),
    "decompression-bomb": (_bomb, "decompression_limit_exceeded"),
    "unknown-dictionary": (_unknown_dictionary, "unknown_dictionary"),
}


def test_broken_batches_land_whole_in_the_s3_dlq_with_precise_reasons_and_write_nothing(
    aws_stack: AwsStack,
) -> None:
    vin = VINS[0]
    samples = TelemetrySampler(vin, seed=9).samples(25)
    good = encode_envelope(samples)
    service = build_service(aws_stack)
    sent: dict[str, bytes] = {}

    for name, (breaker, _reason) in BROKEN.items():
        sent[name] = breaker(good)
        report = service.ingest_batch(event("batch", vin, sent[name], case=name))
        assert (report.stored, report.dead_lettered) == (0, 1), name
    assert stored_per_vehicle(aws_stack, [vin]) == {vin: 0}

    # The intact batch afterwards is stored in full, exactly once.
    service.ingest_batch(event("batch", vin, good))
    service.ingest_batch(event("batch", vin, good))
    service.close()
    assert stored_per_vehicle(aws_stack, [vin]) == {vin: 25}

    records = {r.properties["case"]: r for r in dlq_store(aws_stack).list()}
    assert set(records) == set(BROKEN)
    for name, (_breaker, reason) in BROKEN.items():
        record = records[name]
        assert record.reason == reason, (name, record.error)
        assert record.payload == sent[name]
        assert record.source == "telemetry_batch"
        assert record.vehicle_id == vin
    assert records["wrong-checksum"].context["batch_id"]
    assert records["unknown-dictionary"].context["dictionary_id"] == 0x5EED
    alerts = "v2c_batch_decompression_errors_total"
    assert sum(
        _metric(service.metrics, alerts, region="eu-west-1", reason=reason)
        for reason in {reason for _, reason in BROKEN.values()}
    ) == len(BROKEN)
