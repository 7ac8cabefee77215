"""The vehicle registry as campaigns see it: who is out there, and what they run.

A registry item is `vehicle_id`, `make`, `model`, `year` (N), `region`,
`hardware_id`, `installed_version`, `groups` (a string set), `status`
(`active`, or `decommissioned`: kept for the record, never targeted) and
`changed_at` (N, epoch ms of its last write); onboarding keeps more in the
same item (`v2c.handlers.vehicles.record`). The table is the source of truth.

`beta_opt_in` (BR-OTA-009: beta firmware needs the vehicle's explicit
opt-in) lives in the item's free-form `attributes` map as
`"beta_opt_in": "true"`, where the vehicles API already writes (`PATCH
/vehicles/{id}` with `{"attributes": {"beta_opt_in": "true"}}`, null to opt
out; `?attribute=beta_opt_in=true` lists who opted in): one place, kept by
every writer of the item. Absent or anything but "true" is no opt-in. The
fleet index does not carry it: a beta campaign's targets are checked against
the table (`campaigns.targeting`).

Beside it, when configured with one, the registry keeps the fleet index
(`fleet_index`): every write here reaches the index in the same call
(registrations fold into its shards, installed versions become deltas), so
campaign creation reads 100,000 vehicles in ~20 requests instead of paging
through the table. `select` still reads the table (exact; a filter pinning
`model = '...'` reads one partition of `by-model-year`); `snapshot` reads
the index (eventually consistent); `rebuild_index` makes the index again
from a scan of the table. Campaign targeting evaluates the parsed filter in
Python either way: the filter text is never spliced into an expression.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import V2CError
from v2c.contract.topics import validate_vin
from v2c.handlers.ota.ddb import from_item, to_item, transient
from v2c.handlers.ota.domain.target_filter import And, Comparison, Expr, Op, evaluate
from v2c.handlers.ota.fleet_index.codec import IndexRow, Patch
from v2c.handlers.ota.fleet_index.select import FleetSnapshot
from v2c.handlers.ota.fleet_index.store import FleetIndex

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)

BATCH_WRITE_MAX: Final = 25
BATCH_GET_MAX: Final = 100
TRANSACT_MAX: Final = 100  # DynamoDB's TransactWriteItems maximum
# A rebuild keeps index rows changed this long before its scan began and
# not seen by it: writers' clocks differ by less than this.
REBUILD_SKEW_MS: Final = 60_000
# The monitor folds a model's deltas once it has this many, or one this old.
COMPACT_MIN_DELTAS: Final = 200
COMPACT_MIN_AGE_MS: Final = 30_000
ACTIVE: Final = "active"
DECOMMISSIONED: Final = "decommissioned"
BETA_OPT_IN: Final = "beta_opt_in"  # the attribute's key in the item's `attributes`
# A recorded version is a report from the vehicle: it was seen then too.
_SET_VERSION: Final = "SET installed_version = :v, changed_at = :t, last_seen_at = :t"


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
    active: bool = True  # False: decommissioned, never a campaign target
    beta_opt_in: bool = False  # BR-OTA-009 (see the module docstring)

    def attributes(self) -> dict[str, object]:
        """What a target filter sees (`vin` is the vehicle id)."""
        values: dict[str, object] = asdict(self)
        values["vin"] = self.vehicle_id
        return values

    def to_item(self) -> dict[str, Any]:
        values = asdict(self)
        values["groups"] = set(self.groups) or None  # DynamoDB has no empty sets
        values["status"] = ACTIVE if values.pop("active") else DECOMMISSIONED
        values["attributes"] = {BETA_OPT_IN: "true"} if values.pop(BETA_OPT_IN) else None
        return values

    def index_row(self, stamp: int) -> IndexRow:
        return IndexRow(
            self.vehicle_id,
            self.model,
            self.region,
            self.year,
            self.make,
            self.hardware_id,
            self.installed_version,
            tuple(sorted(self.groups)),
            stamp,
            retired=not self.active,
        )

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
            active=item.get("status", ACTIVE) != DECOMMISSIONED,
            beta_opt_in=opted_in_to_beta(item),
        )


def opted_in_to_beta(item: Mapping[str, Any]) -> bool:
    """Whether a registry item opts in to beta firmware (BR-OTA-009)."""
    attributes = item.get("attributes")
    if not isinstance(attributes, Mapping):
        return False
    return str(attributes.get(BETA_OPT_IN, "")).strip().lower() == "true"


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


def _index_row(item: Mapping[str, Any]) -> IndexRow:
    vehicle = Vehicle.from_item(dict(item))
    return vehicle.index_row(int(item.get("changed_at", 0)))


def registry_item(ddb: Any, table: str, vehicle_id: str) -> dict[str, Any] | None:
    """One registry item (plain values), read consistently; the campaign side
    (`FleetRegistry`) and the inventory (`vehicles.repository`) share it."""
    try:
        answer = ddb.get_item(
            TableName=table, Key={"vehicle_id": {"S": vehicle_id}}, ConsistentRead=True
        )
    except (BotoCoreError, ClientError) as exc:
        raise transient("reading the vehicle registry", exc) from exc
    item = answer.get("Item")
    return from_item(item) if item else None


def registry_items(ddb: Any, table: str, vehicle_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The registry items of `vehicle_ids` that exist (plain values): one
    consistent BatchGetItem per 100, unprocessed keys asked again."""
    ids = list(dict.fromkeys(vehicle_ids))
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), BATCH_GET_MAX):
        keys: Any = [{"vehicle_id": {"S": v}} for v in ids[start : start + BATCH_GET_MAX]]
        pending: Any = {table: {"Keys": keys, "ConsistentRead": True}}
        try:
            while pending:
                answer = ddb.batch_get_item(RequestItems=pending)
                found += [from_item(item) for item in answer.get("Responses", {}).get(table, [])]
                pending = answer.get("UnprocessedKeys") or None
        except (BotoCoreError, ClientError) as exc:
            raise transient("reading the vehicle registry", exc) from exc
    return found


class FleetRegistry:
    """Reads and writes the vehicle registry table, and keeps its fleet index.

    Without an `index` (tools that only register vehicles into a stack
    whose API has none, older tests) the registry is the table alone, and
    campaign creation selects from the table as it always did."""

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

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def put(self, vehicles: Iterable[Vehicle]) -> int:
        """Register (or overwrite) vehicles; returns how many were written.
        The index is written after the table (a registration whose index
        write failed raises, and is safe to repeat)."""
        stamp = self._now_ms()
        batch: list[Vehicle] = []
        rows: list[IndexRow] = []
        written = 0
        for vehicle in vehicles:
            validate_vin(vehicle.vehicle_id)
            batch.append(vehicle)
            if self._index is not None:
                rows.append(vehicle.index_row(stamp))
            if len(batch) == BATCH_WRITE_MAX:
                written += self._write(batch, stamp)
                batch = []
        if batch:
            written += self._write(batch, stamp)
        if self._index is not None and rows:
            self._index.merge(rows)
        return written

    def _write(self, batch: list[Vehicle], stamp: int) -> int:
        requests: Any = [
            {"PutRequest": {"Item": to_item({**v.to_item(), "changed_at": stamp})}} for v in batch
        ]
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
        item = registry_item(self._ddb, self._table, vehicle_id)
        return Vehicle.from_item(item) if item else None

    def get_many(self, vehicle_ids: Iterable[str]) -> dict[str, Vehicle]:
        items = registry_items(self._ddb, self._table, vehicle_ids)
        vehicles = (Vehicle.from_item(item) for item in items)
        return {vehicle.vehicle_id: vehicle for vehicle in vehicles}

    def set_installed_version(self, vehicle_id: str, version: str) -> None:
        """Record what a vehicle runs now (no-op for an unregistered one);
        the index gets one delta object for it."""
        self.set_installed_versions({vehicle_id: version})

    def set_installed_versions(self, versions: Mapping[str, str]) -> None:
        """Record what several vehicles run now: one UpdateItem each, and one
        index delta per model for all of them (a batch of status reports
        should call this once, not `set_installed_version` per report).

        A failed index write is logged, not raised: the table holds the
        truth, a retried report would not come here again, and the index
        stays behind for these vehicles until a rebuild (see `fleet_index.store`)."""
        stamp = self._now_ms()
        patches: dict[str, list[Patch]] = defaultdict(list)
        for vehicle_id, model in self._update_versions(versions, stamp).items():
            patches[model].append(Patch(vehicle_id, versions[vehicle_id], stamp))
        if self._index is None or not patches:
            return
        try:
            self._index.patch(patches)
        except V2CError as exc:
            logger.error(
                "fleet index not updated with installed versions (rebuild it): %s",
                exc,
                extra={"vehicles": sum(len(p) for p in patches.values())},
            )

    def _update_versions(self, versions: Mapping[str, str], stamp: int) -> dict[str, str]:
        """Each registered vehicle's new version, in few requests: one
        BatchGetItem per 100 (who is registered, with which model), then one
        transaction per 100 updates, each conditioned on the vehicle still
        being registered. A transaction cancelled (a vehicle deregistered
        meanwhile) is redone one UpdateItem each. Returns vehicle -> model
        for the vehicles updated (unregistered ones are left out)."""
        if len(versions) == 1:
            ((vehicle_id, version),) = versions.items()
            model = self._update_version(vehicle_id, version, stamp)
            return {} if model is None else {vehicle_id: model}
        registered = {v: vehicle.model for v, vehicle in self.get_many(versions).items()}
        ids = list(registered)
        updated: dict[str, str] = {}
        for start in range(0, len(ids), TRANSACT_MAX):
            chunk = ids[start : start + TRANSACT_MAX]
            items: Any = [
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"vehicle_id": {"S": vehicle_id}},
                        "UpdateExpression": _SET_VERSION,
                        "ConditionExpression": "attribute_exists(vehicle_id)",
                        "ExpressionAttributeValues": {
                            ":v": {"S": versions[vehicle_id]},
                            ":t": {"N": str(stamp)},
                        },
                    }
                }
                for vehicle_id in chunk
            ]
            try:
                self._ddb.transact_write_items(TransactItems=items)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise transient("recording installed versions", exc) from exc
                for vehicle_id in chunk:
                    model = self._update_version(vehicle_id, versions[vehicle_id], stamp)
                    if model is not None:
                        updated[vehicle_id] = model
                continue
            except BotoCoreError as exc:
                raise transient("recording installed versions", exc) from exc
            updated.update((vehicle_id, registered[vehicle_id]) for vehicle_id in chunk)
        return updated

    def _update_version(self, vehicle_id: str, version: str, stamp: int) -> str | None:
        """The vehicle's model after the update; None if it is not registered."""
        try:
            answer = self._ddb.update_item(
                TableName=self._table,
                Key={"vehicle_id": {"S": vehicle_id}},
                UpdateExpression=_SET_VERSION,
                ConditionExpression="attribute_exists(vehicle_id)",
                ExpressionAttributeValues={":v": {"S": version}, ":t": {"N": str(stamp)}},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return None  # not registered: nothing to keep in step
            raise transient("recording the installed version", exc) from exc
        except BotoCoreError as exc:
            raise transient("recording the installed version", exc) from exc
        model = answer.get("Attributes", {}).get("model", {})
        return str(model.get("S", ""))

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
        each once, ordered by vehicle id; decommissioned vehicles never."""
        chosen = {v: vehicle for v, vehicle in self.get_many(devices).items() if vehicle.active}
        wanted_groups = frozenset(groups)
        if expr is not None or wanted_groups:
            model = pinned_model(expr) if not wanted_groups else None
            for item in self._pages(model):
                vehicle = Vehicle.from_item(item)
                if not vehicle.active:
                    continue
                if (expr is not None and evaluate(expr, vehicle.attributes())) or (
                    wanted_groups & vehicle.groups
                ):
                    chosen.setdefault(vehicle.vehicle_id, vehicle)
        return [chosen[v] for v in sorted(chosen)]

    # -- the fleet index -----------------------------------------------------------

    def index_size(self, models: Collection[str] | None = None) -> int | None:
        """Bytes a read of the index for `models` (None: every model) would
        fetch, from a LIST alone; None: this registry keeps no index."""
        return None if self._index is None else self._index.size(models)

    def snapshot(self, models: Collection[str] | None = None) -> FleetSnapshot:
        """The index for `models` (None: every model): eventually consistent
        with the table (see `fleet_index.store`)."""
        if self._index is None:
            raise RuntimeError("this registry keeps no fleet index")
        return self._index.read(models)

    def rebuild_index(self) -> int:
        """Make the index again from a scan of the table (the first time, or
        after writes that reached the table only); returns the vehicles scanned."""
        if self._index is None:
            return 0
        started = self._now_ms() - REBUILD_SKEW_MS
        return self._index.rebuild((_index_row(item) for item in self._pages(None)), started)

    def maintain(self) -> dict[str, int]:
        """The monitor's pass over the index: build it if it never was, else
        fold the deltas of models with many or old ones into their shards."""
        if self._index is None:
            return {}
        if not self._index.is_built():
            return {"index_rebuilt_vehicles": self.rebuild_index()}
        folded = self._index.compact(min_deltas=COMPACT_MIN_DELTAS, min_age_ms=COMPACT_MIN_AGE_MS)
        return {"index_deltas_folded": folded}
