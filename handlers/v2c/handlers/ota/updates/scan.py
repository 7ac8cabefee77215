"""Every update record, read once and within a bound: the source of fleet statistics.

The fleet figures that only the records know (the last 24 hours, average
update time, data transferred, per firmware version, updates outside
campaigns; BR-OTA-043..045) have no index to query by time: the table is
keyed by vehicle. So `UpdateScan` pages through it with a DynamoDB Scan,
projecting only the attributes the statistics read (a record's manifest and
signature are left on the server), and stops after `limit` items *read*
(`ScannedCount`, which is what DynamoDB bills), whatever a filter kept.

What it costs: a Scan reads whole items (the projection saves transfer, not
capacity): about 1 KB per record, so 100,000 records are ~25,000 read units
eventually consistent (~$0.006 on demand) and ~100 pages of 1 MB, seconds of
latency. The caller passes the bound (`StatsService`'s `max_records`) and
the answer says whether the read was complete; past that size the records
should be summarised on write (hourly counters beside the campaign
counters), which this interface lets replace the Scan without touching the
statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from v2c.handlers.ota.ddb import from_item, transient
from v2c.handlers.ota.updates.record import VehicleUpdate

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

PAGE_ITEMS: Final = 1_000
# What `VehicleUpdate.from_item` needs, and what the statistics read.
PROJECTED: Final = (
    "vehicle_id",
    "update_id",
    "kind",
    "state",
    "firmware_id",
    "to_version",
    "from_version",
    "campaign_id",
    "created_at_ms",
    "notified_at_ms",
    "started_at_ms",
    "completed_at_ms",
    "updated_at_ms",
    "total_duration_ms",
)


@dataclass(frozen=True, slots=True)
class ScanOutcome:
    read: int  # records read (before any filter)
    complete: bool  # False: stopped at the limit, more records exist


class UpdateRecords(Protocol):
    def scan(
        self,
        visit: Callable[[VehicleUpdate], None],
        *,
        limit: int,
        firmware_id: str | None = None,
    ) -> ScanOutcome:
        """Call `visit` with each record (of `firmware_id` only, if given),
        reading at most `limit` records."""
        ...


class UpdateScan:
    """`UpdateRecords` over the DynamoDB updates table."""

    def __init__(self, ddb: DynamoDBClient, table: str) -> None:
        self._ddb = ddb
        self._table = table

    def scan(
        self,
        visit: Callable[[VehicleUpdate], None],
        *,
        limit: int,
        firmware_id: str | None = None,
    ) -> ScanOutcome:
        names = {f"#a{n}": name for n, name in enumerate(PROJECTED)}
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "ProjectionExpression": ", ".join(names),
            "ExpressionAttributeNames": names,
        }
        if firmware_id is not None:
            names["#fid"] = "firmware_id"
            kwargs["FilterExpression"] = "#fid = :fid"
            kwargs["ExpressionAttributeValues"] = {":fid": {"S": firmware_id}}
        read = 0
        while read < limit:
            kwargs["Limit"] = min(PAGE_ITEMS, limit - read)
            try:
                answer: Any = self._ddb.scan(**kwargs)
            except (BotoCoreError, ClientError) as exc:
                raise transient("reading update records for statistics", exc) from exc
            read += int(answer.get("ScannedCount", len(answer.get("Items", []))))
            for item in answer.get("Items", []):
                visit(VehicleUpdate.from_item(from_item(item)))
            last = answer.get("LastEvaluatedKey")
            if not last:
                return ScanOutcome(read, complete=True)
            kwargs["ExclusiveStartKey"] = last
        return ScanOutcome(read, complete=False)
