"""The rollbacks table: the audit trail of every rollback (BR-OTA-035):
who asked (`requested_by`), why (`reason`, and the `trigger` of BR-OTA-031:
manual, failure_rate, health_check, timeout, error_threshold), from which
version to which, and how it ended."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from v2c.handlers.ota.ddb import from_item, to_item, transient

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ROLLBACK_PENDING: Final = "in_progress"


class RollbackLog:
    """The rollbacks table: (vehicle_id, rollback_id), by-campaign index."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._ddb = client
        self._table = table

    def put(self, row: dict[str, Any]) -> None:
        try:
            self._ddb.put_item(TableName=self._table, Item=to_item(row))
        except (BotoCoreError, ClientError) as exc:
            raise transient("recording a rollback", exc) from exc

    def finish(self, vehicle_id: str, rollback_id: str, status: str, now_ms: int) -> None:
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"vehicle_id": {"S": vehicle_id}, "rollback_id": {"S": rollback_id}},
                UpdateExpression="SET #s = :s, finished_at = :t",
                ConditionExpression="attribute_exists(rollback_id)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": status}, ":t": {"N": str(now_ms)}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise transient("recording a rollback's outcome", exc) from exc
        except BotoCoreError as exc:
            raise transient("recording a rollback's outcome", exc) from exc

    def for_campaign(self, campaign_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "by-campaign",
            "KeyConditionExpression": "campaign_id = :c",
            "ExpressionAttributeValues": {":c": {"S": campaign_id}},
        }
        while True:
            try:
                answer: Any = self._ddb.query(**kwargs)
            except (BotoCoreError, ClientError) as exc:
                raise transient("reading rollbacks", exc) from exc
            rows.extend(from_item(i) for i in answer.get("Items", []))
            if not answer.get("LastEvaluatedKey"):
                return rows
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
