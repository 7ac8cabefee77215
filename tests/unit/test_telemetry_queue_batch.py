"""The telemetry functions fed by their queue: a batch of SQS records in, a
partial-batch response out (ADR 0009), over in-memory ports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from telemetry_events import OTHER_VIN, VIN, Harness, counter, event

from v2c.contract.batch_codec import encode_envelope
from v2c.contract.queue_event import QueuedMessage, sqs_event
from v2c.handlers.telemetry.model import OperationalRecord
from v2c.handlers.telemetry.queue_batch import handle
from v2c.handlers.telemetry.store import BatchWriteResult, InMemoryRecordStore, ItemKey
from v2c.handlers.telemetry.timeseries import InMemoryTimeSeriesSink
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.sampler import TelemetrySampler

Telemetry = telemetry_pb2.Telemetry


class CountingRecords(InMemoryRecordStore):
    """Counts the store's round trips: what batching is for."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {"put_new": 0, "put_many": 0, "existing_many": 0}

    def put_new(self, record: OperationalRecord) -> bool:
        self.calls["put_new"] += 1
        return super().put_new(record)

    def put_many(self, records: Sequence[OperationalRecord]) -> BatchWriteResult:
        self.calls["put_many"] += 1
        return super().put_many(records)

    def existing_many(self, keys: Sequence[ItemKey]) -> set[ItemKey]:
        self.calls["existing_many"] += 1
        return super().existing_many(keys)


def _samples(count: int, vehicle: str = VIN, seed: int = 1) -> list[Telemetry]:
    return TelemetrySampler(vehicle, seed=seed).samples(count)


def _queue_batch(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    messages = [QueuedMessage(f"m{i}", e, 1_700_000_000_000) for i, e in enumerate(events)]
    return sqs_event(messages, queue="v2c-telemetry-ingest", region="eu-west-1")


def _singles(messages: Sequence[Telemetry], vehicle: str = VIN) -> list[dict[str, Any]]:
    return [event("vehicle", m.SerializeToString(), vehicle_id=vehicle) for m in messages]


def _stored(harness: Harness) -> dict[str, int]:
    assert isinstance(harness.records, InMemoryRecordStore)
    return dict(harness.records.count_by_vehicle())


def test_singles_of_two_vehicles_are_stored_with_one_lookup_and_one_batch_write() -> None:
    records = CountingRecords()
    harness = Harness(records=records)
    events = _singles(_samples(20)) + _singles(_samples(20, OTHER_VIN), OTHER_VIN)

    response = handle(harness.service(), _queue_batch(events), None, batch_path=False)

    assert response == {"batchItemFailures": []}
    assert _stored(harness) == {VIN: 20, OTHER_VIN: 20}
    assert isinstance(harness.timeseries, InMemoryTimeSeriesSink)
    assert harness.timeseries.count_by_vehicle() == {VIN: 20, OTHER_VIN: 20}
    assert records.calls == {"put_new": 0, "put_many": 1, "existing_many": 1}
    assert counter(harness.metrics, "v2c_telemetry_messages_total", region="eu-west-1",
                   topic="individual", status="stored") == 40  # fmt: skip


def test_duplicates_inside_a_batch_and_against_the_store_are_counted_not_written() -> None:
    records = CountingRecords()
    harness = Harness(records=records)
    messages = _samples(10)
    handle(harness.service(), _queue_batch(_singles(messages[:4])), None, batch_path=False)
    restarted = harness.service()  # a new process: an empty dedup window

    again = _singles(messages[2:10]) + _singles(messages[9:10])  # 2 stored, 1 repeated
    response = handle(restarted, _queue_batch(again), None, batch_path=False)

    assert response == {"batchItemFailures": []}
    assert _stored(harness) == {VIN: 10}
    assert records.writes == 10
    assert counter(harness.metrics, "v2c_telemetry_duplicate_total",
                   region="eu-west-1", topic="individual") == 3  # fmt: skip


def test_a_bad_message_is_dead_lettered_alone_and_its_neighbours_are_stored() -> None:
    harness = Harness()
    good = _singles(_samples(3))
    bad = event("vehicle", b"\x00not protobuf")
    response = handle(harness.service(), _queue_batch([good[0], bad, *good[1:]]), None,
                      batch_path=False)  # fmt: skip

    assert response == {"batchItemFailures": []}  # dead-lettered, so not for the queue
    assert _stored(harness) == {VIN: 3}
    (record,) = harness.dlq.list()
    assert record.reason == "corrupt_payload"
    assert record.payload == b"\x00not protobuf"


def test_a_record_whose_body_is_not_an_event_is_dead_lettered_with_its_body() -> None:
    harness = Harness()
    batch = _queue_batch(_singles(_samples(1)))
    batch["Records"].append({**batch["Records"][0], "messageId": "junk", "body": "not json"})

    response = handle(harness.service(), batch, None, batch_path=False)

    assert response == {"batchItemFailures": []}
    assert _stored(harness) == {VIN: 1}
    (record,) = harness.dlq.list()
    assert record.payload == b"not json"


def test_envelopes_in_a_queue_batch_are_each_stored_and_answered() -> None:
    harness = Harness()
    samples = _samples(50)
    envelopes = [
        event("batch", encode_envelope(samples[:25])),
        event("batch", encode_envelope(samples[25:])),
        event("batch", b"\x28\xb5\x2f\xfdgarbage"),
    ]

    response = handle(harness.service(), _queue_batch(envelopes), None, batch_path=True)

    assert response == {"batchItemFailures": []}
    assert _stored(harness) == {VIN: 50}
    assert [r.source for r in harness.dlq.list()] == ["telemetry_batch"]


def test_a_direct_invocation_is_one_event_as_before() -> None:
    harness = Harness()
    answer = handle(harness.service(), _singles(_samples(1))[0], None, batch_path=False)
    assert answer["stored"] == 1
