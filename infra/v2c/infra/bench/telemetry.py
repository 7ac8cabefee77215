"""`v2c bench telemetry`: what the telemetry path stores per second through
the real handlers, next to what the same moto server takes from bare
DynamoDB calls in the same run, and what batching buys on the wire.

Four parts, in one run:
1. compression (pure): 1 - envelope / sum of the individual `Telemetry`
   messages, for batches of each size, ZSTD without and with a dictionary
   trained on other vehicles' batches (the dictionary must not have seen
   the batches it compresses, or the figure flatters it);
2. store baselines on a fresh moto server: conditional PutItem (what the
   individual path does per message) and BatchWriteItem of 25 (what the
   batch path does), with the very items the handlers write, on a thread
   pool as wide as the gateway's;
3. the handlers: `TelemetryService.ingest` / `ingest_batch` called with the
   Lambda events `v2c.gateway.event.build_event` makes, on the same pool, as
   wired by `build_service` (registry lookups, dedup, the time-series sink
   included). Their rate over the baseline is the pipeline's own share;
4. end to end (`telemetry_e2e`): published to a private mosquitto, routed by
   the real gateway to the real handlers, stored in the same moto; stored/s
   for singles and batches, publish→stored latency at a paced rate, and the
   raw broker pass-through on the same broker as the other ceiling.

The moto server is reset and the resources recreated before every store
phase, so no phase pays for a table the previous one filled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from v2c.contract.batch_codec import CodecConfig, encode_envelope, train_dictionary
from v2c.contract.topics import Domain, Topic
from v2c.gateway.event import build_event
from v2c.handlers.telemetry.model import OperationalRecord
from v2c.infra.bench.common import (
    BenchError,
    JsonDict,
    fmt,
    machine_info,
    make_report,
    per_second,
    ratio,
)
from v2c.infra.bench.telemetry_e2e import (
    PipelineBench,
    PipelineParams,
    pipeline_ratios,
    pipeline_rows,
)
from v2c.infra.bench.telemetry_store import REGION, BenchStore, Workload, vin
from v2c.infra.local.moto_server import MotoServer
from v2c.v1 import telemetry_pb2
from v2c.vehicle_sim.sampler import TelemetrySampler

BENCH: Final = "telemetry"
BATCH_WRITE_SIZE: Final = 25  # DynamoDB's BatchWriteItem maximum
_SINGLE_RULE: Final = "telemetry"
_BATCH_RULE: Final = "telemetry_batch"

Telemetry = telemetry_pb2.Telemetry


@dataclass(frozen=True)
class TelemetryBenchParams:
    batch_sizes: tuple[int, ...] = (25, 50)
    compression_batches: int = 20  # measured per size
    training_batches: int = 64  # per size, from other vehicles
    dictionary_bytes: int = 2048
    sample_interval_ms: int = 60_000  # compression batches: the simulator's default rate
    messages: int = 2000  # per store phase: singles, and samples in batches
    batch_size: int = 25  # samples per envelope in the end-to-end batch phase
    vehicles: int = 100
    workers: int = 16
    pipeline: PipelineParams | None = field(default_factory=PipelineParams)  # None: skip

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError("batch sizes must be positive")
        if self.messages < self.batch_size or self.batch_size < 1:
            raise ValueError("need at least one full batch of messages")
        if not 1 <= self.vehicles <= 100 or self.workers < 1:
            raise ValueError("vehicles must be 1-100 and workers positive")
        if self.compression_batches < 1 or self.training_batches < 8:
            raise ValueError("need a compression batch and at least 8 training batches")


# -- 1. compression -----------------------------------------------------------
def _batches(size: int, count: int, first_vehicle: int, interval_ms: int) -> list[list[Any]]:
    """`count` consecutive batches of `size`, spread over 4 simulated vehicles."""
    samplers = [
        TelemetrySampler(vin(first_vehicle + v), seed=first_vehicle + v, interval_ms=interval_ms)
        for v in range(4)
    ]
    return [samplers[i % 4].samples(size) for i in range(count)]


def measure_compression(params: TelemetryBenchParams) -> JsonDict:
    results: JsonDict = {}
    for size in params.batch_sizes:
        training = _batches(
            size, params.training_batches, first_vehicle=50, interval_ms=params.sample_interval_ms
        )
        dict_id, data = train_dictionary(training, params.dictionary_bytes)
        config = CodecConfig(dictionaries={dict_id: data})
        individual = plain = trained = 0
        for batch in _batches(
            size, params.compression_batches, first_vehicle=0, interval_ms=params.sample_interval_ms
        ):
            individual += sum(len(s.SerializeToString()) for s in batch)
            plain += len(encode_envelope(batch))
            trained += len(encode_envelope(batch, dictionary_id=dict_id, config=config))
        results[str(size)] = {
            "batches": params.compression_batches,
            "individual_bytes_per_sample": round(individual / params.compression_batches / size, 1),
            "zstd": _ratio_entry(individual, plain, params.compression_batches, size),
            "zstd_dictionary": _ratio_entry(individual, trained, params.compression_batches, size),
        }
    return results


def _ratio_entry(individual: int, envelope: int, batches: int, size: int) -> JsonDict:
    return {
        "envelope_bytes": round(envelope / batches, 1),
        "bytes_per_sample": round(envelope / batches / size, 1),
        "compression_ratio": round(1 - envelope / individual, 4),
    }


# -- 2. and 3. the store ----------------------------------------------------
def _workload(params: TelemetryBenchParams, seed: int) -> Workload:
    return Workload.make(params.messages, params.vehicles, params.batch_size, seed)


def _timed(workers: int, calls: Sequence[Callable[[], int]]) -> tuple[int, float]:
    """Run every call on a pool of `workers` threads; (sum of their counts, seconds)."""
    with ThreadPoolExecutor(workers, thread_name_prefix="v2c-bench") as pool:
        started = time.perf_counter()
        counts = list(pool.map(lambda call: call(), calls))
        seconds = time.perf_counter() - started
    return sum(counts), seconds


def _rate(stored: int, seconds: float, expected: int) -> JsonDict:
    if stored != expected:
        raise BenchError(f"stored {stored} of {expected} messages")
    return {
        "stored": stored,
        "seconds": round(seconds, 3),
        "msgs_per_s": per_second(stored, seconds),
    }


def _raw_put(store: BenchStore, params: TelemetryBenchParams) -> JsonDict:
    store.fresh()
    ddb, items = store.raw_store()
    table = store.names.telemetry_table

    def put(record: OperationalRecord) -> Callable[[], int]:
        item = items.item(record)

        def call() -> int:
            ddb.put_item(
                TableName=table, Item=item, ConditionExpression="attribute_not_exists(sample_key)"
            )
            return 1

        return call

    records = _workload(params, seed=1).records()
    return _rate(*_timed(params.workers, [put(r) for r in records]), len(records))


def _raw_batch_write(store: BenchStore, params: TelemetryBenchParams) -> JsonDict:
    store.fresh()
    ddb, items = store.raw_store()
    table = store.names.telemetry_table

    def write(chunk: Sequence[OperationalRecord]) -> Callable[[], int]:
        requests = [{"PutRequest": {"Item": items.item(r)}} for r in chunk]

        def call() -> int:
            answer = ddb.batch_write_item(RequestItems={table: requests})
            if answer.get("UnprocessedItems"):
                raise BenchError("moto left items unprocessed")
            return len(requests)

        return call

    records = _workload(params, seed=2).records()
    chunks = [records[i : i + BATCH_WRITE_SIZE] for i in range(0, len(records), BATCH_WRITE_SIZE)]
    return _rate(*_timed(params.workers, [write(c) for c in chunks]), len(records))


def _handlers_singles(store: BenchStore, params: TelemetryBenchParams) -> JsonDict:
    store.fresh()
    work = _workload(params, seed=3)
    service = store.service()
    try:
        events = [
            build_event(
                rule=_SINGLE_RULE,
                topic=str(Topic(REGION, s.vehicle_id, Domain.TELEMETRY, "vehicle")),
                payload=s.SerializeToString(),
                qos=1,
                properties={"content_type": "application/x-protobuf"},
                received_at_ms=work.received_at_ms,
            )
            for s in work.samples
        ]
        calls = [_ingest(service.ingest, e) for e in events]
        return _rate(*_timed(params.workers, calls), len(events))
    finally:
        service.close()


def _handlers_batches(store: BenchStore, params: TelemetryBenchParams) -> JsonDict:
    store.fresh()
    work = _workload(params, seed=4)
    service = store.service()
    try:
        batches = work.batches(params.batch_size)
        events = [
            build_event(
                rule=_BATCH_RULE,
                topic=str(Topic(REGION, b[0].vehicle_id, Domain.TELEMETRY, "batch")),
                payload=encode_envelope(b),
                qos=1,
                properties={"content_type": "application/x-protobuf+zstd"},
                received_at_ms=work.received_at_ms,
            )
            for b in batches
        ]
        calls = [_ingest(service.ingest_batch, e) for e in events]
        result = _rate(*_timed(params.workers, calls), len(work.samples))
        result["batches"] = len(events)
        return result
    finally:
        service.close()


def _ingest(handler: Callable[[JsonDict], Any], event: JsonDict) -> Callable[[], int]:
    def call() -> int:
        report = handler(event)
        if report.errors or report.invalid or report.failed:
            raise BenchError(f"the handler did not store everything: {report.to_json()}")
        return int(report.stored)

    return call


# -- the run ------------------------------------------------------------------
def run_telemetry_bench(params: TelemetryBenchParams) -> JsonDict:
    started_at = time.time()
    machine = machine_info()
    compression = measure_compression(params)
    with MotoServer() as moto:
        store = BenchStore(moto, params.vehicles)
        results: JsonDict = {
            "compression": compression,
            "baseline_put_item": _raw_put(store, params),
            "baseline_batch_write": _raw_batch_write(store, params),
            "handlers_singles": _handlers_singles(store, params),
            "handlers_batches": _handlers_batches(store, params),
        }
        if params.pipeline is not None:
            bench = PipelineBench(
                params.pipeline, store, batch_size=params.batch_size, workers=params.workers
            )
            results["pipeline"] = bench.run(params.messages)
    singles, batches = results["handlers_singles"], results["handlers_batches"]
    ratios = {
        "singles_vs_put_item": ratio(
            singles["msgs_per_s"], results["baseline_put_item"]["msgs_per_s"]
        ),
        "batches_vs_batch_write": ratio(
            batches["msgs_per_s"], results["baseline_batch_write"]["msgs_per_s"]
        ),
        "batches_vs_singles": ratio(batches["msgs_per_s"], singles["msgs_per_s"]),
    }
    if "pipeline" in results:
        ratios |= pipeline_ratios(results)
    parameters = asdict(params) | {"batch_sizes": list(params.batch_sizes)}
    return make_report(BENCH, parameters, results, ratios, started_at=started_at, machine=machine)


def table_rows(report: JsonDict) -> list[tuple[str, str]]:
    results, ratios = report["results"], report["ratios"]
    rows: list[tuple[str, str]] = []
    for size, entry in results["compression"].items():
        for kind in ("zstd", "zstd_dictionary"):
            value = entry[kind]
            rows.append(
                (
                    f"compression {size} samples, {kind.replace('_', ' + ')}",
                    f"{value['compression_ratio'] * 100:.1f} % "
                    f"({fmt(value['bytes_per_sample'], ' B/sample')})",
                )
            )
    for label, key in (
        ("baseline PutItem (conditional)", "baseline_put_item"),
        ("baseline BatchWriteItem(25)", "baseline_batch_write"),
        ("handlers, single messages", "handlers_singles"),
        ("handlers, batches", "handlers_batches"),
    ):
        rows.append((f"{label}, stored/s", fmt(results[key]["msgs_per_s"])))
    rows.append(("singles / PutItem", fmt(ratios["singles_vs_put_item"], digits=3)))
    rows.append(("batches / BatchWriteItem", fmt(ratios["batches_vs_batch_write"], digits=3)))
    rows.append(("batches / singles", fmt(ratios["batches_vs_singles"], digits=3)))
    if "pipeline" in results:
        rows += pipeline_rows(report)
    return rows
