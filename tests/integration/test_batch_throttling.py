"""Throttling on half the writes ends with every item stored once (issue #13, acceptance),
through the batch path.

A `v2c gateway run` process with the production rules feeds the queue-fed
handlers batches of telemetry singles and OTA status reports, published by
vehicles over a real mosquitto. Its AWS calls go through the fault proxy
(`aws_faults.AwsFaultProxy`, a real HTTP hop in front of the moto server):
every distinct DynamoDB write, a `BatchWriteItem` chunk of samples or a
`TransactWriteItems` chunk of status records with their campaign's counter
write, is refused the first time it is sent (`FirstAttempts`): throttled
(`ThrottlingException`, `ProvisionedThroughputExceededException`) or, for a
BatchWriteItem, half its items answered as `UnprocessedItems`. So half the
write calls fail, every write meets a fault, and only the handlers' own
retries (the telemetry store's, of the unprocessed items only; the status
service's, of the records whose chunk failed) bring them in.

`test_telemetry_faults` covers the telemetry service called directly, one
message at a time; this is the gateway's batches, both handlers at once.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aws_faults import (
    BATCH_WRITE,
    TRANSACT_WRITE,
    AwsFaultProxy,
    FirstAttempts,
    LeaveUnprocessed,
    Throttle,
)
from fleet_support import upload_firmware, wait_progressing
from gateway_support import gateway_process, publish_from_clients
from ota_support import fleet
from status_support import (
    assert_counters_exact,
    campaign_side,
    records,
    report_messages,
    start_campaign,
    terminal_count,
)
from telemetry_support import dlq_store, stored_keys

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.contract.topics import Domain, Topic
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.telemetry.model import sample_key
from v2c.infra.local.broker import MosquittoBroker
from v2c.vehicle_sim.sampler import DEFAULT_START_MS, TelemetrySampler

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

VEHICLES = 24
SAMPLES = 16  # per vehicle, each its own QoS 1 message
MODEL = "Accord"
FAULTS = (
    Throttle(),
    LeaveUnprocessed(keep=0.5),
    Throttle("ProvisionedThroughputExceededException"),
)


def rolls_back(vehicle: str) -> bool:
    return int(vehicle[-6:]) % 6 == 1


def telemetry_messages(seed: int) -> tuple[list[tuple[str, bytes]], set[tuple[str, str]]]:
    """Every vehicle's samples as singles, a tenth of them sent twice; and the
    keys that must be stored."""
    rng = random.Random(seed)
    messages: list[tuple[str, bytes]] = []
    keys: set[tuple[str, str]] = set()
    for number, vehicle in enumerate(fleet(VEHICLES, model=MODEL)):
        topic = str(Topic(vehicle.region, vehicle.vehicle_id, Domain.TELEMETRY, "vehicle"))
        start = DEFAULT_START_MS + number * 10_000
        for sample in TelemetrySampler(vehicle.vehicle_id, seed=number, start_ms=start).samples(
            SAMPLES
        ):
            keys.add((sample.vehicle_id, sample_key(sample.epoch, sample.sequence)))
            messages.append((topic, sample.SerializeToString()))
            if rng.random() < 0.1:
                messages.append(messages[-1])
    rng.shuffle(messages)
    return messages, keys


def test_throttling_on_half_the_writes_ends_with_every_item_stored_once(
    aws_stack: AwsStack,
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = MqttEndpoint(mosquitto.host, mosquitto.port)
    with campaign_side(aws_stack, monkeypatch) as ota:
        ota.deps.fleet.put(fleet(VEHICLES, model=MODEL))
        firmware_id = upload_firmware(ota, "2.0.0", model=MODEL, image_bytes=4096)
        campaign_id = start_campaign(
            ota,
            firmware_id,
            MODEL,
            deployment_strategy="immediate",
            batch_size=VEHICLES,
            max_concurrent_updates=VEHICLES,
        )
        notified = records(ota, campaign_id)
        assert len(notified) == VEHICLES
        telemetry, keys = telemetry_messages(seed=5)
        status = report_messages(notified, rolls_back, seed=6)
        # Both kinds at once: the gateway's two rules batch side by side.
        mixed = [m for pair in zip(telemetry, status, strict=False) for m in pair]
        mixed += telemetry[len(status) :] + status[len(telemetry) :]

        policy = FirstAttempts(FAULTS)
        with (
            AwsFaultProxy(aws_stack.aws.endpoint_url or "", policy) as proxy,
            gateway_process(
                endpoint,
                aws_stack.settings(),
                tmp_path / "gateway.log",
                client_id="gw-throttled",
                environment={"AWS_ENDPOINT_URL": proxy.endpoint_url},
            ) as gateway,
        ):
            publish_from_clients(endpoint, mixed)

            def handled() -> tuple[float, float]:
                return (
                    gateway.metric("v2c_gateway_messages_handled_total", rule="telemetry"),
                    gateway.metric("v2c_gateway_messages_handled_total", rule="ota_status"),
                )

            def done() -> bool:
                ota.campaigns.monitor()  # the API's periodic pass, every poll
                return (
                    handled() == (len(telemetry), len(status))
                    and terminal_count(ota, campaign_id) == VEHICLES
                    and ota.campaigns.get(campaign_id).status is CampaignStatus.COMPLETED
                )

            wait_progressing(
                done,
                lambda: (handled(), terminal_count(ota, campaign_id)),
                what="every message handled and the campaign completed",
                stall_s=60,
                cap_s=240,
            )
            failed = gateway.metric("v2c_gateway_messages_failed_total")
            dead = gateway.metric("v2c_dlq_messages_total")

    # Retries were needed: half the write calls of each kind were refused ...
    for target in (BATCH_WRITE, TRANSACT_WRITE):
        assert proxy.injected[target] > 0, (target, proxy.injected)
        # ... and each refused write went in on its next attempt.
        assert proxy.seen[target] >= 2 * proxy.injected[target], (proxy.seen, proxy.injected)
    # Every sample stored exactly once, nothing dead-lettered.
    stored = stored_keys(aws_stack)
    assert len(stored) == len(set(stored))
    assert set(stored) == keys
    assert dlq_store(aws_stack).depth() == 0
    assert ota.dead_letters.depth() == 0
    assert failed == 0
    assert dead == 0
    # Every status report applied once: the counters equal the records.
    failing = sum(1 for u in notified if rolls_back(u.vehicle_id))
    assert_counters_exact(ota, aws_stack, campaign_id, vehicles=VEHICLES, rolled_back=failing)
