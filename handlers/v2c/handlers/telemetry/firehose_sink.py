"""Time-series points into S3 as NDJSON, through a Firehose delivery stream.

Timestream for LiveAnalytics takes no new customers; a Firehose stream (DirectPut,
S3 destination) is what any account can have, costs nothing while idle, and
leaves the data in the account's own bucket for Athena. Firehose buffers the
records and writes objects (GZIP, as the stack configures it) under the
stream's prefix, whose `!{timestamp:...}` expressions are the UTC arrival
hour (`telemetry/year=YYYY/month=MM/day=DD/hour=HH/`; without expressions
Firehose appends `YYYY/MM/DD/HH/` itself): an Athena table's partitions.
That hour is Firehose's arrival time, not the sample's: a query by sample
time filters on `timestamp_ms` and takes a partition of margin either side.

One line of JSON per point (NDJSON: Firehose concatenates the records of an
object, so each line ends in a newline), consecutive lines packed into records
of up to 5 KiB: Firehose bills Direct PUT ingestion per record rounded up to
5 KB, so a ~500-byte line alone in a record costs ~10 times what it costs
packed (`record_bytes=0` sends one line per record). A record failed by
Firehose is retried, and reported, as a whole: its points together. Every key is present in
every record, null meaning unknown or absent, so the Athena table (JSON SerDe)
has one stable schema; a new signal is a new key at the end, never a renamed one:

| key | type | meaning |
|---|---|---|
| vehicle_id | string | |
| region | string | the AWS region the sample arrived in |
| model | string, null | the vehicle registry's model; null when not known |
| time_us | bigint | the point's time in µs (sub-ms digits: sequence % 1000) |
| timestamp_ms | bigint | the point's time in ms since the epoch |
| timestamp | string | the same, ISO 8601 UTC to the ms (`2025-01-01T03:33:20.123Z`) |
| message_id | string | the sample's id (UUIDv5): back to the sample, the DLQ |
| rpm ... longitude | number, boolean, string | the measures (below) |

The measures are those the Timestream record carries, in `timeseries.SIGNALS`
order: rpm, battery_voltage_v, state_of_charge_pct, coolant_temp_c,
fuel_level_pct, odometer_km, diagnostic_flags (numbers), ignition_on,
charging (booleans), sequence, time_source ("vehicle", or "server" when the
vehicle clock ran too far ahead), speed_kmh, latitude, longitude (null when
absent). (vehicle_id, region, time_us) is a point's identity, as in Timestream.

Firehose only appends: a point can land twice (a DLQ replay rewrites every
sink; botocore resends a call whose answer was lost). Readers dedup on
(vehicle_id, region, time_us), e.g. `row_number() OVER (PARTITION BY vehicle_id,
region, time_us) = 1`.

Writes: PutRecordBatch calls of at most 500 (packed) records and 4 MiB whatever the
vehicles, so a queue batch of singles from many vehicles is a few calls. A
record over Firehose's 1,000 KiB is refused before sending (`ValidationFailed`,
counted and dead-lettered as a store's rejection). A call's answer marks the
records that failed (`FailedPutCount`, `RequestResponses[i].ErrorCode`:
throughput exceeded or an internal failure); only those are sent again, under
tenacity (`FirehoseRetry`: bounded attempts, exponential backoff with
jitter), and the ones still failing come back as `Throttled` /
`TransientError`. A call that fails as a whole has already had botocore's
standard retries (`ServiceUnavailableException` is a 5xx), so every point of
it fails at once, as in `TimestreamSink`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from v2c.contract.errors import Throttled, TransientError, V2CError
from v2c.handlers import aws_errors
from v2c.handlers.telemetry.timeseries import (
    SIGNALS,
    PointFailure,
    TimeSeriesPoint,
    store_rejection,
)

if TYPE_CHECKING:
    from mypy_boto3_firehose import FirehoseClient

MAX_BATCH_RECORDS: Final = 500  # PutRecordBatch: records per call
MAX_BATCH_BYTES: Final = 4 * 1024 * 1024  # PutRecordBatch: bytes per call
MAX_RECORD_BYTES: Final = 1000 * 1024  # a record's data, before base64
RECORD_BYTES: Final = 5 * 1024  # Firehose's billing unit per Direct PUT record
# Firehose's answer for a record (or a call) over the stream's throughput.
SERVICE_UNAVAILABLE: Final = "ServiceUnavailableException"
# The request itself was wrong (a limit exceeded): sending it again fails again.
_REFUSED: Final = frozenset({"InvalidArgumentException"})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

JsonValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class FirehoseRetry:
    """`attempts` calls in all for a record the answer marks failed; before
    call n+1 wait min(initial * 2**(n-1), max) + U(0, jitter), so concurrent
    writers spread out while every wait still grows. The defaults keep the
    worst case (~0.25 s) well inside a Lambda's budget. Tests pass a
    recording `sleep`."""

    attempts: int = 3
    initial_s: float = 0.05
    max_s: float = 1.0
    jitter_s: float = 0.05
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")


def archive_record(point: TimeSeriesPoint) -> dict[str, JsonValue]:
    """The point as one archive record (the schema of the module docstring)."""
    time_ms = point.time_us // 1000
    record: dict[str, JsonValue] = {
        "vehicle_id": point.vehicle_id,
        "region": point.region,
        "model": point.model,
        "time_us": point.time_us,
        "timestamp_ms": time_ms,
        "timestamp": iso_millis(time_ms),
        "message_id": point.message_id,
    }
    measures = {m.name: m.value for m in point.measures}
    record.update({name: measures.get(name) for name in SIGNALS})
    return record


def encode(point: TimeSeriesPoint) -> bytes:
    """One NDJSON line (newline included): what a Firehose record carries."""
    text = json.dumps(archive_record(point), separators=(",", ":"), allow_nan=False)
    return text.encode() + b"\n"


def iso_millis(epoch_ms: int) -> str:
    """ISO 8601 UTC to the millisecond, from integer ms (no float rounding)."""
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def chunks(
    sizes: Sequence[int],
    max_records: int = MAX_BATCH_RECORDS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> list[range]:
    """Consecutive index ranges of `sizes`, in order, each at most `max_records`
    long and `max_bytes` in total: the fewest calls a greedy cut makes. Every
    size must be at most `max_bytes` (records over the per-record limit, far
    below it, are refused before this)."""
    spans: list[range] = []
    start, total = 0, 0
    for index, size in enumerate(sizes):
        if size > max_bytes:
            raise ValueError(f"a record of {size} bytes cannot fit a call of {max_bytes}")
        if index - start == max_records or total + size > max_bytes:
            spans.append(range(start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        spans.append(range(start, len(sizes)))
    return spans


def pack(sizes: Sequence[int], record_bytes: int = RECORD_BYTES) -> list[range]:
    """Consecutive lines per record: as many as fit `record_bytes` together; a
    longer line goes alone (it is billed by its size anyway). 0: one line each."""
    spans: list[range] = []
    start, total = 0, 0
    for index, size in enumerate(sizes):
        if index > start and (record_bytes <= 0 or total + size > record_bytes):
            spans.append(range(start, index))
            start, total = index, 0
        total += size
    if start < len(sizes):
        spans.append(range(start, len(sizes)))
    return spans


@dataclass(slots=True)
class _Entry:
    points: tuple[TimeSeriesPoint, ...]
    data: bytes


@dataclass(slots=True)
class _Attempt:
    """What one call left: the entries that failed, and whether a retry can help."""

    failed: list[tuple[_Entry, V2CError]]
    final: bool = False


class FirehoseSink:
    """`TimeSeriesSink` over a Firehose delivery stream (see the module docstring)."""

    name = "firehose"

    def __init__(
        self,
        client: FirehoseClient,
        stream: str,
        *,
        retry: FirehoseRetry | None = None,
        record_bytes: int = RECORD_BYTES,
    ) -> None:
        self._firehose = client
        self._stream = stream
        self._retry = retry or FirehoseRetry()
        self._record_bytes = record_bytes
        self._lock = threading.Lock()
        self.requests = 0  # PutRecordBatch calls, retries included

    def write(self, points: Sequence[TimeSeriesPoint]) -> list[PointFailure]:
        failures: list[PointFailure] = []
        lines: list[tuple[TimeSeriesPoint, bytes]] = []
        for point in points:
            try:
                data = encode(point)
            except ValueError as exc:  # a NaN or infinity: no JSON number
                failures.append((point, store_rejection(f"not encodable as JSON: {exc}")))
                continue
            if len(data) > MAX_RECORD_BYTES:
                reason = f"record too large: {len(data)} bytes, Firehose takes {MAX_RECORD_BYTES}"
                failures.append((point, store_rejection(reason)))
                continue
            lines.append((point, data))
        entries = [
            _Entry(tuple(lines[i][0] for i in span), b"".join(lines[i][1] for i in span))
            for span in pack([len(data) for _, data in lines], self._record_bytes)
        ]
        for span in chunks([len(entry.data) for entry in entries]):
            failures += self._write_chunk([entries[i] for i in span])
        return failures

    def _write_chunk(self, chunk: list[_Entry]) -> list[PointFailure]:
        pending = chunk

        def put() -> _Attempt:
            nonlocal pending
            attempt = self._put(pending)
            pending = [entry for entry, _error in attempt.failed]
            return attempt

        retrying = Retrying(
            stop=stop_after_attempt(self._retry.attempts),
            # Built from parts: wait_exponential_jitter renamed its arguments in 9.2.
            wait=wait_exponential(multiplier=self._retry.initial_s, max=self._retry.max_s)
            + wait_random(0, self._retry.jitter_s),
            retry=retry_if_result(lambda attempt: bool(attempt.failed) and not attempt.final),
            retry_error_callback=_last_result,
            sleep=self._retry.sleep,
        )
        last: _Attempt = retrying(put)
        return [(point, error) for entry, error in last.failed for point in entry.points]

    def _put(self, entries: list[_Entry]) -> _Attempt:
        """One PutRecordBatch call; the entries it did not deliver, with why."""
        with self._lock:
            self.requests += 1
        records: Any = [{"Data": entry.data} for entry in entries]
        try:
            answer = self._firehose.put_record_batch(
                DeliveryStreamName=self._stream, Records=records
            )
        except ClientError as exc:
            return _Attempt([(entry, _call_error(exc)) for entry in entries], final=True)
        except BotoCoreError as exc:
            error = TransientError(f"Firehose PutRecordBatch failed: {exc}")
            return _Attempt([(entry, error) for entry in entries], final=True)
        if not answer.get("FailedPutCount"):
            return _Attempt([])
        responses = answer.get("RequestResponses", [])
        failed: list[tuple[_Entry, V2CError]] = []
        for entry, response in zip(entries, responses, strict=False):
            code = response.get("ErrorCode")
            if code:
                failed.append((entry, _record_error(code, response.get("ErrorMessage", ""))))
        return _Attempt(failed)


def _last_result(state: RetryCallState) -> _Attempt:
    """Out of attempts: what the last call left fails (tenacity would raise)."""
    assert state.outcome is not None  # tenacity sets it before the callback
    result: _Attempt = state.outcome.result()
    return result


def _record_error(code: str, message: str) -> V2CError:
    text = f"Firehose PutRecordBatch left the record undelivered ({code}: {message})"
    return Throttled(text) if code == SERVICE_UNAVAILABLE else TransientError(text)


def _call_error(exc: ClientError) -> V2CError:
    if aws_errors.error_code(exc) == SERVICE_UNAVAILABLE:
        return Throttled(f"Firehose PutRecordBatch throttled ({SERVICE_UNAVAILABLE})")
    return aws_errors.translate("Firehose PutRecordBatch", exc, refused=_REFUSED)
