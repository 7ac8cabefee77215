"""FirehoseSink: PutRecordBatch within Firehose's limits, retrying only the records
an answer marks failed, and the archive record's schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from telemetry_events import REGION, VIN, Harness, counter, event

from v2c.contract.batch_codec import encode_envelope
from v2c.contract.errors import Throttled, TransientError, ValidationFailed
from v2c.handlers.telemetry.firehose_sink import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_RECORD_BYTES,
    RECORD_BYTES,
    FirehoseRetry,
    FirehoseSink,
    archive_record,
    chunks,
    iso_millis,
    pack,
)
from v2c.handlers.telemetry.model import Arrival, OperationalRecord, Path, VehicleInfo
from v2c.handlers.telemetry.registry import StaticRegistry
from v2c.handlers.telemetry.timeseries import SIGNALS, Measure, TimeSeriesPoint, to_point
from v2c.handlers.telemetry.validation import validate
from v2c.vehicle_sim.sampler import TelemetrySampler

KIB = 1024
STREAM = "v2c-telemetry-timeseries"

# Marks a record of a call failed: (call number from 1, the record's decoded line) -> code.
Verdict = Callable[[int, dict[str, Any]], str | None]


class RecordingFirehose:
    """Stands in for the firehose client: keeps each call's records and answers
    per record as `verdict` says (None: delivered)."""

    def __init__(self, verdict: Verdict | None = None) -> None:
        self.calls: list[list[bytes]] = []
        self._verdict = verdict or (lambda _call, _line: None)

    def put_record_batch(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["DeliveryStreamName"] == STREAM
        data = [record["Data"] for record in kwargs["Records"]]
        self.calls.append(data)
        responses: list[dict[str, Any]] = []
        for blob in data:  # a packed record: its first line decides
            code = self._verdict(len(self.calls), json.loads(blob.split(b"\n", 1)[0]))
            if code is None:
                responses.append({"RecordId": f"r{len(responses)}"})
            else:
                responses.append({"ErrorCode": code, "ErrorMessage": "slow down"})
        failed = sum(1 for r in responses if "ErrorCode" in r)
        return {"FailedPutCount": failed, "Encrypted": False, "RequestResponses": responses}

    def delivered(self) -> list[dict[str, Any]]:
        return [
            json.loads(line) for call in self.calls for blob in call for line in blob.splitlines()
        ]


class RecordingSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _point(n: int, *, padding: int = 0, model: str | None = None) -> TimeSeriesPoint:
    measures = [Measure("rpm", n, "BIGINT"), Measure("time_source", "vehicle", "VARCHAR")]
    if padding:  # a record of about `padding` bytes (no real signal is this big)
        measures.append(Measure("time_source", "x" * padding, "VARCHAR"))
    return TimeSeriesPoint(
        vehicle_id=f"VIN-{n:05d}",
        region="eu-west-1" if n % 2 else "us-east-1",
        time_us=1_735_693_200_000_000 + n * 1000 + n % 1000,
        measures=tuple(measures),
        message_id=f"m{n}",
        model=model,
    )


def _sink(
    client: RecordingFirehose, sleep: RecordingSleep, attempts: int = 3, record_bytes: int = 0
) -> FirehoseSink:
    """One line per record unless `record_bytes` says otherwise: the tests of
    chunking and retries count points; the packing tests pack."""
    retry = FirehoseRetry(attempts=attempts, sleep=sleep)
    return FirehoseSink(client, STREAM, retry=retry, record_bytes=record_bytes)  # type: ignore[arg-type]


# -- chunking ------------------------------------------------------------------


def test_small_records_go_in_calls_of_500() -> None:
    spans = chunks([600] * 1_201)

    assert [len(span) for span in spans] == [MAX_BATCH_RECORDS, MAX_BATCH_RECORDS, 201]
    assert [i for span in spans for i in span] == list(range(1_201))


def test_large_records_are_cut_at_4_mib_per_call() -> None:
    sizes = [900 * KIB] * 10  # 4 fit in 4 MiB (3,600 KiB), 5 do not

    spans = chunks(sizes)

    assert [len(span) for span in spans] == [4, 4, 2]
    assert all(sum(sizes[i] for i in span) <= MAX_BATCH_BYTES for span in spans)


def test_a_call_takes_records_up_to_exactly_4_mib() -> None:
    sizes = [MAX_BATCH_BYTES // 4] * 8

    assert [len(span) for span in chunks(sizes)] == [4, 4]


def test_a_record_larger_than_a_call_cannot_be_chunked() -> None:
    with pytest.raises(ValueError, match="cannot fit"):
        chunks([MAX_BATCH_BYTES + 1])


def test_points_from_many_vehicles_share_calls_of_500() -> None:
    client, sleep = RecordingFirehose(), RecordingSleep()
    sink = _sink(client, sleep)

    failures = sink.write([_point(n) for n in range(1_200)])

    assert failures == []
    assert [len(call) for call in client.calls] == [500, 500, 200]
    assert sink.requests == 3
    assert len({line["vehicle_id"] for line in client.delivered()}) == 1_200
    assert sleep.waits == []


def test_big_records_split_calls_by_bytes_and_an_oversized_one_is_refused_unsent() -> None:
    client, sleep = RecordingFirehose(), RecordingSleep()
    sink = _sink(client, sleep)
    points = [_point(n, padding=700 * KIB) for n in range(12)]
    too_big = _point(99, padding=MAX_RECORD_BYTES)
    points.insert(5, too_big)

    failures = sink.write(points)

    ((point, error),) = failures
    assert point is too_big
    assert isinstance(error, ValidationFailed)
    assert "too large" in str(error)
    assert [len(call) for call in client.calls] == [5, 5, 2]  # 6 x 700 KiB > 4 MiB
    assert all(sum(len(blob) for blob in call) <= MAX_BATCH_BYTES for call in client.calls)
    assert "m99" not in {line["message_id"] for line in client.delivered()}


# -- packing lines into records ----------------------------------------------------


def test_lines_are_packed_up_to_the_5_kib_billing_unit_and_a_long_line_goes_alone() -> None:
    assert pack([1_000] * 11) == [range(0, 5), range(5, 10), range(10, 11)]
    assert pack([100, 6_000, 100]) == [range(0, 1), range(1, 2), range(2, 3)]
    assert pack([100, 100], record_bytes=0) == [range(0, 1), range(1, 2)]
    assert pack([]) == []


def test_a_busy_batch_goes_in_one_call_of_packed_records_with_every_line_in_order() -> None:
    client, sleep = RecordingFirehose(), RecordingSleep()
    sink = _sink(client, sleep, record_bytes=RECORD_BYTES)

    failures = sink.write([_point(n) for n in range(1_200)])

    assert failures == []
    ((*records,),) = client.calls  # one call
    assert all(len(blob) <= RECORD_BYTES for blob in records)
    assert all(blob.endswith(b"\n") for blob in records)
    line_bytes = len(client.calls[0][0].splitlines()[0]) + 1
    assert len(records) <= 1_200 // (RECORD_BYTES // line_bytes) + 1  # many lines per record
    assert [line["rpm"] for line in client.delivered()] == list(range(1_200))


def test_a_packed_record_fails_and_is_retried_as_a_whole() -> None:
    def first_record_fails_once(call: int, line: dict[str, Any]) -> str | None:
        return "ServiceUnavailableException" if call == 1 and line["rpm"] == 0 else None

    client, sleep = RecordingFirehose(first_record_fails_once), RecordingSleep()
    sink = _sink(client, sleep, record_bytes=RECORD_BYTES)

    failures = sink.write([_point(n) for n in range(100)])

    assert failures == []
    first, again = client.calls
    assert len(first) > 1
    assert again == [first[0]]  # the failed record, byte for byte, and nothing else
    assert [json.loads(line)["rpm"] for blob in first for line in blob.splitlines()] == list(
        range(100)
    )


# -- partial failures ------------------------------------------------------------


def test_only_the_records_an_answer_marks_failed_are_sent_again() -> None:
    def first_call_fails_every_third(call: int, line: dict[str, Any]) -> str | None:
        return "ServiceUnavailableException" if call == 1 and line["rpm"] % 3 == 0 else None

    client, sleep = RecordingFirehose(first_call_fails_every_third), RecordingSleep()
    sink = _sink(client, sleep)

    failures = sink.write([_point(n) for n in range(30)])

    assert failures == []
    assert [len(call) for call in client.calls] == [30, 10]
    assert [json.loads(blob)["rpm"] for blob in client.calls[1]] == list(range(0, 30, 3))
    assert len(sleep.waits) == 1
    delivered = [line["rpm"] for line in client.delivered()]
    assert sorted(delivered[30:] + [r for r in delivered[:30] if r % 3]) == list(range(30))


def test_records_still_failing_after_the_last_attempt_are_reported_with_the_reason() -> None:
    def always_fail(call: int, line: dict[str, Any]) -> str | None:
        if line["rpm"] == 7:
            return "ServiceUnavailableException"
        if line["rpm"] == 8:
            return "InternalFailure"
        return None

    client, sleep = RecordingFirehose(always_fail), RecordingSleep()
    sink = _sink(client, sleep, attempts=4)

    failures = sink.write([_point(n) for n in range(20)])

    assert [len(call) for call in client.calls] == [20, 2, 2, 2]
    assert len(sleep.waits) == 3
    assert all(0 < wait <= 1.0 for wait in sleep.waits)
    assert sleep.waits[2] > sleep.waits[0]  # 0.05 * 2**n + up to 0.05: strictly growing here
    errors = {point.message_id: error for point, error in failures}
    assert set(errors) == {"m7", "m8"}
    assert isinstance(errors["m7"], Throttled)
    assert type(errors["m8"]) is TransientError
    assert "InternalFailure" in str(errors["m8"])


def test_a_call_that_fails_as_a_whole_fails_every_point_without_another_try() -> None:
    class DownFirehose(RecordingFirehose):
        def put_record_batch(self, **kwargs: Any) -> dict[str, Any]:
            self.calls.append([r["Data"] for r in kwargs["Records"]])
            raise ClientError(
                {"Error": {"Code": "ResourceNotFoundException", "Message": "no stream"}},
                "PutRecordBatch",
            )

    client, sleep = DownFirehose(), RecordingSleep()
    sink = _sink(client, sleep)

    failures = sink.write([_point(n) for n in range(3)])

    assert len(client.calls) == 1
    assert sleep.waits == []
    assert [p.message_id for p, _ in failures] == ["m0", "m1", "m2"]
    assert all(type(error) is TransientError for _, error in failures)


# -- the archive record ------------------------------------------------------------


def test_an_archive_record_has_every_key_whatever_the_sample_carries() -> None:
    record = archive_record(_point(3, model="Civic"))

    assert list(record) == [
        "vehicle_id", "region", "model", "time_us", "timestamp_ms", "timestamp", "message_id",
        *SIGNALS,
    ]  # fmt: skip
    assert record["model"] == "Civic"
    assert record["timestamp_ms"] == 1_735_693_200_003
    assert record["timestamp"] == "2025-01-01T01:00:00.003Z"
    assert (record["rpm"], record["speed_kmh"], record["latitude"]) == (3, None, None)
    assert archive_record(_point(3))["model"] is None


def test_the_schema_lists_every_measure_a_sample_makes_and_carries_its_values() -> None:
    message = next(
        m
        for m in TelemetrySampler(VIN, seed=1).samples(50)
        if m.HasField("gps") and m.HasField("speed_kmh")
    )
    sample = validate(message, topic_vehicle_id=VIN)
    arrival = Arrival(REGION, Path.INDIVIDUAL, sample.timestamp_ms + 200)
    point = to_point(OperationalRecord(sample, arrival, VehicleInfo("Honda", "Civic", 2021)))

    record = archive_record(point)

    assert [m.name for m in point.measures] == list(SIGNALS)
    assert (record["vehicle_id"], record["region"], record["model"]) == (VIN, REGION, "Civic")
    assert record["timestamp_ms"] == sample.timestamp_ms
    assert (record["sequence"], record["rpm"]) == (sample.sequence, sample.rpm)
    assert record["speed_kmh"] == sample.speed_kmh
    assert sample.gps is not None
    assert (record["latitude"], record["longitude"]) == (sample.gps.latitude, sample.gps.longitude)
    assert (record["time_source"], record["message_id"]) == ("vehicle", sample.message_id)


def test_iso_millis_is_exact_to_the_millisecond() -> None:
    assert iso_millis(0) == "1970-01-01T00:00:00.000Z"
    assert iso_millis(1_735_693_200_999) == "2025-01-01T01:00:00.999Z"


def test_the_service_archives_enriched_samples_and_dead_letters_what_firehose_kept_failing() -> (
    None
):
    samples = TelemetrySampler(VIN, seed=1).samples(10)
    lost_sequence = samples[4].sequence

    def lose_one(call: int, line: dict[str, Any]) -> str | None:
        return "ServiceUnavailableException" if line["sequence"] == lost_sequence else None

    client, sleep = RecordingFirehose(lose_one), RecordingSleep()
    harness = Harness(
        timeseries=_sink(client, sleep),
        registry=StaticRegistry({VIN: VehicleInfo("Honda", "Civic", 2021)}),
    )

    report = harness.service().ingest_batch(event("batch", encode_envelope(samples)))

    assert (report.stored, report.dead_lettered) == (10, 1)
    lines = client.delivered()
    assert len(lines) == 10 + 2  # the failed record went twice more
    delivered = {line["sequence"] for line in lines} - {lost_sequence}
    assert delivered == {s.sequence for s in samples} - {lost_sequence}
    assert {(line["vehicle_id"], line["region"], line["model"]) for line in lines} == {
        (VIN, REGION, "Civic")
    }
    (record,) = harness.dlq.list()
    ((failure),) = record.context["failures"]
    assert (failure["index"], failure["sink"]) == (4, "timeseries")
    assert record.reason == "throttled"
    assert counter(harness.metrics, "v2c_timeseries_rejected_records_total",
                   region=REGION, sink="firehose", reason="throttled") == 1  # fmt: skip
    assert counter(harness.metrics, "v2c_timestream_rejected_records_total",
                   region=REGION, reason="timestamp") == 0  # fmt: skip
