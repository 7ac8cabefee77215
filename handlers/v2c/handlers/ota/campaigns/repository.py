"""DynamoDB access for campaigns: conditional status changes, the dispatch
lease and the cursor, and counter moves.

Every write that depends on what was read carries a condition on it (the
status, the cursor, the lease), so two gateways, a monitor and an API call
working on one campaign at once cannot double-notify a vehicle or resurrect
a cancelled campaign: the loser gets `StaleWrite` and re-reads.

The public writes are named for what they mean to a campaign; `_update` is
the one place that turns a change into an update expression.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.errors import Conflict, NotFound
from v2c.handlers.ota.campaigns.record import (
    Campaign,
    Release,
    StatusChange,
    counter_attr,
    reason_attr,
)
from v2c.handlers.ota.concurrency import StaleWrite
from v2c.handlers.ota.ddb import from_item, is_condition_failure, to_item, to_value, transient
from v2c.handlers.ota.domain.counters import Counter, CounterDeltas, CounterMoves
from v2c.handlers.ota.domain.lifecycle import ACTIVE, CampaignStatus
from v2c.handlers.ota.updates.repository import TransactItem

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

MAX_PAGE: Final = 100
# What planning writes on a campaign item (`finish_planning`), besides counters.
_PLANNED: Final = frozenset(
    {
        "status",
        "status_reason",
        "target_count",
        "waves",
        "updated_at",
        "last_progress_at",
        "finished_at",
        "lease_owner",
        "lease_until",
    }
)
_COUNTER: Final = re.compile(r"^(c|w\d+)_[a-z_]+$")

# `Campaign` field -> stored attribute, for the fields a status change sets.
_ATTRIBUTES: Final = {
    "status": "status",
    "updated_at_ms": "updated_at",
    "status_reason": "status_reason",
    "started_at_ms": "started_at",
    "finished_at_ms": "finished_at",
    "last_progress_at_ms": "last_progress_at",
    "approved_by": "approved_by",
    "approved_at_ms": "approved_at",
    "approval_comment": "approval_comment",
    "rejected_by": "rejected_by",
    "rejected_at_ms": "rejected_at",
    "gate": "gate",
}


def _stored(name: str, value: Any) -> Any:
    if isinstance(value, CampaignStatus):
        return value.value
    if name == "gate":
        return json.dumps(value)
    return value


def _adds(moves: CounterMoves) -> dict[str, int]:
    adds = {counter_attr(c): delta for c, delta in moves.campaign.items()}
    for wave, wave_moves in moves.waves.items():
        adds.update({counter_attr(c, wave): delta for c, delta in wave_moves.items()})
    adds.update({reason_attr(r): delta for r, delta in moves.reasons.items()})
    return adds


class CampaignRepository:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._ddb = client
        self.table = table

    # -- reads -------------------------------------------------------------

    def get(self, campaign_id: str) -> Campaign:
        try:
            answer = self._ddb.get_item(
                TableName=self.table, Key={"campaign_id": {"S": campaign_id}}, ConsistentRead=True
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient("reading a campaign", exc) from exc
        item = answer.get("Item")
        if not item:
            raise NotFound(f"campaign {campaign_id!r} not found")
        return Campaign.from_item(from_item(item))

    def list(
        self, status: CampaignStatus | None = None, *, limit: int = 50, start: str | None = None
    ) -> tuple[list[Campaign], str | None]:
        """One page of campaigns (newest first when filtered by status) and
        the key to continue from."""
        kwargs: dict[str, Any] = {"TableName": self.table, "Limit": max(1, min(limit, MAX_PAGE))}
        if start:
            kwargs["ExclusiveStartKey"] = _decode_start(start)
        try:
            if status is not None:
                answer: Any = self._ddb.query(
                    IndexName="by-status",
                    KeyConditionExpression="#s = :s",
                    ExpressionAttributeNames={"#s": "status"},
                    ExpressionAttributeValues={":s": {"S": status.value}},
                    ScanIndexForward=False,
                    **kwargs,
                )
            else:
                answer = self._ddb.scan(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise transient("listing campaigns", exc) from exc
        campaigns = [Campaign.from_item(from_item(i)) for i in answer.get("Items", [])]
        last = answer.get("LastEvaluatedKey")
        return campaigns, _encode_start(last) if last else None

    def iter_status(self, *statuses: CampaignStatus) -> Iterator[Campaign]:
        for status in statuses:
            start: str | None = None
            while True:
                page, start = self.list(status, limit=MAX_PAGE, start=start)
                yield from page
                if start is None:
                    break

    def active_campaigns_using(self, firmware_id: str) -> builtins.list[str]:
        """Campaigns not yet finished that deploy `firmware_id` (the firmware
        registry refuses to deprecate, recall or delete under them)."""
        found: builtins.list[str] = []
        for status in sorted(ACTIVE):
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": "by-status",
                "KeyConditionExpression": "#s = :s",
                "FilterExpression": "firmware_id = :f",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {
                    ":s": {"S": status.value},
                    ":f": {"S": firmware_id},
                },
                "ProjectionExpression": "campaign_id",
            }
            while True:
                try:
                    answer: Any = self._ddb.query(**kwargs)
                except (BotoCoreError, ClientError) as exc:
                    raise transient("finding campaigns using a firmware", exc) from exc
                found.extend(str(i["campaign_id"]["S"]) for i in answer.get("Items", []))
                if not answer.get("LastEvaluatedKey"):
                    break
                kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return sorted(found)

    # -- writes ------------------------------------------------------------

    def put_new(self, campaign: Campaign) -> None:
        """Make a fully planned, signed campaign visible in one write."""
        try:
            self._ddb.put_item(
                TableName=self.table,
                Item=to_item(campaign.to_item()),
                ConditionExpression="attribute_not_exists(campaign_id)",
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                raise Conflict(f"campaign {campaign.campaign_id!r} already exists") from exc
            raise transient("creating a campaign", exc) from exc
        except BotoCoreError as exc:
            raise transient("creating a campaign", exc) from exc

    def request_start(self, campaign: Campaign, now_ms: int) -> Campaign:
        return self._update(campaign, set_values={"start_requested_at": now_ms})

    def finish_planning(self, leased: Campaign, planned: Campaign) -> Campaign:
        """Write the plan's attributes (status, targets, waves, counters,
        lease) if the campaign is still planning under `leased`'s lease; the
        rest of the item (a start requested meanwhile) stays."""
        item = planned.to_item()
        values = {k: v for k, v in item.items() if k in _PLANNED or _COUNTER.match(k)}
        return self._update(leased, set_values=values, expect_lease=leased.lease_owner)

    def change_status(
        self, campaign: Campaign, change: StatusChange, unnotified: CounterMoves | None = None
    ) -> Campaign:
        values = {_ATTRIBUTES[k]: _stored(k, v) for k, v in change.changes().items()}
        if unnotified is None:
            return self._update(campaign, set_values=values)
        return self._update(campaign, set_values=values, add=_adds(unnotified), expect_cursor=True)

    def set_release(self, campaign: Campaign, release: Release) -> Campaign:
        return self._update(campaign, set_values={"release": release.to_item()})

    def next_wave(self, campaign: Campaign) -> Campaign:
        return self._update(
            campaign, set_values={"current_wave": campaign.current_wave + 1}, expect_wave=True
        )

    def pass_gate(self, campaign: Campaign, summary: dict[str, Any]) -> Campaign:
        return self._update(
            campaign,
            set_values={"current_wave": campaign.current_wave + 1, "gate": json.dumps(summary)},
            expect_wave=True,
        )

    def fail_gate(self, campaign: Campaign, reason: str, summary: dict[str, Any]) -> Campaign:
        return self._update(
            campaign,
            set_values={
                "status": CampaignStatus.PAUSED.value,
                "status_reason": reason,
                "gate": json.dumps(summary),
            },
            expect_wave=True,
        )

    def flag_stalled(self, campaign: Campaign) -> Campaign:
        return self._update(campaign, set_values={"stalled": True})

    def _update(
        self,
        campaign: Campaign,
        *,
        set_values: Mapping[str, Any] | None = None,
        add: Mapping[str, int] | None = None,
        remove: tuple[str, ...] = (),
        expect_cursor: bool = False,
        expect_wave: bool = False,
        expect_lease: str | None = None,
    ) -> Campaign:
        """A conditional update of `campaign` as read: its status (and,
        when asked, cursor, wave or lease holder) must still be what it was;
        returns the campaign as stored afterwards."""
        names: dict[str, str] = {"#status": "status", "#rev": "revision"}
        values: dict[str, Any] = {
            ":expected_status": to_value(campaign.status.value),
            ":one": to_value(1),
        }
        sets: list[str] = []
        for number, (attr, value) in enumerate((set_values or {}).items()):
            names[f"#s{number}"] = attr
            values[f":s{number}"] = to_value(value)
            sets.append(f"#s{number} = :s{number}")
        adds = ["#rev :one"]
        for number, (attr, delta) in enumerate((add or {}).items()):
            if delta:
                names[f"#a{number}"] = attr
                values[f":a{number}"] = to_value(delta)
                adds.append(f"#a{number} :a{number}")
        conditions = ["#status = :expected_status"]
        if expect_cursor:
            names["#cursor"] = "cursor"
            values[":expected_cursor"] = to_value(campaign.cursor)
            conditions.append("#cursor = :expected_cursor")
        if expect_wave:
            names["#wave"] = "current_wave"
            values[":expected_wave"] = to_value(campaign.current_wave)
            conditions.append("#wave = :expected_wave")
        if expect_lease is not None:
            names["#owner"] = "lease_owner"
            values[":owner"] = to_value(expect_lease)
            conditions.append("#owner = :owner")
        expression = ""
        if sets:
            expression += "SET " + ", ".join(sets) + " "
        expression += "ADD " + ", ".join(adds)
        if remove:
            for number, attr in enumerate(remove):
                names[f"#r{number}"] = attr
            expression += " REMOVE " + ", ".join(f"#r{n}" for n in range(len(remove)))
        try:
            answer = self._ddb.update_item(
                TableName=self.table,
                Key={"campaign_id": {"S": campaign.campaign_id}},
                UpdateExpression=expression,
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                raise StaleWrite(
                    f"campaign {campaign.campaign_id} changed meanwhile; read it again"
                ) from exc
            raise transient("updating a campaign", exc) from exc
        except BotoCoreError as exc:
            raise transient("updating a campaign", exc) from exc
        return Campaign.from_item(from_item(answer["Attributes"]))

    def acquire_lease(
        self, campaign: Campaign, owner: str, now_ms: int, ttl_ms: int
    ) -> Campaign | None:
        """Become the one dispatcher of `campaign` for `ttl_ms`, or None if
        another holds an unexpired lease. A crashed holder's lease expires."""
        try:
            answer = self._ddb.update_item(
                TableName=self.table,
                Key={"campaign_id": {"S": campaign.campaign_id}},
                UpdateExpression="SET lease_owner = :owner, lease_until = :until",
                ConditionExpression="attribute_exists(campaign_id) AND "
                "(lease_until < :now OR lease_owner = :owner)",
                ExpressionAttributeValues={
                    ":owner": {"S": owner},
                    ":until": {"N": str(now_ms + ttl_ms)},
                    ":now": {"N": str(now_ms)},
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return None
            raise transient("leasing a campaign", exc) from exc
        except BotoCoreError as exc:
            raise transient("leasing a campaign", exc) from exc
        return Campaign.from_item(from_item(answer["Attributes"]))

    def release_lease(self, campaign_id: str, owner: str) -> None:
        try:
            self._ddb.update_item(
                TableName=self.table,
                Key={"campaign_id": {"S": campaign_id}},
                UpdateExpression="SET lease_until = :zero",
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeValues={":owner": {"S": owner}, ":zero": {"N": "0"}},
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise transient("releasing a campaign lease", exc) from exc
        except BotoCoreError as exc:
            raise transient("releasing a campaign lease", exc) from exc

    def notify_at_cursor(self, campaign: Campaign, now_ms: int, count: int = 1) -> TransactItem:
        """The campaign item's half of a dispatch chunk's transaction: the
        cursor past `count` targets, `count` from pending to in progress
        (campaign and current wave), conditioned on running at this cursor
        and wave, so a pause or cancel between chunks fails the whole chunk."""
        if count < 1:
            raise ValueError(f"a chunk notifies at least one target, not {count}")
        index, wave = campaign.cursor, campaign.current_wave
        return TransactItem(
            {
                "Update": {
                    "TableName": self.table,
                    "Key": {"campaign_id": {"S": campaign.campaign_id}},
                    "UpdateExpression": "SET #cursor = :next, last_progress_at = :now "
                    "ADD #p :minus, #i :plus, #wp :minus, #wi :plus",
                    "ConditionExpression": "#status = :running AND #cursor = :at "
                    "AND current_wave = :w",
                    "ExpressionAttributeNames": {
                        "#cursor": "cursor",
                        "#status": "status",
                        "#p": counter_attr(Counter.PENDING),
                        "#i": counter_attr(Counter.IN_PROGRESS),
                        "#wp": counter_attr(Counter.PENDING, wave),
                        "#wi": counter_attr(Counter.IN_PROGRESS, wave),
                    },
                    "ExpressionAttributeValues": {
                        ":next": {"N": str(index + count)},
                        ":at": {"N": str(index)},
                        ":w": {"N": str(wave)},
                        ":now": {"N": str(now_ms)},
                        ":running": {"S": CampaignStatus.IN_PROGRESS.value},
                        ":minus": {"N": str(-count)},
                        ":plus": {"N": str(count)},
                    },
                }
            }
        )

    def move_counters(
        self, campaign_id: str, deltas: CounterDeltas, wave: int | None, now_ms: int
    ) -> TransactItem:
        adds: dict[str, int] = {}
        for counter, delta in deltas.nonzero().items():
            adds[counter_attr(Counter(counter))] = delta
            if wave is not None:
                adds[counter_attr(Counter(counter), wave)] = delta
        for reason, delta in deltas.reasons:
            adds[reason_attr(reason)] = adds.get(reason_attr(reason), 0) + delta
        return self._add_counters(campaign_id, adds, now_ms)

    def count_reports(self, campaign_id: str, moves: CounterMoves, now_ms: int) -> TransactItem:
        """One `ADD` per counter (campaign and wave, failure reasons too) for a
        chunk of records: DynamoDB refuses two operations on one item in a
        transaction, and one summed write is what keeps the hot campaign item
        off the critical path."""
        return self._add_counters(campaign_id, dict(sorted(_adds(moves).items())), now_ms)

    def _add_counters(self, campaign_id: str, adds: Mapping[str, int], now_ms: int) -> TransactItem:
        """The campaign item's counter update: every nonzero delta `ADD`ed, and
        progress stamped (which also clears the stalled flag)."""
        names: dict[str, str] = {"#lp": "last_progress_at", "#st": "stalled"}
        values: dict[str, Any] = {":now": to_value(now_ms), ":false": to_value(False)}
        terms: list[str] = []
        for number, (attr, delta) in enumerate(adds.items()):
            if delta:
                names[f"#c{number}"] = attr
                values[f":d{number}"] = to_value(delta)
                terms.append(f"#c{number} :d{number}")
        expression = "SET #lp = :now, #st = :false"
        if terms:
            expression += " ADD " + ", ".join(terms)
        return TransactItem(
            {
                "Update": {
                    "TableName": self.table,
                    "Key": {"campaign_id": {"S": campaign_id}},
                    "UpdateExpression": expression,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            }
        )


def _encode_start(key: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(from_item(key)).encode()).decode()


def _decode_start(token: str) -> dict[str, Any]:
    """The key a cursor names. An unreadable cursor names no page: 404 (its
    format is opaque, so no schema can call it malformed)."""
    try:
        plain = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise NotFound("the cursor names no page of this list") from exc
    if not isinstance(plain, dict) or not all(isinstance(v, str | int) for v in plain.values()):
        raise NotFound("the cursor names no page of this list")
    return to_item(plain)
