"""Telemetry under injected AWS faults: a real HTTP proxy in front of the moto
server throttles or half-processes requests, the handlers retry, dead-letter
what still fails, and a DLQ replay through the production rules stores the
rest. Nothing lost, nothing stored twice."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from aws_faults import (
    AwsFaultProxy,
    FaultPolicy,
    LeaveUnprocessed,
    Nth,
    Throttle,
    bursts,
    every_other,
)
from telemetry_support import (
    VINS,
    batch_event,
    build_service,
    dlq_store,
    single_event,
    stored_keys,
    timestream_records,
)

from v2c.contract.batch_codec import decode_envelope
from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.gateway.redrive import InboundRedriver
from v2c.gateway.rules import RULES
from v2c.handlers.dlq.service import DeadLetterService, ReplayStatus
from v2c.handlers.telemetry.config import set_default_service
from v2c.handlers.telemetry.dead_letters import failed_indices
from v2c.handlers.telemetry.model import sample_key
from v2c.handlers.telemetry.store import RetryPolicy
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.sampler import DEFAULT_START_MS, TelemetrySampler

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


Telemetry = telemetry_pb2.Telemetry
FAST_RETRY = RetryPolicy(base_delay_s=0.005)  # the same 3 attempts, shorter waits


def _samples(vehicle: int, count: int) -> list[Telemetry]:
    # Start times 10 s apart: the two vehicles' time-series points never share a time.
    start = DEFAULT_START_MS + vehicle * 10_000
    return TelemetrySampler(VINS[vehicle], seed=vehicle, start_ms=start).samples(count)


def _keys(samples: list[Telemetry]) -> set[tuple[str, str]]:
    return {(s.vehicle_id, sample_key(s.epoch, s.sequence)) for s in samples}


def _dead_keys(dead: list[DeadLetterRecord]) -> set[tuple[str, str]]:
    """The samples the records stand for: a single's sample, a batch's failed indices."""
    keys: set[tuple[str, str]] = set()
    for record in dead:
        if record.source == "telemetry_batch":
            samples = decode_envelope(record.payload).samples
            keys |= _keys([samples[i] for i in failed_indices(record)])
        else:
            keys |= _keys([Telemetry.FromString(record.payload)])
    return keys


@pytest.fixture
def replay_service(aws_stack: AwsStack) -> Iterator[None]:
    """The handlers' default service for the replay, over moto without faults
    (what the production handler builds from its environment)."""
    set_default_service(build_service(aws_stack))
    yield
    set_default_service(None)


def _replay_all(aws_stack: AwsStack) -> list[Any]:
    service = DeadLetterService(
        {"telemetry": dlq_store(aws_stack)}, {Direction.INBOUND: InboundRedriver(RULES)}
    )
    return service.replay(replay_all=True)


@pytest.mark.parametrize(
    "policy",
    [every_other(), bursts(3), every_other(Throttle("ProvisionedThroughputExceededException"))],
    ids=["every-other-write", "bursts-of-3-writes", "every-other-provisioned-throughput"],
)
def test_throttling_on_half_the_writes_loses_nothing_and_a_replay_stores_the_rest(
    aws_stack: AwsStack, replay_service: None, policy: FaultPolicy
) -> None:
    samples = _samples(0, 150) + _samples(1, 150)
    singles = samples[:100] + samples[150:250]
    batches = [samples[i : i + 25] for i in (100, 125, 250, 275)]

    with AwsFaultProxy(aws_stack.aws.endpoint_url or "", policy) as proxy:
        service = build_service(aws_stack, dynamodb_url=proxy.endpoint_url, retry=FAST_RETRY)
        reports = [service.ingest(single_event(s)) for s in singles]
        reports += [service.ingest_batch(batch_event(b)) for b in batches]
        service.close()
    assert sum(proxy.injected.values()) > 0

    # Every sample is stored or dead-lettered, never both, never twice.
    stored = stored_keys(aws_stack)
    assert len(stored) == len(set(stored))
    dead = list(dlq_store(aws_stack).list())
    dead_keys = _dead_keys(dead)
    assert {r.reason for r in dead} <= {"throttled"}
    assert len(dead) == sum(r.dead_lettered for r in reports)  # one record per message
    assert sum(r.failed for r in reports) == len(dead_keys)
    assert set(stored).isdisjoint(dead_keys)
    assert set(stored) | dead_keys == _keys(samples)

    # When the DLQ is replayed through the production rules
    outcomes = _replay_all(aws_stack)

    # Then the rest is stored, exactly once, and the DLQ is empty
    assert all(o.status is ReplayStatus.REPLAYED for o in outcomes)
    stored = stored_keys(aws_stack)
    assert sorted(stored) == sorted(_keys(samples))
    assert dlq_store(aws_stack).depth() == 0
    times = {record["Time"] for record in timestream_records(aws_stack)}
    assert len(times) == len(samples)


def test_bursts_longer_than_the_retry_budget_dead_letter_some_writes(
    aws_stack: AwsStack, replay_service: None
) -> None:
    samples = _samples(0, 40)
    with AwsFaultProxy(aws_stack.aws.endpoint_url or "", bursts(3)) as proxy:
        service = build_service(aws_stack, dynamodb_url=proxy.endpoint_url, retry=FAST_RETRY)
        reports = [service.ingest(single_event(s)) for s in samples]
        service.close()

    # Sequentially, requests 0-2 throttled, 3-5 pass ...: one message in four
    # meets three throttled attempts.
    assert sum(r.failed for r in reports) == 10
    assert dlq_store(aws_stack).depth() == 10
    _replay_all(aws_stack)
    assert sorted(stored_keys(aws_stack)) == sorted(_keys(samples))


def test_items_left_unprocessed_are_retried_then_dead_lettered_then_replayed(
    aws_stack: AwsStack, replay_service: None
) -> None:
    samples = _samples(0, 25)
    policy = Nth(
        lambda n: True,
        LeaveUnprocessed(keep=0.5),
        frozenset({"DynamoDB_20120810.BatchWriteItem"}),
    )
    with AwsFaultProxy(aws_stack.aws.endpoint_url or "", policy) as proxy:
        service = build_service(aws_stack, dynamodb_url=proxy.endpoint_url, retry=FAST_RETRY)
        batch = batch_event(samples)
        envelope = base64.b64decode(batch["payload"])
        report = service.ingest_batch(batch)
        service.close()

    # 25 → 12 written, 13 left → 6 written, 7 left → 3 written, 4 left after 3 attempts.
    assert proxy.seen["DynamoDB_20120810.BatchWriteItem"] == 3
    assert (report.stored, report.failed) == (21, 4)
    (record,) = dlq_store(aws_stack).list()  # one record for the batch, not one per sample
    assert record.payload == envelope
    assert failed_indices(record) == [21, 22, 23, 24]
    assert record.reason == "throttled"
    assert {(f["reason"], f["sink"]) for f in record.context["failures"]} == {
        ("throttled", "dynamodb")
    }

    _replay_all(aws_stack)
    assert sorted(stored_keys(aws_stack)) == sorted(_keys(samples))


def test_rejected_time_series_records_are_dead_lettered_and_the_records_kept(
    aws_stack: AwsStack,
) -> None:
    rejection = Throttle(
        "RejectedRecordsException",
        namespace="com.amazonaws.timestream.v20181101",
        extra={
            "RejectedRecords": [
                {"RecordIndex": 0, "Reason": "The record timestamp is outside the time range"}
            ]
        },
    )
    policy = every_other(rejection, frozenset({"Timestream_20181101.WriteRecords"}))
    samples = _samples(0, 10)
    with AwsFaultProxy(aws_stack.aws.endpoint_url or "", policy) as proxy:
        timestream = boto3.client(
            "timestream-write",
            endpoint_url=proxy.endpoint_url,
            region_name=aws_stack.aws.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        service = build_service(aws_stack, timestream_client=timestream)
        reports = [service.ingest(single_event(s)) for s in samples]
        service.close()

    assert [r.stored for r in reports] == [1] * 10
    assert sorted(stored_keys(aws_stack)) == sorted(_keys(samples))
    dead = list(dlq_store(aws_stack).list())
    assert len(dead) == 5
    assert {(r.reason, r.context["sink"]) for r in dead} == {("validation_failed", "timeseries")}
    assert all("outside the time range" in r.error for r in dead)
    assert len(timestream_records(aws_stack)) == 5
    rejected = "v2c_timestream_rejected_records_total"
    labels = {"region": "eu-west-1", "reason": "timestamp"}
    assert service.metrics.registry.get_sample_value(rejected, labels) == 5
