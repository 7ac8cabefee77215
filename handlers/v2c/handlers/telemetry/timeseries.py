"""Time-series writes behind a small interface: Firehose, Timestream, or memory.

Timestream for LiveAnalytics takes no new customers, so the service sees only
`TimeSeriesSink` and the wiring (`config.TIMESERIES_SINK`) picks the backend:
`firehose_sink.FirehoseSink` (the default: NDJSON into S3 through a Firehose
delivery stream, queried with Athena), `TimestreamSink` (opt-in, for an
account that still has Timestream; moto implements it), or none. The
`InMemoryTimeSeriesSink` serves tests and a gateway run without AWS.

A point is identified by (vehicle_id, region, time): the same sample always
makes the same point. In Timestream a rewrite (a replay, a redelivery after a
crash between the two writes) is idempotent: it accepts an identical record
again, as the memory sink overwrites it. Firehose only appends, so the
archive can hold a point twice and its readers dedup on that identity (see
`firehose_sink`). The time is the vehicle's, except when it lies further in
the future than Timestream accepts: then the server's receive time stands in
(the spec's "server-side timestamp override" for clock skew) and
`time_source` says so. Times are in microseconds, the
sub-millisecond digits being the sample's sequence modulo 1000: a
deterministic tie-breaker, so two samples of one vehicle stamped in the same
millisecond stay two points instead of one overwriting (or, in Timestream,
rejecting) the other.

Failures come back per point, never raised, as the service must dead-letter
exactly the points that failed: rejected records (`ValidationFailed`: the
store judged the record) and writes that failed after the retries
(`Throttled` / `TransientError`).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import Throttled, TransientError, V2CError, ValidationFailed
from v2c.handlers.telemetry.model import OperationalRecord

if TYPE_CHECKING:
    from mypy_boto3_timestream_write import TimestreamWriteClient

WRITE_LIMIT: Final = 100  # Timestream's WriteRecords maximum
# Timestream refuses records more than 15 minutes ahead of its clock.
MAX_FUTURE_SKEW_MS: Final = 15 * 60 * 1000
MEASURE_NAME: Final = "telemetry"

MeasureType = Literal["DOUBLE", "BIGINT", "BOOLEAN", "VARCHAR"]
PointFailure = tuple["TimeSeriesPoint", V2CError]


@dataclass(frozen=True, slots=True)
class Measure:
    name: str
    value: float | int | bool | str
    type: MeasureType


@dataclass(frozen=True, slots=True)
class TimeSeriesPoint:
    vehicle_id: str
    region: str
    time_us: int
    measures: tuple[Measure, ...]
    message_id: str  # to trace a failure back to its sample
    # The registry's model, when known: the archive carries it for queries by
    # model; Timestream's dimensions stay (vehicle_id, region), its series' identity.
    model: str | None = None

    @property
    def identity(self) -> tuple[str, str, int]:
        return (self.vehicle_id, self.region, self.time_us)


# Every measure `to_point` can make, in the order an archive record lists them
# (`firehose_sink`): a stable schema, an absent optional signal being null.
SIGNALS: Final = (
    "rpm",
    "battery_voltage_v",
    "state_of_charge_pct",
    "coolant_temp_c",
    "fuel_level_pct",
    "odometer_km",
    "diagnostic_flags",
    "ignition_on",
    "charging",
    "sequence",
    "time_source",
    "speed_kmh",
    "latitude",
    "longitude",
)


class TimeSeriesSink(Protocol):
    @property
    def name(self) -> str:
        """The backend ("firehose", "timestream", ...): the `sink` metric label."""
        ...

    def write(self, points: Sequence[TimeSeriesPoint]) -> list[PointFailure]:
        """Write every point; return the ones that failed, with why."""
        ...


def point_time(timestamp_ms: int, received_ms: int, max_future_ms: int) -> tuple[int, str]:
    """(the point's time, "vehicle" or "server"): see the module docstring."""
    if timestamp_ms - received_ms > max_future_ms:
        return received_ms, "server"
    return timestamp_ms, "vehicle"


def to_point(record: OperationalRecord, max_future_ms: int = MAX_FUTURE_SKEW_MS) -> TimeSeriesPoint:
    s = record.sample
    time_ms, source = point_time(s.timestamp_ms, record.arrival.received_at_ms, max_future_ms)
    measures = [
        Measure("rpm", s.rpm, "BIGINT"),
        Measure("battery_voltage_v", s.battery_voltage_v, "DOUBLE"),
        Measure("state_of_charge_pct", s.state_of_charge_pct, "DOUBLE"),
        Measure("coolant_temp_c", s.coolant_temp_c, "DOUBLE"),
        Measure("fuel_level_pct", s.fuel_level_pct, "DOUBLE"),
        Measure("odometer_km", s.odometer_km, "DOUBLE"),
        Measure("diagnostic_flags", s.diagnostic_flags, "BIGINT"),
        Measure("ignition_on", s.ignition_on, "BOOLEAN"),
        Measure("charging", s.charging, "BOOLEAN"),
        Measure("sequence", s.sequence, "BIGINT"),
        Measure("time_source", source, "VARCHAR"),
    ]
    if s.speed_kmh is not None:
        measures.append(Measure("speed_kmh", s.speed_kmh, "DOUBLE"))
    if s.gps is not None:
        measures += [
            Measure("latitude", s.gps.latitude, "DOUBLE"),
            Measure("longitude", s.gps.longitude, "DOUBLE"),
        ]
    time_us = time_ms * 1000 + s.sequence % 1000
    return TimeSeriesPoint(
        s.vehicle_id,
        record.arrival.region,
        time_us,
        tuple(measures),
        s.message_id,
        record.vehicle.model if record.vehicle is not None else None,
    )


def rejection_kind(reason: str) -> str:
    """A bounded metric label for a store's free-text rejection reason."""
    text = reason.lower()
    if "too large" in text:
        return "size"
    if "version" in text or "same" in text or "duplicate" in text:
        return "duplicate"
    if "time" in text:
        return "timestamp"
    if "dimension" in text:
        return "dimension"
    return "other"


class InMemoryTimeSeriesSink:
    """Points in a dict keyed by identity. `reject` (tests) returns a
    rejection reason for a point, or None to accept it."""

    name = "memory"

    def __init__(self, reject: Callable[[TimeSeriesPoint], str | None] | None = None) -> None:
        self._points: dict[tuple[str, str, int], TimeSeriesPoint] = {}
        self._reject = reject
        self._lock = threading.Lock()
        self.requests = 0

    def write(self, points: Sequence[TimeSeriesPoint]) -> list[PointFailure]:
        failures: list[PointFailure] = []
        with self._lock:
            for start in range(0, len(points), WRITE_LIMIT):
                self.requests += 1
                for point in points[start : start + WRITE_LIMIT]:
                    reason = self._reject(point) if self._reject else None
                    if reason is not None:
                        failures.append((point, store_rejection(reason)))
                    else:
                        self._points[point.identity] = point
        return failures

    def points(self) -> list[TimeSeriesPoint]:
        with self._lock:
            return list(self._points.values())

    def count_by_vehicle(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for point in self.points():
            counts[point.vehicle_id] += 1
        return dict(counts)


class TimestreamSink:
    """Multi-measure records, one per point, in WriteRecords calls of 100
    (the API's maximum) whatever vehicles they come from: a batch of singles
    from many vehicles is a few calls, not one per vehicle. The dimensions
    travel on each record; what all records share (measure name and type,
    time unit) goes once in CommonAttributes. Throttling is retried by
    botocore (the client's standard retry mode)."""

    name = "timestream"

    def __init__(self, client: TimestreamWriteClient, database: str, table: str) -> None:
        self._ts = client
        self._database = database
        self._table = table
        self.requests = 0

    def write(self, points: Sequence[TimeSeriesPoint]) -> list[PointFailure]:
        failures: list[PointFailure] = []
        for start in range(0, len(points), WRITE_LIMIT):
            failures += self._write_chunk(points[start : start + WRITE_LIMIT])
        return failures

    def _write_chunk(self, chunk: Sequence[TimeSeriesPoint]) -> list[PointFailure]:
        self.requests += 1
        records: Any = [
            {
                "Dimensions": [
                    {"Name": "vehicle_id", "Value": point.vehicle_id},
                    {"Name": "region", "Value": point.region},
                ],
                "Time": str(point.time_us),
                "MeasureValues": [
                    {"Name": m.name, "Value": _text(m.value), "Type": m.type}
                    for m in point.measures
                ],
            }
            for point in chunk
        ]
        common: Any = {
            "MeasureName": MEASURE_NAME,
            "MeasureValueType": "MULTI",
            "TimeUnit": "MICROSECONDS",
        }
        try:
            self._ts.write_records(
                DatabaseName=self._database,
                TableName=self._table,
                CommonAttributes=common,
                Records=records,
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "RejectedRecordsException":
                # The records not listed were ingested (WriteRecords is per record).
                rejected: Any = exc.response.get("RejectedRecords", [])
                return [
                    (chunk[int(r["RecordIndex"])], store_rejection(str(r.get("Reason", ""))))
                    for r in rejected
                    if 0 <= int(r.get("RecordIndex", -1)) < len(chunk)
                ]
            error: V2CError = (
                Throttled(f"Timestream throttled: {code}")
                if code == "ThrottlingException"
                else TransientError(f"Timestream WriteRecords failed: {code or exc}")
            )
            return [(point, error) for point in chunk]
        except BotoCoreError as exc:
            failure = TransientError(f"Timestream WriteRecords failed: {exc}")
            return [(point, failure) for point in chunk]
        return []


def store_rejection(reason: str) -> ValidationFailed:
    """A point the store judged and refused: the sample's fault, replaying fails again."""
    return ValidationFailed(f"time-series store rejected the record: {reason}")


def _text(value: float | int | bool | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)
