"""DynamoDB access for per-vehicle updates.

A state change is one `TransactWriteItems`: the record, conditioned on the
state and sequence it was read with, and the campaign's counters moved by
`ADD`. A lost race raises `StaleWrite`; the caller re-reads and applies the
report again (where it is then a duplicate, or still applies).

A dispatch chunk is one `TransactWriteItems` too (`create_many`): the
campaign's cursor move and up to 99 new records, each conditioned on not
existing, so a chunk is recorded whole or not at all.

A batch of status reports is read with `BatchGetItem` (`find_reported`) and
written as a few transactions of many records (`save_reported`): a cancelled
transaction's reasons say which records lost their condition, so only those
are read again (`StaleRecords`).

Every write also keeps the record's place in the sparse `by-due` index
(`domain.timeouts`): `due_at_ms` and `due_shard` while the monitor has
something to do about it (a deadline in flight, a recheck while waiting),
removed once it has not, so `due` reads only the updates whose time came.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import NotFound, Throttled, V2CError
from v2c.handlers.ota.concurrency import StaleRecords, StaleWrite
from v2c.handlers.ota.ddb import (
    error_code,
    from_item,
    is_condition_failure,
    to_item,
    to_value,
    transient,
)
from v2c.handlers.ota.domain.report_batch import TRANSACTION_ITEMS
from v2c.handlers.ota.domain.timeouts import DueKind, due_at, due_kind, due_shard, shards_of
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.stores import CampaignWrite, RecordsRead, UpdateKey
from v2c.handlers.ota.updates.record import VehicleUpdate

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

MACHINE_FIELDS: Final = ("state", "last_sequence", "retries", "decided_by_cloud")
BATCH_GET_KEYS: Final = 100  # BatchGetItem's limit per request
# Rounds of BatchGetItem for the keys DynamoDB left unprocessed (it does so
# under throttling, with a 200 answer botocore does not retry).
UNPROCESSED_ROUNDS: Final = 4
DUE_INDEX: Final = "by-due"
DUE_ATTRS: Final = ("due_at_ms", "due_shard")


def _due_attrs(update: VehicleUpdate) -> dict[str, Any]:
    """The record's `by-due` index attributes; empty: not in the index."""
    kind, at = due_kind(update), due_at(update)
    if kind is None or at is None:
        return {}
    return {"due_at_ms": at, "due_shard": due_shard(kind, update.vehicle_id)}


@dataclass(frozen=True, slots=True, eq=False)
class TransactItem(CampaignWrite):
    """A campaign write as one `TransactWriteItems` entry (made by
    `CampaignRepository`, committed here with the update record)."""

    item: Mapping[str, Any]


def _item(write: CampaignWrite | None) -> Mapping[str, Any] | None:
    if write is None:
        return None
    if not isinstance(write, TransactItem):
        raise TypeError(f"a DynamoDB update store cannot commit {type(write).__name__}")
    return write.item


class UpdateRepository:
    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._ddb = client
        self.table = table
        self._sleep = sleep

    def _key(self, vehicle_id: str, update_id: str) -> dict[str, Any]:
        return {"vehicle_id": {"S": vehicle_id}, "update_id": {"S": update_id}}

    def find(self, vehicle_id: str, update_id: str) -> VehicleUpdate | None:
        try:
            answer = self._ddb.get_item(
                TableName=self.table, Key=self._key(vehicle_id, update_id), ConsistentRead=True
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient("reading an update", exc) from exc
        item = answer.get("Item")
        return VehicleUpdate.from_item(from_item(item)) if item else None

    def get(self, vehicle_id: str, update_id: str) -> VehicleUpdate:
        found = self.find(vehicle_id, update_id)
        if found is None:
            raise NotFound(f"no update {update_id!r} for vehicle {vehicle_id!r}")
        return found

    def by_device_update_id(self, device_update_id: str) -> VehicleUpdate:
        items = list(
            self._query(
                IndexName="by-update",
                KeyConditionExpression="device_update_id = :d",
                ExpressionAttributeValues={":d": {"S": device_update_id}},
            )
        )
        if not items:
            raise NotFound(f"update {device_update_id!r} not found")
        # The index is eventually consistent: read the record itself.
        return self.get(items[0].vehicle_id, items[0].update_id)

    def for_vehicle(self, vehicle_id: str) -> list[VehicleUpdate]:
        return sorted(
            self._query(
                KeyConditionExpression="vehicle_id = :v",
                ExpressionAttributeValues={":v": {"S": vehicle_id}},
                ConsistentRead=True,
            ),
            key=lambda u: (u.created_at_ms, u.update_id),
        )

    def for_campaign(
        self, campaign_id: str, states: frozenset[UpdateState] | None = None
    ) -> Iterator[VehicleUpdate]:
        for update in self._query(
            IndexName="by-campaign",
            KeyConditionExpression="campaign_id = :c",
            ExpressionAttributeValues={":c": {"S": campaign_id}},
        ):
            if states is None or update.state in states:
                yield update

    def due(self, kind: DueKind, now_ms: int, limit: int) -> list[VehicleUpdate]:
        """Up to `limit` updates of `kind` due by `now_ms`, earliest first: one
        Query per shard of the sparse `by-due` index (eventually consistent:
        read a record again before acting on it)."""
        found: list[VehicleUpdate] = []
        for shard in shards_of(kind):
            pages = self._query(
                IndexName=DUE_INDEX,
                KeyConditionExpression="due_shard = :s AND due_at_ms <= :now",
                ExpressionAttributeValues={":s": {"S": shard}, ":now": {"N": str(now_ms)}},
                Limit=limit,
            )
            found.extend(itertools.islice(pages, limit))
        found.sort(key=lambda u: (due_at(u) or 0, u.vehicle_id, u.update_id))
        return found[:limit]

    def _query(self, **kwargs: Any) -> Iterator[VehicleUpdate]:
        kwargs["TableName"] = self.table
        while True:
            try:
                answer: Any = self._ddb.query(**kwargs)
            except (BotoCoreError, ClientError) as exc:
                raise transient("querying updates", exc) from exc
            for item in answer.get("Items", []):
                yield VehicleUpdate.from_item(from_item(item))
            last = answer.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def create(self, update: VehicleUpdate, with_campaign: CampaignWrite | None = None) -> bool:
        """Write a new record (and move the campaign's counters with it);
        False if the record already exists (a retried dispatch)."""
        put = self._put_new(update)
        return self._transact([put, _item(with_campaign)], "recording a notification")

    def _put_new(self, update: VehicleUpdate) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self.table,
                "Item": to_item({**update.to_item(), **_due_attrs(update)}),
                "ConditionExpression": "attribute_not_exists(update_id)",
            }
        }

    def create_many(
        self, updates: Sequence[VehicleUpdate], with_campaign: CampaignWrite | None = None
    ) -> bool:
        """A dispatch chunk: every new record and the campaign's cursor move
        in one `TransactWriteItems` (at most `TRANSACTION_ITEMS` items); False
        if a record exists or the campaign moved (nothing is written then)."""
        campaign = _item(with_campaign)
        items: list[Mapping[str, Any] | None] = [self._put_new(u) for u in updates]
        if campaign is not None:
            items.insert(0, campaign)
        if len(items) > TRANSACTION_ITEMS:
            raise ValueError(f"{len(items)} items exceed one transaction ({TRANSACTION_ITEMS})")
        if not items:
            return True
        return self._transact(items, "recording a chunk of notifications")

    def save(
        self,
        before: VehicleUpdate,
        after: VehicleUpdate,
        with_campaign: CampaignWrite | None = None,
    ) -> None:
        """Write `after` if the stored record still has `before`'s machine state."""
        update = self._conditional_update(before, after)
        if not self._transact([update, _item(with_campaign)], "recording an update's progress"):
            raise StaleWrite(f"update {after.update_id} of {after.vehicle_id} changed meanwhile")

    def find_reported(self, keys: Collection[UpdateKey]) -> RecordsRead:
        """The records a batch of reports names, 100 keys a `BatchGetItem`,
        strongly consistent (a report decided on a stale copy would lose its
        condition anyway, one round trip later). Keys still unprocessed after
        a few rounds, or of a request that failed, are returned unread."""
        unique = list(dict.fromkeys(keys))  # BatchGetItem refuses a repeated key
        found: dict[UpdateKey, VehicleUpdate] = {}
        unread: dict[UpdateKey, V2CError] = {}
        for start in range(0, len(unique), BATCH_GET_KEYS):
            pending = unique[start : start + BATCH_GET_KEYS]
            for round_ in range(UNPROCESSED_ROUNDS):
                if round_:
                    self._sleep(0.05 * 2**round_)
                request: Any = {
                    self.table: {
                        "Keys": [self._key(v, u) for v, u in pending],
                        "ConsistentRead": True,
                    }
                }
                try:
                    answer: Any = self._ddb.batch_get_item(RequestItems=request)
                except (BotoCoreError, ClientError) as exc:
                    error = transient("reading updates", exc)
                    unread.update(dict.fromkeys(pending, error))
                    pending = []
                    break
                for item in answer.get("Responses", {}).get(self.table, []):
                    update = VehicleUpdate.from_item(from_item(item))
                    found[(update.vehicle_id, update.update_id)] = update
                left = answer.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                pending = [(k["vehicle_id"]["S"], k["update_id"]["S"]) for k in left]
                if not pending:
                    break
            if pending:
                error = Throttled(f"DynamoDB left {len(pending)} update reads unprocessed")
                unread.update(dict.fromkeys(pending, error))
        return RecordsRead(found, unread)

    def save_reported(
        self,
        changes: Sequence[tuple[VehicleUpdate, VehicleUpdate]],
        with_campaigns: Sequence[CampaignWrite] = (),
    ) -> None:
        """One `TransactWriteItems`: every record conditioned on its `before`,
        then the campaign writes. A cancellation whose reasons name failed
        conditions raises `StaleRecords` with exactly those records; one
        cancelled for another reason (a concurrent transaction on the same
        campaign item: `TransactionConflict`) is transient, tried again."""
        items: Any = [self._conditional_update(b, a) for b, a in changes]
        items += [i for i in map(_item, with_campaigns) if i is not None]
        if len(items) > TRANSACTION_ITEMS:
            raise ValueError(f"{len(items)} items exceed one transaction ({TRANSACTION_ITEMS})")
        if not items:
            return
        keys = [(a.vehicle_id, a.update_id) for _, a in changes]
        action = "recording status reports"
        try:
            if len(items) == 1:
                self._ddb.update_item(**items[0]["Update"])
            else:
                self._ddb.transact_write_items(TransactItems=items)
        except ClientError as exc:
            stale = _lost_conditions(exc, keys)
            if stale:
                raise StaleRecords(f"{len(stale)} of {len(keys)} updates moved", stale) from exc
            raise transient(action, exc) from exc
        except BotoCoreError as exc:
            raise transient(action, exc) from exc

    def _conditional_update(self, before: VehicleUpdate, after: VehicleUpdate) -> dict[str, Any]:
        """`after` as a transaction's Update item, conditioned on `before`."""
        due = _due_attrs(after)
        item = {**after.to_item(), **due}
        previous = {**before.to_item(), **_due_attrs(before)}
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        sets: list[str] = []
        for number, (attr, value) in enumerate(item.items()):
            if attr in ("vehicle_id", "update_id") or value is None:
                continue
            if attr in previous and previous[attr] == value and attr not in MACHINE_FIELDS:
                continue  # unchanged: a smaller expression, the same item
            names[f"#n{number}"] = attr
            values[f":v{number}"] = to_value(value)
            sets.append(f"#n{number} = :v{number}")
        expression = "SET " + ", ".join(sets)
        if not due:  # out of the index (removing an absent attribute is a no-op)
            names.update({f"#d{n}": attr for n, attr in enumerate(DUE_ATTRS)})
            expression += " REMOVE " + ", ".join(f"#d{n}" for n in range(len(DUE_ATTRS)))
        names["#state"] = "state"
        names["#seq"] = "last_sequence"
        values[":before_state"] = to_value(before.state.value)
        values[":before_seq"] = to_value(before.last_sequence)
        return {
            "Update": {
                "TableName": self.table,
                "Key": self._key(after.vehicle_id, after.update_id),
                "UpdateExpression": expression,
                "ConditionExpression": "#state = :before_state AND #seq = :before_seq",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def _transact(self, items: list[Mapping[str, Any] | None], action: str) -> bool:
        present: Any = [i for i in items if i is not None]
        try:
            if len(present) == 1 and "Put" in present[0]:
                self._ddb.put_item(**present[0]["Put"])
            elif len(present) == 1:
                self._ddb.update_item(**present[0]["Update"])
            else:
                self._ddb.transact_write_items(TransactItems=present)
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise transient(action, exc) from exc
        except BotoCoreError as exc:
            raise transient(action, exc) from exc
        return True


def _lost_conditions(exc: ClientError, keys: Sequence[UpdateKey]) -> set[UpdateKey]:
    """The records of `keys` (the transaction's first items, in order) whose
    condition failed. A condition failure the reasons do not place (a lone
    UpdateItem, or reasons missing) is taken as every record's: re-reading a
    record that did not move costs a read and decides the same."""
    if not is_condition_failure(exc):
        return set()
    if error_code(exc) == "TransactionCanceledException":
        reasons = exc.response.get("CancellationReasons", [])
        placed = {
            keys[n]
            for n, reason in enumerate(reasons)
            if n < len(keys) and reason.get("Code") == "ConditionalCheckFailed"
        }
        if placed:
            return placed
    return set(keys)
