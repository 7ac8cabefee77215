"""Handlers that never return, against a real mosquitto and the real S3 DLQ on moto.

A Python thread cannot be stopped, so a handler stuck past its rule's timeout
used to hold its worker, and the dead-letter write for its message queued on
the same pool behind it: every worker stuck meant no message handled, none
dead-lettered and none acknowledged. Now the gateway gives the call up: the
message is dead-lettered once (`handler_timeout`, payload kept) on the
dead-letter writers' own pool and acknowledged, its window slot is freed,
and a new worker takes the stuck one's place.

Verdicts are on events (records, PUBACKs, counts) while the stuck calls are
still stuck, never on elapsed time; the rule's 1 s timeout is configuration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import gateway_handlers
import pytest
from gateway_handlers import TELEMETRY, TELEMETRY_BATCH, Gate, read_records
from gateway_support import publish_all, running_gateway, vehicle_client, wait_until
from telemetry_support import dlq_store

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.gateway.rules import Rule
from v2c.handlers.dlq.store import DeadLetterStore, InMemoryDeadLetterStore
from v2c.infra.local.broker import MosquittoBroker

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


STUCK_VIN = "VIN-1HGBH41JXMN109186"
OTHER_VIN = "VIN-5YJ3E1EA7KF317000"
STUCK_TOPIC = f"v2c/v1/eu-west-1/{STUCK_VIN}/telemetry/batch"
OTHER_TOPIC = f"v2c/v1/eu-west-1/{OTHER_VIN}/telemetry/vehicle"
WORKERS = 2
RULES = (
    Rule("telemetry", TELEMETRY, "gateway_handlers:record_handler", dlq="telemetry", qos=1),
    Rule(
        "telemetry_batch",
        TELEMETRY_BATCH,
        "gateway_handlers:hang_handler",
        dlq="telemetry",
        qos=1,
        timeout_s=1.0,
    ),
)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate()
    monkeypatch.setattr(gateway_handlers, "HANG", gate)
    yield gate
    gate.release.set()  # never leave a thread hanging past the test


@pytest.fixture
def record_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "records.jsonl")
    monkeypatch.setenv("V2C_TEST_RECORD_FILE", path)
    return path


@pytest.fixture
def stores(aws_stack: AwsStack) -> dict[str, DeadLetterStore]:
    return {"telemetry": dlq_store(aws_stack), "ota": InMemoryDeadLetterStore("ota")}


def _stuck_payload(i: int) -> bytes:
    return b"\x00stuck\xff" + bytes([i]) * 64


def test_a_handler_stuck_past_its_timeout_is_dead_lettered_once_and_its_worker_replaced(
    mosquitto: MosquittoBroker,
    aws_stack: AwsStack,
    stores: dict[str, DeadLetterStore],
    gate: Gate,
    record_file: str,
) -> None:
    endpoint = MqttEndpoint(mosquitto.host, mosquitto.port)
    dlq = stores["telemetry"]
    with (
        running_gateway(endpoint, RULES, stores, client_id="gw-timeout", workers=WORKERS) as gw,
        vehicle_client(endpoint, STUCK_VIN) as stuck_vehicle,
        vehicle_client(endpoint, OTHER_VIN) as other_vehicle,
    ):
        # Given two messages whose handler hangs: every worker of the pool taken
        sent = [stuck_vehicle.publish(STUCK_TOPIC, _stuck_payload(i), qos=1) for i in range(2)]
        wait_until(lambda: gate.calls.active == WORKERS, what="both workers stuck")

        # Then, once their timeout fires, each is dead-lettered and acknowledged
        wait_until(lambda: dlq.depth() == 2, what="two handler_timeout records")
        wait_until(lambda: all(info.is_published() for info in sent), what="both PUBACKs")
        wait_until(lambda: gw.in_flight == 0, what="their window slots freed")
        # ... and the pool replaced the two threads the stuck calls still hold
        assert gw.pool.abandoned == WORKERS
        assert gw.pool.replacements == WORKERS
        abandoned_gauge = gw.metrics.registry.get_sample_value(
            "v2c_gateway_abandoned_handler_calls"
        )
        assert abandoned_gauge == WORKERS

        # When another vehicle publishes while both calls are still stuck
        publish_all(other_vehicle, [(OTHER_TOPIC, f"m{i}".encode()) for i in range(20)])
        wait_until(lambda: len(read_records(record_file)) == 20, what="20 messages handled")
        assert gate.calls.active == WORKERS  # handled by the replacements, not the stuck ones

        # And when the stuck calls finally return, their late results change nothing
        gate.release.set()
        wait_until(lambda: gw.pool.abandoned == 0, what="the stuck calls to return")
        wait_until(lambda: len(read_records(record_file)) == 22, what="the late calls' side effect")
        assert gw.metrics.handled.labels("telemetry_batch")._value.get() == 0
        assert gw.metrics.failed.labels("telemetry_batch", "handler_timeout")._value.get() == 2
        assert gw.metrics.handled.labels("telemetry")._value.get() == 20

    records = sorted(dlq.list(), key=lambda r: r.payload)
    assert len(records) == 2  # exactly one record per stuck message
    assert [r.payload for r in records] == [_stuck_payload(0), _stuck_payload(1)]
    for record in records:
        assert (record.reason, record.source, record.topic) == (
            "handler_timeout",
            "telemetry_batch",
            STUCK_TOPIC,
        )
        assert record.attempts == 1
        assert "exceeded 1.0s" in record.error


def test_dead_letter_writes_do_not_wait_for_a_handler_pool_full_of_stuck_calls(
    mosquitto: MosquittoBroker,
    aws_stack: AwsStack,
    stores: dict[str, DeadLetterStore],
    gate: Gate,
) -> None:
    endpoint = MqttEndpoint(mosquitto.host, mosquitto.port)
    dlq = stores["telemetry"]
    with (
        running_gateway(
            endpoint,
            RULES,
            stores,
            client_id="gw-timeout-noreplace",
            workers=WORKERS,
            max_abandoned_workers=0,  # no replacement: every handler thread stays stuck
        ) as gw,
        vehicle_client(endpoint, STUCK_VIN) as stuck_vehicle,
    ):
        sent = [stuck_vehicle.publish(STUCK_TOPIC, _stuck_payload(i), qos=1) for i in range(3)]
        wait_until(lambda: gate.calls.active == WORKERS, what="both workers stuck")

        # The dead-letter writes have threads of their own: all three messages are
        # recorded and acknowledged while no handler thread is free (the third
        # timed out waiting for one, and never runs).
        wait_until(lambda: dlq.depth() == 3, what="three handler_timeout records")
        wait_until(lambda: all(info.is_published() for info in sent), what="three PUBACKs")
        assert gate.calls.active == WORKERS
        assert (gw.pool.abandoned, gw.pool.replacements) == (WORKERS, 0)
        gate.release.set()
        wait_until(lambda: gw.pool.abandoned == 0, what="the stuck calls to return")

    assert {r.reason for r in dlq.list()} == {"handler_timeout"}
    assert sorted(r.payload for r in dlq.list()) == [_stuck_payload(i) for i in range(3)]
