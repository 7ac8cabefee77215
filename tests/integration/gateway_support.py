"""Run a gateway in a background event loop, and publish like a vehicle.

The tests stay synchronous (paho publishes, polling the record file) while the
gateway runs exactly as in production, on its own asyncio loop.
`gateway_process` runs one as `v2c gateway run` instead, in a process of its
own with the handlers' environment, for the tests that kill it or run two."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.contract.puback import PubackOutcome, classify_puback
from v2c.gateway.rules import Rule
from v2c.gateway.runtime import Gateway, GatewayConfig, run_gateway
from v2c.handlers.dlq.store import DeadLetterStore, InMemoryDeadLetterStore
from v2c.infra.local.wiring import handler_environment
from v2c.infra.net import LOOPBACK, free_port
from v2c.infra.settings import StackSettings

HERE = Path(__file__).parent
V2C = Path(sys.executable).parent / "v2c"


def memory_dlqs() -> dict[str, DeadLetterStore]:
    return {
        "telemetry": InMemoryDeadLetterStore("telemetry"),
        "ota": InMemoryDeadLetterStore("ota"),
    }


@contextmanager
def running_gateway(
    endpoint: MqttEndpoint,
    rules: Sequence[Rule],
    dead_letters: Mapping[str, DeadLetterStore] | None = None,
    **config: Any,
) -> Iterator[Gateway]:
    gateway = Gateway(
        GatewayConfig(endpoint=endpoint, **config), rules, dead_letters or memory_dlqs()
    )
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        task = asyncio.create_task(run_gateway(gateway, stop))
        connected = asyncio.create_task(gateway.wait_connected())
        await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
        connected.cancel()
        started.set()
        try:
            await task
        except BaseException as exc:
            failure.append(exc)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(15), "gateway did not connect"
    try:
        yield gateway
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        loop.close()
    assert not failure, failure


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


@contextmanager
def vehicle_client(
    endpoint: MqttEndpoint, client_id: str, *, clean_start: bool = True
) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    context = endpoint.ssl_context()
    if context is not None:
        client.tls_set_context(context)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    if not clean_start:
        props.SessionExpiryInterval = 3600
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    client.connect(endpoint.host, endpoint.port, clean_start=clean_start, properties=props)
    client.loop_start()
    try:
        assert connected.wait(10), f"{client_id} could not connect"
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def publish_all(client: mqtt.Client, messages: Sequence[tuple[str, bytes]], qos: int = 1) -> None:
    """Publish like a vehicle does: a bounded window released on PUBACK (FIELD_NOTES:
    never queue thousands of messages inside paho), and a message whose PUBACK
    says "no matching subscribers" sent again (see `v2c.contract.puback`).
    Survives a broker restart: paho resends unacknowledged messages on reconnect."""
    window = threading.Semaphore(50)
    lock = threading.Lock()
    outstanding: dict[int, tuple[str, bytes]] = {}
    early: dict[int, int] = {}  # PUBACKs that beat the bookkeeping of their publish
    retry: list[tuple[str, bytes]] = []
    previous = client.on_publish

    def settle(mid: int, message: tuple[str, bytes], code: int) -> None:
        if classify_puback(code) is PubackOutcome.RETRY_LATER:
            retry.append(message)

    def on_publish(c: Any, u: Any, mid: int, rc: Any, p: Any) -> None:
        with lock:
            message = outstanding.pop(mid, None)
            if message is None:
                early[mid] = int(rc.value)
            else:
                settle(mid, message, int(rc.value))
        window.release()

    client.on_publish = on_publish
    pending = list(messages)
    try:
        deadline = time.monotonic() + 120
        while pending:
            for topic, payload in pending:
                assert window.acquire(timeout=60), "no PUBACK for 60 s"
                # Never hold our lock inside paho: its callback thread takes it.
                info = client.publish(topic, payload, qos=qos)
                with lock:
                    if info.mid in early:
                        settle(info.mid, (topic, payload), early.pop(info.mid))
                    else:
                        outstanding[info.mid] = (topic, payload)
            wait_until(lambda: not outstanding, timeout=60, what="every PUBACK")
            with lock:
                pending, retry[:] = list(retry), []
            if pending:
                assert time.monotonic() < deadline, f"{len(pending)} never delivered"
                time.sleep(0.2)
    finally:
        client.on_publish = previous


# -- `v2c gateway run` as a process of its own ------------------------------------

PATIENT_RULES = "gateway_handlers:PATIENT_RULES"  # the production rules, slow moto allowed


@dataclass
class GatewayProcess:
    """A running `v2c gateway run`, read through its Prometheus endpoint."""

    process: subprocess.Popen[bytes]
    client_id: str
    metrics_port: int
    log: Path

    def scrape(self) -> str:
        """The exposition text; empty while the endpoint does not answer."""
        url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                text: str = answer.read().decode()
        except OSError:
            return ""
        return text

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(
            sample.value
            for family in text_string_to_metric_families(self.scrape())
            for sample in family.samples
            if sample.name == name and wanted <= set(sample.labels.items())
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_connected(self, timeout: float = 60.0) -> None:
        def connected() -> bool:
            assert self.alive(), f"gateway {self.client_id} exited:\n{self.log_tail()}"
            return self.metric("v2c_gateway_connected") == 1

        wait_until(connected, timeout=timeout, what=f"gateway {self.client_id} to connect")

    def kill(self) -> None:
        """SIGKILL: no drain, nothing acknowledged that was not handled."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@contextmanager
def gateway_process(
    broker: MqttEndpoint,
    settings: StackSettings,
    log: Path,
    *,
    client_id: str,
    rules: str = PATIENT_RULES,
    environment: Mapping[str, str] | None = None,
) -> Iterator[GatewayProcess]:
    """`v2c gateway run` on `broker` with the handlers' environment from
    `settings` (as the stack exports it; `environment` wins, e.g. an
    `AWS_ENDPOINT_URL` through a fault proxy), dead letters of its own in
    memory (the handlers write theirs to S3 and SQS), a metrics endpoint, and
    `client_id` (the same id again resumes the session). Connected when this
    yields; stopped with SIGTERM (a drain) on the way out."""
    env = {
        **os.environ,
        **handler_environment(settings),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        **(environment or {}),
    }
    port = free_port()
    command = [
        str(V2C), "gateway", "run", "--host", broker.host, "--port", str(broker.port),
        "--client-id", client_id, "--rules", rules, "--dlq", "memory",
        "--metrics-port", str(port),
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    gateway = GatewayProcess(process, client_id, port, log)
    try:
        gateway.wait_connected()
        yield gateway
    finally:
        if gateway.alive():
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def publish_from_clients(
    endpoint: MqttEndpoint,
    messages: Sequence[tuple[str, bytes]],
    *,
    clients: int = 3,
    prefix: str = "fleet",
    qos: int = 1,
) -> None:
    """Publish `messages` from `clients` connections at once, message n from
    client n mod `clients` (so neighbours leave together), each as `publish_all`."""
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            with vehicle_client(endpoint, f"{prefix}-{number}") as client:
                publish_all(client, messages[number::clients], qos=qos)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a publisher never finished"
