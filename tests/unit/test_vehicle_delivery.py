"""The publisher's decisions, driven by hand: a list as the buffer, numbers as the clock."""

from __future__ import annotations

import pytest

from v2c.contract.batch_codec import decode_envelope
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.buffer import BufferedSample
from v2c.vehicle_sim.delivery import (
    BatchPolicy,
    DeliveryConfig,
    DeliveryScheduler,
    Kind,
    Outgoing,
    SessionLimits,
)
from v2c.vehicle_sim.sampler import TelemetrySampler

VIN = "VIN-1HGBH41JXMN109186"
SUCCESS, NO_SUBSCRIBERS, NOT_AUTHORIZED, TOO_LARGE = 0x00, 0x10, 0x87, 0x95


class FakeBuffer:
    def __init__(self, count: int = 0, *, epoch: int = 1, enqueued_at: float = 0.0) -> None:
        self.rows: list[BufferedSample] = []
        self.sampler = TelemetrySampler(VIN, epoch, seed=3)
        self.add(count, epoch=epoch, enqueued_at=enqueued_at)

    def add(self, count: int, *, epoch: int = 1, enqueued_at: float = 0.0) -> None:
        for _ in range(count):
            sample = self.sampler.next_sample()
            sample.epoch = epoch
            sample.header.message_id = b""
            row_id = len(self.rows) + 1
            self.rows.append(
                BufferedSample(
                    row_id, epoch, sample.sequence, enqueued_at, sample.SerializeToString()
                )
            )

    def peek(self, after_row_id: int, limit: int) -> list[BufferedSample]:
        return [r for r in self.rows if r.row_id > after_row_id][:limit]


class Harness:
    """Sends what the scheduler plans, numbering packets like a client library."""

    def __init__(self, config: DeliveryConfig, buffer: FakeBuffer, **kwargs: int) -> None:
        self.scheduler = DeliveryScheduler(config, **kwargs)
        self.buffer = buffer
        self.next_mid = 0
        self.wire: dict[int, Outgoing] = {}

    def connect(self, now: float = 0.0, **limits: int) -> None:
        self.scheduler.connected(SessionLimits(**limits), now)

    def send(self, items: list[Outgoing], now: float) -> list[int]:
        mids = []
        for item in items:
            self.next_mid += 1
            self.wire[self.next_mid] = item
            self.scheduler.sent(item, self.next_mid, now)
            mids.append(self.next_mid)
        return mids

    def step(self, now: float, *, flush: bool = False) -> list[int]:
        plan = self.scheduler.plan(now, self.buffer.peek, wall_now=now, flush=flush)
        return self.send(plan.outgoing, now)

    def sequences(self, mid: int) -> list[int]:
        return [row.sequence for row in self.wire[mid].rows]


def singles(*, retry_later_s: float = 2.0, heartbeat_interval_s: float = 30.0) -> DeliveryConfig:
    return DeliveryConfig(
        window=5,
        puback_timeout_s=5,
        puback_attempts=3,
        retry_later_s=retry_later_s,
        heartbeat_interval_s=heartbeat_interval_s,
    )


def test_window_bounds_messages_waiting_for_a_puback() -> None:
    h = Harness(singles(), FakeBuffer(12))
    h.connect()
    first = h.step(0)
    assert [h.sequences(m)[0] for m in first] == [1, 2, 3, 4, 5]
    assert h.step(0) == []  # window full
    settled = h.scheduler.acknowledged(first[0], SUCCESS, 0.1)
    assert [r.sequence for r in settled.delivered] == [1]
    assert settled.finished_row_ids == [1]
    assert [h.sequences(m)[0] for m in h.step(0.1)] == [6]


def test_brokers_receive_maximum_shrinks_the_window() -> None:
    h = Harness(singles(), FakeBuffer(10))
    h.connect(receive_maximum=2)
    assert len(h.step(0)) == 2


def test_nothing_is_sent_while_offline_and_reconnect_resends_from_the_oldest_row() -> None:
    h = Harness(singles(), FakeBuffer(3))
    assert h.step(0) == []
    h.connect()
    assert len(h.step(0)) == 3
    h.scheduler.disconnected()  # PUBACKs lost with the connection
    h.connect(1.0)
    assert [h.sequences(m)[0] for m in h.step(1.0)] == [1, 2, 3]


def test_no_matching_subscribers_holds_the_sample_and_sends_it_again_later() -> None:
    h = Harness(singles(retry_later_s=2.0), FakeBuffer(1))
    h.connect()
    (mid,) = h.step(0)
    settled = h.scheduler.acknowledged(mid, NO_SUBSCRIBERS, 0.5)
    assert settled.finished_row_ids == []  # kept in the buffer
    assert h.scheduler.counters.held == 1
    assert h.step(1.0) == []
    (again,) = h.step(2.5)
    assert h.sequences(again) == [1]


def test_final_refusal_gives_the_sample_up_and_reports_its_reason() -> None:
    h = Harness(singles(), FakeBuffer(1))
    h.connect()
    (mid,) = h.step(0)
    settled = h.scheduler.acknowledged(mid, NOT_AUTHORIZED, 0.1)
    assert [(r.sequence, code) for r, code in settled.refused] == [(1, NOT_AUTHORIZED)]
    assert settled.finished_row_ids == [1]


def test_missing_puback_resends_then_declares_the_connection_dead() -> None:
    h = Harness(singles(), FakeBuffer(1))
    h.connect()
    (mid,) = h.step(0)
    assert h.scheduler.expired(4.9) == ([], False)
    resend, dead = h.scheduler.expired(5.0)
    assert not dead
    assert [(o.attempt, o.rows[0].sequence) for o in resend] == [(2, 1)]
    h.send(resend, 5.0)
    resend, dead = h.scheduler.expired(10.0)
    assert [o.attempt for o in resend] == [3]
    h.send(resend, 10.0)
    assert h.scheduler.expired(15.0) == ([], True)  # third send unanswered: split brain
    assert h.scheduler.counters.puback_timeouts == 3
    assert h.scheduler.counters.dead_connections == 1
    assert not h.scheduler.is_connected
    assert h.scheduler.acknowledged(mid, SUCCESS, 16).delivered == ()  # stale PUBACK


def test_heartbeat_goes_out_only_when_nothing_proved_the_link_alive() -> None:
    h = Harness(singles(heartbeat_interval_s=30), FakeBuffer(1))
    h.connect(0)
    (mid,) = h.step(0)
    assert not h.scheduler.heartbeat_due(29)
    h.scheduler.acknowledged(mid, SUCCESS, 20)  # a PUBACK is proof of life
    assert not h.scheduler.heartbeat_due(40)
    assert h.scheduler.heartbeat_due(50)
    (beat,) = h.send([Outgoing(Kind.HEARTBEAT, b"hb")], 50)
    assert not h.scheduler.heartbeat_due(90)  # one at a time
    h.scheduler.acknowledged(beat, NO_SUBSCRIBERS, 51)  # still proof of life
    assert h.scheduler.heartbeat_due(81)


def test_heartbeat_in_tells_an_idle_uplink_how_long_it_may_sleep() -> None:
    h = Harness(singles(heartbeat_interval_s=30), FakeBuffer(0))
    assert h.scheduler.heartbeat_in(0) is None  # offline: no heartbeat to wait for
    h.connect(0)
    assert h.scheduler.heartbeat_in(10) == 20
    assert h.scheduler.heartbeat_in(45) == 0
    h.send([Outgoing(Kind.HEARTBEAT, b"hb")], 45)
    assert h.scheduler.heartbeat_in(46) is None  # one is out


def test_a_message_with_no_packet_id_free_is_held_and_sent_again_later() -> None:
    # Given a client library with no packet id left (the session's pool is shared)
    h = Harness(singles(retry_later_s=2.0), FakeBuffer(2))
    h.connect()
    plan = h.scheduler.plan(0, h.buffer.peek, wall_now=0)
    # When neither message can be written
    for item in plan.outgoing:
        h.scheduler.unsent(item, 0)
    # Then both wait retry_later_s and go again, oldest first, without a reconnect
    assert h.step(1.0) == []
    assert [h.sequences(m)[0] for m in h.step(2.0)] == [1, 2]


def test_unanswered_heartbeat_declares_the_connection_dead_at_once() -> None:
    h = Harness(singles(heartbeat_interval_s=30), FakeBuffer(0))
    h.connect(0)
    h.send([Outgoing(Kind.HEARTBEAT, b"hb")], 30)
    assert h.scheduler.expired(35) == ([], True)


def test_sample_larger_than_the_brokers_packet_limit_is_refused_before_sending() -> None:
    h = Harness(singles(), FakeBuffer(1), sample_overhead_bytes=100)
    h.connect(maximum_packet_size=150)
    plan = h.scheduler.plan(0, h.buffer.peek, wall_now=0)
    assert plan.outgoing == []
    assert [(r.sequence, code) for r, code in plan.refused] == [(1, TOO_LARGE)]


# -- batches --------------------------------------------------------------


def batches(min_samples: int = 25, max_samples: int = 50, interval_s: float = 60) -> DeliveryConfig:
    return DeliveryConfig(window=10, batch=BatchPolicy(min_samples, max_samples, interval_s))


def envelope_sequences(item: Outgoing) -> list[int]:
    return [s.sequence for s in decode_envelope(item.payload).samples]


def test_batch_waits_for_min_samples_or_the_interval() -> None:
    buffer = FakeBuffer(24, enqueued_at=100.0)
    h = Harness(batches(), buffer)
    h.connect()
    assert h.step(110.0) == []  # 24 < 25, oldest waited 10 s
    buffer.add(1, enqueued_at=110.0)
    (mid,) = h.step(110.0)
    assert h.sequences(mid) == list(range(1, 26))
    assert envelope_sequences(h.wire[mid]) == list(range(1, 26))
    buffer.add(3, enqueued_at=120.0)
    assert h.step(150.0) == []
    (late,) = h.step(180.0)  # the oldest waited 60 s
    assert h.sequences(late) == [26, 27, 28]


def test_flush_sends_a_partial_batch_at_once() -> None:
    h = Harness(batches(), FakeBuffer(3))
    h.connect()
    assert h.step(0) == []
    (mid,) = h.step(0, flush=True)
    assert h.sequences(mid) == [1, 2, 3]


def test_a_backlog_goes_out_in_batches_of_at_most_max_samples() -> None:
    h = Harness(batches(max_samples=50), FakeBuffer(120))
    h.connect()
    mids = h.step(0, flush=True)
    assert [len(h.sequences(m)) for m in mids] == [50, 50, 20]
    assert [n for m in mids for n in h.sequences(m)] == list(range(1, 121))


def test_batch_refused_as_too_large_is_split_in_halves_and_sent_again() -> None:
    h = Harness(batches(min_samples=50), FakeBuffer(50))
    h.connect()
    (mid,) = h.step(0)
    assert h.scheduler.acknowledged(mid, TOO_LARGE, 0.1).finished_row_ids == []
    assert h.scheduler.counters.splits == 1
    halves = h.step(0.1)
    assert [h.sequences(m) for m in halves] == [list(range(1, 26)), list(range(26, 51))]
    assert h.wire[halves[0]].kind is Kind.BATCH


def test_batches_are_split_to_fit_the_maximum_packet_size_from_connack() -> None:
    h = Harness(batches(min_samples=50), FakeBuffer(50), batch_overhead_bytes=200)
    h.connect(maximum_packet_size=1200)  # a 50-sample envelope is ~1.4 kB
    mids = h.step(0)
    assert len(mids) >= 2
    assert all(len(h.wire[m].payload) + 200 <= 1200 for m in mids)
    assert [n for m in mids for n in envelope_sequences(h.wire[m])] == list(range(1, 51))


def test_disconnect_for_packet_too_large_teaches_the_limit_for_later_batches() -> None:
    h = Harness(batches(min_samples=50), FakeBuffer(50), batch_overhead_bytes=200)
    h.connect()
    (mid,) = h.step(0)
    size = len(h.wire[mid].payload) + 200
    h.scheduler.disconnected(TOO_LARGE)  # mosquitto's answer: DISCONNECT 0x95
    assert h.scheduler.max_packet_bytes == size - 1
    h.connect(1)
    mids = h.step(1)
    assert len(mids) == 2
    assert all(len(h.wire[m].payload) + 200 < size for m in mids)


def test_a_batch_never_mixes_two_epochs() -> None:
    buffer = FakeBuffer(3, epoch=5)
    buffer.add(2, epoch=6)
    h = Harness(batches(), buffer)
    h.connect()
    mids = h.step(0, flush=True)
    assert [decode_envelope(h.wire[m].payload).samples[0].epoch for m in mids] == [5, 6]
    assert [len(h.sequences(m)) for m in mids] == [3, 2]


def test_sample_the_columnar_batch_cannot_hold_goes_alone_for_the_cloud_to_judge() -> None:
    buffer = FakeBuffer(3)
    bad = telemetry_pb2.Telemetry.FromString(buffer.rows[1].payload)
    bad.speed_kmh = float("nan")  # cannot be quantized into a column
    row = buffer.rows[1]
    buffer.rows[1] = BufferedSample(row.row_id, row.epoch, row.sequence, 0, bad.SerializeToString())
    h = Harness(batches(), buffer)
    h.connect()
    mids = h.step(0, flush=True)
    kinds = [(h.wire[m].kind, h.sequences(m)) for m in mids]
    assert kinds == [(Kind.BATCH, [1]), (Kind.SAMPLE, [2]), (Kind.BATCH, [3])]


@pytest.mark.parametrize(
    "kwargs", [{"min_samples": 0}, {"min_samples": 30, "max_samples": 20}, {"interval_s": 0}]
)
def test_nonsensical_batch_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"need|must"):
        BatchPolicy(**kwargs)  # type: ignore[arg-type]
