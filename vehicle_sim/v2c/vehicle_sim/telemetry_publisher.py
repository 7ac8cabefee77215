"""The vehicle's telemetry uplink: buffer first, then send, delete on PUBACK.

`publish(sample)` numbers the sample (epoch, next sequence, derived message
id), writes it to the persistent buffer and returns: from then on the sample
survives anything short of buffer overflow. A pump task sends buffered
samples through the vehicle's one MQTT session (`AsyncMqttSession.send`) as
the `DeliveryScheduler` decides (alone, or as ZSTD batches), and deletes
them once the broker acknowledged them. Offline, samples simply stay in the
buffer; when the connection returns, the pump sends the buffer again from
its oldest row.

Everything runs on the vehicle's event loop: the session's callbacks only
queue events and wake the pump, the only code that touches the scheduler.
The pump starts with the first use of the buffer, so a fleet vehicle that
never sends telemetry costs neither a buffer file nor a task. The clocks are
injected: `clock` (monotonic, for timeouts) and `wall_clock` (sample
timestamps, batch age, kept in the buffer across restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from v2c.contract.batch_codec import ZSTD
from v2c.contract.errors import InvalidInput
from v2c.contract.ids import new_message_id, telemetry_message_id
from v2c.contract.mqtt_properties import MqttProperties
from v2c.contract.puback import PubackOutcome, classify_puback
from v2c.contract.topics import Domain, Topic, validate_region, validate_vin
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
from v2c.vehicle_sim.metrics import SIM_METRICS
from v2c.vehicle_sim.mqtt_async import AsyncMqttSession
from v2c.vehicle_sim.sampler import SCHEMA_VERSION

logger = logging.getLogger(__name__)

CONTENT_TYPE_PROTOBUF: Final = "application/x-protobuf"
CONTENT_TYPE_PROTOBUF_ZSTD: Final = "application/x-protobuf+zstd"
TELEMETRY_KINDS: Final = tuple(kind.value for kind in Kind)

_Event = tuple[str, object, int]  # (what, limits or reason code, packet id)


@dataclass(frozen=True, slots=True)
class VehicleIdentity:
    """Who the vehicle is on the telemetry topics: topics and user properties."""

    vehicle_id: str
    region: str
    vehicle_model: str = "unknown"
    firmware_version: str = "0.0.0"
    schema_version: str = SCHEMA_VERSION

    def __post_init__(self) -> None:
        validate_vin(self.vehicle_id)
        validate_region(self.region)

    def telemetry_topic(self, kind: str) -> str:
        return str(Topic(self.region, self.vehicle_id, Domain.TELEMETRY, kind))

    @property
    def user_properties(self) -> tuple[tuple[str, str], ...]:
        return (
            ("schema_version", self.schema_version),
            ("vehicle_model", self.vehicle_model),
            ("firmware_version", self.firmware_version),
        )


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    buffer_capacity: int = DEFAULT_CAPACITY
    durable: bool = True  # see buffer.py: False survives a process crash, not a power loss
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    tick_s: float = 0.05  # the pump's longest sleep while something waits for a timer


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
        session: AsyncMqttSession,
        buffer_path: Path,
        config: PublisherConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        epoch_source: Callable[[], int] = clock_epoch,
    ) -> None:
        self.identity = identity
        self.config = config or PublisherConfig()
        self.buffer_path = Path(buffer_path)
        self._session = session
        self._clock = clock
        self._wall_clock = wall_clock
        self._epoch_source = epoch_source
        self._buffer: OfflineBuffer | None = None
        self._topics = {kind: identity.telemetry_topic(kind.value) for kind in Kind}
        self._scheduler = DeliveryScheduler(
            self.config.delivery,
            sample_overhead_bytes=self._overhead(Kind.SAMPLE),
            batch_overhead_bytes=self._overhead(Kind.BATCH),
        )
        self._events: deque[_Event] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._flush_requested = False
        self._pump: asyncio.Task[None] | None = None
        self._delivered = 0
        self._refused = 0
        session.add_listener(self)

    # -- lifecycle ---------------------------------------------------------
    @property
    def buffer(self) -> OfflineBuffer:
        """The persistent buffer, opened (and the pump started) on first use."""
        if self._buffer is None:
            self._buffer = OfflineBuffer(
                self.buffer_path,
                self.identity.vehicle_id,
                capacity=self.config.buffer_capacity,
                durable=self.config.durable,
                epoch_source=self._epoch_source,
            )
            self._pump = asyncio.get_running_loop().create_task(
                self._run(), name=f"telemetry-{self.identity.vehicle_id}"
            )
        return self._buffer

    def open(self) -> None:
        """Open the buffer now (what a previous run left is sent as soon as connected)."""
        _ = self.buffer

    async def close(self) -> None:
        """Stop the pump; whatever is not acknowledged stays in the buffer file."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None

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
        if appended.dropped:  # the oldest samples pushed out of a full buffer: given up
            SIM_METRICS.publish_failure.inc(appended.dropped)
        self._poke()
        stored = appended.sample
        return PublishedSample(
            stored.epoch,
            stored.sequence,
            telemetry_message_id(vehicle_id, stored.epoch, stored.sequence),
            appended.dropped,
        )

    async def flush(self, within_s: float) -> bool:
        """Send what waits (partial batches included); True once all is acknowledged."""
        self.open()
        self._flush_requested = True
        self._poke()
        try:
            await asyncio.wait_for(self._idle.wait(), within_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._flush_requested = False

    async def wait_connected(self, within_s: float) -> bool:
        try:
            await asyncio.wait_for(self._session.wait_connected(), within_s)
            return True
        except TimeoutError:
            return False

    def stats(self) -> PublisherStats:
        buffer = self.buffer
        return PublisherStats(
            buffered=len(buffer),
            dropped_total=buffer.dropped_total,
            delivered=self._delivered,
            refused=self._refused,
            connected=self._session.connected,
            connects=self._session.connects,
            alias_only_publishes=self._session.alias_only_publishes,
            delivery=self._scheduler.counters,
        )

    # -- SessionListener (on the loop: queue and return) --------------------
    def connection_up(self, limits: SessionLimits) -> None:
        self._queue(("up", limits, 0))

    def connection_down(self, reason_code: int | None) -> None:
        self._queue(("down", reason_code, 0))

    def puback(self, mid: int, reason_code: int) -> None:
        self._queue(("puback", reason_code, mid))

    def _queue(self, event: _Event) -> None:
        if self._pump is None:
            if event[0] == "up":  # remembered for when the pump starts
                self._events.clear()
                self._events.append(event)
            elif event[0] == "down":
                self._events.clear()
            return
        self._events.append(event)
        self._poke()

    def _poke(self) -> None:
        self._idle.clear()
        self._wake.set()

    # -- the pump ----------------------------------------------------------
    async def _run(self) -> None:
        while True:
            wait = self.config.tick_s
            if self._idle.is_set():
                # Nothing waits for a timer but the heartbeat: sleep until it is due
                # (a fleet of idle vehicles must not tick 20 times a second each).
                due = self._scheduler.heartbeat_in(self._clock())
                wait = self.config.delivery.heartbeat_interval_s if due is None else due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            try:
                self._step()
            except Exception:  # the uplink must outlive any single bad step
                logger.exception("%s: telemetry pump step failed", self.identity.vehicle_id)

    def _step(self) -> None:
        scheduler, buffer = self._scheduler, self.buffer
        now, wall = self._clock(), self._wall_clock()
        finished = self._apply_events(now)
        # A missing PUBACK is not a failure yet: the message goes again (now, or
        # from the buffer after a reconnect); it counts when acknowledged.
        sends, dead = scheduler.expired(now)
        if dead:
            logger.warning("%s: no PUBACK, link presumed dead", self.identity.vehicle_id)
            self._session.drop()
        if scheduler.heartbeat_due(now):
            sends.append(Outgoing(Kind.HEARTBEAT, self._heartbeat(wall)))
        plan = scheduler.plan(now, buffer.peek, wall_now=wall, flush=self._flush_requested)
        for row, code in plan.refused:
            logger.warning(
                "%s: sample %d refused (0x%02x)", self.identity.vehicle_id, row.sequence, code
            )
        self._refused += len(plan.refused)
        if plan.refused:  # too large to ever send: given up
            SIM_METRICS.publish_failure.inc(len(plan.refused))
        finished += [row.row_id for row, _ in plan.refused]
        buffer.delete(finished)
        outgoing = sends + plan.outgoing
        for number, item in enumerate(outgoing):
            mid = self._session.send(self._topics[item.kind], item.payload, self._props(item))
            if mid is None:
                if self._session.connected:  # no packet id free: hold them, try again
                    for later in outgoing[number:]:
                        scheduler.unsent(later, now)
                break  # else the connection went away: its "down" event is on its way
            scheduler.sent(item, mid, now)
        if scheduler.idle and len(buffer) == 0 and not self._events:
            self._idle.set()
        else:
            self._idle.clear()

    def _apply_events(self, now: float) -> list[int]:
        """Connection events and PUBACKs, in arrival order; returns rows to delete."""
        scheduler = self._scheduler
        finished: list[int] = []
        while self._events:
            what, detail, mid = self._events.popleft()
            if what == "up":
                assert isinstance(detail, SessionLimits)
                scheduler.connected(detail, now)
            elif what == "down":
                scheduler.disconnected(detail if isinstance(detail, int) else None)
            else:
                assert isinstance(detail, int)
                settled = scheduler.acknowledged(mid, detail, now)
                # Success when delivered; failure only when the message is given
                # up (a final refusal). "Retry later" codes and splits go again.
                if classify_puback(detail) is PubackOutcome.DELIVERED:
                    SIM_METRICS.publish_success.inc()
                elif settled.refused:
                    SIM_METRICS.publish_failure.inc()
                self._delivered += len(settled.delivered)
                self._refused += len(settled.refused)
                finished += settled.finished_row_ids
        return finished

    # -- wire details ------------------------------------------------------
    def _props(self, outgoing: Outgoing, message_count: int | None = None) -> MqttProperties:
        user = self.identity.user_properties
        if outgoing.kind is not Kind.BATCH:
            return MqttProperties(content_type=CONTENT_TYPE_PROTOBUF, user_properties=user)
        batch = self.config.delivery.batch
        zstd = batch is not None and batch.compression == ZSTD
        count = len(outgoing.rows) if message_count is None else message_count
        return MqttProperties(
            content_type=CONTENT_TYPE_PROTOBUF_ZSTD if zstd else CONTENT_TYPE_PROTOBUF,
            user_properties=(
                *user,
                ("compression", "ZSTD" if zstd else "NONE"),
                ("message_count", str(count)),
            ),
        )

    def _overhead(self, kind: Kind) -> int:
        """Bytes of a PUBLISH packet around its payload, from the real properties."""
        props = self._props(Outgoing(kind, b""), message_count=9999).to_paho()
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
