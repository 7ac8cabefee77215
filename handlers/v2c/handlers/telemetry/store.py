"""The operational store: one DynamoDB item per sample, keyed by its identity.

Key: (vehicle_id, sample_key) with sample_key = zero-padded (epoch, sequence).
Every write of a sample lands on that one key, so a sample written twice is
stored once, whatever path, process or replay wrote it: the backstop that
BatchWriteItem needs, since it cannot carry a condition.

Writes:
* `put_new`: conditional PutItem (attribute_not_exists): the write *is* the
  durable duplicate check of the single path, one round trip for both;
* `put`: the same item unconditionally (a DLQ replay: the item may exist);
* `put_many`: BatchWriteItem in chunks of 25, UnprocessedItems retried;
* `existing` / `existing_many`: BatchGetItem (chunks of 100, keys only): the
  durable duplicate check of the batch paths (an envelope's samples, a queue
  batch of singles from many vehicles), one round trip per 100 keys.

Failures: throttling (ProvisionedThroughputExceededException,
ThrottlingException, RequestLimitExceeded), 5xx and connection errors are
retried by `RetryPolicy` (3 attempts, exponential backoff with jitter), then
reported as `Throttled` / `TransientError` for the caller to dead-letter.
This is the only retry layer: the handler's DynamoDB client is built with
botocore retries off (`aws_clients.DYNAMODB_CLIENT_CONFIG`), or 5 botocore
attempts inside each of 3 of ours would turn one throttled write into 15.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import Throttled, V2CError
from v2c.handlers import aws_errors
from v2c.handlers.aws_errors import CONDITION_FAILED, VALIDATION, error_code, retryable
from v2c.handlers.telemetry.model import OperationalRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

BATCH_WRITE_LIMIT: Final = 25  # DynamoDB's BatchWriteItem maximum
BATCH_GET_LIMIT: Final = 100  # DynamoDB's BatchGetItem maximum
DEFAULT_RETENTION_S: Final = 90 * 24 * 3600
# DynamoDB refusing the item (over 400 KB, say) is the sample's fault, not the table's.
_REFUSED: Final = frozenset({VALIDATION})

Item = dict[str, "AttributeValueTypeDef"]
ItemKey = tuple[str, str]  # (vehicle_id, sample_key): the table's key
ErrorObserver = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` tries in all; before try n+1 wait base * 2**(n-1), capped,
    with "equal jitter" (half fixed, half random) so concurrent writers
    spread out but every wait still grows."""

    attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt `failed_attempt` (1-based) failed."""
        cap = min(self.max_delay_s, self.base_delay_s * 2.0 ** (failed_attempt - 1))
        return cap / 2 + cap / 2 * self.jitter()


@dataclass(frozen=True, slots=True)
class BatchWriteResult:
    written: list[OperationalRecord]
    failed: list[tuple[OperationalRecord, V2CError]]


class RecordStore(Protocol):
    """The operational store as the service sees it."""

    def put_new(self, record: OperationalRecord) -> bool:
        """Write unless the key exists; False means a duplicate (nothing written)."""
        ...

    def put(self, record: OperationalRecord) -> None: ...

    def put_many(self, records: Sequence[OperationalRecord]) -> BatchWriteResult: ...

    def existing(self, vehicle_id: str, keys: Sequence[str]) -> set[str]:
        """The subset of `keys` (sample keys of one vehicle) already stored."""
        ...

    def existing_many(self, keys: Sequence[ItemKey]) -> set[ItemKey]:
        """The subset of `keys` ((vehicle_id, sample_key), any vehicles) already stored:
        the duplicate check of a queue batch of singles, one BatchGetItem per 100."""
        ...


def translate(exc: Exception, action: str) -> V2CError:
    """A vendor error as the hierarchy's: what the DLQ record's reason says."""
    return aws_errors.translate(f"DynamoDB {action}", exc, refused=_REFUSED)


class DynamoRecordStore:
    """`RecordStore` over a DynamoDB table (see the module docstring)."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        retry: RetryPolicy | None = None,
        retention_s: int | None = DEFAULT_RETENTION_S,
        on_error: ErrorObserver | None = None,
    ) -> None:
        self._ddb = client
        self._table = table
        self._retry = retry or RetryPolicy()
        self._retention_s = retention_s
        self._on_error = on_error or (lambda _code: None)

    def put_new(self, record: OperationalRecord) -> bool:
        try:
            self._call(
                "PutItem",
                lambda: self._ddb.put_item(
                    TableName=self._table,
                    Item=self.item(record),
                    ConditionExpression="attribute_not_exists(sample_key)",
                ),
            )
        except ClientError as exc:  # only the non-retryable ones get here
            if error_code(exc) == CONDITION_FAILED:
                return False
            raise translate(exc, "PutItem") from exc
        return True

    def put(self, record: OperationalRecord) -> None:
        try:
            self._call(
                "PutItem", lambda: self._ddb.put_item(TableName=self._table, Item=self.item(record))
            )
        except ClientError as exc:
            raise translate(exc, "PutItem") from exc

    def put_many(self, records: Sequence[OperationalRecord]) -> BatchWriteResult:
        written: list[OperationalRecord] = []
        failed: list[tuple[OperationalRecord, V2CError]] = []
        for start in range(0, len(records), BATCH_WRITE_LIMIT):
            ok, bad = self._write_chunk(records[start : start + BATCH_WRITE_LIMIT])
            written += ok
            failed += bad
        return BatchWriteResult(written, failed)

    def existing(self, vehicle_id: str, keys: Sequence[str]) -> set[str]:
        found = self.existing_many([(vehicle_id, key) for key in keys])
        return {key for _vehicle, key in found}

    def existing_many(self, keys: Sequence[ItemKey]) -> set[ItemKey]:
        unique = list(dict.fromkeys(keys))
        found: set[ItemKey] = set()
        for start in range(0, len(unique), BATCH_GET_LIMIT):
            found |= self._get_chunk(unique[start : start + BATCH_GET_LIMIT])
        return found

    # -- internals -----------------------------------------------------------

    def _call(self, action: str, request: Callable[[], object]) -> None:
        """Run `request` under the retry policy; retryable errors that outlive
        it become `Throttled`/`TransientError`, others propagate as ClientError."""
        for attempt in range(1, self._retry.attempts + 1):
            try:
                request()
                return
            except (ClientError, BotoCoreError) as exc:
                if not retryable(exc):
                    raise
                self._on_error(error_code(exc) if isinstance(exc, ClientError) else "connection")
                if attempt == self._retry.attempts:
                    raise translate(exc, action) from exc
                self._retry.sleep(self._retry.delay(attempt))

    def _write_chunk(
        self, chunk: Sequence[OperationalRecord]
    ) -> tuple[list[OperationalRecord], list[tuple[OperationalRecord, V2CError]]]:
        pending = {_item_key(record): record for record in chunk}
        error: V2CError = Throttled("DynamoDB BatchWriteItem left items unprocessed")
        for attempt in range(1, self._retry.attempts + 1):
            requests: Any = [{"PutRequest": {"Item": self.item(r)}} for r in pending.values()]
            try:
                answer = self._ddb.batch_write_item(RequestItems={self._table: requests})
            except (ClientError, BotoCoreError) as exc:
                if not retryable(exc):
                    failure = translate(exc, "BatchWriteItem")
                    return [], [(record, failure) for record in pending.values()]
                self._on_error(error_code(exc) if isinstance(exc, ClientError) else "connection")
                error = translate(exc, "BatchWriteItem")
            else:
                left = answer.get("UnprocessedItems", {}).get(self._table, [])
                unprocessed = {_key_of(r["PutRequest"]["Item"]) for r in left}
                if not unprocessed:
                    return list(chunk), []
                self._on_error("UnprocessedItems")
                pending = {key: pending[key] for key in pending if key in unprocessed}
                error = Throttled(
                    f"DynamoDB BatchWriteItem left {len(pending)} items unprocessed "
                    f"after {attempt} attempts"
                )
            if attempt < self._retry.attempts:
                self._retry.sleep(self._retry.delay(attempt))
        done = [record for record in chunk if _item_key(record) not in pending]
        return done, [(record, error) for record in pending.values()]

    def _get_chunk(self, keys: Sequence[ItemKey]) -> set[ItemKey]:
        pending: list[ItemKey] = list(keys)
        found: set[ItemKey] = set()
        for attempt in range(1, self._retry.attempts + 1):
            request: Any = {
                self._table: {
                    "Keys": [
                        {"vehicle_id": {"S": vehicle}, "sample_key": {"S": key}}
                        for vehicle, key in pending
                    ],
                    "ProjectionExpression": "vehicle_id, sample_key",
                }
            }
            try:
                answer = self._ddb.batch_get_item(RequestItems=request)
            except (ClientError, BotoCoreError) as exc:
                if not retryable(exc) or attempt == self._retry.attempts:
                    raise translate(exc, "BatchGetItem") from exc
                self._on_error(error_code(exc) if isinstance(exc, ClientError) else "connection")
            else:
                for item in answer.get("Responses", {}).get(self._table, []):
                    found.add(_key_of(item))
                unprocessed: Any = answer.get("UnprocessedKeys", {})
                left = unprocessed.get(self._table, {}).get("Keys", [])
                pending = [_key_of(key) for key in left]
                if not pending:
                    return found
                if attempt == self._retry.attempts:
                    raise Throttled(f"DynamoDB BatchGetItem left {len(pending)} keys unprocessed")
            self._retry.sleep(self._retry.delay(attempt))
        return found  # pragma: no cover - the loop returns or raises

    def item(self, record: OperationalRecord) -> Item:
        """The DynamoDB item of a record (low-level attribute values)."""
        s, a = record.sample, record.arrival
        item: Item = {
            "vehicle_id": {"S": s.vehicle_id},
            "sample_key": {"S": s.key},
            "message_id": {"S": s.message_id},
            "epoch": _n(s.epoch),
            "sequence": _n(s.sequence),
            "timestamp": _n(s.timestamp_ms),
            "schema_version": {"S": s.schema_version},
            "rpm": _n(s.rpm),
            "gear": {"S": s.gear},
            "battery_voltage_v": _n(s.battery_voltage_v),
            "state_of_charge_pct": _n(s.state_of_charge_pct),
            "coolant_temp_c": _n(s.coolant_temp_c),
            "fuel_level_pct": _n(s.fuel_level_pct),
            "odometer_km": _n(s.odometer_km),
            "diagnostic_flags": _n(s.diagnostic_flags),
            "dtc_codes": {"L": [{"S": code} for code in s.dtc_codes]},
            "ignition_on": {"BOOL": s.ignition_on},
            "charging": {"BOOL": s.charging},
            "region": {"S": a.region},
            "path": {"S": a.path.value},
            "received_at": _n(a.received_at_ms),
            "clock_skew_ms": _n(s.timestamp_ms - a.received_at_ms),
        }
        optional: dict[str, AttributeValueTypeDef] = {}
        if s.trace_id:
            optional["trace_id"] = {"S": s.trace_id}
        if s.correlation_id:
            optional["correlation_id"] = {"S": s.correlation_id}
        if s.speed_kmh is not None:
            optional["speed_kmh"] = _n(s.speed_kmh)
        if s.gps is not None:
            optional["gps"] = {
                "M": {
                    "latitude": _n(s.gps.latitude),
                    "longitude": _n(s.gps.longitude),
                    "altitude_m": _n(s.gps.altitude_m),
                    "heading_deg": _n(s.gps.heading_deg),
                }
            }
        if s.tires is not None:
            optional["tire_pressures_kpa"] = {
                "M": {
                    "front_left": _n(s.tires.front_left_kpa),
                    "front_right": _n(s.tires.front_right_kpa),
                    "rear_left": _n(s.tires.rear_left_kpa),
                    "rear_right": _n(s.tires.rear_right_kpa),
                }
            }
        if a.batch_id:
            optional["batch_id"] = {"S": a.batch_id}
            optional["batch_index"] = _n(a.batch_index)
        if record.vehicle is not None:
            optional["make"] = {"S": record.vehicle.make}
            optional["model"] = {"S": record.vehicle.model}
            optional["year"] = _n(record.vehicle.year)
        if self._retention_s is not None:
            optional["expires_at"] = _n(a.received_at_ms // 1000 + self._retention_s)
        item.update(optional)
        return item


def _item_key(record: OperationalRecord) -> ItemKey:
    return (record.sample.vehicle_id, record.key)


def _key_of(item: Mapping[str, Any]) -> ItemKey:
    """The key of an item (or key) as DynamoDB's low-level API returns it."""
    return (str(item["vehicle_id"]["S"]), str(item["sample_key"]["S"]))


def _n(value: float) -> AttributeValueTypeDef:
    """A DynamoDB number: `repr` is the shortest text that reads back as the same float."""
    return {"N": repr(value)}


class InMemoryRecordStore:
    """`RecordStore` in a dict: for unit tests and for a gateway run without AWS."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], OperationalRecord] = {}
        self._lock = threading.Lock()
        self.writes = 0  # every put, duplicates included: rewrites are visible

    def put_new(self, record: OperationalRecord) -> bool:
        with self._lock:
            key = (record.sample.vehicle_id, record.key)
            if key in self._records:
                return False
            self._records[key] = record
            self.writes += 1
            return True

    def put(self, record: OperationalRecord) -> None:
        with self._lock:
            self._records[(record.sample.vehicle_id, record.key)] = record
            self.writes += 1

    def put_many(self, records: Sequence[OperationalRecord]) -> BatchWriteResult:
        for record in records:
            self.put(record)
        return BatchWriteResult(list(records), [])

    def existing(self, vehicle_id: str, keys: Sequence[str]) -> set[str]:
        with self._lock:
            return {key for key in keys if (vehicle_id, key) in self._records}

    def existing_many(self, keys: Sequence[ItemKey]) -> set[ItemKey]:
        with self._lock:
            return {key for key in keys if key in self._records}

    def records(self) -> Iterator[OperationalRecord]:
        with self._lock:
            snapshot = list(self._records.values())
        yield from snapshot

    def count_by_vehicle(self) -> Mapping[str, int]:
        counts: dict[str, int] = {}
        for record in self.records():
            counts[record.sample.vehicle_id] = counts.get(record.sample.vehicle_id, 0) + 1
        return counts
