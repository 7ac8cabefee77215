"""Load generators: paho-mqtt publishers, each in its own process.

Vehicles speak paho, so the load does too; a paho publish costs ~45-60 µs of
CPU (FIELD_NOTES), which is why publishers run as separate processes: one
Python thread publishing would be the bottleneck instead of what is measured.
Each publisher keeps its own window of unacknowledged messages released on
PUBACK (never a backlog inside paho, FIELD_NOTES) and stamps every payload
with `time.monotonic_ns()`, which on Linux is one clock for all processes, so
a receiver in another process can compute publish→receive latency.

A publisher can also send fixed messages (`payloads`: real `Telemetry`
samples or batch envelopes, which cannot carry a stamp) and report the
moment it handed each one to paho instead (`record_times`), for a receiver
that joins on its own identity of a message.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from v2c.contract.errors import MqttReasonCode
from v2c.contract.topics import Domain, Topic

STAMP: Final = struct.Struct(">QI")  # publish time (monotonic ns), sequence number
MIN_PAYLOAD_BYTES: Final = STAMP.size
_ACK_TIMEOUT_S: Final = 60.0
BENCH_REGION: Final = "eu-west-1"


def bench_vin(index: int, prefix: str = "BENCH") -> str:
    """A valid vehicle id per publisher (the gateway parses and validates topics)."""
    return f"VIN-{prefix}{index:0{17 - len(prefix)}d}"


def bench_topic(index: int, kind: str = "vehicle", prefix: str = "BENCH") -> str:
    return str(Topic(BENCH_REGION, bench_vin(index, prefix), Domain.TELEMETRY, kind))


def stamp_payload(sequence: int, padding: bytes) -> bytes:
    return STAMP.pack(time.monotonic_ns(), sequence) + padding


def read_stamp(payload: bytes) -> int:
    """The publish time (monotonic ns) a payload from `stamp_payload` carries."""
    stamped_ns: int = STAMP.unpack_from(payload)[0]
    return stamped_ns


@dataclass(frozen=True)
class PublisherSpec:
    """One publisher process; `rate=None` publishes as fast as the window allows.

    With `payloads`, it sends those (topic, payload) pairs in order instead of
    `messages` stamped payloads on `topic`; `messages` must equal their count.
    """

    name: str
    host: str
    port: int
    topic: str
    messages: int
    qos: int = 1
    payload_bytes: int = 250
    window: int = 64
    rate: float | None = None
    payloads: tuple[tuple[str, bytes], ...] = ()
    record_times: bool = False

    def __post_init__(self) -> None:
        if self.payload_bytes < MIN_PAYLOAD_BYTES:
            raise ValueError(f"payload_bytes must be at least {MIN_PAYLOAD_BYTES}")
        if self.window < 1 or self.messages < 0:
            raise ValueError("window must be >= 1 and messages >= 0")
        if self.payloads and len(self.payloads) != self.messages:
            raise ValueError("messages must equal the number of fixed payloads")


class _Window:
    """Unacknowledged publishes, released by paho's network thread on PUBACK."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = threading.Semaphore(size)
        self.refused = 0
        self.no_subscribers = 0

    def on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        code = int(getattr(rc, "value", rc))
        if code == MqttReasonCode.NO_MATCHING_SUBSCRIBERS:
            self.no_subscribers += 1
        elif code >= 0x80:
            self.refused += 1
        self._free.release()

    def acquire(self) -> None:
        if not self._free.acquire(timeout=_ACK_TIMEOUT_S):
            raise TimeoutError(f"no PUBACK for {_ACK_TIMEOUT_S:.0f} s")

    def drain(self) -> None:
        """Wait until every publish was acknowledged."""
        for _ in range(self.size):
            self.acquire()


def _connect(spec: PublisherSpec, window: _Window) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-{spec.name}-{os.getpid()}",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(0)  # our window is the limit (FIELD_NOTES)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else connected.set()
    client.on_publish = window.on_publish
    client.connect(spec.host, spec.port, keepalive=60, clean_start=True)
    client.loop_start()
    if not connected.wait(15):
        raise TimeoutError(f"{spec.name} could not connect to {spec.host}:{spec.port}")
    return client


def _publish(spec: PublisherSpec, client: mqtt.Client, window: _Window) -> tuple[float, list[int]]:
    """Publish everything; (the schedule's start, `time.monotonic()`, and the
    publish times in monotonic ns when `record_times`)."""
    padding = os.urandom(spec.payload_bytes - MIN_PAYLOAD_BYTES)
    times: list[int] = []
    started = time.monotonic()
    interval = 1.0 / spec.rate if spec.rate else 0.0
    for sequence in range(spec.messages):
        if interval:
            delay = started + sequence * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        window.acquire()
        if spec.payloads:
            topic, payload = spec.payloads[sequence]
        else:
            topic, payload = spec.topic, stamp_payload(sequence, padding)
        if spec.record_times:
            times.append(time.monotonic_ns())
        client.publish(topic, payload, qos=spec.qos)
    window.drain()
    return started, times


def publisher_main(spec: PublisherSpec, go: Event, out: Queue[Any]) -> None:
    """Process entry: connect, report ready, wait for `go`, publish, report.

    Messages on `out`: ("ready", name, {}), then ("result", name, {...}) or
    ("error", name, {"traceback": ...}).
    """
    try:
        window = _Window(spec.window)
        client = _connect(spec, window)
        try:
            out.put(("ready", spec.name, {}))
            if not go.wait(120):
                raise TimeoutError("never told to start")
            cpu0, t0 = time.process_time(), time.monotonic()
            scheduled_from, publish_ns = _publish(spec, client, window)
            cpu1, t1 = time.process_time(), time.monotonic()
        finally:
            client.disconnect()
            client.loop_stop()
        out.put(
            (
                "result",
                spec.name,
                {
                    "sent": spec.messages,
                    "started_at": t0,
                    "finished_at": t1,
                    "cpu_s": cpu1 - cpu0,
                    "refused": window.refused,
                    "no_subscribers": window.no_subscribers,
                    "scheduled_from": scheduled_from,
                    "publish_ns": publish_ns,
                },
            )
        )
    except BaseException:
        out.put(("error", spec.name, {"traceback": traceback.format_exc()}))
        raise
