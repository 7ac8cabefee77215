"""When the cloud last heard from a vehicle over telemetry: its newest stored sample.

One `Query` of the telemetry table's partition for the vehicle, newest key
first, one item, one attribute: cheap enough for `GET /vehicles/{id}`, too
dear for a list (the registry's `last_seen_at` serves searches).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from v2c.handlers.ota.ddb import transient

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class TelemetrySightings:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._ddb = client
        self._table = table

    def last_telemetry_ms(self, vehicle_id: str) -> int:
        try:
            answer = self._ddb.query(
                TableName=self._table,
                KeyConditionExpression="vehicle_id = :v",
                ExpressionAttributeValues={":v": {"S": vehicle_id}},
                ProjectionExpression="received_at",
                ScanIndexForward=False,
                Limit=1,
            )
        except (BotoCoreError, ClientError) as exc:
            raise transient("reading the vehicle's telemetry", exc) from exc
        items = answer.get("Items", [])
        if not items:
            return 0
        return int(items[0].get("received_at", {}).get("N", "0"))
