"""The fairness phase of `v2c bench gateway`: how long an innocent vehicle's
messages take from publish to handled while another vehicle floods the
gateway, beside the same figure without the flood, in the same run.

Three runs against the same private broker, each with a fresh gateway process:

* `alone`: the innocent vehicle publishes at a paced rate (default 100 msg/s
  for 5 s), nobody else;
* `valid_flood`: the same, while a second vehicle publishes 5,000 valid QoS 1
  messages as fast as its window allows, from the same start signal;
* `sample_bomb_flood`: the same, while the second vehicle publishes 5,000
  copies of the issue's sample bomb (a ~300-byte batch envelope declaring
  65,000 samples) to the production `telemetry_batch` handler.

The gateway is the real `Gateway` (Receive Maximum, workers, per-vehicle cap
as given). Handlers: singles (both vehicles' stamped messages) go to a
handler that waits `handler_ms` (a store round trip; a sleep, as I/O
releases the GIL) and records publish→handled for the innocent vehicle; the
bombs go to the production Lambda handler `telemetry_batch`, over a
`TelemetryService` with in-memory stores whose dead-letter store also waits
`handler_ms` per record (an S3 PutObject). For each innocent message the
sink notes how many flood messages were still unsettled when it was handled,
so the report separates the innocent messages handled while the flood had a
backlog (the figure that matters) from those after it drained.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.queues import Queue
from typing import TYPE_CHECKING, Any, Final

import zstandard

from v2c.contract.batch_columns import PER_SAMPLE_COLUMNS
from v2c.contract.topics import Domain, TopicFilter
from v2c.infra.bench.common import JsonDict, ratio, summarize_ns
from v2c.infra.bench.load import PublisherSpec, bench_topic, bench_vin, read_stamp
from v2c.infra.bench.phase import PhaseOutcome, run_phase
from v2c.infra.bench.sinks import (
    NOOP_HANDLER,
    PROBE_RULE,
    SinkSpec,
    counter_total,
    run_sink,
    serving_gateway,
    wait_for,
)
from v2c.v1 import telemetry_pb2

if TYPE_CHECKING:
    from v2c.contract.dead_letter import DeadLetterRecord

# Vehicle ids are VINs (no I, O or Q): the handlers validate the topic's vehicle.
INNOCENT_PREFIX: Final = "CALM"
FLOOD_PREFIX: Final = "FLD"
SINGLES_RULE: Final = "singles"
BATCH_RULE: Final = "telemetry_batch"
_SINGLES_FILTER: Final = str(TopicFilter(domain=Domain.TELEMETRY, kind="vehicle"))
_BATCH_FILTER: Final = str(TopicFilter(domain=Domain.TELEMETRY, kind="batch"))
_PROBE_FILTER: Final = str(TopicFilter(domain=Domain.TELEMETRY, kind="heartbeat"))
WORK_HANDLER: Final = f"{__name__}:work_handler"
BATCH_HANDLER: Final = "v2c.handlers.telemetry_batch:lambda_handler"
RUNS: Final = ("alone", "valid_flood", "sample_bomb_flood")


def sample_bomb(vehicle_id: str, declared: int = 65_000, batch_id: bytes | None = None) -> bytes:
    """The issue's attack: a batch envelope of a few hundred bytes that declares
    `declared` samples (every column all zeros, which ZSTD squeezes to nothing),
    with a valid checksum and a size under the old 1 MiB cap."""
    raw_size, payload = _bomb_payload(vehicle_id, declared)
    envelope = telemetry_pb2.TelemetryBatchEnvelope(
        batch_id=batch_id or os.urandom(16),
        vehicle_id=vehicle_id,
        message_count=declared,
        compression=telemetry_pb2.COMPRESSION_ZSTD,
        uncompressed_size=raw_size,
        payload_sha256=hashlib.sha256(payload).digest(),
        payload=payload,
    )
    return envelope.SerializeToString()


@functools.lru_cache(maxsize=8)
def _bomb_payload(vehicle_id: str, declared: int) -> tuple[int, bytes]:
    """(uncompressed size, ZSTD frame): compressing a megabyte at level 19 takes a
    while, and every bomb of a flood can carry the same frame."""
    batch = telemetry_pb2.TelemetryBatch(
        vehicle_id=vehicle_id, epoch=1, schema_version="1.0", sample_count=declared
    )
    for column in PER_SAMPLE_COLUMNS:
        getattr(batch, column).extend([0] * declared)
    raw = batch.SerializeToString()
    return len(raw), zstandard.ZstdCompressor(level=19, write_checksum=True).compress(raw)


@dataclass(frozen=True)
class FairnessParams:
    flood: int = 5000
    innocent_rate: float = 100.0
    innocent_seconds: float = 5.0
    handler_ms: float = 2.0

    def __post_init__(self) -> None:
        if self.flood < 1 or self.innocent_rate <= 0 or self.innocent_seconds <= 0:
            raise ValueError("the flood, the innocent rate and its duration must be positive")
        if self.handler_ms < 0:
            raise ValueError("handler_ms cannot be negative")

    @property
    def innocent_messages(self) -> int:
        return max(1, round(self.innocent_rate * self.innocent_seconds))


@dataclass(frozen=True)
class FairnessSinkSpec:
    sink: SinkSpec  # broker, probe, window, workers, per-vehicle cap
    innocent_vin: str
    flood_vin: str
    innocent_expected: int
    flood_expected: int  # 0: no flood in this run
    handler_s: float


# -- the gateway process ----------------------------------------------------
class _Tally:
    """Filled by the handlers on the gateway's worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.innocent_vin = ""
        self.flood_expected = 0
        self.handler_s = 0.0
        self.flood_settled = 0
        self.innocent_ns: list[int] = []
        self.backlog: list[int] = []  # flood messages unsettled when each innocent one was done

    def flood_done(self) -> None:
        with self.lock:
            self.flood_settled += 1


_TALLY = _Tally()


def work_handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    """A store round trip (a sleep: I/O releases the GIL), then the tally."""
    tally = _TALLY
    if tally.handler_s:
        time.sleep(tally.handler_s)
    if event["vehicle_id"] == tally.innocent_vin:
        now = time.monotonic_ns()
        stamp = read_stamp(base64.b64decode(event["payload"][:16]))
        with tally.lock:
            tally.innocent_ns.append(now - stamp)
            tally.backlog.append(tally.flood_expected - tally.flood_settled)
    else:
        tally.flood_done()
    return {"status": "ok"}


def _batch_handler(event: dict[str, Any], context: Any) -> Any:
    """The production Lambda handler, then the tally (whatever it returned or raised)."""
    from v2c.handlers.telemetry_batch import lambda_handler

    try:
        return lambda_handler(event, context)
    finally:
        _TALLY.flood_done()


class _SlowDeadLetters:
    """An in-memory dead-letter store that takes as long as an S3 PutObject would."""

    def __init__(self, delay_s: float) -> None:
        from v2c.handlers.dlq.store import InMemoryDeadLetterStore

        self._store = InMemoryDeadLetterStore("telemetry")
        self._delay_s = delay_s
        self.name = self._store.name

    def put(self, record: DeadLetterRecord) -> None:
        if self._delay_s:
            time.sleep(self._delay_s)
        self._store.put(record)

    def depth(self) -> int:
        return self._store.depth()

    def __getattr__(self, name: str) -> Any:  # list, get, delete, replace
        return getattr(self._store, name)


async def _fairness_sink(spec: FairnessSinkSpec, out: Queue[Any]) -> JsonDict:
    from prometheus_client import CollectorRegistry

    from v2c.gateway.metrics import GatewayMetrics
    from v2c.gateway.rules import Rule
    from v2c.handlers import telemetry_batch
    from v2c.handlers.telemetry.config import set_default_service
    from v2c.handlers.telemetry.metrics import TelemetryMetrics
    from v2c.handlers.telemetry.service import TelemetryService
    from v2c.handlers.telemetry.store import InMemoryRecordStore
    from v2c.handlers.telemetry.timeseries import InMemoryTimeSeriesSink

    telemetry_batch.logger.setLevel(logging.ERROR)  # one warning per bomb otherwise
    sink = spec.sink
    tally = _TALLY
    tally.innocent_vin = spec.innocent_vin
    tally.flood_expected = spec.flood_expected
    tally.handler_s = spec.handler_s
    dead_letters = _SlowDeadLetters(spec.handler_s)
    set_default_service(
        TelemetryService(
            records=InMemoryRecordStore(),
            dead_letters=dead_letters,
            timeseries=InMemoryTimeSeriesSink(),
            metrics=TelemetryMetrics(CollectorRegistry()),
        )
    )
    rules = (
        Rule(SINGLES_RULE, _SINGLES_FILTER, WORK_HANDLER, dlq="telemetry", qos=sink.qos),
        Rule(BATCH_RULE, _BATCH_FILTER, f"{__name__}:_batch_handler", dlq="telemetry", qos=1),
        Rule(PROBE_RULE, sink.probe_filter, NOOP_HANDLER, dlq="telemetry", qos=sink.qos),
    )
    metrics = GatewayMetrics()
    registry = metrics.registry

    def progress() -> str:
        return f"innocent {len(tally.innocent_ns)}, flood {tally.flood_settled}"

    flood_done_at: float | None = None
    try:
        async with serving_gateway(sink, "fairness", rules, metrics, out) as run:

            def done() -> bool:
                run.check()
                return (
                    len(tally.innocent_ns) >= spec.innocent_expected
                    and tally.flood_settled >= spec.flood_expected
                )

            cpu0 = time.process_time()
            if spec.flood_expected:
                await wait_for(lambda: tally.flood_settled >= spec.flood_expected, sink, progress)
                flood_done_at = time.monotonic()
            await wait_for(done, sink, progress)
            cpu1 = time.process_time()
    finally:
        set_default_service(None)
    gateway = run.gateway
    return {
        "innocent_ns": list(tally.innocent_ns),
        "backlog": list(tally.backlog),
        "flood_settled": tally.flood_settled,
        "flood_done_at": flood_done_at,
        "dead_lettered": dead_letters.depth(),
        "failed": int(counter_total(registry, "v2c_gateway_messages_failed", BATCH_RULE))
        + int(counter_total(registry, "v2c_gateway_messages_failed", SINGLES_RULE)),
        "max_in_flight": gateway.max_in_flight,
        "max_waiting": gateway.max_waiting,
        "cpu_s": cpu1 - cpu0,
    }


def fairness_sink_main(spec: FairnessSinkSpec, out: Queue[Any]) -> None:
    run_sink(out, lambda: _fairness_sink(spec, out))


# -- the coordinator --------------------------------------------------------
def _run_one(
    run: str,
    params: FairnessParams,
    sink: SinkSpec,
    host: str,
    port: int,
    broker_pid: int | None,
) -> PhaseOutcome:
    innocent = PublisherSpec(
        name="innocent",
        host=host,
        port=port,
        topic=bench_topic(0, prefix=INNOCENT_PREFIX),
        messages=params.innocent_messages,
        qos=1,
        payload_bytes=250,
        rate=params.innocent_rate,
    )
    publishers = [innocent]
    flood_vin = bench_vin(0, FLOOD_PREFIX)
    if run == "valid_flood":
        publishers.append(
            PublisherSpec(
                name="flooder",
                host=host,
                port=port,
                topic=bench_topic(0, prefix=FLOOD_PREFIX),
                messages=params.flood,
                qos=1,
                payload_bytes=250,
            )
        )
    elif run == "sample_bomb_flood":
        topic = bench_topic(0, kind="batch", prefix=FLOOD_PREFIX)
        payloads = tuple((topic, sample_bomb(flood_vin)) for _ in range(params.flood))
        publishers.append(
            PublisherSpec(
                name="flooder",
                host=host,
                port=port,
                topic=topic,
                messages=params.flood,
                qos=1,
                payloads=payloads,
            )
        )
    spec = FairnessSinkSpec(
        sink=sink,
        innocent_vin=bench_vin(0, INNOCENT_PREFIX),
        flood_vin=flood_vin,
        innocent_expected=params.innocent_messages,
        flood_expected=0 if run == "alone" else params.flood,
        handler_s=params.handler_ms / 1000,
    )
    timeout = params.innocent_seconds + params.flood * (params.handler_ms / 1000 + 0.01) + 120
    return run_phase(fairness_sink_main, spec, publishers, broker_pid=broker_pid, timeout_s=timeout)


def _summary(run: str, outcome: PhaseOutcome) -> JsonDict:
    sink = outcome.sink
    innocent_ns: list[int] = sink["innocent_ns"]
    during = [ns for ns, backlog in zip(innocent_ns, sink["backlog"], strict=True) if backlog > 0]
    result: JsonDict = {
        "innocent_publish_to_handled_ms": summarize_ns(innocent_ns),
        "innocent_while_flood_backlog_ms": summarize_ns(during),
        "innocent_messages_while_flood_backlog": len(during),
        "max_in_flight": sink["max_in_flight"],
        "max_waiting": sink["max_waiting"],
        "failed": sink["failed"],
        "dead_lettered": sink["dead_lettered"],
        "gateway_cpu_s": round(float(sink["cpu_s"]), 3),
    }
    if run != "alone":
        flooder = outcome.publishers["flooder"]
        flood_done = sink["flood_done_at"]
        result["flood"] = {
            "messages": sink["flood_settled"],
            "published_in_s": round(float(flooder["finished_at"]) - outcome.go_at, 3),
            "settled_in_s": None if flood_done is None else round(flood_done - outcome.go_at, 3),
        }
    return result


def run_fairness(
    params: FairnessParams, base_sink: SinkSpec, host: str, port: int, broker_pid: int | None
) -> tuple[JsonDict, JsonDict]:
    """The three runs on one broker: (results, ratios)."""
    results: JsonDict = {}
    for run in RUNS:
        sink = replace(
            base_sink,
            share_group=f"bench-fairness-{run}",
            topic_filter=_SINGLES_FILTER,
            probe_filter=_PROBE_FILTER,
            probe_topic=bench_topic(0, kind="heartbeat", prefix="READY"),
        )
        results[run] = _summary(run, _run_one(run, params, sink, host, port, broker_pid))
    alone = results["alone"]["innocent_publish_to_handled_ms"]
    ratios: JsonDict = {}
    for run in RUNS[1:]:
        for figure, key in (("all", "innocent_publish_to_handled_ms"),
                            ("during_backlog", "innocent_while_flood_backlog_ms")):  # fmt: skip
            flood = results[run][key]
            for q in ("p50", "p99"):
                ratios[f"{run}_{figure}_{q}_vs_alone"] = ratio(flood[q], alone[q])
    return results, ratios
