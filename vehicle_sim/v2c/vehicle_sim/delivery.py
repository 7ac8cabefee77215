"""Which buffered samples go out next, and what a PUBACK, or its absence, means.

The decisions of the telemetry publisher, without sockets, threads or
clocks: the caller passes `now` and a `fetch` function over the buffer, sends
what `plan` returns, and reports PUBACKs and disconnects back. Everything
here is therefore tested with a fake buffer and a number for the time.

* **Window.** At most `window` PUBLISHes wait for their PUBACK (and never more
  than the broker's Receive Maximum): our own flow control, so the buffer,
  not the MQTT client, holds what waits.
* **Order.** New rows are taken from the buffer in row order, behind a cursor
  that a new connection resets to the start: after an outage the whole buffer
  is sent again, oldest first. Rows come back only through a PUBACK.
* **PUBACK outcome** (`v2c.contract.puback`): delivered, the rows may be
  deleted; "no matching subscribers" or "busy", hold them and send again after
  `retry_later_s`; 0x95 packet too large, split the batch in halves and
  send again at once; any other refusal, give them up (counted, reported).
* **No PUBACK.** After `puback_timeout_s` the message is sent again on the
  same connection (a new packet; the cloud deduplicates by message id); after
  `puback_attempts` sends, or one silent heartbeat, the connection is declared
  dead: TCP may look fine while nothing gets through (the spec's split brain),
  and only a new connection tells. The rows stay in the buffer meanwhile.
* **Batches.** With a `BatchPolicy`, rows wait until `min_samples` are there or
  the oldest waited `interval_s` (or the caller flushes), then go out as
  envelopes of at most `max_samples`, each within the broker's Maximum Packet
  Size from CONNACK (checked here, before sending). If the broker still says
  too large (PUBACK 0x95 on AWS IoT; DISCONNECT 0x95 on mosquitto), the batch
  is split, and after a DISCONNECT the limit is learned for later batches.
* **Heartbeat.** When nothing proved the link alive for `heartbeat_interval_s`
  (no PUBACK of anything), a heartbeat goes out; the spec's action item for
  the split brain, far sooner than a 300 s keep-alive would notice.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from v2c.contract.batch_codec import DEFAULT_CONFIG, ZSTD, CodecConfig, Compression, split_to_fit
from v2c.contract.errors import InvalidInput, MqttReasonCode
from v2c.contract.puback import PubackOutcome, classify_puback
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.buffer import BufferedSample

Fetch = Callable[[int, int], list[BufferedSample]]  # (after_row_id, limit) -> rows in order


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    min_samples: int = 25
    max_samples: int = 50
    interval_s: float = 60.0
    compression: Compression = ZSTD
    dictionary_id: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_samples <= self.max_samples:
            raise ValueError("need 1 <= min_samples <= max_samples")
        if self.interval_s <= 0:
            raise ValueError("interval_s must be positive")


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    window: int = 20
    puback_timeout_s: float = 5.0
    puback_attempts: int = 3  # sends of one message on one connection
    retry_later_s: float = 2.0
    heartbeat_interval_s: float = 30.0
    batch: BatchPolicy | None = None  # None: every sample alone on .../telemetry/vehicle
    codec: CodecConfig = DEFAULT_CONFIG  # ZSTD level, dictionaries; packet limit per connection

    def __post_init__(self) -> None:
        if self.window < 1 or self.puback_attempts < 1:
            raise ValueError("window and puback_attempts must be at least 1")
        if self.puback_timeout_s <= 0 or self.heartbeat_interval_s <= 0:
            raise ValueError("timeouts must be positive")


class Kind(StrEnum):
    """What a PUBLISH carries; the value is the topic's kind."""

    SAMPLE = "vehicle"
    BATCH = "batch"
    HEARTBEAT = "heartbeat"


@dataclass(frozen=True, slots=True)
class Outgoing:
    kind: Kind
    payload: bytes
    rows: tuple[BufferedSample, ...] = ()
    attempt: int = 1  # 1 for the first send on this connection


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What the broker's CONNACK allows (MQTT 5 defaults when it says nothing)."""

    receive_maximum: int = 65_535
    maximum_packet_size: int | None = None
    topic_alias_maximum: int = 0


@dataclass(frozen=True, slots=True)
class Settlement:
    delivered: tuple[BufferedSample, ...] = ()
    refused: tuple[tuple[BufferedSample, int], ...] = ()  # (row, reason code): given up

    @property
    def finished_row_ids(self) -> list[int]:
        """Rows to delete from the buffer: delivered, or refused for good."""
        return [r.row_id for r in self.delivered] + [r.row_id for r, _ in self.refused]


@dataclass(frozen=True, slots=True)
class Plan:
    outgoing: list[Outgoing] = field(default_factory=list)
    refused: tuple[tuple[BufferedSample, int], ...] = ()  # too large to ever send


@dataclass(slots=True)
class _Flight:
    outgoing: Outgoing
    sent_at: float


@dataclass(order=True, slots=True)
class _Hold:
    first_row_id: int
    not_before: float = field(compare=False)
    rows: tuple[BufferedSample, ...] = field(compare=False)
    max_count: int = field(compare=False)


@dataclass(slots=True)
class DeliveryCounters:
    puback_timeouts: int = 0
    resends: int = 0
    held: int = 0  # messages held after "no matching subscribers" / busy
    splits: int = 0  # batches split after a "packet too large"
    dead_connections: int = 0  # connections given up for lack of PUBACKs


class DeliveryScheduler:
    def __init__(
        self,
        config: DeliveryConfig,
        *,
        sample_overhead_bytes: int = 256,
        batch_overhead_bytes: int = 512,
    ) -> None:
        """`*_overhead_bytes`: the PUBLISH packet around a payload (header, topic, properties)."""
        self.config = config
        self.counters = DeliveryCounters()
        self._sample_overhead = sample_overhead_bytes
        self._batch_overhead = batch_overhead_bytes
        self._connected = False
        self._limits = SessionLimits()
        self._learned_max_packet: int | None = None
        self._cursor = 0
        self._in_flight: dict[int, _Flight] = {}
        self._holds: list[_Hold] = []
        self._alive_at = 0.0
        self._heartbeat_mid: int | None = None

    # -- connection events -------------------------------------------------
    def connected(self, limits: SessionLimits, now: float) -> None:
        self._reset()
        self._connected = True
        self._limits = limits
        self._alive_at = now

    def disconnected(self, reason_code: int | None = None) -> None:
        if reason_code == MqttReasonCode.PACKET_TOO_LARGE:
            sizes = [
                len(f.outgoing.payload) + self._batch_overhead
                for f in self._in_flight.values()
                if f.outgoing.kind is Kind.BATCH
            ]
            if sizes:  # the broker's real limit is below the largest packet we had out
                self._learned_max_packet = max(sizes) - 1
        self._reset()

    def _reset(self) -> None:
        self._connected = False
        self._cursor = 0
        self._in_flight.clear()
        self._holds.clear()
        self._heartbeat_mid = None

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def idle(self) -> bool:
        """Nothing waits for a PUBACK and nothing is held for a later send."""
        return not self._in_flight and not self._holds

    @property
    def max_packet_bytes(self) -> int:
        limits = [self.config.codec.max_packet_bytes]
        if self._limits.maximum_packet_size:
            limits.append(self._limits.maximum_packet_size)
        if self._learned_max_packet is not None:
            limits.append(self._learned_max_packet)
        return min(limits)

    def _window(self) -> int:
        return max(1, min(self.config.window, self._limits.receive_maximum))

    # -- what to send ------------------------------------------------------
    def plan(self, now: float, fetch: Fetch, *, wall_now: float, flush: bool = False) -> Plan:
        """What to publish now. `wall_now` is on the clock of `BufferedSample.enqueued_at`."""
        if not self._connected:
            return Plan()
        out: list[Outgoing] = []
        refused: list[tuple[BufferedSample, int]] = []
        room = self._window() - len(self._in_flight)
        for hold in list(self._holds):  # held rows are older than any unsent row
            if room <= 0:
                break
            if hold.not_before <= now:
                self._holds.remove(hold)
                items = self._encode(hold.rows, hold.max_count, wall_now, refused)
                out += items
                room -= len(items)
        batch = self.config.batch
        while room > 0:
            limit = room if batch is None else batch.max_samples
            rows = fetch(self._cursor, limit)
            if not rows:
                break
            if batch is not None and not (
                flush
                or len(rows) >= batch.min_samples
                or wall_now - rows[0].enqueued_at >= batch.interval_s
            ):
                break
            self._cursor = rows[-1].row_id
            items = self._encode(rows, limit, wall_now, refused)
            out += items
            room -= len(items)
        return Plan(out, tuple(refused))

    def _encode(
        self,
        rows: Sequence[BufferedSample],
        max_count: int,
        wall_now: float,
        refused: list[tuple[BufferedSample, int]],
    ) -> list[Outgoing]:
        max_packet = self.max_packet_bytes
        batch = self.config.batch
        if batch is None:
            return [item for row in rows for item in self._encode_single(row, max_packet, refused)]
        codec = replace(
            self.config.codec,
            max_packet_bytes=max_packet,
            mqtt_overhead_bytes=min(self._batch_overhead, max_packet - 1),
        )
        out = []
        for run in _epoch_runs(rows):  # a batch carries one epoch
            for start in range(0, len(run), max_count):
                chunk = run[start : start + max_count]
                out += self._envelopes(chunk, codec, batch, wall_now, refused)
        return out

    def _envelopes(
        self,
        rows: Sequence[BufferedSample],
        codec: CodecConfig,
        batch: BatchPolicy,
        wall_now: float,
        refused: list[tuple[BufferedSample, int]],
    ) -> list[Outgoing]:
        samples = [telemetry_pb2.Telemetry.FromString(row.payload) for row in rows]
        try:
            envelopes = split_to_fit(
                samples,
                codec,
                compression=batch.compression,
                dictionary_id=batch.dictionary_id,
                created_ms=int(wall_now * 1000),
            )
        except InvalidInput:
            # A sample no envelope can hold (too large, or a value the columnar
            # layout cannot quantize): find it by halving, send it alone on the
            # single-sample topic, where the cloud validator judges it (and
            # dead-letters it with a reason) instead of the vehicle.
            if len(rows) == 1:
                return self._encode_single(rows[0], codec.max_packet_bytes, refused)
            middle = len(rows) // 2
            return [
                item
                for half in (rows[:middle], rows[middle:])
                for item in self._envelopes(half, codec, batch, wall_now, refused)
            ]
        # split_to_fit halves in order: envelope i holds the next message_count rows.
        out, start = [], 0
        for envelope in envelopes:
            count = telemetry_pb2.TelemetryBatchEnvelope.FromString(envelope).message_count
            out.append(Outgoing(Kind.BATCH, envelope, tuple(rows[start : start + count])))
            start += count
        return out

    def _encode_single(
        self, row: BufferedSample, max_packet: int, refused: list[tuple[BufferedSample, int]]
    ) -> list[Outgoing]:
        if len(row.payload) + self._sample_overhead > max_packet:
            refused.append((row, MqttReasonCode.PACKET_TOO_LARGE))
            return []
        return [Outgoing(Kind.SAMPLE, row.payload, (row,))]

    def heartbeat_in(self, now: float) -> float | None:
        """Seconds until a heartbeat is due (0: now); None while offline or one is out."""
        if not self._connected or self._heartbeat_mid is not None:
            return None
        return max(0.0, self._alive_at + self.config.heartbeat_interval_s - now)

    def heartbeat_due(self, now: float) -> bool:
        return (
            self._connected
            and self._heartbeat_mid is None
            and now - self._alive_at >= self.config.heartbeat_interval_s
        )

    def sent(self, outgoing: Outgoing, mid: int, now: float) -> None:
        self._in_flight[mid] = _Flight(outgoing, now)
        if outgoing.kind is Kind.HEARTBEAT:
            self._heartbeat_mid = mid
        if outgoing.attempt > 1:
            self.counters.resends += 1

    def unsent(self, outgoing: Outgoing, now: float) -> None:
        """`outgoing` could not be written (no packet id free): its rows wait
        `retry_later_s` and go again; a heartbeat is simply due again."""
        if outgoing.rows:
            self._hold(outgoing.rows, now + self.config.retry_later_s, len(outgoing.rows))

    # -- what came back ----------------------------------------------------
    def acknowledged(self, mid: int, reason_code: int, now: float) -> Settlement:
        self._alive_at = now  # any PUBACK proves the link carries traffic both ways
        flight = self._in_flight.pop(mid, None)
        if flight is None:  # a late PUBACK for a message already resent
            return Settlement()
        outgoing = flight.outgoing
        if outgoing.kind is Kind.HEARTBEAT:
            self._heartbeat_mid = None
            return Settlement()
        outcome = classify_puback(reason_code)
        if outcome is PubackOutcome.DELIVERED:
            return Settlement(delivered=outgoing.rows)
        if outcome is PubackOutcome.RETRY_LATER:
            self.counters.held += 1
            self._hold(outgoing.rows, now + self.config.retry_later_s, len(outgoing.rows))
            return Settlement()
        if reason_code == MqttReasonCode.PACKET_TOO_LARGE and len(outgoing.rows) > 1:
            self.counters.splits += 1
            self._hold(outgoing.rows, now, max(1, len(outgoing.rows) // 2))
            return Settlement()
        return Settlement(refused=tuple((row, reason_code) for row in outgoing.rows))

    def _hold(self, rows: tuple[BufferedSample, ...], not_before: float, max_count: int) -> None:
        bisect.insort(self._holds, _Hold(rows[0].row_id, not_before, rows, max_count))

    def expired(self, now: float) -> tuple[list[Outgoing], bool]:
        """(messages to send again, whether the connection is to be declared dead)."""
        resend: list[Outgoing] = []
        dead = False
        for mid, flight in list(self._in_flight.items()):
            if now - flight.sent_at < self.config.puback_timeout_s:
                continue
            del self._in_flight[mid]
            self.counters.puback_timeouts += 1
            outgoing = flight.outgoing
            if outgoing.kind is Kind.HEARTBEAT or outgoing.attempt >= self.config.puback_attempts:
                dead = True
            else:
                resend.append(replace(outgoing, attempt=outgoing.attempt + 1))
        if dead:
            self.counters.dead_connections += 1
            self._reset()
            return [], True
        return resend, False


def _epoch_runs(rows: Sequence[BufferedSample]) -> list[Sequence[BufferedSample]]:
    """Consecutive rows of one epoch (a lost counter leaves two epochs in the buffer)."""
    runs: list[Sequence[BufferedSample]] = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i].epoch != rows[start].epoch:
            runs.append(rows[start:i])
            start = i
    return runs
