"""Run a gateway in a background event loop, and publish like a vehicle.

The tests stay synchronous (paho publishes, polling the record file) while the
gateway runs exactly as in production, on its own asyncio loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.contract.puback import PubackOutcome, classify_puback
from v2c.gateway.rules import Rule
from v2c.gateway.runtime import Gateway, GatewayConfig, run_gateway
from v2c.handlers.dlq.store import DeadLetterStore, InMemoryDeadLetterStore


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
