"""The telemetry pipeline over in-memory ports: dedup, DLQ reasons, replay semantics."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import pytest
import zstandard
from telemetry_events import OTHER_VIN, RECEIVED_AT, VIN, Harness, counter, event

from v2c.contract.batch_codec import encode_envelope
from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import Throttled, TransientError
from v2c.contract.ids import id_text
from v2c.handlers.dlq.service import DeadLetterService, ReplayStatus
from v2c.handlers.telemetry.dead_letters import MAX_LISTED_FAILURES, failed_indices
from v2c.handlers.telemetry.dedup import DedupWindow
from v2c.handlers.telemetry.model import OperationalRecord, VehicleInfo
from v2c.handlers.telemetry.registry import StaticRegistry
from v2c.handlers.telemetry.service import TelemetryService
from v2c.handlers.telemetry.store import BatchWriteResult, InMemoryRecordStore
from v2c.handlers.telemetry.timeseries import InMemoryTimeSeriesSink, TimeSeriesPoint
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.sampler import TelemetrySampler

Telemetry = telemetry_pb2.Telemetry


@pytest.fixture
def harness() -> Harness:
    return Harness()


def _samples(count: int, seed: int = 1, vehicle: str = VIN) -> list[Telemetry]:
    return TelemetrySampler(vehicle, seed=seed).samples(count)


def _single(message: Telemetry, **kwargs: object) -> dict[str, object]:
    return event("vehicle", message.SerializeToString(), **kwargs)  # type: ignore[arg-type]


def _batch(messages: Sequence[Telemetry], **kwargs: object) -> dict[str, object]:
    return event("batch", encode_envelope(messages), **kwargs)  # type: ignore[arg-type]


def _stored(harness: Harness) -> dict[str, int]:
    assert isinstance(harness.records, InMemoryRecordStore)
    return dict(harness.records.count_by_vehicle())


def _points(harness: Harness) -> dict[str, int]:
    assert isinstance(harness.timeseries, InMemoryTimeSeriesSink)
    return harness.timeseries.count_by_vehicle()


class FlakyRecords(InMemoryRecordStore):
    """Fails every write while `failing` is set, like a throttled table."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def put_new(self, record: OperationalRecord) -> bool:
        if self.failing:
            raise Throttled("DynamoDB PutItem throttled: ThrottlingException")
        return super().put_new(record)

    def put_many(self, records: Sequence[OperationalRecord]) -> BatchWriteResult:
        if self.failing:
            error = Throttled("left unprocessed")
            return BatchWriteResult([], [(record, error) for record in records])
        return super().put_many(records)


# -- happy paths and dedup -------------------------------------------------------


def test_a_valid_sample_is_stored_once_enriched_and_written_as_one_point() -> None:
    harness = Harness(registry=StaticRegistry({VIN: VehicleInfo("Honda", "Civic", 2021)}))
    message = _samples(1)[0]

    report = harness.service().ingest(_single(message))

    assert (report.stored, report.duplicates, report.dead_lettered) == (1, 0, 0)
    assert isinstance(harness.records, InMemoryRecordStore)
    (record,) = harness.records.records()
    assert record.vehicle == VehicleInfo("Honda", "Civic", 2021)
    assert record.arrival.received_at_ms == RECEIVED_AT
    assert _points(harness) == {VIN: 1}
    assert counter(harness.metrics, "v2c_telemetry_messages_total", region="eu-west-1",
                   topic="individual", status="stored") == 1  # fmt: skip


def test_a_qos1_redelivery_is_discarded_silently_and_counted(harness: Harness) -> None:
    service = harness.service()
    message = _samples(1)[0]

    service.ingest(_single(message))
    again = service.ingest(_single(message, properties={"dup": True}))

    assert (again.stored, again.duplicates, again.dead_lettered) == (0, 1, 0)
    assert _stored(harness) == {VIN: 1}
    assert harness.records.writes == 1  # type: ignore[attr-defined]
    assert counter(harness.metrics, "v2c_telemetry_duplicate_total",
                   region="eu-west-1", topic="individual") == 1  # fmt: skip


def test_a_duplicate_after_a_restart_is_caught_by_the_stores_key(harness: Harness) -> None:
    message = _samples(1)[0]
    harness.service().ingest(_single(message))

    fresh_process = harness.service(window=DedupWindow())  # an empty window
    report = fresh_process.ingest(_single(message))

    assert report.duplicates == 1
    assert _stored(harness) == {VIN: 1}
    assert fresh_process.window.seen(id_text(message.header.message_id))


def test_samples_sent_alone_and_again_in_a_batch_are_stored_once(harness: Harness) -> None:
    service = harness.service()
    messages = _samples(30)
    for message in messages[:10]:
        service.ingest(_single(message))

    report = service.ingest_batch(_batch(messages[5:30]))

    assert (report.received, report.stored, report.duplicates) == (25, 20, 5)
    assert _stored(harness) == {VIN: 30}
    assert _points(harness) == {VIN: 30}


def test_a_resent_batch_after_a_restart_stores_nothing_new(harness: Harness) -> None:
    messages = _samples(25)
    harness.service().ingest_batch(_batch(messages))
    writes = harness.records.writes  # type: ignore[attr-defined]

    report = harness.service(window=DedupWindow()).ingest_batch(_batch(messages))

    assert (report.stored, report.duplicates) == (0, 25)
    assert harness.records.writes == writes  # type: ignore[attr-defined]


def test_a_sample_repeated_inside_one_batch_is_stored_once(harness: Harness) -> None:
    messages = _samples(5)
    # A hand-built batch with sample 2 twice: the codec itself keeps what it is given.
    report = harness.service().ingest_batch(_batch([*messages, messages[2]]))

    assert (report.stored, report.duplicates) == (5, 1)


def test_batch_reports_the_compression_against_sending_the_samples_alone(
    harness: Harness,
) -> None:
    report = harness.service().ingest_batch(_batch(_samples(25)))

    assert report.compression_ratio is not None
    assert report.compression_ratio > 0.8


# -- invalid data -------------------------------------------------------------------


def test_an_invalid_sample_goes_to_the_dlq_with_field_reason_and_payload(harness: Harness) -> None:
    message = _samples(1)[0]
    message.speed_kmh = 412.0
    payload = message.SerializeToString()

    report = harness.service().ingest(event("vehicle", payload))

    assert (report.invalid, report.dead_lettered, report.stored) == (1, 1, 0)
    (record,) = harness.dlq.list()
    assert record.reason == "validation_failed"
    assert record.context == {"field": "speed_kmh"}
    assert "412" in record.error
    assert record.payload == payload
    assert (record.source, record.direction, record.vehicle_id) == (
        "telemetry",
        Direction.INBOUND,
        VIN,
    )
    assert record.topic.endswith(f"/{VIN}/telemetry/vehicle")


def test_a_sample_claiming_another_vehicle_is_refused(harness: Harness) -> None:
    message = _samples(1, vehicle=OTHER_VIN)[0]

    harness.service().ingest(_single(message))

    (record,) = harness.dlq.list()
    assert record.context["field"] == "vehicle_id"
    assert _stored(harness) == {}


def test_garbage_on_the_individual_topic_is_dead_lettered_as_corrupt(harness: Harness) -> None:
    harness.service().ingest(event("vehicle", b"\xff\xfe\xfd"))

    (record,) = harness.dlq.list()
    assert record.reason == "corrupt_payload"


def test_a_json_payload_is_refused_by_its_content_type(harness: Harness) -> None:
    message = _samples(1)[0]
    properties = {"content_type": "application/json"}

    harness.service().ingest(_single(message, properties=properties))

    (record,) = harness.dlq.list()
    assert "content type" in record.error


def test_an_event_without_a_topic_is_dead_lettered_with_what_there_is(harness: Harness) -> None:
    broken = event("vehicle", b"abc")
    del broken["topic"]

    report = harness.service().ingest(broken)

    assert report.dead_lettered == 1
    (record,) = harness.dlq.list()
    assert (record.reason, record.payload) == ("invalid_input", b"abc")


def test_invalid_samples_of_a_batch_go_to_the_dlq_as_one_record_with_every_reason(
    harness: Harness,
) -> None:
    messages = _samples(25)
    messages[7].state_of_charge_pct = 150.0
    messages[19].coolant_temp_c = 400.0
    envelope = encode_envelope(messages)

    report = harness.service().ingest_batch(event("batch", envelope))

    assert (report.stored, report.invalid, report.dead_lettered) == (23, 2, 1)
    (record,) = harness.dlq.list()  # one record for the message, never one per sample
    assert (record.source, record.payload, record.reason) == (
        "telemetry_batch",
        envelope,  # the envelope byte for byte: a replay goes through the batch handler
        "validation_failed",
    )
    assert record.topic.endswith("/telemetry/batch")
    context = record.context
    assert (context["batch_id"], context["samples"], context["failed_samples"]) == (
        report.batch_id,
        25,
        2,
    )
    assert [(f["index"], f["field"]) for f in context["failures"]] == [
        (7, "state_of_charge_pct"),
        (19, "coolant_temp_c"),
    ]
    assert context["failed_indices"] == [[7, 7], [19, 19]]
    assert (context["reasons"], context["failures_not_listed"]) == ({"validation_failed": 2}, 0)
    assert failed_indices(record) == [7, 19]
    assert record.error.startswith("2 of 25 samples not stored; sample 7: ")
    assert counter(harness.metrics, "v2c_dlq_messages_total", queue="telemetry",
                   region="eu-west-1", message_type="batch_samples",
                   reason="validation_failed") == 1  # fmt: skip


def test_a_batch_of_1000_invalid_samples_is_one_record_listing_20_reasons_and_counting_the_rest(
    harness: Harness,
) -> None:
    messages = _samples(1000)
    for message in messages:
        message.rpm = 20_000

    report = harness.service().ingest_batch(_batch(messages))

    assert (report.stored, report.invalid, report.dead_lettered) == (0, 1000, 1)
    (record,) = harness.dlq.list()
    assert len(record.context["failures"]) == MAX_LISTED_FAILURES
    assert record.context["failures_not_listed"] == 1000 - MAX_LISTED_FAILURES
    assert record.context["failed_indices"] == [[0, 999]]
    assert record.context["reasons"] == {"validation_failed": 1000}
    assert len(json.dumps(record.context)) < 5_000  # bounded, whatever the batch declared


def test_a_batch_sample_far_outside_the_batch_time_range_is_dead_lettered(
    harness: Harness,
) -> None:
    messages = _samples(10)
    messages[4].header.timestamp += 3 * 24 * 3600 * 1000

    report = harness.service().ingest_batch(_batch(messages))

    assert report.stored == 9
    (record,) = harness.dlq.list()
    ((failure),) = record.context["failures"]
    assert (failure["index"], failure["field"]) == (4, "header.timestamp")


def _corrupt(payload: bytes) -> bytes:
    envelope = telemetry_pb2.TelemetryBatchEnvelope.FromString(payload)
    data = bytearray(envelope.payload)
    data[len(data) // 2] ^= 0xFF
    envelope.payload = bytes(data)
    envelope.payload_sha256 = hashlib.sha256(envelope.payload).digest()  # checksum fixed up
    return envelope.SerializeToString()


def _wrong_checksum(payload: bytes) -> bytes:
    envelope = telemetry_pb2.TelemetryBatchEnvelope.FromString(payload)
    envelope.payload_sha256 = b"\x00" * 32
    return envelope.SerializeToString()


def _bomb(payload: bytes) -> bytes:
    raw = b"\x00" * (64 * 1024 * 1024)
    envelope = telemetry_pb2.TelemetryBatchEnvelope.FromString(payload)
    envelope.payload = zstandard.ZstdCompressor(level=1).compress(raw)
    envelope.payload_sha256 = hashlib.sha256(envelope.payload).digest()
    return envelope.SerializeToString()  # declares the honest small size: the frame says 64 MiB


def _unknown_dictionary(payload: bytes) -> bytes:
    envelope = telemetry_pb2.TelemetryBatchEnvelope.FromString(payload)
    envelope.dictionary_id = 1234567
    return envelope.SerializeToString()


BROKEN = {
    "corrupted": (_corrupt, "corrupt_payload"),
    "truncated": (lambda p: p[: len(p) * 2 // 3], "corrupt_payload"),
    "wrong checksum": (_wrong_checksum, "checksum_mismatch"),
    "decompression bomb": (_bomb, "decompression_limit_exceeded"),
    "unknown dictionary": (_unknown_dictionary, "unknown_dictionary"),
}


@pytest.mark.parametrize(("breaker", "reason"), BROKEN.values(), ids=BROKEN.keys())
def test_a_batch_that_cannot_be_opened_goes_whole_to_the_dlq_with_the_precise_reason(
    harness: Harness, breaker: object, reason: str
) -> None:
    good = encode_envelope(_samples(25))
    broken = breaker(good)  # type: ignore[operator]

    report = harness.service().ingest_batch(event("batch", broken))

    assert (report.stored, report.invalid, report.dead_lettered) == (0, 1, 1)
    (record,) = harness.dlq.list()
    assert record.reason == reason
    assert record.payload == broken
    assert record.source == "telemetry_batch"
    assert record.topic.endswith("/telemetry/batch")
    assert _stored(harness) == {}
    assert counter(harness.metrics, "v2c_batch_decompression_errors_total",
                   region="eu-west-1", reason=reason) == 1  # fmt: skip
    # The context names the batch whenever the envelope still parses.
    assert record.context.get("batch_id", "") == report.batch_id
    assert record.context["payload_size"] == len(broken)


def test_a_batch_of_another_vehicle_on_this_vehicles_topic_is_refused_whole(
    harness: Harness,
) -> None:
    report = harness.service().ingest_batch(_batch(_samples(5, vehicle=OTHER_VIN)))

    assert report.dead_lettered == 1
    (record,) = harness.dlq.list()
    assert record.context["field"] == "vehicle_id"
    assert counter(harness.metrics, "v2c_batch_decompression_errors_total",
                   region="eu-west-1", reason="validation_failed") == 0  # fmt: skip


# -- failed writes, rejections, replay ------------------------------------------------


def _replayer(harness: Harness, service: TelemetryService) -> DeadLetterService:
    def redrive(record: DeadLetterRecord) -> None:
        topic_kind = record.topic.rsplit("/", 1)[1]
        replay = event(topic_kind, record.payload, properties={**record.properties,
                       "replayed_from": record.record_id})  # fmt: skip
        (service.ingest if topic_kind == "vehicle" else service.ingest_batch)(replay)

    return DeadLetterService({"telemetry": harness.dlq}, {Direction.INBOUND: redrive})


def test_a_throttled_write_is_dead_lettered_and_a_replay_stores_it_once() -> None:
    records = FlakyRecords()
    harness = Harness(records=records)
    service = harness.service()
    messages = _samples(30)
    records.failing = True
    service.ingest(_single(messages[0]))
    report = service.ingest_batch(_batch(messages[1:26]))
    assert (report.failed, report.dead_lettered) == (25, 1)
    assert {r.reason for r in harness.dlq.list()} == {"throttled"}
    single, batch = sorted(harness.dlq.list(), key=lambda r: r.source)
    assert single.context.get("sink") == "dynamodb"
    assert {f["sink"] for f in batch.context["failures"]} == {"dynamodb"}
    assert failed_indices(batch) == list(range(25))

    # The redelivery of the failed single message is not a duplicate: it was never stored.
    records.failing = False
    assert service.ingest(_single(messages[0])).stored == 1

    outcomes = _replayer(harness, service).replay(replay_all=True)

    assert {o.status for o in outcomes} == {ReplayStatus.REPLAYED}
    assert _stored(harness) == {VIN: 26}
    assert _points(harness) == {VIN: 26}
    assert harness.dlq.depth() == 0


def test_a_replay_of_invalid_data_fails_and_the_dlq_keeps_the_record(harness: Harness) -> None:
    service = harness.service()
    message = _samples(1)[0]
    message.rpm = 20_000
    service.ingest(_single(message))

    (outcome,) = _replayer(harness, service).replay(replay_all=True)

    assert outcome.status is ReplayStatus.FAILED
    (record,) = harness.dlq.list()
    assert record.attempts == 2
    assert record.reason == "validation_failed"


def test_a_rejected_time_series_record_is_dead_lettered_while_the_record_is_stored() -> None:
    def reject_sequence_3(point: TimeSeriesPoint) -> str | None:
        return "Record timestamp is outside the time range" if point.time_us % 1000 == 3 else None

    harness = Harness(timeseries=InMemoryTimeSeriesSink(reject=reject_sequence_3))

    report = harness.service().ingest_batch(_batch(_samples(10)))

    assert (report.stored, report.dead_lettered) == (10, 1)
    (record,) = harness.dlq.list()
    ((failure),) = record.context["failures"]
    assert (failure["index"], failure["sink"]) == (2, "timeseries")
    assert record.reason == "validation_failed"
    assert counter(harness.metrics, "v2c_timestream_rejected_records_total",
                   region="eu-west-1", reason="timestamp") == 1  # fmt: skip


def test_a_vehicle_clock_far_ahead_gets_the_servers_time_in_the_time_series(
    harness: Harness,
) -> None:
    message = _samples(1)[0]
    message.header.timestamp = RECEIVED_AT + 3_600_000

    harness.service().ingest(_single(message))

    assert isinstance(harness.timeseries, InMemoryTimeSeriesSink)
    (point,) = harness.timeseries.points()
    assert point.time_us // 1000 == RECEIVED_AT
    assert ("time_source", "server") in {(m.name, m.value) for m in point.measures}


def test_a_registry_that_is_down_does_not_cost_the_sample() -> None:
    class DownRegistry:
        def lookup(self, vehicle_id: str) -> VehicleInfo | None:
            raise TransientError("registry down")

    harness = Harness()
    service = TelemetryService(records=harness.records, dead_letters=harness.dlq,
                               registry=DownRegistry(), metrics=harness.metrics)  # fmt: skip

    assert service.ingest(_single(_samples(1)[0])).stored == 1
    assert counter(harness.metrics, "v2c_telemetry_enrichment_failures_total",
                   region="eu-west-1") == 1  # fmt: skip


def test_the_lambda_form_emits_one_emf_line_per_invocation(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from v2c.handlers import telemetry_batch
    from v2c.handlers.telemetry.config import set_default_service

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "telemetry_batch")
    set_default_service(harness.service())
    try:
        answer = telemetry_batch.lambda_handler(_batch(_samples(25)), LambdaContextStub())
    finally:
        set_default_service(None)

    assert answer["stored"] == 25
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    emf, opened = lines  # per region and path; then the batches for the decompression alarm
    assert emf["TelemetryStored"] == [25.0]
    assert emf["topic"] == "batch"
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "v2c"
    assert opened["TelemetryBatches"] == [1.0]
    assert "BatchDecompressionErrors" not in opened  # zero: left out, the alarm FILLs 0
    assert opened["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]


def test_the_lambda_form_counts_a_batch_it_cannot_open_for_the_alarm(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from v2c.handlers import telemetry_batch
    from v2c.handlers.telemetry.config import set_default_service

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "telemetry_batch")
    set_default_service(harness.service())
    try:
        broken = _wrong_checksum(encode_envelope(_samples(5)))
        telemetry_batch.lambda_handler(event("batch", broken), LambdaContextStub())
    finally:
        set_default_service(None)

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    opened = next(line for line in lines if "TelemetryBatches" in line)
    assert (opened["TelemetryBatches"], opened["BatchDecompressionErrors"]) == ([1.0], [1.0])
    assert opened["service"] == "telemetry"


class LambdaContextStub:
    function_name = "telemetry_batch"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:telemetry_batch"
    aws_request_id = "req-1"
