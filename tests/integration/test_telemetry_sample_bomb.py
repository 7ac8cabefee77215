"""Sample bombs against the production rules, a real mosquitto, the real
handlers (configured from the environment) and the real S3 DLQ on moto.

The attack (issue 11): a ~300-byte batch envelope declaring 65,000 samples.
The codec capped bytes, not samples, so each such envelope was expanded into
65,000 samples, every invalid one became its own S3 object, and sixteen of
them kept every worker busy for minutes while another vehicle's valid
samples were dead-lettered as `handler_timeout`. Now the declared count is
refused before anything is expanded, a batch's failed samples make one
record, and the other vehicle's samples are stored.

Verdicts are on counts and on the order of events, never on elapsed time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from gateway_support import publish_all, running_gateway, vehicle_client, wait_until
from prometheus_client import REGISTRY
from telemetry_support import (
    VINS,
    dlq_store,
    lambda_environment,
    register_vehicles,
    stored_per_vehicle,
)
from typer.testing import CliRunner

from v2c.contract.batch_codec import DEFAULT_CONFIG, encode_envelope
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.gateway.rules import RULES
from v2c.handlers.dlq.store import DeadLetterStore, InMemoryDeadLetterStore
from v2c.handlers.telemetry.dead_letters import MAX_LISTED_FAILURES, failed_indices
from v2c.infra.bench.gateway_fairness import sample_bomb
from v2c.infra.cli.main import app
from v2c.infra.local.broker import MosquittoBroker
from v2c.infra.settings import MqttSettings, StackSettings, write_settings
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.sampler import TelemetrySampler

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


BOMBER, INNOCENT = VINS[0], VINS[1]
BOMBS = 16
Telemetry = telemetry_pb2.Telemetry


def _topic(vin: str, kind: str) -> str:
    return f"v2c/v1/eu-west-1/{vin}/telemetry/{kind}"


@pytest.fixture
def handler_environment(aws_stack: AwsStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with lambda_environment(aws_stack, monkeypatch):
        register_vehicles(aws_stack, VINS)
        yield


@pytest.fixture
def stores(aws_stack: AwsStack) -> dict[str, DeadLetterStore]:
    return {"telemetry": dlq_store(aws_stack), "ota": InMemoryDeadLetterStore("ota")}


def _invalid(samples: list[Telemetry], *indices: int) -> list[Telemetry]:
    for index in indices:
        samples[index].rpm = 20_000  # above the 10,000 rpm limit
    return samples


def _decompression_errors(reason: str) -> float:
    labels = {"region": "eu-west-1", "reason": reason}
    return REGISTRY.get_sample_value("v2c_batch_decompression_errors_total", labels) or 0.0


def test_sixteen_sample_bombs_make_sixteen_records_and_another_vehicles_samples_are_stored(
    mosquitto: MosquittoBroker,
    aws_stack: AwsStack,
    handler_environment: None,
    stores: dict[str, DeadLetterStore],
    tmp_path: Path,
) -> None:
    endpoint = MqttEndpoint(mosquitto.host, mosquitto.port)
    dlq = stores["telemetry"]
    cap = DEFAULT_CONFIG.max_samples
    bombs = [sample_bomb(BOMBER) for _ in range(BOMBS)]
    assert sum(map(len, bombs)) < 8 * 1024  # the whole attack: a few kilobytes
    # Batches that pass the count check but whose samples are all invalid, at the cap
    drive = TelemetrySampler(BOMBER, seed=7).samples(2 * cap + 25)
    at_cap = [
        encode_envelope(_invalid(drive[:cap], *range(cap))),
        encode_envelope(_invalid(drive[cap : 2 * cap], *range(cap))),
    ]
    partly = encode_envelope(_invalid(drive[2 * cap :], 3, 17))
    bad = [(_topic(BOMBER, "batch"), p) for p in [*bombs, *at_cap, partly]]
    innocent = TelemetrySampler(INNOCENT, seed=8).samples(50)
    good = [(_topic(INNOCENT, "vehicle"), s.SerializeToString()) for s in innocent[:25]]
    good.append((_topic(INNOCENT, "batch"), encode_envelope(innocent[25:])))
    errors_before = _decompression_errors("too_many_samples")

    with (
        running_gateway(endpoint, RULES, stores, client_id="gw-sample-bomb") as gateway,
        vehicle_client(endpoint, BOMBER) as bomber,
        vehicle_client(endpoint, INNOCENT) as vehicle,
    ):
        publish_all(bomber, bad)
        publish_all(vehicle, good)
        wait_until(
            lambda: stored_per_vehicle(aws_stack, [BOMBER, INNOCENT]) == {BOMBER: 23, INNOCENT: 50},
            timeout=120,
            what="the innocent vehicle's 50 samples and the bomber's 23 valid ones stored",
        )
        wait_until(lambda: dlq.depth() == BOMBS + 3, timeout=60, what="one record per message")
        failed = {
            sample.labels["reason"]
            for metric in gateway.metrics.registry.collect()
            if metric.name == "v2c_gateway_messages_failed"
            for sample in metric.samples
            if sample.name.endswith("_total")
        }
        assert "handler_timeout" not in failed  # nothing sat long enough to time out

    records = list(dlq.list())
    assert len(records) == BOMBS + 3  # one per failed message: never one per sample
    by_reason: dict[str, list[bytes]] = {}
    for record in records:
        by_reason.setdefault(record.reason, []).append(record.payload)
        assert (record.source, record.topic, record.vehicle_id) == (
            "telemetry_batch",
            _topic(BOMBER, "batch"),
            BOMBER,
        )
    assert sorted(by_reason["too_many_samples"]) == sorted(bombs)  # payloads byte for byte
    assert _decompression_errors("too_many_samples") - errors_before == BOMBS
    samples_records = [r for r in records if r.reason == "validation_failed"]
    assert sorted(r.payload for r in samples_records) == sorted([*at_cap, partly])
    for record in samples_records:
        context = record.context
        if record.payload == partly:
            assert failed_indices(record) == [3, 17]
            assert context["failures_not_listed"] == 0
        else:
            assert (context["samples"], context["failed_samples"]) == (cap, cap)
            assert context["failed_indices"] == [[0, cap - 1]]
            assert len(context["failures"]) == MAX_LISTED_FAILURES
            assert context["failures_not_listed"] == cap - MAX_LISTED_FAILURES
            assert context["reasons"] == {"validation_failed": cap}

    # `v2c dlq replay` sends a record back through the batch handler; invalid
    # data fails again, and the DLQ keeps the record with one more attempt.
    stack = tmp_path / "stack"
    write_settings(
        StackSettings(
            mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port),
            aws=aws_stack.aws,
            resources=aws_stack.names,
        ),
        stack,
    )
    partly_record = next(r for r in samples_records if r.payload == partly)
    replay = CliRunner().invoke(
        app, ["dlq", "replay", "--id", partly_record.record_id, "--stack", str(stack)]
    )
    assert replay.exit_code == 1, replay.output
    assert "1 failed" in replay.output
    again = dlq.get(partly_record.record_id)
    assert (again.attempts, again.payload) == (2, partly)
    assert stored_per_vehicle(aws_stack, [BOMBER]) == {BOMBER: 23}  # rewritten, not doubled


def test_a_vehicle_flooding_sample_bombs_does_not_hold_back_another_vehicles_samples(
    mosquitto: MosquittoBroker,
    aws_stack: AwsStack,
    handler_environment: None,
    stores: dict[str, DeadLetterStore],
) -> None:
    endpoint = MqttEndpoint(mosquitto.host, mosquitto.port)
    flood = 1000  # each costs one real S3 write on moto (the bench floods 5,000)
    bomb = [(_topic(BOMBER, "batch"), sample_bomb(BOMBER)) for _ in range(flood)]
    innocent = TelemetrySampler(INNOCENT, seed=9).samples(20)
    good = [(_topic(INNOCENT, "vehicle"), s.SerializeToString()) for s in innocent]

    with (
        running_gateway(endpoint, RULES, stores, client_id="gw-bomb-flood") as gateway,
        vehicle_client(endpoint, BOMBER) as bomber,
        vehicle_client(endpoint, INNOCENT) as vehicle,
    ):
        # Given 1,000 bombs the broker has all taken
        publish_all(bomber, bomb)
        # When another vehicle publishes 20 samples after them
        publish_all(vehicle, good)
        wait_until(
            lambda: gateway.metrics.handled.labels("telemetry")._value.get() == len(good),
            timeout=120,
            what="the innocent vehicle's 20 messages handled",
        )
        # Then they were handled while the flood still had a backlog (not behind it)
        batch = gateway.metrics.handled.labels("telemetry_batch")._value.get()
        print(f"\nbombs handled when the innocent vehicle's 20 were: {batch:.0f} of {flood}")
        assert batch < flood
        # ... and every bomb still ends dead-lettered (one record each) and acknowledged
        wait_until(
            lambda: gateway.metrics.handled.labels("telemetry_batch")._value.get() == flood,
            timeout=300,
            what="every bomb handled",
        )
        wait_until(lambda: gateway.in_flight == 0, what="the window to empty")

    assert stored_per_vehicle(aws_stack, [INNOCENT]) == {INNOCENT: 20}
    assert stores["telemetry"].depth() == flood
