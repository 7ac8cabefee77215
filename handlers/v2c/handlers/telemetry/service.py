"""The telemetry pipeline: parse → validate → dedup → enrich → write, per path.

`TelemetryService.ingest` takes one individual message, `ingest_batch` one
batch envelope; both take the Lambda event and return an `IngestReport`.
Every outcome is decided here, every effect goes through a port (record
store, time-series sink, registry, dead-letter store), so the same code runs
in Lambda, in the gateway and in unit tests with in-memory ports.

Delivery rules:
* bad data (unparseable, invalid, a batch that fails its envelope checks) and
  writes that failed after their retries are dead-lettered by the service
  and the call returns normally: the gateway acknowledges, nothing is lost;
* one dead-letter record per message, never one per sample: the samples of
  a batch that were not stored are collected and written as one record with
  the envelope and every sample's reason (`dead_letters.batch_samples`), so
  the DLQ work of a message is one write whatever it declares;
* duplicates are counted and dropped silently (see `dedup`);
* a replay from the DLQ (`properties.replayed_from`) skips the duplicate
  checks and rewrites every sink with idempotent puts, because the record
  may stand for a half-done write (DynamoDB stored, time-series not). A
  replay that fails again raises, so the DLQ keeps the record and counts
  the attempt instead of the handler filing a new one;
* the DynamoDB and time-series writes of a message or batch run concurrently
  (the time-series write on the service's thread pool).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from v2c.contract.batch_codec import DEFAULT_CONFIG, CodecConfig, DecodedBatch, decode_envelope
from v2c.contract.errors import InvalidField, InvalidInput, V2CError
from v2c.contract.events import InboundEvent, is_replay, raw_payload, raw_topic
from v2c.handlers.dlq.store import DeadLetterStore
from v2c.handlers.telemetry.dead_letters import SampleFailure, TelemetryDeadLetters
from v2c.handlers.telemetry.dedup import DedupWindow, first_occurrences, partition
from v2c.handlers.telemetry.envelope import envelope_summary
from v2c.handlers.telemetry.metrics import TelemetryMetrics, default_metrics
from v2c.handlers.telemetry.model import Arrival, OperationalRecord, Path, Sample, VehicleInfo
from v2c.handlers.telemetry.registry import VehicleRegistry
from v2c.handlers.telemetry.report import IngestReport
from v2c.handlers.telemetry.store import RecordStore
from v2c.handlers.telemetry.timeseries import (
    MAX_FUTURE_SKEW_MS,
    PointFailure,
    TimeSeriesSink,
    to_point,
)
from v2c.handlers.telemetry.validation import (
    BATCH_CONTENT_TYPES,
    DEFAULT_LIMITS,
    SINGLE_CONTENT_TYPES,
    Limits,
    batch_span_outliers,
    check_content_type,
    parse_telemetry,
    validate,
)
from v2c.v1 import telemetry_pb2


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    single_rule: str = "telemetry"  # the rules-table names DLQ records point back to
    batch_rule: str = "telemetry_batch"
    limits: Limits = DEFAULT_LIMITS
    codec: CodecConfig = DEFAULT_CONFIG
    max_future_skew_ms: int = MAX_FUTURE_SKEW_MS
    timeseries_workers: int = 8


@dataclass(slots=True)
class _Single:
    """One valid individual message of a queue batch, on its way to the store."""

    event: InboundEvent
    report: IngestReport
    sample: Sample

    @property
    def item_key(self) -> tuple[str, str]:
        return (self.sample.vehicle_id, self.sample.key)


@dataclass(slots=True)
class _Candidate:
    index: int
    message: telemetry_pb2.Telemetry
    sample: Sample


class TelemetryService:
    def __init__(
        self,
        *,
        records: RecordStore,
        dead_letters: DeadLetterStore,
        timeseries: TimeSeriesSink | None = None,
        registry: VehicleRegistry | None = None,
        window: DedupWindow | None = None,
        metrics: TelemetryMetrics | None = None,
        settings: ServiceSettings | None = None,
    ) -> None:
        self.settings = settings or ServiceSettings()
        self.metrics = metrics or default_metrics()
        self.window = window or DedupWindow()
        self._records = records
        self._timeseries = timeseries
        self._registry = registry
        self._dlq = TelemetryDeadLetters(dead_letters, self.metrics, self.settings.single_rule)
        self._pool = ThreadPoolExecutor(
            self.settings.timeseries_workers, thread_name_prefix="v2c-telemetry-ts"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- individual messages -------------------------------------------------

    def ingest(self, raw_event: Mapping[str, Any]) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport(Path.INDIVIDUAL)
        event = self._parse_event(raw_event, self.settings.single_rule, report)
        if event is not None:
            report.received = 1
            self._ingest_one(event, report)
            self.metrics.message_done(event.region, event.received_at_ms, report, started)
        return _raise_if_replay_failed(report)

    def ingest_many(self, raw_events: Sequence[Mapping[str, Any]]) -> list[IngestReport]:
        """Individual messages from many vehicles at once (a queue batch), one
        report each. The same rules as `ingest`, with the store's work done per
        batch: one BatchGetItem per 100 samples for duplicates (the key stays
        the backstop), BatchWriteItem in chunks of 25 retrying only the
        unprocessed items, the time-series sink in chunks of its maximum."""
        started = time.perf_counter()
        reports: list[IngestReport] = []
        valid: list[_Single] = []
        for raw in raw_events:
            report = IngestReport(Path.INDIVIDUAL)
            reports.append(report)
            event = self._parse_event(raw, self.settings.single_rule, report)
            if event is None:
                continue
            report.received = 1
            sample = None if event.replay_of else self._valid_single(event, report)
            if sample is None:  # a replay goes alone; a rejected message is done
                if event.replay_of:
                    self._ingest_one(event, report)
                self.metrics.message_done(event.region, event.received_at_ms, report, started)
                continue
            valid.append(_Single(event, report, sample))
        firsts, repeats = first_occurrences(valid, lambda s: s.sample.message_id)
        fresh, seen = partition(firsts, lambda s: self.window.seen(s.sample.message_id))
        try:
            stored = self._records.existing_many([s.item_key for s in fresh])
        except V2CError:  # the check only saves writes: the puts are idempotent
            for region in {s.event.region for s in fresh}:
                self.metrics.dedup_check_failures.labels(region).inc()
            stored = set()
        new, known = partition(fresh, lambda s: s.item_key in stored)
        self.window.add(s.sample.message_id for s in known)
        for single in (*repeats, *seen, *known):
            single.report.duplicates = 1
            self.metrics.message_done(
                single.event.region, single.event.received_at_ms, single.report, started
            )
        self._store_singles(new, started)
        return reports

    def _store_singles(self, singles: Sequence[_Single], started: float) -> None:
        records = [
            self._record(
                s.sample, s.event, Arrival(s.event.region, Path.INDIVIDUAL, s.event.received_at_ms)
            )
            for s in singles
        ]
        pending = self._write_timeseries(records)
        result = self._records.put_many(records)
        ts_failures = {failure[0].message_id: failure for failure in pending.result()}
        failed = {record.sample.message_id: error for record, error in result.failed}
        self.window.add(record.sample.message_id for record in result.written)
        self.metrics.samples_stored(
            Path.INDIVIDUAL.value, (record.sample.timestamp_ms for record in result.written)
        )
        for single in singles:
            event, report, message_id = single.event, single.report, single.sample.message_id
            if message_id in failed:
                report.failed = 1
                self._reject(
                    event, report, failed[message_id], message_type="individual", sink="dynamodb"
                )
            else:
                report.stored = 1
                if message_id in ts_failures:
                    failure = ts_failures[message_id]
                    self.metrics.count_rejections(event.region, self._sink_name, [failure])
                    self._reject(
                        event, report, failure[1], message_type="individual", sink="timeseries"
                    )
            self.metrics.message_done(event.region, event.received_at_ms, report, started)

    def _valid_single(self, event: InboundEvent, report: IngestReport) -> Sample | None:
        """The message's sample, or None once it was rejected (dead-lettered)."""
        try:
            check_content_type(event.content_type, SINGLE_CONTENT_TYPES)
            message = parse_telemetry(event.payload)
            return validate(message, topic_vehicle_id=event.vehicle_id, limits=self._limits)
        except InvalidInput as exc:
            report.invalid = 1
            self._reject(event, report, exc, message_type="individual")
            return None

    def _ingest_one(self, event: InboundEvent, report: IngestReport) -> None:
        sample = self._valid_single(event, report)
        if sample is None:
            return
        replay = bool(event.replay_of)
        if not replay and self.window.seen(sample.message_id):
            report.duplicates = 1
            return
        record = self._record(
            sample, event, Arrival(event.region, Path.INDIVIDUAL, event.received_at_ms)
        )
        pending = self._write_timeseries([record])
        try:
            if replay:
                self._records.put(record)
                created = True
            else:
                created = self._records.put_new(record)
        except V2CError as exc:
            pending.result()  # an idempotent point; the replay rewrites it
            report.failed = 1
            self._reject(event, report, exc, message_type="individual", sink="dynamodb")
            return
        failures = pending.result()
        if not created:  # the point was the same point: no harm done
            report.duplicates = 1
            self.window.add([sample.message_id])
            return
        report.stored = 1
        self.window.add([sample.message_id])
        self.metrics.samples_stored(Path.INDIVIDUAL.value, [sample.timestamp_ms])
        if failures:
            self.metrics.count_rejections(event.region, self._sink_name, failures)
            self._reject(
                event, report, failures[0][1], message_type="individual", sink="timeseries"
            )

    # -- batches -------------------------------------------------------------

    def ingest_batch(self, raw_event: Mapping[str, Any]) -> IngestReport:
        started = time.perf_counter()
        report = IngestReport(Path.BATCH)
        event = self._parse_event(raw_event, self.settings.batch_rule, report)
        if event is not None:
            batch = self._decode(event, report)
            if batch is not None:
                self._ingest_samples(event, batch, report)
            self.metrics.message_done(event.region, event.received_at_ms, report, started)
        return _raise_if_replay_failed(report)

    def _decode(self, event: InboundEvent, report: IngestReport) -> DecodedBatch | None:
        """The decoded batch, or None after dead-lettering it whole."""
        try:
            check_content_type(event.content_type, BATCH_CONTENT_TYPES)
            batch = decode_envelope(event.payload, self.settings.codec)
            if batch.vehicle_id != event.vehicle_id:
                raise InvalidField(
                    "vehicle_id",
                    f"batch of {batch.vehicle_id!r} on the topic of {event.vehicle_id!r}",
                )
        except InvalidInput as exc:
            report.invalid = 1
            if not isinstance(exc, InvalidField):  # the alert: cannot even open the batch
                self.metrics.decompression_errors.labels(event.region, exc.reason).inc()
                report.undecodable = 1
            summary = envelope_summary(event.payload)
            report.batch_id = str(summary.get("batch_id", ""))
            self._reject(event, report, exc, message_type="batch", context=summary)
            return None
        report.batch_id = batch.batch_id
        report.received = len(batch.samples)
        sent_alone = sum(sample.ByteSize() for sample in batch.samples)
        if sent_alone:
            report.compression_ratio = 1 - batch.compressed_size / sent_alone
            self.metrics.compression_ratio.labels(event.region).observe(report.compression_ratio)
        return batch

    def _ingest_samples(
        self, event: InboundEvent, batch: DecodedBatch, report: IngestReport
    ) -> None:
        failures: list[SampleFailure] = []
        # A write that raises (not a failure it reports) propagates: the gateway
        # then dead-letters the whole message, still one record for it.
        self._store_samples(event, batch, report, failures)
        self._reject_samples(event, batch, failures, report)

    def _store_samples(
        self,
        event: InboundEvent,
        batch: DecodedBatch,
        report: IngestReport,
        failures: list[SampleFailure],
    ) -> None:
        candidates = self._validate_batch(event, batch, report, failures)
        candidates, repeats = first_occurrences(candidates, lambda c: c.sample.message_id)
        report.duplicates += len(repeats)
        if not event.replay_of:
            candidates = self._drop_duplicates(event, candidates, report)
        if not candidates:
            return
        info = self._enrich(event)
        records = [
            OperationalRecord(
                c.sample,
                Arrival(event.region, Path.BATCH, event.received_at_ms, batch.batch_id, c.index),
                info,
            )
            for c in candidates
        ]
        pending = self._write_timeseries(records)
        result = self._records.put_many(records)
        ts_failures = {point.message_id: error for point, error in pending.result()}
        by_id = {c.sample.message_id: c for c in candidates}
        for record, error in result.failed:
            report.failed += 1
            failures.append(SampleFailure(by_id[record.sample.message_id].index, error, "dynamodb"))
        report.stored += len(result.written)
        self.window.add(record.sample.message_id for record in result.written)
        self.metrics.samples_stored(
            Path.BATCH.value, (record.sample.timestamp_ms for record in result.written)
        )
        rejected = [
            (r, ts_failures[r.sample.message_id])
            for r in result.written
            if r.sample.message_id in ts_failures
        ]
        if rejected:
            points = [(to_point(r), e) for r, e in rejected]
            self.metrics.count_rejections(event.region, self._sink_name, points)
        for record, error in rejected:
            failures.append(
                SampleFailure(by_id[record.sample.message_id].index, error, "timeseries")
            )

    def _validate_batch(
        self,
        event: InboundEvent,
        batch: DecodedBatch,
        report: IngestReport,
        failures: list[SampleFailure],
    ) -> list[_Candidate]:
        valid: list[_Candidate] = []
        for index, message in enumerate(batch.samples):
            try:
                sample = validate(message, topic_vehicle_id=event.vehicle_id, limits=self._limits)
            except InvalidInput as exc:
                report.invalid += 1
                failures.append(SampleFailure(index, exc))
                continue
            valid.append(_Candidate(index, message, sample))
        outliers = set(batch_span_outliers([c.sample.timestamp_ms for c in valid], self._limits))
        for position in sorted(outliers):
            candidate = valid[position]
            report.invalid += 1
            error = InvalidField(
                "header.timestamp",
                f"{candidate.sample.timestamp_ms} lies more than "
                f"{self._limits.max_batch_span_ms} ms from the rest of the batch",
            )
            failures.append(SampleFailure(candidate.index, error))
        return [c for position, c in enumerate(valid) if position not in outliers]

    def _drop_duplicates(
        self, event: InboundEvent, candidates: Sequence[_Candidate], report: IngestReport
    ) -> list[_Candidate]:
        fresh, seen = partition(candidates, lambda c: self.window.seen(c.sample.message_id))
        report.duplicates += len(seen)
        try:
            stored = self._records.existing(event.vehicle_id, [c.sample.key for c in fresh])
        except V2CError:
            # The check only saves writes and counts duplicates; the writes
            # that follow are idempotent puts, so going ahead stores nothing twice.
            self.metrics.dedup_check_failures.labels(event.region).inc()
            stored = set()
        new, known = partition(fresh, lambda c: c.sample.key in stored)
        report.duplicates += len(known)
        self.window.add(c.sample.message_id for c in known)
        return new

    # -- shared --------------------------------------------------------------

    @property
    def _limits(self) -> Limits:
        return self.settings.limits

    def _parse_event(
        self, raw_event: Mapping[str, Any], rule: str, report: IngestReport
    ) -> InboundEvent | None:
        try:
            return InboundEvent.parse(raw_event, rule)
        except InvalidInput as exc:
            report.invalid = 1
            if is_replay(raw_event):
                raise
            self._dlq.unparsed(
                rule=str(raw_event.get("rule") or rule),
                topic=raw_topic(raw_event),
                payload=raw_payload(raw_event),
                error=exc,
            )
            report.dead_lettered = 1
            return None

    def _record(self, sample: Sample, event: InboundEvent, arrival: Arrival) -> OperationalRecord:
        return OperationalRecord(sample, arrival, self._enrich(event))

    def _enrich(self, event: InboundEvent) -> VehicleInfo | None:
        if self._registry is None:
            return None
        try:
            return self._registry.lookup(event.vehicle_id)
        except V2CError:
            self.metrics.enrichment_failures.labels(event.region).inc()
            return None

    @property
    def _sink_name(self) -> str:
        return self._timeseries.name if self._timeseries is not None else "none"

    def _write_timeseries(self, records: Sequence[OperationalRecord]) -> Future[list[PointFailure]]:
        if self._timeseries is None:
            done: Future[list[PointFailure]] = Future()
            done.set_result([])
            return done
        points = [to_point(record, self.settings.max_future_skew_ms) for record in records]
        return self._pool.submit(self._timeseries.write, points)

    def _reject(
        self,
        event: InboundEvent,
        report: IngestReport,
        error: V2CError,
        *,
        message_type: str,
        sink: str = "",
        context: dict[str, Any] | None = None,
    ) -> None:
        """Dead-letter the whole message, or note the failure of a replay."""
        if event.replay_of:
            report.errors.append(error)
            return
        extra = dict(context or {})
        if sink:
            extra["sink"] = sink
        self._dlq.message(event, error, message_type=message_type, context=extra)
        report.dead_lettered += 1

    def _reject_samples(
        self,
        event: InboundEvent,
        batch: DecodedBatch,
        failures: list[SampleFailure],
        report: IngestReport,
    ) -> None:
        """One record for every sample of the batch not stored, or, for a
        replay, the errors that make it fail again (the DLQ keeps its record)."""
        if not failures:
            return
        if event.replay_of:
            report.errors.extend(f.error for f in failures)
            return
        self._dlq.batch_samples(
            event, failures, batch_id=batch.batch_id, samples=len(batch.samples)
        )
        report.dead_lettered += 1


def _raise_if_replay_failed(report: IngestReport) -> IngestReport:
    """A replay that failed again raises: the DLQ keeps its record."""
    if report.errors:
        raise report.errors[0]
    return report
