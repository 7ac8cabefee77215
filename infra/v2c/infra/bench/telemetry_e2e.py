"""`v2c bench telemetry`, end to end: vehicles' samples published to a real
mosquitto, routed by the real gateway to the real telemetry handlers, stored
in DynamoDB on the bench's moto server; beside the raw broker pass-through
measured on the same broker in the same run.

Phases (each on a fresh moto, with its own sink process, see `phase`):
1. broker baseline: `publishers` paho processes → mosquitto → a bare gmqtt
   subscriber, payloads the size of a sample (`sinks.raw_sink_main`);
2. singles: `messages` individual samples on `.../telemetry/vehicle`, as fast
   as the publishers' windows allow; rate = samples / (last stored - start);
3. batches: the same number of samples in envelopes of `batch_size` on
   `.../telemetry/batch`;
4. paced: individual samples offered at `paced_rate` (default 1,000/s) for
   `paced_seconds`, then at `steady_rate` (default: 80 % of what phase 2
   stored per second, else 60 %, else 40 %: the first one sustained);
   batches carrying `paced_rate` samples per second, then at
   `steady_batch_rate` (default: the same shares of phase 3). A paced phase is "sustained"
   when it stored at least 95 % of the offered rate while offering it (from
   20 % of the phase to its end: after a warm-up, before the drain). Beyond
   the pipeline's ceiling the backlog, and with it the latency, grows for
   the whole phase: the steady phases give the latency below the ceiling.

Latency is per message: from the moment its publisher handed it to paho to
the moment DynamoDB acknowledged its item (a batch: its last item) to the
handler (`pipeline_sink.StoredClock`), both `time.monotonic_ns()`. The
broker acknowledges a publish once it has taken it, so a backlog waits in
the broker and the gateway, not in the publishers; "scheduled→stored"
counts from when the message was due, and would also show a publisher held
back by its window of unacknowledged publishes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from v2c.contract.batch_codec import encode_envelope
from v2c.contract.topics import Domain, Topic, TopicFilter
from v2c.infra.bench.common import (
    BenchError,
    JsonDict,
    bench_broker,
    fmt,
    per_second,
    process_cpu_s,
    ratio,
    summarize_ns,
)
from v2c.infra.bench.load import PublisherSpec, bench_topic
from v2c.infra.bench.phase import PhaseOutcome, run_phase
from v2c.infra.bench.pipeline_sink import PipelineSinkSpec, pipeline_sink_main
from v2c.infra.bench.sinks import SinkSpec, raw_sink_main
from v2c.infra.bench.telemetry_store import REGION, BenchStore, Workload, sample_keys

_VEHICLE_FILTER: Final = str(TopicFilter(domain=Domain.TELEMETRY, kind="vehicle"))
_PROBE_FILTER: Final = str(TopicFilter(domain=Domain.TELEMETRY, kind="heartbeat"))
_PROBE_TOPIC: Final = bench_topic(0, kind="heartbeat", prefix="READY")
_SUSTAINED_SHARE: Final = 0.95  # stored/s at least this share of the offered rate
_WARM_UP_SHARE: Final = 0.2  # of a paced phase, before its stored rate is counted
# The default steady rate: these shares of the measured burst rate, tried in
# turn until one is sustained (a shared machine's ceiling moves between phases).
_STEADY_SHARES: Final = (0.8, 0.6, 0.4)

Message = tuple[str, bytes]
Keys = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PipelineParams:
    publishers: int = 2
    broker_messages: int = 20_000
    paced_rate: float = 1000.0  # samples per second offered in the paced phases
    paced_seconds: float = 5.0
    steady_rate: float | None = None  # samples/s; None: a share of the measured singles rate
    steady_batch_rate: float | None = None  # samples/s; None: a share of the measured batch rate
    receive_maximum: int = 400
    window: int = 64  # unacknowledged publishes per publisher

    def __post_init__(self) -> None:
        if not 1 <= self.publishers <= 16 or self.broker_messages < self.publishers:
            raise ValueError("publishers must be 1-16, with a broker message each")
        if self.paced_rate <= 0 or self.paced_seconds <= 0:
            raise ValueError("the paced rate and duration must be positive")
        for steady in (self.steady_rate, self.steady_batch_rate):
            if steady is not None and steady <= 0:
                raise ValueError("a steady rate must be positive")


@dataclass(frozen=True)
class _Load:
    """What the publishers send, and which stored items each message becomes."""

    messages: list[list[Message]]  # per publisher
    keys: list[list[Keys]]  # per publisher, per message
    samples: int
    batched: bool

    @classmethod
    def of(cls, work: Workload, publishers: int, batch_size: int | None) -> _Load:
        """Each vehicle's messages on its own topic, in order, vehicles dealt
        round-robin to publishers and interleaved within each one, as a fleet."""
        per_vehicle: list[list[tuple[Message, Keys]]] = []
        for vehicle_id, samples in work.by_vehicle().items():
            items: list[tuple[Message, Keys]]
            if batch_size is None:
                topic = str(Topic(REGION, vehicle_id, Domain.TELEMETRY, "vehicle"))
                items = [((topic, s.SerializeToString()), (k,)) for s, k in _keyed(samples)]
            else:
                topic = str(Topic(REGION, vehicle_id, Domain.TELEMETRY, "batch"))
                chunks = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
                items = [((topic, encode_envelope(c)), tuple(sample_keys(c))) for c in chunks]
            per_vehicle.append(items)
        messages: list[list[Message]] = [[] for _ in range(publishers)]
        keys: list[list[Keys]] = [[] for _ in range(publishers)]
        for p in range(publishers):
            mine = per_vehicle[p::publishers]
            for position in range(max((len(v) for v in mine), default=0)):
                for vehicle in mine:
                    if position < len(vehicle):
                        messages[p].append(vehicle[position][0])
                        keys[p].append(vehicle[position][1])
        return cls(messages, keys, len(work.samples), batch_size is not None)

    @property
    def total(self) -> int:
        return sum(len(m) for m in self.messages)


def _keyed(samples: Sequence[Any]) -> list[tuple[Any, tuple[str, str]]]:
    return list(zip(samples, sample_keys(list(samples)), strict=True))


@dataclass
class _Phase:
    """One end-to-end phase's raw outcome, joined with the publishers' stamps."""

    load: _Load
    outcome: PhaseOutcome
    moto_cpu_s: float | None
    verified: int
    rates: list[float | None]  # per publisher, messages per second (None: as fast as allowed)

    @property
    def sink(self) -> JsonDict:
        return self.outcome.sink

    def stored_ns(self) -> dict[tuple[str, str], int]:
        return {(v, k): ns for v, k, ns in self.sink["stored_ns"]}

    @property
    def last_stored_s(self) -> float:
        """Seconds from the start signal to the last item acknowledged."""
        last_ns = max(int(ns) for _, _, ns in self.sink["stored_ns"])
        return last_ns / 1e9 - self.outcome.go_at

    def stored_per_s_between(self, start_s: float, end_s: float) -> float | None:
        """Samples acknowledged per second from `start_s` to `end_s` after the start."""
        low, high = (self.outcome.go_at + start_s) * 1e9, (self.outcome.go_at + end_s) * 1e9
        count = sum(1 for _, _, ns in self.sink["stored_ns"] if low <= ns < high)
        return per_second(count, end_s - start_s)

    def latencies(self) -> tuple[list[int], list[int]]:
        """Per message: publish→stored and scheduled→stored, in ns."""
        stored = self.stored_ns()
        from_publish: list[int] = []
        from_schedule: list[int] = []
        for p, keys in enumerate(self.load.keys):
            result = self.outcome.publishers[f"publisher-{p}"]
            start_ns = float(result["scheduled_from"]) * 1e9
            rate = self.rates[p]
            for index, (published, message_keys) in enumerate(
                zip(result["publish_ns"], keys, strict=True)
            ):
                done = max(stored[key] for key in message_keys)
                from_publish.append(done - published)
                if rate:
                    from_schedule.append(done - int(start_ns + index / rate * 1e9))
        return from_publish, from_schedule

    def cpu_us_per_sample(self) -> JsonDict:
        samples = self.load.samples

        def per(seconds: float | None) -> float | None:
            return None if seconds is None else round(seconds / samples * 1e6, 1)

        return {
            "publishers": per(self.outcome.publisher_cpu_s),
            "broker": per(self.outcome.broker_cpu_s),
            "gateway_and_handlers": per(float(self.sink["cpu_s"])),
            "moto": per(self.moto_cpu_s),
        }


class PipelineBench:
    """The end-to-end phases against one private mosquitto and the bench's moto."""

    def __init__(
        self, params: PipelineParams, store: BenchStore, *, batch_size: int, workers: int
    ) -> None:
        self.params = params
        self.store = store
        self.batch_size = batch_size
        self.workers = workers

    def run(self, messages: int) -> JsonDict:
        with bench_broker() as broker:
            self._host, self._port, self._broker_pid = broker.host, broker.port, broker.pid
            baseline = self._broker_baseline()
            singles = self._burst(messages, batch_size=None, seed=11)
            batches = self._burst(messages, batch_size=self.batch_size, seed=12)
            rate = self.params.paced_rate
            paced = {
                "singles_at_paced_rate": self._paced(rate, batch_size=None, seed=13),
                "singles_at_steady_rate": self._steady(
                    self.params.steady_rate, singles["msgs_per_s"], batch_size=None, seed=14
                ),
                "batches_at_paced_rate": self._paced(rate, batch_size=self.batch_size, seed=15),
                "batches_at_steady_rate": self._steady(
                    self.params.steady_batch_rate,
                    batches["msgs_per_s"],
                    batch_size=self.batch_size,
                    seed=16,
                ),
            }
        return {
            "broker_pass_through": baseline,
            "singles": singles,
            "batches": batches,
            "latency": paced,
        }

    # -- phases ---------------------------------------------------------------
    def _sink(self, share_group: str, expected: int) -> SinkSpec:
        return SinkSpec(
            host=self._host,
            port=self._port,
            topic_filter=_VEHICLE_FILTER,
            probe_topic=_PROBE_TOPIC,
            probe_filter=_PROBE_FILTER,
            expected=expected,
            receive_maximum=self.params.receive_maximum,
            workers=self.workers,
            share_group=share_group,
            timeout_s=max(300.0, expected / 10),
        )

    def _broker_baseline(self) -> JsonDict:
        """The raw pass-through with payloads the size of a sample."""
        size = max(12, round(_mean_sample_bytes()))
        total, publishers = self.params.broker_messages, self.params.publishers
        share, extra = divmod(total, publishers)
        specs = [
            PublisherSpec(
                name=f"publisher-{i}",
                host=self._host,
                port=self._port,
                topic=bench_topic(i),
                messages=share + (1 if i < extra else 0),
                payload_bytes=size,
                window=self.params.window,
            )
            for i in range(publishers)
        ]
        outcome = run_phase(
            raw_sink_main,
            self._sink("bench-raw", total),
            specs,
            broker_pid=self._broker_pid,
            timeout_s=max(120.0, total / 200),
        )
        seconds = float(outcome.sink["done_at"]) - outcome.go_at
        return {
            "messages": total,
            "payload_bytes": size,
            "seconds": round(seconds, 3),
            "msgs_per_s": per_second(total, seconds),
        }

    def _run(self, load: _Load, rates: list[float | None], share_group: str) -> _Phase:
        specs = [
            PublisherSpec(
                name=f"publisher-{p}",
                host=self._host,
                port=self._port,
                topic=messages[0][0] if messages else bench_topic(p),
                messages=len(messages),
                window=self.params.window,
                rate=rates[p],
                payloads=tuple(messages),
                record_times=True,
            )
            for p, messages in enumerate(load.messages)
        ]
        sink = PipelineSinkSpec(
            sink=self._sink(share_group, load.total),
            environment=tuple(sorted(self.store.environment().items())),
            expected_samples=load.samples,
        )
        moto_cpu = process_cpu_s(self.store.moto.pid)
        outcome = run_phase(
            pipeline_sink_main,
            sink,
            specs,
            broker_pid=self._broker_pid,
            timeout_s=sink.sink.timeout_s + 60,
        )
        moto_after = process_cpu_s(self.store.moto.pid)
        verified = self.store.stored_count()  # after the clock stopped
        if verified != load.samples:
            raise BenchError(f"DynamoDB holds {verified} items, {load.samples} were published")
        moto_s = None if moto_cpu is None or moto_after is None else moto_after - moto_cpu
        return _Phase(load, outcome, moto_s, verified, rates)

    def _workload(self, samples: int, seed: int) -> Workload:
        self.store.fresh()
        return Workload.make(samples, self.store.vehicles, self.batch_size, seed)

    def _burst(self, samples: int, *, batch_size: int | None, seed: int) -> JsonDict:
        load = _Load.of(self._workload(samples, seed), self.params.publishers, batch_size)
        kind = "singles" if batch_size is None else "batches"
        phase = self._run(load, [None] * len(load.messages), f"bench-pipeline-{kind}")
        seconds = phase.last_stored_s
        from_publish, _ = phase.latencies()
        result: JsonDict = {
            "messages": load.total,
            "stored": load.samples,
            "verified_in_dynamodb": phase.verified,
            "seconds": round(seconds, 3),
            "msgs_per_s": per_second(load.samples, seconds),
            "mqtt_messages_per_s": per_second(load.total, seconds),
            "publish_msgs_per_s": per_second(phase.outcome.sent, phase.outcome.publish_s),
            "cpu_us_per_sample": phase.cpu_us_per_sample(),
            "publish_to_stored_ms": summarize_ns(from_publish),
        }
        return result | _sink_facts(phase)

    def _steady(
        self, fixed: float | None, measured: float | None, *, batch_size: int | None, seed: int
    ) -> JsonDict:
        """The paced phase at `fixed`, or at the highest of the default shares of
        the `measured` burst rate that is sustained (each attempt listed)."""
        if fixed is not None:
            rates = [fixed]
        else:
            shares = {_steady_rate(measured, share) for share in _STEADY_SHARES}
            rates = sorted(shares, reverse=True)
        attempts: list[JsonDict] = []
        for attempt, rate in enumerate(rates):
            entry = self._paced(
                min(rate, self.params.paced_rate), batch_size=batch_size, seed=seed + 100 * attempt
            )
            attempts.append(
                {
                    key: entry[key]
                    for key in ("offered_per_s", "stored_per_s_while_offered", "sustained")
                }
            )
            if entry["sustained"]:
                break
        return entry | {"attempts": attempts}

    def _paced(self, rate: float, *, batch_size: int | None, seed: int) -> JsonDict:
        """`rate` samples per second for `paced_seconds`, split over the publishers."""
        seconds = self.params.paced_seconds
        per_message = batch_size or 1
        messages = max(self.params.publishers, math.ceil(rate * seconds / per_message))
        work = self._workload(messages * per_message, seed)
        load = _Load.of(work, self.params.publishers, batch_size)
        rates: list[float | None] = [
            rate / per_message * len(m) / load.total for m in load.messages
        ]
        kind = "singles" if batch_size is None else "batches"
        phase = self._run(load, rates, f"bench-pipeline-paced-{kind}-{seed}")
        from_publish, from_schedule = phase.latencies()
        # While the phase offers its rate, after a warm-up: the rate the pipeline
        # keeps up with, which neither the warm-up nor the last message's
        # latency (the drain after the schedule's end) distorts.
        steady_per_s = phase.stored_per_s_between(_WARM_UP_SHARE * seconds, seconds)
        return {
            "offered_per_s": rate,
            "offered_mqtt_messages_per_s": round(rate / per_message, 2),
            "messages": load.total,
            "stored": load.samples,
            "publish_per_s": per_second(phase.outcome.sent * per_message, phase.outcome.publish_s),
            "stored_per_s": per_second(load.samples, phase.last_stored_s),
            "stored_per_s_while_offered": steady_per_s,
            "sustained": steady_per_s is not None and steady_per_s >= _SUSTAINED_SHARE * rate,
            "publish_to_stored_ms": summarize_ns(from_publish),
            "scheduled_to_stored_ms": summarize_ns(from_schedule),
            "cpu_us_per_sample": phase.cpu_us_per_sample(),
        } | _sink_facts(phase)


def _sink_facts(phase: _Phase) -> JsonDict:
    sink = phase.sink
    batched = phase.load.batched
    rule, topic = ("telemetry_batch", "batch") if batched else ("telemetry", "individual")
    return {
        "handled": sink["handled"],
        "failed": sink["failed"],
        "dead_lettered": sink["dead_lettered"],
        "max_in_flight": sink["max_in_flight"],
        "gateway_handler_latency_ms": sink["handler_latency_ms"][rule],
        "handler_processing_ms": sink["processing_ms"][topic],
    }


def _steady_rate(measured: float | None, share: float) -> float:
    """`share` of a measured rate, rounded down to a tidy figure (at least 1/s)."""
    if not measured:
        raise BenchError("no rate measured to derive a steady rate from")
    target = measured * share
    step = 10.0 if target >= 20 else 1.0
    return max(1.0, math.floor(target / step) * step)


def _mean_sample_bytes() -> float:
    work = Workload.make(64, 4, 16, seed=99)
    return sum(len(s.SerializeToString()) for s in work.samples) / len(work.samples)


def pipeline_ratios(results: JsonDict) -> JsonDict:
    """Each end-to-end rate over the ceiling it runs against."""
    pipe = results["pipeline"]
    broker = pipe["broker_pass_through"]["msgs_per_s"]
    singles, batches = pipe["singles"], pipe["batches"]
    return {
        "pipeline_singles_vs_broker": ratio(singles["msgs_per_s"], broker),
        "pipeline_singles_vs_put_item": ratio(
            singles["msgs_per_s"], results["baseline_put_item"]["msgs_per_s"]
        ),
        "pipeline_singles_vs_handlers": ratio(
            singles["msgs_per_s"], results["handlers_singles"]["msgs_per_s"]
        ),
        "pipeline_batch_messages_vs_broker": ratio(batches["mqtt_messages_per_s"], broker),
        "pipeline_batches_vs_batch_write": ratio(
            batches["msgs_per_s"], results["baseline_batch_write"]["msgs_per_s"]
        ),
        "pipeline_batches_vs_handlers": ratio(
            batches["msgs_per_s"], results["handlers_batches"]["msgs_per_s"]
        ),
        "pipeline_batches_vs_singles": ratio(batches["msgs_per_s"], singles["msgs_per_s"]),
    }


def pipeline_rows(report: JsonDict) -> list[tuple[str, str]]:
    pipe, ratios = report["results"]["pipeline"], report["ratios"]
    rows = [
        ("broker pass-through (msg/s)", fmt(pipe["broker_pass_through"]["msgs_per_s"])),
        ("end to end, singles, stored/s", fmt(pipe["singles"]["msgs_per_s"])),
        ("end to end, batches, stored samples/s", fmt(pipe["batches"]["msgs_per_s"])),
    ]
    for name, entry in pipe["latency"].items():
        p, s = entry["publish_to_stored_ms"], entry["scheduled_to_stored_ms"]
        sustained = "sustained" if entry["sustained"] else "NOT sustained"
        rows.append(
            (
                f"{name.replace('_', ' ')} {fmt(entry['offered_per_s'])}/s",
                f"stored {fmt(entry['stored_per_s_while_offered'])}/s ({sustained}); "
                "publish→stored "
                f"p50 {fmt(p['p50'])} / p99 {fmt(p['p99'])} ms; "
                f"scheduled→stored p99 {fmt(s['p99'])} ms",
            )
        )
    for key in (
        "pipeline_singles_vs_broker",
        "pipeline_singles_vs_put_item",
        "pipeline_singles_vs_handlers",
        "pipeline_batches_vs_batch_write",
        "pipeline_batches_vs_handlers",
    ):
        rows.append((key.replace("_", " "), fmt(ratios[key], digits=3)))
    return rows
