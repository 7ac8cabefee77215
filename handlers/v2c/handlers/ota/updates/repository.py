"""DynamoDB access for per-vehicle updates.

A state change is one `TransactWriteItems`: the record, conditioned on the
state and sequence it was read with, and the campaign's counters moved by
`ADD`. A lost race raises `StaleWrite`; the caller re-reads and applies the
report again (where it is then a duplicate, or still applies).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import NotFound
from v2c.handlers.ota.concurrency import StaleWrite
from v2c.handlers.ota.ddb import from_item, is_condition_failure, to_item, to_value, transient
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.stores import CampaignWrite
from v2c.handlers.ota.updates.record import VehicleUpdate

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

MACHINE_FIELDS: Final = ("state", "last_sequence", "retries", "decided_by_cloud")


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
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._ddb = client
        self.table = table

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
        put = {
            "Put": {
                "TableName": self.table,
                "Item": to_item(update.to_item()),
                "ConditionExpression": "attribute_not_exists(update_id)",
            }
        }
        return self._transact([put, _item(with_campaign)], "recording a notification")

    def save(
        self,
        before: VehicleUpdate,
        after: VehicleUpdate,
        with_campaign: CampaignWrite | None = None,
    ) -> None:
        """Write `after` if the stored record still has `before`'s machine state."""
        item = after.to_item()
        previous = before.to_item()
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
        names["#state"] = "state"
        names["#seq"] = "last_sequence"
        values[":before_state"] = to_value(before.state.value)
        values[":before_seq"] = to_value(before.last_sequence)
        update = {
            "Update": {
                "TableName": self.table,
                "Key": self._key(after.vehicle_id, after.update_id),
                "UpdateExpression": "SET " + ", ".join(sets),
                "ConditionExpression": "#state = :before_state AND #seq = :before_seq",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }
        if not self._transact([update, _item(with_campaign)], "recording an update's progress"):
            raise StaleWrite(f"update {after.update_id} of {after.vehicle_id} changed meanwhile")

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
