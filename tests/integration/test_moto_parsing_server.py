"""The moto server's request and condition shortcuts (`moto_parsing`) against
moto's own path.

The same raw DynamoDB requests go to this worker's moto server (the
shortcuts installed, and under the suite `V2C_MOTO_VERIFY_ANSWERS=1`: every
shortcut request also parsed moto's way and every cached lexing compared
with a fresh one, the request failing on a difference) and to moto's own
WSGI application in this process, unpatched. Every answer, status and JSON
body, must be the same: every attribute type with binary values and sets,
conditions with functions, IN, BETWEEN and nested paths, conditions that
fail and expressions that do not parse.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from werkzeug.test import Client

from v2c.infra.local.moto_parsing import direct_params
from v2c.infra.local.moto_server import VERIFY_ANSWERS_ENV, reset

Answer = tuple[int, Any]
Send = Callable[[str, bytes], Answer]

TABLE = "moto-parsing"
HEADERS = {
    "Content-Type": "application/x-amz-json-1.0",
    # moto routes an unsigned request by the credential scope's service
    "Authorization": (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250101/us-east-1/dynamodb/"
        "aws4_request, SignedHeaders=host, Signature=0"
    ),
}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


KEY = {"pk": {"S": "vin-1"}, "sk": {"B": _b64(b"\x00\xffk1")}}
KEY_2 = {"pk": {"S": "vin-1"}, "sk": {"B": _b64(b"\x00\xffk2")}}
ITEM: dict[str, Any] = KEY | {
    "s": {"S": "RUNNING"},
    "n": {"N": "7"},
    "b": {"B": _b64(b"\x01\x02")},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [_b64(b"x"), _b64(b"\x00")]},
    "m": {"M": {"k": {"L": [{"S": "z"}, {"N": "3"}, {"B": _b64(b"\x07")}]}, "nil": {"NULL": True}}},
    "l": {"L": [{"BOOL": True}, {"M": {}}]},
    "t": {"BOOL": False},
    "z": {"NULL": True},
}
NAMES = {"#s": "s", "#n": "n", "#m": "m", "#k": "k", "#l": "l", "#ss": "ss", "#b": "b", "#t": "t"}
CONDITION = (
    "attribute_exists(#m.#k[2]) AND #n BETWEEN :lo AND :hi AND #s IN (:run, :ok)"
    " AND begins_with(#s, :r) AND size(#l) > :one AND contains(#ss, :a)"
    " AND attribute_type(#b, :bt) AND NOT (#t = :yes)"
)
VALUES = {
    ":lo": {"N": "1"},
    ":hi": {"N": "10"},
    ":run": {"S": "RUNNING"},
    ":ok": {"S": "OK"},
    ":r": {"S": "RUN"},
    ":one": {"N": "1"},
    ":a": {"S": "a"},
    ":bt": {"S": "B"},
    ":yes": {"BOOL": True},
    ":more": {"SS": ["c"]},
}
UPDATE = {
    "TableName": TABLE,
    "Key": KEY,
    "UpdateExpression": "SET #n = #n + :one ADD #ss :more",
    "ConditionExpression": CONDITION,
    "ExpressionAttributeNames": NAMES,
    "ExpressionAttributeValues": VALUES,
}

CREATE_TABLE = {
    "TableName": TABLE,
    "KeySchema": [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ],
    "AttributeDefinitions": [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "B"},
    ],
    "BillingMode": "PAY_PER_REQUEST",
}
# (label, operation, request): run in order, on both sides, after CREATE_TABLE.
STEPS: list[tuple[str, str, dict[str, Any]]] = [
    # keys out of the shape's order, a null member and an unknown one: moto drops both
    (
        "put",
        "PutItem",
        {
            "Item": ITEM,
            "ConditionExpression": "attribute_not_exists(pk)",
            "ReturnValues": None,
            "Unmodelled": "dropped",
            "ReturnConsumedCapacity": "TOTAL",
            "TableName": TABLE,
        },
    ),
    (
        "put again",
        "PutItem",
        {"TableName": TABLE, "Item": ITEM, "ConditionExpression": "attribute_not_exists(pk)"},
    ),
    ("get", "GetItem", {"TableName": TABLE, "Key": KEY, "ConsistentRead": True}),
    (
        "get projected",
        "GetItem",
        {
            "TableName": TABLE,
            "Key": KEY,
            "ProjectionExpression": "#m.#k, #b, bs",
            "ExpressionAttributeNames": {"#m": "m", "#k": "k", "#b": "b"},
        },
    ),
    ("update", "UpdateItem", UPDATE | {"ReturnValues": "ALL_NEW"}),
    (
        "update refused",
        "UpdateItem",
        UPDATE
        | {
            "ExpressionAttributeValues": VALUES | {":hi": {"N": "5"}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        },
    ),
    # moto's words for what it refuses, and its failure (a 500) for what it cannot lex
    (
        "update redundant parentheses",
        "UpdateItem",
        UPDATE | {"ConditionExpression": f"(({CONDITION}))"},
    ),
    (
        "update reserved word",
        "UpdateItem",
        UPDATE | {"ConditionExpression": f"{CONDITION} AND size(name) > :one"},
    ),
    ("update unlexable", "UpdateItem", UPDATE | {"ConditionExpression": f"{CONDITION} ; DROP"}),
    # one attribute value with two types: moto keeps the shape's order (S before N)
    (
        "batch write",
        "BatchWriteItem",
        {
            "RequestItems": {
                TABLE: [
                    {"PutRequest": {"Item": KEY_2 | {"two": {"N": "2", "S": "s-first"}}}},
                    {"PutRequest": {"Item": KEY_2 | {"pk": {"S": "vin-2"}, "bs": ITEM["bs"]}}},
                ]
            }
        },
    ),
    (
        "query",
        "Query",
        {
            "TableName": TABLE,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :from AND :to",
            "FilterExpression": (
                "attribute_not_exists(#s) OR (#s IN (:run, :ok) AND size(bs) = :two)"
            ),
            "ExpressionAttributeNames": {"#s": "s"},
            "ExpressionAttributeValues": {
                ":pk": {"S": "vin-1"},
                ":from": {"B": _b64(b"\x00")},
                ":to": {"B": _b64(b"\xff")},
                ":run": {"S": "RUNNING"},
                ":ok": {"S": "OK"},
                ":two": {"N": "2"},
            },
            "Limit": 1,
        },
    ),
    (
        "scan",
        "Scan",
        {
            "TableName": TABLE,
            "FilterExpression": "contains(#ss, :c) OR begins_with(two, :s)",
            "ExpressionAttributeNames": {"#ss": "ss"},
            "ExpressionAttributeValues": {":c": {"S": "c"}, ":s": {"S": "s-"}},
            "Segment": 0,
            "TotalSegments": 1,
            "ReturnConsumedCapacity": "TOTAL",
        },
    ),
    (
        "batch get",
        "BatchGetItem",
        {
            "RequestItems": {
                TABLE: {
                    "Keys": [KEY, KEY_2, KEY_2 | {"pk": {"S": "vin-2"}}],
                    "ProjectionExpression": "pk, sk, bs, two",
                }
            }
        },
    ),
    (
        "transaction refused",
        "TransactWriteItems",
        {
            "TransactItems": [
                {"Put": {"TableName": TABLE, "Item": KEY_2 | {"pk": {"S": "vin-3"}}}},
                {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": KEY,
                        "ConditionExpression": "size(#m.#k) BETWEEN :lo AND :hi",
                        "ExpressionAttributeNames": {"#m": "m", "#k": "k"},
                        "ExpressionAttributeValues": {":lo": {"N": "5"}, ":hi": {"N": "9"}},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ]
        },
    ),
    (
        "transaction",
        "TransactWriteItems",
        {
            "TransactItems": [
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": KEY,
                        "UpdateExpression": "SET #b = :b",
                        "ConditionExpression": "#b = :old AND contains(bs, :x)",
                        "ExpressionAttributeNames": {"#b": "b"},
                        "ExpressionAttributeValues": {
                            ":b": {"B": _b64(b"\x03")},
                            ":old": {"B": _b64(b"\x01\x02")},
                            ":x": {"B": _b64(b"x")},
                        },
                    }
                },
                {"Delete": {"TableName": TABLE, "Key": KEY_2 | {"pk": {"S": "vin-2"}}}},
            ]
        },
    ),
    (
        "transaction get",
        "TransactGetItems",
        {"TransactItems": [{"Get": {"TableName": TABLE, "Key": k}} for k in (KEY, KEY_2)]},
    ),
    (
        "delete refused",
        "DeleteItem",
        {"TableName": TABLE, "Key": KEY, "ConditionExpression": "attribute_type(#b, :s)"}
        | {
            "ExpressionAttributeNames": {"#b": "b"},
            "ExpressionAttributeValues": {":s": {"S": "S"}},
        },
    ),
    (
        "delete",
        "DeleteItem",
        {
            "TableName": TABLE,
            "Key": KEY,
            "ConditionExpression": "attribute_type(#b, :bt)",
            "ExpressionAttributeNames": {"#b": "b"},
            "ExpressionAttributeValues": {":bt": {"S": "B"}},
            "ReturnValues": "ALL_OLD",
        },
    ),
]


def _answer(status: int, body: bytes) -> Answer:
    """The status and the JSON body; None for the page of an error moto did
    not word (its WSGI app in this process raises that error instead)."""
    return status, None if status == 500 else json.loads(body)


def _sets_sorted(value: Any) -> Any:
    """`value` with every SS, NS and BS sorted: moto orders a set it rebuilt
    by hash, and string hashes differ from process to process."""
    if isinstance(value, dict):
        return {
            k: sorted(v) if k in ("SS", "NS", "BS") and isinstance(v, list) else _sets_sorted(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_sets_sorted(v) for v in value]
    return value


def _run(send: Send) -> dict[str, Answer]:
    assert send("CreateTable", json.dumps(CREATE_TABLE).encode())[0] == 200
    answers = {}
    for label, operation, request in STEPS:
        status, body = send(operation, json.dumps(request).encode())
        answers[label] = (status, _sets_sorted(body))
    return answers


def _headers(operation: str) -> dict[str, str]:
    return HEADERS | {"X-Amz-Target": f"DynamoDB_20120810.{operation}"}


def _server(endpoint_url: str) -> Send:
    def send(operation: str, body: bytes) -> Answer:
        request = urllib.request.Request(
            endpoint_url + "/", data=body, headers=_headers(operation), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return _answer(answer.status, answer.read())
        except urllib.error.HTTPError as refused:
            return _answer(refused.code, refused.read())

    return send


@pytest.fixture
def motos_own() -> Iterator[Send]:
    """moto's WSGI application in this process: moto's code without the shortcuts."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    client = Client(DomainDispatcherApplication(create_backend_app))
    client.post("/moto-api/reset", headers={"Host": "localhost"})

    def send(operation: str, body: bytes) -> Answer:
        try:
            answer = client.post(
                "/", data=body, headers=_headers(operation) | {"Host": "localhost"}
            )
        except Exception:  # a server answers it with a 500 page
            return 500, None
        return _answer(answer.status_code, answer.get_data())

    yield send
    client.post("/moto-api/reset", headers={"Host": "localhost"})


def test_every_answer_through_the_shortcuts_equals_motos_own(
    moto_server: str, motos_own: Send
) -> None:
    assert os.environ.get(VERIFY_ANSWERS_ENV) == "1"  # the server checks each request too
    for label, operation, request in STEPS:
        body = json.dumps(request).encode()
        assert direct_params(operation, HEADERS["Content-Type"], body) is not None, label
    reset(moto_server)

    ours = _run(_server(moto_server))
    theirs = _run(motos_own)

    assert ours == theirs
    assert ours["put"] == (200, {"ConsumedCapacity": {"TableName": TABLE, "CapacityUnits": 1.0}})
    assert ours["get"] == (200, {"Item": _sets_sorted(ITEM)})
    assert ours["get projected"] == (
        200,
        {
            "Item": _sets_sorted(
                {"m": {"M": {"k": ITEM["m"]["M"]["k"]}}, "b": ITEM["b"], "bs": ITEM["bs"]}
            )
        },
    )
    updated = ours["update"][1]["Attributes"]
    assert updated["n"] == {"N": "8"}
    assert updated["ss"] == {"SS": ["a", "b", "c"]}
    status, refused = ours["update refused"]
    assert status == 400
    assert refused["__type"].endswith("#ConditionalCheckFailedException")
    assert refused["message"] == "The conditional request failed"
    assert refused["Item"]["b"] == ITEM["b"]
    assert ours["put again"][1]["__type"].endswith("#ConditionalCheckFailedException")
    for label, words in (
        ("update redundant parentheses", "The expression has redundant parentheses;"),
        ("update reserved word", "Attribute name is a reserved keyword; reserved keyword: name"),
    ):
        assert ours[label][0] == 400
        assert ours[label][1]["__type"].endswith("#ValidationException")
        assert words in ours[label][1]["message"], label
    assert ours["update unlexable"] == (500, None)
    read = ours["batch get"][1]["Responses"][TABLE]
    assert len(read) == 3
    assert [got["two"] for got in read if "two" in got] == [{"S": "s-first"}]  # S came first
    assert ours["query"][1]["LastEvaluatedKey"]["sk"] == KEY["sk"]
    canceled = ours["transaction refused"][1]
    assert canceled["__type"].endswith("#TransactionCanceledException")
    assert [r["Code"] for r in canceled["CancellationReasons"]] == [
        "None",
        "ConditionalCheckFailed",
    ]
    assert ours["transaction get"][1]["Responses"][0]["Item"]["b"] == {"B": _b64(b"\x03")}
    assert ours["delete refused"][1]["__type"].endswith("#ConditionalCheckFailedException")
    assert ours["delete"][1]["Attributes"]["bs"] == _sets_sorted(ITEM["bs"])
