"""Nothing acknowledged is lost: the gateway killed with SIGKILL halfway (also
while a queue-fed rule's batch is in its handler), or the broker restarted
halfway, through 1,000 QoS 1 messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway_handlers import HELD_MARKER, HOLD_ENV, RECORDING_RULES, read_records
from gateway_support import publish_all, running_gateway, vehicle_client, wait_until

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.infra.local.broker import MosquittoBroker, MosquittoConfig

VIN = "VIN-1HGBH41JXMN109186"
TOPIC = f"v2c/v1/us-east-1/{VIN}/telemetry/vehicle"
TOTAL = 1000
HERE = Path(__file__).parent
V2C = Path(sys.executable).parent / "v2c"


@contextmanager
def gateway_process(
    broker: MosquittoBroker,
    record_file: str,
    log: Path,
    rules: str = "RECORDING_RULES",
    hold: str = "",
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "V2C_TEST_RECORD_FILE": record_file,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        HOLD_ENV: hold,
    }
    command = [
        str(V2C), "gateway", "run", "--host", broker.host, "--port", str(broker.port),
        "--client-id", "gw-crash", "--rules", f"gateway_handlers:{rules}",
        "--dlq", "memory", "--receive-maximum", "20",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _payloads(path: str) -> set[str]:
    return {r["payload"] for r in read_records(path) if r["payload"].startswith("m")}


def _wait_subscribed(vehicle: object, record_file: str) -> None:
    """A shared subscription exists once a probe message comes through."""
    import itertools

    for n in itertools.count():
        vehicle.publish(TOPIC, f"probe{n}".encode(), qos=1).wait_for_publish(10)  # type: ignore[attr-defined]
        try:
            wait_until(
                lambda: any(r["payload"].startswith("probe") for r in read_records(record_file)),
                timeout=0.5,
            )
            return
        except AssertionError:
            assert n < 60, "gateway never subscribed"


def test_gateway_sigkilled_halfway_loses_nothing(tmp_path: Path) -> None:
    record_file = str(tmp_path / "records.jsonl")
    with MosquittoBroker(MosquittoConfig(data_dir=tmp_path / "broker")) as broker:
        endpoint = MqttEndpoint(broker.host, broker.port)
        with vehicle_client(endpoint, VIN) as vehicle:
            with gateway_process(broker, record_file, tmp_path / "gw1.log") as first:
                _wait_subscribed(vehicle, record_file)
                messages = [(TOPIC, f"m{i}".encode()) for i in range(TOTAL)]
                publish_all(vehicle, messages[: TOTAL // 2])
                first.send_signal(signal.SIGKILL)  # no drain, no goodbye
                first.wait(10)
            # The second half queues in the dead gateway's persistent session.
            publish_all(vehicle, messages[TOTAL // 2 :])
            with gateway_process(broker, record_file, tmp_path / "gw2.log"):
                wait_until(
                    lambda: len(_payloads(record_file)) == TOTAL, timeout=60, what="all messages"
                )
    assert _payloads(record_file) == {f"m{i}" for i in range(TOTAL)}


def test_gateway_sigkilled_while_a_batch_is_in_its_handler_loses_nothing(tmp_path: Path) -> None:
    record_file = str(tmp_path / "records.jsonl")
    held = f"m{TOTAL // 2}"
    with MosquittoBroker(MosquittoConfig(data_dir=tmp_path / "broker")) as broker:
        endpoint = MqttEndpoint(broker.host, broker.port)
        with vehicle_client(endpoint, VIN) as vehicle:
            first = gateway_process(
                broker, record_file, tmp_path / "gw1.log", "BATCH_RECORDING_RULES", hold=held
            )
            with first as process:
                _wait_subscribed(vehicle, record_file)
                messages = [(TOPIC, f"m{i}".encode()) for i in range(TOTAL)]
                publish_all(vehicle, messages[: TOTAL // 2 + 10])
                wait_until(
                    lambda: any(r["payload"] == HELD_MARKER for r in read_records(record_file)),
                    timeout=60,
                    what="the batch holding the marked message to be in the handler",
                )
                process.send_signal(signal.SIGKILL)  # mid-batch: nothing of it acknowledged
                process.wait(10)
            assert held not in _payloads(record_file)
            publish_all(vehicle, messages[TOTAL // 2 + 10 :])
            second = gateway_process(
                broker, record_file, tmp_path / "gw2.log", "BATCH_RECORDING_RULES"
            )
            with second:
                wait_until(
                    lambda: len(_payloads(record_file)) == TOTAL, timeout=60, what="all messages"
                )
    assert _payloads(record_file) == {f"m{i}" for i in range(TOTAL)}


def test_broker_restarted_halfway_loses_nothing(tmp_path: Path) -> None:
    record_file = str(tmp_path / "records.jsonl")
    os.environ["V2C_TEST_RECORD_FILE"] = record_file
    with MosquittoBroker(MosquittoConfig(data_dir=tmp_path / "broker")) as broker:
        endpoint = MqttEndpoint(broker.host, broker.port)
        with (
            running_gateway(endpoint, RECORDING_RULES, client_id="gw-restart"),
            vehicle_client(endpoint, VIN, clean_start=False) as vehicle,
        ):
            _wait_subscribed(vehicle, record_file)
            messages = [(TOPIC, f"m{i}".encode()) for i in range(TOTAL)]
            publish_all(vehicle, messages[: TOTAL // 2])
            broker.restart()  # persistence on: sessions and queued messages survive
            publish_all(vehicle, messages[TOTAL // 2 :])
            wait_until(lambda: len(_payloads(record_file)) == TOTAL, timeout=90, what="all")
    assert _payloads(record_file) == {f"m{i}" for i in range(TOTAL)}
