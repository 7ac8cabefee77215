"""The vehicle's telemetry uplink: buffer first, then send, delete on PUBACK.

`publish(sample)` numbers the sample (epoch, next sequence, derived message
id), writes it to the persistent buffer and returns: from then on the sample
survives anything short of buffer overflow. A pump thread sends buffered
samples through the `VehicleConnection` as the `DeliveryScheduler` decides
(alone, or as ZSTD batches), and deletes them once the broker acknowledged
them. Offline, samples simply stay in the buffer; when the connection
returns, the pump sends the buffer again from its oldest row.

Threads: the caller's (publish), the connection's network thread (callbacks,
which only queue events), and the pump, the only one that touches the
scheduler. The clocks are injected: `clock` (monotonic, for timeouts) and
`wall_clock` (sample timestamps, batch age, kept in the buffer across
restarts).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from v2c.contract.batch_codec import ZSTD
from v2c.contract.errors import InvalidInput
from v2c.contract.ids import new_message_id, telemetry_message_id
from v2c.v1 import common_pb2, telemetry_pb2
from v2c.vehicle_sim.buffer import DEFAULT_CAPACITY, OfflineBuffer, clock_epoch
from v2c.vehicle_sim.delivery import (
    DeliveryConfig,
    DeliveryCounters,
    DeliveryScheduler,
    Kind,
    Outgoing,
    SessionLimits,
)
from v2c.vehicle_sim.mqtt_client import (
    CONTENT_TYPE_PROTOBUF,
    CONTENT_TYPE_PROTOBUF_ZSTD,
    ConnectionConfig,
    PublishProperties,
    VehicleConnection,
    VehicleIdentity,
)

logger = logging.getLogger(__name__)

_Event = tuple[str, int, object, int]  # (what, generation, limits or reason, mid)


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    buffer_capacity: int = DEFAULT_CAPACITY
    durable: bool = True  # see buffer.py: False survives a process crash, not a power loss
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    tick_s: float = 0.05  # the pump's longest sleep between two looks at its timers


@dataclass(frozen=True, slots=True)
class PublishedSample:
    epoch: int
    sequence: int
    message_id: bytes
    dropped: int  # samples this one pushed out of a full buffer


@dataclass(frozen=True, slots=True)
class PublisherStats:
    buffered: int
    dropped_total: int  # persisted: since the buffer file was created
    delivered: int  # samples acknowledged by the broker, this process
    refused: int  # samples given up after a final refusal, this process
    connected: bool
    connects: int
    alias_only_publishes: int
    delivery: DeliveryCounters


class TelemetryPublisher:
    def __init__(
        self,
        identity: VehicleIdentity,
        connection: ConnectionConfig,
        buffer_path: Path,
        config: PublisherConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        random: Callable[[], float] | None = None,
        epoch_source: Callable[[], int] = clock_epoch,
    ) -> None:
        self.identity = identity
        self.config = config or PublisherConfig()
        self._clock = clock
        self._wall_clock = wall_clock
        self.buffer = OfflineBuffer(
            buffer_path,
            identity.vehicle_id,
            capacity=self.config.buffer_capacity,
            durable=self.config.durable,
            epoch_source=epoch_source,
        )
        self._topics = {kind: identity.telemetry_topic(kind.value) for kind in Kind}
        self._scheduler = DeliveryScheduler(
            self.config.delivery,
            sample_overhead_bytes=self._overhead(Kind.SAMPLE),
            batch_overhead_bytes=self._overhead(Kind.BATCH),
        )
        self._connection = VehicleConnection(identity, connection, self, random=random)
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drained = threading.Condition()
        self._flush_requested = False
        self._generation = 0
        self._delivered = 0
        self._refused = 0
        self._idle = False
        self._pump = threading.Thread(
            target=self._run, name=f"telemetry-{identity.vehicle_id}", daemon=True
        )

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> Self:
        self._pump.start()
        self._connection.start()
        return self

    def close(self) -> None:
        """Disconnect and stop; whatever is not acknowledged stays in the buffer file."""
        self._connection.close()
        self._stopping.set()
        self._wake.set()
        if self._pump.is_alive():
            self._pump.join(10)
        self.buffer.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the caller's side -------------------------------------------------
    def publish(self, sample: telemetry_pb2.Telemetry) -> PublishedSample:
        """Number the sample, store it in the buffer, and let the pump send it."""
        vehicle_id = self.identity.vehicle_id
        if sample.vehicle_id and sample.vehicle_id != vehicle_id:
            raise InvalidInput(f"sample of {sample.vehicle_id} given to {vehicle_id}")
        wall = self._wall_clock()

        def build(epoch: int, sequence: int) -> bytes:
            numbered = telemetry_pb2.Telemetry()
            numbered.CopyFrom(sample)
            numbered.vehicle_id = vehicle_id
            numbered.epoch = epoch
            numbered.sequence = sequence
            header = numbered.header
            header.message_id = telemetry_message_id(vehicle_id, epoch, sequence)
            if not header.timestamp:
                header.timestamp = int(wall * 1000)
            if not header.schema_version:
                header.schema_version = self.identity.schema_version
            return numbered.SerializeToString()

        appended = self.buffer.append(build, enqueued_at=wall)
        self._wake.set()
        stored = appended.sample
        return PublishedSample(
            stored.epoch,
            stored.sequence,
            telemetry_message_id(vehicle_id, stored.epoch, stored.sequence),
            appended.dropped,
        )

    def flush(self, timeout: float) -> bool:
        """Send what waits (partial batches included); True once all is acknowledged."""
        deadline = self._clock() + timeout
        with self._drained:
            self._flush_requested = True
            self._idle = False
            self._wake.set()
            try:
                while not self._idle:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        return False
                    self._drained.wait(min(remaining, 0.1))
                return True
            finally:
                self._flush_requested = False

    def wait_connected(self, timeout: float) -> bool:
        deadline = self._clock() + timeout
        while not self._connection.is_connected:
            if self._clock() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def stats(self) -> PublisherStats:
        return PublisherStats(
            buffered=len(self.buffer),
            dropped_total=self.buffer.dropped_total,
            delivered=self._delivered,
            refused=self._refused,
            connected=self._connection.is_connected,
            connects=self._connection.counters.connects,
            alias_only_publishes=self._connection.counters.alias_only_publishes,
            delivery=self._scheduler.counters,
        )

    # -- ConnectionListener (network thread: queue and return) --------------
    def connection_up(self, generation: int, limits: SessionLimits) -> None:
        self._events.put(("up", generation, limits, 0))
        self._wake.set()

    def connection_down(self, generation: int, reason_code: int | None) -> None:
        self._events.put(("down", generation, reason_code, 0))
        self._wake.set()

    def puback(self, generation: int, mid: int, reason_code: int) -> None:
        self._events.put(("puback", generation, reason_code, mid))
        self._wake.set()

    # -- the pump ----------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.config.tick_s)
            self._wake.clear()
            try:
                self._step()
            except Exception:  # the uplink must outlive any single bad step
                logger.exception("%s: telemetry pump step failed", self.identity.vehicle_id)

    def _step(self) -> None:
        scheduler = self._scheduler
        now, wall = self._clock(), self._wall_clock()
        finished = self._apply_events(now)
        sends, dead = scheduler.expired(now)
        if dead:
            logger.warning("%s: no PUBACK, link presumed dead", self.identity.vehicle_id)
            self._connection.drop(self._generation)
        if scheduler.heartbeat_due(now):
            sends.append(Outgoing(Kind.HEARTBEAT, self._heartbeat(wall)))
        plan = scheduler.plan(now, self.buffer.peek, wall_now=wall, flush=self._flush_requested)
        for row, code in plan.refused:
            logger.warning(
                "%s: sample %d refused (0x%02x)", self.identity.vehicle_id, row.sequence, code
            )
        self._refused += len(plan.refused)
        finished += [row.row_id for row, _ in plan.refused]
        self.buffer.delete(finished)
        for outgoing in sends + plan.outgoing:
            mid = self._connection.publish(
                self._generation,
                self._topics[outgoing.kind],
                outgoing.payload,
                self._props(outgoing),
            )
            if mid is None:  # the connection went away: its "down" event is on its way
                break
            scheduler.sent(outgoing, mid, now)
        idle = scheduler.idle and len(self.buffer) == 0
        with self._drained:
            self._idle = idle
            if idle:
                self._drained.notify_all()

    def _apply_events(self, now: float) -> list[int]:
        """Connection events and PUBACKs, in arrival order; returns rows to delete."""
        scheduler = self._scheduler
        finished: list[int] = []
        while True:
            try:
                what, generation, detail, mid = self._events.get_nowait()
            except queue.Empty:
                return finished
            if what == "up":
                assert isinstance(detail, SessionLimits)
                self._generation = generation
                scheduler.connected(detail, now)
            elif generation != self._generation:
                continue  # an event of a connection already replaced
            elif what == "down":
                scheduler.disconnected(detail if isinstance(detail, int) else None)
            else:
                assert isinstance(detail, int)
                settled = scheduler.acknowledged(mid, detail, now)
                self._delivered += len(settled.delivered)
                self._refused += len(settled.refused)
                finished += settled.finished_row_ids

    # -- wire details ------------------------------------------------------
    def _props(self, outgoing: Outgoing, message_count: int | None = None) -> PublishProperties:
        user = self.identity.user_properties
        if outgoing.kind is not Kind.BATCH:
            return PublishProperties(CONTENT_TYPE_PROTOBUF, user)
        batch = self.config.delivery.batch
        zstd = batch is not None and batch.compression == ZSTD
        count = len(outgoing.rows) if message_count is None else message_count
        return PublishProperties(
            CONTENT_TYPE_PROTOBUF_ZSTD if zstd else CONTENT_TYPE_PROTOBUF,
            (*user, ("compression", "ZSTD" if zstd else "NONE"), ("message_count", str(count))),
        )

    def _overhead(self, kind: Kind) -> int:
        """Bytes of a PUBLISH packet around its payload, from the real properties."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        publish = self._props(Outgoing(kind, b""), message_count=9999)
        props.ContentType = publish.content_type
        props.UserProperty = list(publish.user_properties)
        props.TopicAlias = 1
        fixed_header, packet_id, margin = 5, 2, 16
        topic = 2 + len(self._topics[kind].encode())
        properties = len(props.pack())  # type: ignore[no-untyped-call]
        return fixed_header + topic + packet_id + properties + margin

    def _heartbeat(self, wall: float) -> bytes:
        return common_pb2.Header(
            message_id=new_message_id(),
            timestamp=int(wall * 1000),
            schema_version=self.identity.schema_version,
        ).SerializeToString()
