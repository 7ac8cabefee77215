"""The inventory's reads and writes of the registry table, and its fleet-index rows.

Writes are whole items, each conditioned on the item being what the caller
read (`changed_at` as read, or no item): a registration racing another, or
the status path recording an installed version meanwhile, loses instead of
overwriting (409, "changed meanwhile"). Up to 100 writes travel in one
`TransactWriteItems`; a cancelled transaction (some item lost its race)
is redone one conditional `PutItem` each, so the others still land. Every
written vehicle reaches the fleet index in one merge per call, after the
table (a failed index write is logged, as `FleetRegistry` does for
installed versions: the table holds the truth and a rebuild catches up).

Lists read the table a page at a time (`Scan`, or a `Query` of
`by-model-year` when the model is fixed), filter in Python
(`rules.VehicleQuery`) and stop at `limit` matches or after `MAX_EVALUATED`
items, whichever comes first; the position to continue from is the key of
the last item read, so the next page starts exactly after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import InvalidField, V2CError
from v2c.handlers.ota.ddb import error_code, from_item, to_item, to_value, transient
from v2c.handlers.ota.fleet import registry_item, registry_items
from v2c.handlers.ota.fleet_index.store import FleetIndex
from v2c.handlers.vehicles.record import VehicleRecord
from v2c.handlers.vehicles.rules import VehicleQuery

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)

TRANSACT_MAX: Final = 100
MAX_EVALUATED: Final = 5_000  # items one list request reads at most
READ_PAGE: Final = 1_000  # items per Scan/Query request
BY_MODEL: Final = "by-model-year"
Key = dict[str, str | int]


@dataclass(frozen=True, slots=True)
class Page:
    records: list[VehicleRecord]
    next_key: Key | None  # where the next page starts; None: the list is done
    by_model: bool  # read from `by-model-year` (the key carries model and year)


class InventoryRepository:
    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        index: FleetIndex | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ddb = client
        self._table = table
        self._index = index
        self._clock = clock

    # -- reads -----------------------------------------------------------------------

    def get(self, vehicle_id: str) -> VehicleRecord | None:
        item = registry_item(self._ddb, self._table, vehicle_id)
        return VehicleRecord.from_item(item) if item else None

    def get_many(self, vehicle_ids: Iterable[str]) -> dict[str, VehicleRecord]:
        items = registry_items(self._ddb, self._table, vehicle_ids)
        records = (VehicleRecord.from_item(item) for item in items)
        return {record.vehicle_id: record for record in records}

    def page(self, query: VehicleQuery, limit: int, start: Key | None = None) -> Page:
        """Up to `limit` records matching `query`, from `start` on."""
        by_model = query.model is not None
        kwargs: dict[str, Any] = {"TableName": self._table, "Limit": READ_PAGE}
        if by_model:
            kwargs.update(
                IndexName=BY_MODEL,
                KeyConditionExpression="#m = :m",
                ExpressionAttributeNames={"#m": "model"},
                ExpressionAttributeValues={":m": {"S": query.model}},
            )
        if start is not None:
            kwargs["ExclusiveStartKey"] = {k: to_value(v) for k, v in start.items()}
        found: list[VehicleRecord] = []
        evaluated = 0
        while True:
            try:
                answer: Any = self._ddb.query(**kwargs) if by_model else self._ddb.scan(**kwargs)
            except ClientError as exc:
                if error_code(exc) == "ValidationException" and start is not None:
                    raise InvalidField("cursor", "names no position of this list") from exc
                raise transient("listing vehicles", exc) from exc
            except BotoCoreError as exc:
                raise transient("listing vehicles", exc) from exc
            for item in answer.get("Items", []):
                evaluated += 1
                record = VehicleRecord.from_item(from_item(item))
                if query.matches(record):
                    found.append(record)
                    if len(found) == limit:
                        return Page(found, _key(record, by_model), by_model)
            last = answer.get("LastEvaluatedKey")
            if not last:
                return Page(found, None, by_model)
            if evaluated >= MAX_EVALUATED:
                return Page(found, {k: v for k, v in from_item(last).items()}, by_model)
            kwargs["ExclusiveStartKey"] = last

    # -- writes ----------------------------------------------------------------------

    def _stamp(self, before: VehicleRecord | None) -> int:
        now = int(self._clock() * 1000)
        return max(now, before.changed_at + 1) if before is not None else now

    def save(
        self, changes: Sequence[tuple[VehicleRecord | None, VehicleRecord]]
    ) -> list[VehicleRecord | None]:
        """Write each `after` over its `before` (None: no item yet); per
        change, the stored record, or None when the item changed meanwhile.
        Distinct vehicles only."""
        stamped = [
            (before, replace(after, changed_at=self._stamp(before))) for before, after in changes
        ]
        results: list[VehicleRecord | None] = []
        for start in range(0, len(stamped), TRANSACT_MAX):
            chunk = stamped[start : start + TRANSACT_MAX]
            results += self._save_chunk(chunk)
        written = [r for r in results if r is not None]
        self._index_rows(written)
        return results

    def _put(self, before: VehicleRecord | None, after: VehicleRecord) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self._table, "Item": to_item(after.to_item())}
        if before is None:
            put["ConditionExpression"] = "attribute_not_exists(vehicle_id)"
        elif before.changed_at:
            put["ConditionExpression"] = "changed_at = :seen"
            put["ExpressionAttributeValues"] = {":seen": {"N": str(before.changed_at)}}
        else:  # written before items carried a stamp
            put["ConditionExpression"] = (
                "attribute_exists(vehicle_id) AND attribute_not_exists(changed_at)"
            )
        return put

    def _save_chunk(
        self, chunk: Sequence[tuple[VehicleRecord | None, VehicleRecord]]
    ) -> list[VehicleRecord | None]:
        if len(chunk) == 1:
            return [self._save_one(*chunk[0])]
        items: Any = [{"Put": self._put(before, after)} for before, after in chunk]
        try:
            self._ddb.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise transient("registering vehicles", exc) from exc
            return [self._save_one(before, after) for before, after in chunk]
        except BotoCoreError as exc:
            raise transient("registering vehicles", exc) from exc
        return [after for _, after in chunk]

    def _save_one(self, before: VehicleRecord | None, after: VehicleRecord) -> VehicleRecord | None:
        try:
            self._ddb.put_item(**self._put(before, after))
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise transient("registering a vehicle", exc) from exc
        except BotoCoreError as exc:
            raise transient("registering a vehicle", exc) from exc
        return after

    def _index_rows(self, records: Sequence[VehicleRecord]) -> None:
        if self._index is None or not records:
            return
        try:
            self._index.merge([r.vehicle().index_row(r.changed_at) for r in records])
        except V2CError as exc:
            logger.error(
                "fleet index not updated with registrations (rebuild it): %s",
                exc,
                extra={"vehicles": len(records)},
            )


def _key(record: VehicleRecord, by_model: bool) -> Key:
    if by_model:
        return {"vehicle_id": record.vehicle_id, "model": record.model, "year": record.year}
    return {"vehicle_id": record.vehicle_id}
