"""The moto server's request and condition shortcuts (`moto_parsing`): which
requests take them, and that each equals the moto code it stands in for
(moto's own JSON parser and lexer, run here in-process, unpatched)."""

from __future__ import annotations

import base64
import json
from collections import deque
from typing import Any

import pytest
from moto.core.parse import JSONParser
from moto.core.utils import get_service_model
from moto.dynamodb.comparisons import ConditionExpressionParser
from moto.dynamodb.models.dynamo_type import DynamoType, Item

from v2c.infra.local.moto_parsing import (
    LexingDiffers,
    NotMirrored,
    ParamsDiffer,
    cached_lexing,
    compile_shape,
    direct_params,
    direct_parsing,
)
from v2c.infra.local.moto_verify import same

JSON_1_0 = "application/x-amz-json-1.0"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def motos_params(action: str, body: bytes) -> Any:
    """What moto's own parser makes of a DynamoDB request body."""
    operation = get_service_model("dynamodb").operation_model(action)
    request = {
        "method": "POST",
        "values": {},
        "headers": {},
        "body": body,
        "url_path": "/",
        "url_params": {},
    }
    return JSONParser(operation, map_type=dict).parse(request)  # type: ignore[arg-type]


EVERY_TYPE = {
    "s": {"S": "text"},
    "n": {"N": "12.5"},
    "b": {"B": _b64(b"\x00\xff")},
    "ss": {"SS": ["p", "q"]},
    "ns": {"NS": ["1", "2"]},
    "bs": {"BS": [_b64(b"x"), _b64(b"\x00")]},
    "m": {"M": {"l": {"L": [{"NULL": True}, {"BOOL": False}, {"B": _b64(b"\x07")}]}}},
}

# Requests the shortcut takes, including what the SDK would never send but a
# raw client may: keys out of the shape's order, unknown and null members,
# an attribute value with two types (moto keeps the shape's order: S first).
SHORTCUT = [
    ("PutItem", {"Item": EVERY_TYPE, "TableName": "t", "ReturnValues": None, "Bogus": 1}),
    ("GetItem", {"TableName": "t", "Key": {"k": {"N": "1", "S": "x"}, "u": {"S": None}}}),
    ("Query", {"TableName": "t", "Limit": 5, "ExclusiveStartKey": {"b": {"B": _b64(b"k")}}}),
    ("Scan", {"TableName": "t", "Limit": "7", "Segment": 0, "TotalSegments": 2.0}),
    (
        "BatchGetItem",
        {"RequestItems": {"t": {"Keys": [{"k": {"S": f"v{n}"}} for n in range(3)]}}},
    ),
    (
        "BatchWriteItem",
        {"RequestItems": {"t": [{"PutRequest": {"Item": EVERY_TYPE}}, {"DeleteRequest": None}]}},
    ),
    (
        "TransactWriteItems",
        {
            "TransactItems": [
                {
                    "Update": {
                        "UpdateExpression": "SET #a = :a",
                        "Key": {"k": {"S": "x"}},
                        "TableName": "t",
                        "ConditionExpression": "#a IN (:a, :b)",
                        "ExpressionAttributeNames": {"#a": "a"},
                        "ExpressionAttributeValues": {":a": {"BS": [_b64(b"1")]}, ":b": {"N": "1"}},
                    }
                },
                {"ConditionCheck": {"Key": {"k": {"S": "y"}}, "TableName": "t"}},
            ]
        },
    ),
    (
        "TransactGetItems",
        {"TransactItems": [{"Get": {"Key": {"k": {"S": "x"}}, "TableName": "t"}}]},
    ),
    ("UpdateItem", {"TableName": "t", "Key": {}, "ReturnValues": "ALL_NEW"}),
    ("DeleteItem", {"TableName": "t", "Key": {"k": {"S": "x"}}, "ConditionExpression": "a = :a"}),
]


@pytest.mark.parametrize(("action", "request_body"), SHORTCUT, ids=[a for a, _ in SHORTCUT])
def test_data_plane_requests_take_the_shortcut_and_equal_motos_parser(
    action: str, request_body: dict[str, Any]
) -> None:
    body = json.dumps(request_body).encode()

    params = direct_params(action, JSON_1_0, body)

    assert params is not None
    assert same(params, motos_params(action, body))


def test_the_shortcut_decodes_binary_and_keeps_the_shapes_member_order() -> None:
    body = json.dumps({"Item": {"b": {"B": _b64(b"\x00\xff")}}, "TableName": "t"}).encode()

    params = direct_params("PutItem", JSON_1_0, body)

    assert params == {"TableName": "t", "Item": {"b": {"B": b"\x00\xff"}}}
    assert list(params) == ["TableName", "Item"]


@pytest.mark.parametrize(
    ("action", "content_type", "body"),
    [
        ("CreateTable", JSON_1_0, b'{"TableName": "t"}'),  # not a data-plane operation
        ("DescribeTable", JSON_1_0, b'{"TableName": "t"}'),
        ("GetItem", "application/json", b'{"TableName": "t"}'),  # moto: rest-json, refused
        ("GetItem", "application/x-www-form-urlencoded", b"TableName=t"),
        ("GetItem", JSON_1_0, b""),  # moto makes {} of it
        ("GetItem", JSON_1_0, b"{not json"),  # moto makes {"message": ...} of it
        ("GetItem", JSON_1_0, b"null"),
        ("GetItem", JSON_1_0, b'["TableName"]'),
        ("GetItem", JSON_1_0, b"\xff\xfe"),
        ("GetItem", JSON_1_0, b'{"Key": {"k": {"SS": "abc"}}}'),  # moto iterates the string
        ("GetItem", JSON_1_0, b'{"Key": ["k"]}'),  # moto fails on it
        ("GetItem", JSON_1_0, b'{"Key": {"k": {"B": "not base64!"}}}'),
        ("GetItem", JSON_1_0, b'{"Key": {"k": {"BS": [null]}}}'),
        ("Query", JSON_1_0, b'{"Limit": Infinity}'),
    ],
)
def test_requests_the_shortcut_cannot_mirror_go_to_motos_parser(
    action: str, content_type: str, body: bytes
) -> None:
    assert direct_params(action, content_type, body) is None


def test_a_shape_type_the_converters_do_not_mirror_is_refused_when_compiled() -> None:
    restore = get_service_model("dynamodb").operation_model("RestoreTableToPointInTime")

    with pytest.raises(NotMirrored):
        compile_shape(restore.input_shape)  # RestoreDateTime is a timestamp


def test_same_tells_types_and_key_order_apart() -> None:
    assert same({"a": [1, "x"], "b": b"\x00"}, {"a": [1, "x"], "b": b"\x00"})
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not same({"Limit": 1}, {"Limit": True})
    assert not same([1], [1.0])
    assert same(float("nan"), float("nan"))


class _Handler:
    def __init__(self, action: str) -> None:
        self.action = action
        self.params: Any = None

    def _get_action(self) -> str:
        return self.action


class _Request:
    content_type = JSON_1_0

    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()


def test_verify_mode_fails_the_request_when_motos_parser_disagrees() -> None:
    def motos_parser_dropping_the_key(handler: Any, request: Any) -> None:
        handler.params = {"TableName": "t"}

    parse = direct_parsing(motos_parser_dropping_the_key, verify=True)

    with pytest.raises(ParamsDiffer):
        parse(_Handler("GetItem"), _Request({"TableName": "t", "Key": {"k": {"S": "x"}}}))


def test_verify_mode_passes_motos_params_through_when_equal_and_falls_back_unverified() -> None:
    calls: list[str] = []

    def motos(handler: Any, request: Any) -> None:
        calls.append(handler.action)
        handler.params = motos_params(handler.action, request.data)

    parse = direct_parsing(motos, verify=True)
    handler = _Handler("GetItem")
    parse(handler, _Request({"TableName": "t", "Key": {"k": {"B": _b64(b"\x01")}}}))
    assert handler.params == {"TableName": "t", "Key": {"k": {"B": b"\x01"}}}

    table = _Handler("CreateTable")
    parse(table, _Request({"TableName": "t"}))
    assert table.params == {"TableName": "t"}
    assert calls == ["GetItem", "CreateTable"]  # verified once, fallen back once


# ---- the lex cache -----------------------------------------------------------

MOTO_LEX = ConditionExpressionParser._lex_condition_expression
NAMES = {"#s": "state", "#m": "m", "#k": "k", "#n": "n"}
VALUES = {":a": {"S": "RUN"}, ":b": {"S": "OK"}, ":lo": {"N": "1"}, ":hi": {"N": "9"}}
EXPRESSIONS = [
    "#s = :a",
    "attribute_not_exists(#s) OR (#s IN (:a, :b) AND size(#m.#k[1]) BETWEEN :lo AND :hi)",
    "NOT begins_with(#m.#k, :a) AND contains(#s, :a) AND #s <> :b",
    "attribute_type(#s, :a) AND #n >= :lo",
]


def _counting_lexer(*, verify: bool = False) -> tuple[Any, list[str]]:
    lexed: list[str] = []

    def moto_lex(parser: Any) -> deque[Any]:
        lexed.append(parser.condition_expression)
        return MOTO_LEX(parser)

    make = lambda expression: ConditionExpressionParser(expression, None, None)  # noqa: E731
    return cached_lexing(moto_lex, make, verify=verify), lexed


def test_the_lex_cache_returns_equal_independent_deques_lexing_once() -> None:
    lex, lexed = _counting_lexer()
    parser = ConditionExpressionParser(EXPRESSIONS[1], NAMES, VALUES)

    first, second = lex(parser), lex(parser)

    assert lexed == [EXPRESSIONS[1]]  # the second came from the cache
    assert first == second == MOTO_LEX(parser)
    assert first is not second
    first.popleft()
    first.clear()
    assert lex(parser) == second == MOTO_LEX(parser)


def _tree(value: Any) -> Any:
    """An operator tree as plain data (moto's reprs fail on list indexes)."""
    if isinstance(value, list | tuple):
        return [_tree(v) for v in value]
    if isinstance(value, dict):
        return {k: _tree(v) for k, v in value.items()}
    if hasattr(value, "__dict__"):
        return (type(value).__name__, _tree(vars(value)))
    return value


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_conditions_parsed_through_the_cache_equal_and_decide_as_motos(expression: str) -> None:
    lex, _ = _counting_lexer(verify=True)

    class Cached(ConditionExpressionParser):
        _lex_condition_expression = lex

    item = Item(
        DynamoType({"S": "h"}),
        None,
        {
            "state": {"S": "RUN"},
            "n": {"N": "5"},
            "m": {"M": {"k": {"L": [{"S": "a"}, {"S": "b"}]}}},
        },
    )
    for _ in range(3):  # the first lexes, the others come from the cache
        ours = Cached(expression, NAMES, VALUES).parse()
        theirs = ConditionExpressionParser(expression, NAMES, VALUES).parse()
        assert _tree(ours) == _tree(theirs)
        assert ours.expr(item) == theirs.expr(item)


def test_an_expression_moto_cannot_lex_raises_motos_error_every_time() -> None:
    lex, lexed = _counting_lexer()
    parser = ConditionExpressionParser("#s = :a ; DROP", NAMES, VALUES)
    with pytest.raises(ValueError, match="Cannot parse condition starting at:;") as fresh:
        MOTO_LEX(parser)

    for _ in range(2):
        with pytest.raises(ValueError, match="Cannot parse condition") as cached:
            lex(parser)
        assert str(cached.value) == str(fresh.value)
    assert len(lexed) == 2  # a refusal is not cached


def test_an_expression_that_is_not_a_string_goes_to_motos_lexer_uncached() -> None:
    lex, lexed = _counting_lexer()
    parser = ConditionExpressionParser(["#s"], NAMES, VALUES)  # type: ignore[arg-type]

    with pytest.raises(TypeError):
        lex(parser)
    assert len(lexed) == 1


def test_verify_mode_catches_a_cached_token_changed_after_lexing() -> None:
    lex, _ = _counting_lexer(verify=True)
    parser = ConditionExpressionParser("#s = :a", NAMES, VALUES)
    tokens = lex(parser)

    tokens[0].children.append("changed downstream")

    with pytest.raises(LexingDiffers):
        lex(parser)
