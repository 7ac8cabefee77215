"""`v2c gateway run --metrics-port`: one Prometheus endpoint for the gateway and
the handlers it runs. A vehicle's sample and a corrupt one flow through the
real gateway process (production rules, handlers configured from the
environment a stack exports, moto behind them); the scrape then shows the
handlers' `v2c_telemetry_*` counters next to the gateway's own, and one
`v2c_dlq_messages` family that the handler's dead letter counted into."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from gateway_support import publish_all, vehicle_client, wait_until
from prometheus_client.parser import text_string_to_metric_families
from telemetry_support import register_vehicles

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.infra.local.broker import MosquittoBroker, MosquittoConfig
from v2c.infra.local.wiring import handler_environment
from v2c.infra.net import LOOPBACK, free_port
from v2c.vehicle_sim.sampler import TelemetrySampler

if TYPE_CHECKING:
    from moto_fixtures import AwsStack


VIN = "VIN-1HGBH41JXMN109186"
TOPIC = f"v2c/v1/eu-west-1/{VIN}/telemetry/vehicle"
V2C = Path(sys.executable).parent / "v2c"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@contextmanager
def gateway_process(
    broker: MosquittoBroker, stack: AwsStack, metrics_port: int, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        **handler_environment(stack.settings()),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    command = [
        str(V2C), "gateway", "run", "--host", broker.host, "--port", str(broker.port),
        "--client-id", "gw-metrics", "--dlq", "memory", "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def scrape(port: int) -> str:
    """The exposition text; empty while the endpoint is not listening yet."""
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as answer:
            text: str = answer.read().decode()
    except OSError:
        return ""
    return text


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of `name` whose labels include `labels`."""
    return sum(
        v
        for (sample, sample_labels), v in found.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def test_the_gateway_endpoint_serves_handler_metrics_and_one_dlq_counter(
    aws_stack: AwsStack, tmp_path: Path
) -> None:
    # Given a gateway process serving metrics, over a broker and moto
    register_vehicles(aws_stack, [VIN])
    sample = TelemetrySampler(VIN, seed=7).samples(1)[0]
    port = free_port()
    with (
        MosquittoBroker(MosquittoConfig(data_dir=tmp_path / "broker")) as broker,
        gateway_process(broker, aws_stack, port, tmp_path / "gateway.log"),
        vehicle_client(MqttEndpoint(broker.host, broker.port), VIN) as vehicle,
    ):
        # When a valid sample and a corrupt one flow through it
        publish_all(vehicle, [(TOPIC, sample.SerializeToString()), (TOPIC, b"\xff not protobuf")])
        wait_until(
            lambda: (
                value(samples(scrape(port)), "v2c_gateway_messages_handled_total", rule="telemetry")
                == 2
            ),
            what="both messages handled",
        )
        text = scrape(port)

    # Then the handlers' counters are on the gateway's endpoint
    found = samples(text)
    labels = {"region": "eu-west-1", "topic": "individual"}
    assert value(found, "v2c_telemetry_messages_total", status="stored", **labels) == 1
    assert value(found, "v2c_telemetry_messages_total", status="invalid", **labels) == 1
    # and one DLQ family, which the handler's own dead letter counted into
    families = [f.name for f in text_string_to_metric_families(text)]
    assert families.count("v2c_dlq_messages") == 1
    dead = {"queue": "telemetry", "region": "eu-west-1", "message_type": "individual"}
    assert value(found, "v2c_dlq_messages_total", **dead) == 1
    assert value(found, "v2c_gateway_messages_failed_total") == 0
