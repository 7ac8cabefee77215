"""Telemetry end to end: a vehicle publishes with paho to a real mosquitto, the
gateway routes with the production rules table, the handlers build themselves
from environment variables (AWS_ENDPOINT_URL → the moto server) and store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from gateway_support import publish_all, running_gateway, vehicle_client, wait_until
from prometheus_client import REGISTRY
from telemetry_support import (
    dlq_store,
    lambda_environment,
    register_vehicles,
    stored_per_vehicle,
)

from v2c.contract.batch_codec import encode_envelope
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.gateway.rules import RULES
from v2c.handlers.dlq.store import InMemoryDeadLetterStore
from v2c.infra.local.broker import MosquittoBroker, MosquittoConfig
from v2c.vehicle_sim.sampler import TelemetrySampler

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


VIN = "VIN-1HGBH41JXMN109186"
TOPIC = f"v2c/v1/eu-west-1/{VIN}/telemetry"


@pytest.fixture
def handler_environment(aws_stack: AwsStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with lambda_environment(aws_stack, monkeypatch):
        yield


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[MqttEndpoint]:
    with MosquittoBroker(MosquittoConfig(data_dir=tmp_path / "broker")) as broker:
        yield MqttEndpoint(broker.host, broker.port)


def _duplicates() -> float:
    labels = {"region": "eu-west-1", "topic": "individual"}
    return REGISTRY.get_sample_value("v2c_telemetry_duplicate_total", labels) or 0.0


def test_a_vehicle_publishing_through_the_gateway_gets_each_sample_stored_once(
    aws_stack: AwsStack, handler_environment: None, endpoint: MqttEndpoint
) -> None:
    register_vehicles(aws_stack, [VIN])
    samples = TelemetrySampler(VIN, seed=4).samples(70)
    batch_one, batch_two = encode_envelope(samples[20:45]), encode_envelope(samples[45:70])
    corrupted = batch_two[:-30]
    messages = [(f"{TOPIC}/vehicle", s.SerializeToString()) for s in samples[:20]]
    messages += [(f"{TOPIC}/batch", batch_one), (f"{TOPIC}/batch", batch_two)]
    messages += [(f"{TOPIC}/vehicle", samples[3].SerializeToString())]  # a duplicate
    messages += [(f"{TOPIC}/batch", corrupted)]
    duplicates_before = _duplicates()
    dead_letters = {"telemetry": dlq_store(aws_stack), "ota": InMemoryDeadLetterStore("ota")}

    with (
        running_gateway(endpoint, RULES, dead_letters, client_id="gw-telemetry") as gateway,
        vehicle_client(endpoint, VIN) as vehicle,
    ):
        publish_all(vehicle, messages)
        handled = gateway.metrics.handled
        # A record's sample is stored before the gateway counts its message
        # handled (the count follows the batch's settling): wait for both.
        wait_until(
            lambda: (
                stored_per_vehicle(aws_stack, [VIN]) == {VIN: 70}
                and dead_letters["telemetry"].depth() == 1
                and handled.labels("telemetry")._value.get() >= 21
                and handled.labels("telemetry_batch")._value.get() >= 3
            ),
            what="70 stored samples, one dead-lettered batch, 24 messages handled",
        )
        assert handled.labels("telemetry")._value.get() == 21
        assert handled.labels("telemetry_batch")._value.get() == 3

    (record,) = dead_letters["telemetry"].list()
    assert (record.source, record.payload) == ("telemetry_batch", corrupted)
    assert record.reason == "corrupt_payload"
    assert _duplicates() - duplicates_before == 1
