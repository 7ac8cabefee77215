"""The vehicle registry as campaigns see it: who is out there, and what they run.

A registry item is `vehicle_id`, `make`, `model`, `year` (N), `region`,
`hardware_id`, `installed_version` and `groups` (a string set). Campaign
targeting evaluates the parsed filter (`target_filter.evaluate`) on each
item in Python: the filter text is never spliced into an expression.
A filter that pins `model = '...'` reads one partition of the
`by-model-year` index instead of scanning the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.topics import validate_vin
from v2c.handlers.ota.ddb import from_item, to_item, transient
from v2c.handlers.ota.domain.target_filter import And, Comparison, Expr, Op, evaluate

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BATCH_WRITE_MAX: Final = 25
BATCH_GET_MAX: Final = 100


@dataclass(frozen=True, slots=True)
class Vehicle:
    vehicle_id: str
    model: str
    region: str
    year: int = 0
    make: str = ""
    hardware_id: str = ""
    installed_version: str = ""
    groups: frozenset[str] = field(default_factory=frozenset)

    def attributes(self) -> dict[str, object]:
        """What a target filter sees (`vin` is the vehicle id)."""
        values: dict[str, object] = asdict(self)
        values["vin"] = self.vehicle_id
        return values

    def to_item(self) -> dict[str, Any]:
        values = asdict(self)
        values["groups"] = set(self.groups) or None  # DynamoDB has no empty sets
        return values

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Vehicle:
        return cls(
            vehicle_id=str(item["vehicle_id"]),
            model=str(item.get("model", "")),
            region=str(item.get("region", "")),
            year=int(item.get("year", 0)),
            make=str(item.get("make", "")),
            hardware_id=str(item.get("hardware_id", "")),
            installed_version=str(item.get("installed_version", "")),
            groups=frozenset(item.get("groups", ())),
        )


def pinned_model(expr: Expr | None) -> str | None:
    """The model a filter requires (`model = 'X'` at the top or in a top-level AND)."""
    match expr:
        case Comparison("model", Op.EQ, str(model)):
            return model
        case And(operands):
            for operand in operands:
                found = pinned_model(operand)
                if found is not None:
                    return found
    return None


class FleetRegistry:
    """Reads and writes the vehicle registry table."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._ddb = client
        self._table = table

    def put(self, vehicles: Iterable[Vehicle]) -> int:
        """Register (or overwrite) vehicles; returns how many were written."""
        batch: list[Vehicle] = []
        written = 0
        for vehicle in vehicles:
            validate_vin(vehicle.vehicle_id)
            batch.append(vehicle)
            if len(batch) == BATCH_WRITE_MAX:
                written += self._write(batch)
                batch = []
        if batch:
            written += self._write(batch)
        return written

    def _write(self, batch: list[Vehicle]) -> int:
        requests: Any = [{"PutRequest": {"Item": to_item(v.to_item())}} for v in batch]
        try:
            pending = {self._table: requests}
            for _ in range(8):
                answer = self._ddb.batch_write_item(RequestItems=pending)
                pending = dict(answer.get("UnprocessedItems") or {})
                if not pending:
                    return len(batch)
        except (BotoCoreError, ClientError) as exc:
            raise transient("registering vehicles", exc) from exc
        raise transient(
            "registering vehicles",
            ClientError({"Error": {"Code": "ThrottlingException"}}, "BatchWriteItem"),
        )

    def get(self, vehicle_id: str) -> Vehicle | None:
        try:
            answer = self._ddb.get_item(
                TableName=self._table, Key={"vehicle_id": {"S": vehicle_id}}, ConsistentRead=True
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient("reading the vehicle registry", exc) from exc
        item = answer.get("Item")
        return Vehicle.from_item(from_item(item)) if item else None

    def get_many(self, vehicle_ids: Iterable[str]) -> dict[str, Vehicle]:
        ids = list(dict.fromkeys(vehicle_ids))
        found: dict[str, Vehicle] = {}
        for start in range(0, len(ids), BATCH_GET_MAX):
            keys: Any = [{"vehicle_id": {"S": v}} for v in ids[start : start + BATCH_GET_MAX]]
            pending: Any = {self._table: {"Keys": keys, "ConsistentRead": True}}
            try:
                while pending:
                    answer = self._ddb.batch_get_item(RequestItems=pending)
                    for item in answer.get("Responses", {}).get(self._table, []):
                        vehicle = Vehicle.from_item(from_item(item))
                        found[vehicle.vehicle_id] = vehicle
                    pending = answer.get("UnprocessedKeys") or None
            except (BotoCoreError, ClientError) as exc:
                raise transient("reading the vehicle registry", exc) from exc
        return found

    def set_installed_version(self, vehicle_id: str, version: str) -> None:
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"vehicle_id": {"S": vehicle_id}},
                UpdateExpression="SET installed_version = :v",
                ConditionExpression="attribute_exists(vehicle_id)",
                ExpressionAttributeValues={":v": {"S": version}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return  # not registered: nothing to keep in step
            raise transient("recording the installed version", exc) from exc
        except BotoCoreError as exc:
            raise transient("recording the installed version", exc) from exc

    def _pages(self, model: str | None) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"TableName": self._table}
        if model is not None:
            kwargs.update(
                IndexName="by-model-year",
                KeyConditionExpression="#m = :m",
                ExpressionAttributeNames={"#m": "model"},
                ExpressionAttributeValues={":m": {"S": model}},
            )
        while True:
            try:
                answer: Any = (
                    self._ddb.query(**kwargs) if model is not None else self._ddb.scan(**kwargs)
                )
            except (BotoCoreError, ClientError) as exc:
                raise transient("reading the vehicle registry", exc) from exc
            for item in answer.get("Items", []):
                yield from_item(item)
            last = answer.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def select(
        self,
        expr: Expr | None,
        devices: Iterable[str] = (),
        groups: Iterable[str] = (),
    ) -> list[Vehicle]:
        """The registered vehicles a campaign targets: the union of the listed
        devices, the members of the listed groups and the filter's matches,
        each once, ordered by vehicle id."""
        chosen: dict[str, Vehicle] = dict(self.get_many(devices))
        wanted_groups = frozenset(groups)
        if expr is not None or wanted_groups:
            model = pinned_model(expr) if not wanted_groups else None
            for item in self._pages(model):
                vehicle = Vehicle.from_item(item)
                if (expr is not None and evaluate(expr, vehicle.attributes())) or (
                    wanted_groups & vehicle.groups
                ):
                    chosen.setdefault(vehicle.vehicle_id, vehicle)
        return [chosen[v] for v in sorted(chosen)]
