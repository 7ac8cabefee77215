"""The moto server's narrowed Query (`moto_queries`) against the real server.

Under the suite the server also runs every Query moto's own way and fails
the request if the answers differ (`V2C_MOTO_VERIFY_ANSWERS`), so each
query below is checked twice: by the server against moto, and here against
the answer worked out from the items written.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from v2c.infra.settings import AwsSettings


@pytest.fixture
def table(aws_settings: AwsSettings) -> tuple[Any, str]:
    """A table keyed (vehicle, update) with an index with a sort key and one without."""
    ddb = aws_settings.client("dynamodb")
    name = f"queries-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": a, "AttributeType": t}
            for a, t in (("v", "S"), ("u", "S"), ("campaign", "S"), ("due", "N"), ("state", "S"))
        ],
        KeySchema=[
            {"AttributeName": "v", "KeyType": "HASH"},
            {"AttributeName": "u", "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-campaign",
                "KeySchema": [
                    {"AttributeName": "campaign", "KeyType": "HASH"},
                    {"AttributeName": "due", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": "by-state",
                "KeySchema": [{"AttributeName": "state", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
        ],
    )
    for n in range(60):
        item: dict[str, Any] = {
            "v": {"S": f"VIN{n % 12:03d}"},
            "u": {"S": f"u{n:03d}"},
            "due": {"N": str((n * 7) % 20)},
            "state": {"S": ("PENDING", "DOWNLOADING", "COMPLETED")[n % 3]},
            "n": {"N": str(n)},
        }
        if n % 5:  # every fifth item is outside the by-campaign index
            item["campaign"] = {"S": f"c{n % 2}"}
        ddb.put_item(TableName=name, Item=item)
    return ddb, name


def _all_pages(ddb: Any, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = ddb.query(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_table_queries_read_one_hash_key_in_key_order_with_conditions_limits_and_pages(
    table: tuple[Any, str],
) -> None:
    ddb, name = table
    vin = {":v": {"S": "VIN003"}}
    items = _all_pages(
        ddb, TableName=name, KeyConditionExpression="v = :v", ExpressionAttributeValues=vin, Limit=2
    )
    assert [i["u"]["S"] for i in items] == ["u003", "u015", "u027", "u039", "u051"]
    backwards = ddb.query(
        TableName=name,
        KeyConditionExpression="v = :v AND u > :after",
        ExpressionAttributeValues=vin | {":after": {"S": "u015"}},
        ScanIndexForward=False,
    )
    assert [i["u"]["S"] for i in backwards["Items"]] == ["u051", "u039", "u027"]
    filtered = ddb.query(
        TableName=name,
        KeyConditionExpression="v = :v",
        FilterExpression="#s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues=vin | {":s": {"S": "PENDING"}},
    )
    assert (filtered["Count"], filtered["ScannedCount"]) == (5, 5)
    assert (
        ddb.query(
            TableName=name,
            KeyConditionExpression="v = :v",
            ExpressionAttributeValues={":v": {"S": "nobody"}},
        )["Items"]
        == []
    )


def test_index_queries_read_the_matching_items_in_index_order_with_limits_and_pages(
    table: tuple[Any, str],
) -> None:
    ddb, name = table
    expected = sorted(
        (
            ((n * 7) % 20, f"VIN{n % 12:03d}", f"u{n:03d}")
            for n in range(60)
            if n % 5 and n % 2 == 1
        ),
    )
    items = _all_pages(
        ddb,
        TableName=name,
        IndexName="by-campaign",
        KeyConditionExpression="campaign = :c",
        ExpressionAttributeValues={":c": {"S": "c1"}},
        Limit=7,
    )
    assert [(int(i["due"]["N"]), i["v"]["S"], i["u"]["S"]) for i in items] == expected
    due = ddb.query(
        TableName=name,
        IndexName="by-campaign",
        KeyConditionExpression="campaign = :c AND due BETWEEN :lo AND :hi",
        ExpressionAttributeValues={":c": {"S": "c1"}, ":lo": {"N": "3"}, ":hi": {"N": "9"}},
        ScanIndexForward=False,
    )
    assert [int(i["due"]["N"]) for i in due["Items"]] == sorted(
        (d for d, _, _ in expected if 3 <= d <= 9), reverse=True
    )
    keys_only = _all_pages(
        ddb,
        TableName=name,
        IndexName="by-state",
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"S": "COMPLETED"}},
        Limit=4,
    )
    assert len(keys_only) == 20
    assert all(set(i) == {"v", "u", "state"} for i in keys_only)
    counted = ddb.query(
        TableName=name,
        IndexName="by-state",
        KeyConditionExpression="#s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":s": {"S": "PENDING"}},
        Select="COUNT",
    )
    assert counted["Count"] == 20
