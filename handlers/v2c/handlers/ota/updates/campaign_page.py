"""One page of a campaign's per-vehicle update records, read from the `by-campaign` index.

A 10,000-vehicle campaign must never be read whole to show 50 of its
records, so a page is one or a few `Query` calls on `by-campaign`
(`campaign_id`, sorted by `vehicle_id`), each with a `Limit`, starting after
the position the previous page ended at: the record's table key
(`vehicle_id`, `update_id`), which with the campaign id is exactly the
`ExclusiveStartKey` the index takes.

Filters (a wave, a state) are a `FilterExpression`: DynamoDB applies it
after reading, so a selective filter can read many records to fill a page.
`max_read` bounds the records one page reads (what DynamoDB bills); a page
cut short by it may hold fewer than `limit` items (even none) and still
name a next position. The index is eventually consistent: a record written
a moment ago may show on the next poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.handlers.ota.ddb import from_item, transient
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.updates.record import VehicleUpdate

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

CAMPAIGN_INDEX: Final = "by-campaign"
MAX_READ: Final = 2_000  # records one page may read, filters included
MIN_FILTERED_READ: Final = 100  # a filtered Query's Limit at least: fewer round trips

Position = tuple[str, str]  # (vehicle_id, update_id): the record's table key


@dataclass(frozen=True, slots=True)
class CampaignUpdatePage:
    items: list[VehicleUpdate]
    next_position: Position | None  # None: the last page
    read: int  # records DynamoDB read for this page


class CampaignUpdatePages:
    """Pages of a campaign's update records over the DynamoDB updates table."""

    def __init__(self, client: DynamoDBClient, table: str, *, max_read: int = MAX_READ) -> None:
        self._ddb = client
        self._table = table
        self.max_read = max_read

    def page(
        self,
        campaign_id: str,
        *,
        limit: int,
        after: Position | None = None,
        wave: int | None = None,
        state: UpdateState | None = None,
    ) -> CampaignUpdatePage:
        """Up to `limit` records of the campaign after `after`, in vehicle order,
        of `wave` and `state` when given (see the module docstring)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": CAMPAIGN_INDEX,
            "KeyConditionExpression": "campaign_id = :c",
            "ExpressionAttributeValues": {":c": {"S": campaign_id}},
        }
        filtered = _filter(kwargs, wave, state)
        if after is not None:
            kwargs["ExclusiveStartKey"] = _key(campaign_id, after)
        items: list[VehicleUpdate] = []
        read = 0
        while True:
            wanted = limit - len(items) + 1  # one more: is there a next page at all?
            if filtered:
                wanted = max(wanted, MIN_FILTERED_READ)
            kwargs["Limit"] = max(1, min(wanted, self.max_read - read))
            try:
                answer: Any = self._ddb.query(**kwargs)
            except (BotoCoreError, ClientError) as exc:
                raise transient("reading a campaign's updates", exc) from exc
            read += int(answer.get("ScannedCount", len(answer.get("Items", []))))
            items += [VehicleUpdate.from_item(from_item(i)) for i in answer.get("Items", [])]
            last = answer.get("LastEvaluatedKey")
            if len(items) > limit:  # more than a page: the next starts after the last kept
                kept = items[:limit]
                return CampaignUpdatePage(kept, _position(kept[-1]), read)
            if not last:
                return CampaignUpdatePage(items, None, read)
            if read >= self.max_read:  # bound reached: the next page goes on from here
                position = (str(last["vehicle_id"]["S"]), str(last["update_id"]["S"]))
                return CampaignUpdatePage(items, position, read)
            kwargs["ExclusiveStartKey"] = last

    def first_notified(self, campaign_id: str, max_read: int) -> dict[int, int] | None:
        """Per wave, when its first vehicle was notified (its record's
        `created_at_ms`: a record is born notified), from every record of the
        campaign projected to two attributes; None when the campaign has more
        than `max_read` records (the timeline then leaves the waves out)."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": CAMPAIGN_INDEX,
            "KeyConditionExpression": "campaign_id = :c",
            "ExpressionAttributeValues": {":c": {"S": campaign_id}},
            "ProjectionExpression": "#w, #t",
            "ExpressionAttributeNames": {"#w": "wave", "#t": "created_at_ms"},
        }
        first: dict[int, int] = {}
        read = 0
        while True:
            kwargs["Limit"] = max_read + 1 - read
            try:
                answer: Any = self._ddb.query(**kwargs)
            except (BotoCoreError, ClientError) as exc:
                raise transient("reading a campaign's updates", exc) from exc
            for item in answer.get("Items", []):
                read += 1
                wave, at = item.get("wave", {}).get("N"), item.get("created_at_ms", {}).get("N")
                if wave is None or at is None:
                    continue
                number, ms = int(wave), int(at)
                if ms > 0 and (number not in first or ms < first[number]):
                    first[number] = ms
            if read > max_read:
                return None
            last = answer.get("LastEvaluatedKey")
            if not last:
                return first
            kwargs["ExclusiveStartKey"] = last


def _filter(kwargs: dict[str, Any], wave: int | None, state: UpdateState | None) -> bool:
    """Add the wave and state conditions to a Query's arguments; False: none."""
    terms: list[str] = []
    names: dict[str, str] = {}
    values = kwargs["ExpressionAttributeValues"]
    if wave is not None:
        terms.append("#wave = :wave")
        names["#wave"] = "wave"
        values[":wave"] = {"N": str(wave)}
    if state is not None:
        terms.append("#state = :state")
        names["#state"] = "state"
        values[":state"] = {"S": state.value}
    if not terms:
        return False
    kwargs["FilterExpression"] = " AND ".join(terms)
    kwargs["ExpressionAttributeNames"] = names
    return True


def _key(campaign_id: str, position: Position) -> dict[str, Any]:
    vehicle_id, update_id = position
    return {
        "campaign_id": {"S": campaign_id},
        "vehicle_id": {"S": vehicle_id},
        "update_id": {"S": update_id},
    }


def _position(update: VehicleUpdate) -> Position:
    return (update.vehicle_id, update.update_id)
