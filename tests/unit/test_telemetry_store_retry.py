"""The DynamoDB record store's retry policy, against a scripted stand-in for the client.

The stand-in is a port double passed to the store's constructor (boto3 is not
patched); the same paths run against a real moto server behind a faulty HTTP
proxy in tests/integration/test_telemetry_faults.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from telemetry_events import REGION, VIN

from v2c.contract.errors import InvalidInput, Throttled, TransientError
from v2c.handlers.telemetry.model import Arrival, OperationalRecord, Path, VehicleInfo
from v2c.handlers.telemetry.store import DynamoRecordStore, RetryPolicy
from v2c.handlers.telemetry.validation import validate
from v2c.vehicle_sim.sampler import TelemetrySampler

TABLE = "v2c-telemetry"


def _records(count: int) -> list[OperationalRecord]:
    arrival = Arrival(REGION, Path.BATCH, 1_735_700_000_000, "batch-1", 0)
    return [
        OperationalRecord(validate(m, topic_vehicle_id=VIN), arrival, None)
        for m in TelemetrySampler(VIN, seed=2).samples(count)
    ]


def _error(code: str, operation: str = "BatchWriteItem") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


class ScriptedDynamo:
    """Answers each call from a script: an exception to raise, or how many of
    the request's items to leave unprocessed."""

    def __init__(self, script: list[Exception | int]) -> None:
        self.script = script
        self.calls: list[int] = []  # items per call

    def _next(self) -> Exception | int:
        return self.script.pop(0) if self.script else 0

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:  # noqa: N803
        requests = RequestItems[TABLE]
        self.calls.append(len(requests))
        step = self._next()
        if isinstance(step, Exception):
            raise step
        return {"UnprocessedItems": {TABLE: requests[:step]} if step else {}}

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(1)
        step = self._next()
        if isinstance(step, Exception):
            raise step
        return {}


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _store(client: ScriptedDynamo, sleeps: Sleeps, **kwargs: Any) -> DynamoRecordStore:
    policy = RetryPolicy(sleep=sleeps, jitter=lambda: 1.0)
    return DynamoRecordStore(client, TABLE, retry=policy, **kwargs)  # type: ignore[arg-type]


def test_backoff_doubles_from_50_ms_and_is_capped() -> None:
    policy = RetryPolicy(base_delay_s=0.05, max_delay_s=0.15, jitter=lambda: 1.0)

    assert [policy.delay(n) for n in (1, 2, 3, 4)] == pytest.approx([0.05, 0.1, 0.15, 0.15])
    assert RetryPolicy(jitter=lambda: 0.0).delay(2) == pytest.approx(0.05)  # half is fixed


def test_a_batch_is_written_in_chunks_of_25() -> None:
    client, sleeps = ScriptedDynamo([]), Sleeps()

    result = _store(client, sleeps).put_many(_records(60))

    assert client.calls == [25, 25, 10]
    assert len(result.written) == 60
    assert not result.failed


def test_unprocessed_items_are_retried_with_backoff_until_written() -> None:
    client, sleeps = ScriptedDynamo([10, 4, 0]), Sleeps()
    errors: list[str] = []

    result = _store(client, sleeps, on_error=errors.append).put_many(_records(25))

    assert client.calls == [25, 10, 4]
    assert sleeps == pytest.approx([0.05, 0.1])
    assert len(result.written) == 25
    assert errors == ["UnprocessedItems", "UnprocessedItems"]


def test_items_still_unprocessed_after_three_attempts_are_reported_failed() -> None:
    client, sleeps = ScriptedDynamo([10, 4, 3]), Sleeps()

    result = _store(client, sleeps).put_many(_records(25))

    assert client.calls == [25, 10, 4]
    assert len(result.written) == 22
    assert len(result.failed) == 3
    assert all(isinstance(error, Throttled) for _, error in result.failed)


def test_a_throttled_batch_is_retried_and_then_written() -> None:
    client, sleeps = ScriptedDynamo([_error("ProvisionedThroughputExceededException"), 0]), Sleeps()

    result = _store(client, sleeps).put_many(_records(5))

    assert client.calls == [5, 5]
    assert len(result.written) == 5


def test_a_batch_throttled_three_times_fails_with_the_throttling_reason() -> None:
    client, sleeps = ScriptedDynamo([_error("ThrottlingException")] * 3), Sleeps()

    result = _store(client, sleeps).put_many(_records(5))

    assert len(result.failed) == 5
    assert {error.reason for _, error in result.failed} == {"throttled"}


def test_a_refused_batch_is_not_retried() -> None:
    client, sleeps = ScriptedDynamo([_error("ValidationException")]), Sleeps()

    result = _store(client, sleeps).put_many(_records(3))

    assert client.calls == [3]
    assert all(isinstance(error, InvalidInput) for _, error in result.failed)


def test_a_conditional_put_that_finds_the_key_reports_a_duplicate() -> None:
    client = ScriptedDynamo([_error("ConditionalCheckFailedException", "PutItem")])

    assert _store(client, Sleeps()).put_new(_records(1)[0]) is False


def test_a_put_throttled_on_every_attempt_raises_throttled() -> None:
    client, sleeps = ScriptedDynamo([_error("ThrottlingException", "PutItem")] * 3), Sleeps()

    with pytest.raises(Throttled):
        _store(client, sleeps).put_new(_records(1)[0])
    assert client.calls == [1, 1, 1]
    assert sleeps == pytest.approx([0.05, 0.1])


def test_a_put_of_a_missing_table_is_a_transient_error_for_a_later_replay() -> None:
    client = ScriptedDynamo([_error("ResourceNotFoundException", "PutItem")])

    with pytest.raises(TransientError):
        _store(client, Sleeps()).put(_records(1)[0])


def test_the_item_carries_the_sample_the_arrival_and_the_enrichment() -> None:
    record = _records(1)[0]
    enriched = OperationalRecord(record.sample, record.arrival, VehicleInfo("Honda", "Civic", 2021))

    item = _store(ScriptedDynamo([]), Sleeps()).item(enriched)

    assert item["vehicle_id"] == {"S": VIN}
    assert item["sample_key"] == {"S": record.sample.key}
    assert item["message_id"] == {"S": record.sample.message_id}
    assert item["batch_id"] == {"S": "batch-1"}
    assert item["model"] == {"S": "Civic"}
    assert item["year"] == {"N": "2021"}
    assert item["expires_at"] == {"N": str(1_735_700_000 + 90 * 86400)}
    assert item["battery_voltage_v"]["N"] == repr(record.sample.battery_voltage_v)
