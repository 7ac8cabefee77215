"""The moto server's shortcuts (`moto_responses`, `moto_updates`, `moto_queries`): their
pure decisions, and that each equals the moto code it stands in for."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from moto.dynamodb.exceptions import MockValidationException
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.utilities import dynamo_to_dict

from v2c.infra.local.moto_queries import candidates
from v2c.infra.local.moto_responses import direct_body, wire_maps
from v2c.infra.local.moto_updates import Plan, fits, placeholders, plan, validation_tree
from v2c.infra.local.moto_verify import same

MEMBERS = frozenset({"Item", "Items", "Count", "ConsumedCapacity", "LastEvaluatedKey"})


def test_binary_values_are_base64_and_members_without_a_value_are_left_out() -> None:
    body = direct_body(
        {"Items": [{"b": {"B": b"\x00\xff"}, "m": {"M": {"x": None}}}], "LastEvaluatedKey": None},
        MEMBERS,
    )
    assert body is not None
    assert json.loads(body) == {"Items": [{"b": {"B": "AP8="}, "m": {"M": {}}}]}


def test_keys_the_output_shape_lacks_are_dropped_as_motos_walk_drops_them() -> None:
    body = direct_body({"Count": 2, "ConsumedCapacityUnits": 0.5}, MEMBERS)
    assert body is not None
    assert json.loads(body) == {"Count": 2}


def test_a_value_the_direct_path_does_not_know_goes_back_to_motos_path() -> None:
    class Opaque:
        pass

    assert direct_body({"Item": {"a": Opaque()}}, MEMBERS) is None
    assert direct_body(["not", "a", "dict"], MEMBERS) is None


def test_only_whole_attribute_set_and_remove_expressions_are_planned() -> None:
    names = {"#a": "s", "#b": "m", "#c": "gone"}
    values = {":a": {"S": "y"}, ":b": {"N": "1"}}
    change = plan("SET #a = :a, #b = :b REMOVE #c", names, values)
    assert change == Plan({"s": {"S": "y"}, "m": {"N": "1"}}, ("gone",))
    for expression in (
        "SET #a = #a + :b",  # arithmetic
        "SET #a = if_not_exists(#a, :a)",  # a function
        "SET #a.#b = :a",  # a nested path
        "ADD #a :b",
        "SET #a = :a, #a = :b",  # named twice: moto words the refusal
        "SET #a = :a REMOVE #a",
        "SET #a = :missing",
        "SET #z = :a",
    ):
        assert plan(expression, names, values) is None, expression
    assert plan("SET #a = :e", names, {":e": {"SS": []}}) is None  # moto's own check


def test_a_planned_update_that_touches_keys_or_mistypes_an_index_key_goes_to_moto() -> None:
    class Table:
        table_key_attrs = ("vehicle_id", "update_id")
        attr = ({"AttributeName": "due_at", "AttributeType": "N"},)
        attribute_keys = ("vehicle_id", "update_id", "due_at")

    assert fits(Table(), Plan({"state": {"S": "DONE"}, "due_at": {"N": "5"}}, ("x",)))
    assert not fits(Table(), Plan({"vehicle_id": {"S": "v"}}, ()))
    assert not fits(Table(), Plan({}, ("update_id",)))
    assert not fits(Table(), Plan({"due_at": {"S": "5"}}, ()))
    assert not fits(Table(), Plan({"due_at": {"B": ""}}, ()))


def test_wire_maps_equal_motos_dynamo_to_dict_for_every_attribute_type() -> None:
    attrs: dict[str, Any] = {
        "s": {"S": "text"},
        "n": {"N": "12.5"},
        "t": {"BOOL": True},
        "z": {"NULL": True},
        "b": {"B": "AP8="},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2"]},
        "bs": {"BS": ["AP8=", "AQ=="]},
        "m": {"M": {"inner": {"L": [{"S": "x"}, {"B": "AQ=="}, {"M": {"deep": {"N": "3"}}}]}}},
        "l": {"L": [{"BOOL": False}, {"SS": ["q"]}]},
    }
    typed = {name: DynamoType(value) for name, value in attrs.items()}
    item = Item(DynamoType({"S": "k"}), None, attrs)
    answer = {
        "Responses": {"t": [typed, typed]},
        "Item": item,
        "Attributes": item.attrs,
        "Count": 2,
        "ScannedCount": 2.0,
        "LastEvaluatedKey": None,
        "Flag": True,
    }
    assert same(wire_maps(dynamo_to_dict)(answer), dynamo_to_dict(answer))
    assert wire_maps(dynamo_to_dict)(typed)["b"] == {"B": b"\x00\xff"}
    assert type(item.attrs) is not dict  # moto's own dict type, walked here too


def test_wire_maps_hand_what_they_do_not_know_to_moto() -> None:
    seen: list[object] = []

    def moto_way(obj: object) -> object:
        seen.append(obj)
        return "moto's"

    class Opaque:
        pass

    opaque = Opaque()
    assert wire_maps(moto_way)({"a": [opaque]}) == {"a": ["moto's"]}
    assert seen == [opaque]


def test_update_expression_validation_trees_are_parsed_once_and_refusals_each_time() -> None:
    make = validation_tree(verify=True)
    first = make("SET #a = :a, #b = :b REMOVE #c")
    assert make("SET #a = :a, #b = :b REMOVE #c") is first
    assert placeholders(first) == (["#a", "#b", "#c"], [":a", ":b"])
    assert placeholders(make("ADD #n :one SET #l = list_append(#l, :x)")) == (
        ["#n", "#l", "#l"],
        [":one", ":x"],
    )
    for _ in range(2):
        with pytest.raises(MockValidationException):
            make("SET #a = = :a")


def test_an_items_attributes_are_walked_without_moto() -> None:
    def refuse(obj: object) -> object:
        raise AssertionError(f"handed to moto: {obj!r}")

    item = Item(DynamoType({"S": "k"}), None, {"s": {"S": "x"}, "m": {"M": {"n": {"N": "1"}}}})
    assert wire_maps(refuse)({"Item": item.attrs}) == {
        "Item": {"s": {"S": "x"}, "m": {"M": {"n": {"N": "1"}}}}
    }


def test_a_query_is_handed_only_the_items_its_hash_key_can_match_in_table_order() -> None:
    def item(v: str, u: str, campaign: str | None) -> Item:
        attrs = {"v": {"S": v}, "u": {"S": u}} | ({"c": {"S": campaign}} if campaign else {})
        return Item(DynamoType({"S": v}), DynamoType({"S": u}), attrs)

    rows = [item("b", "2", "x"), item("a", "9", "x"), item("b", "1", None), item("a", "1", "y")]
    items: dict[DynamoType, dict[DynamoType, Item]] = {}
    for row in rows:
        assert row.range_key is not None
        items.setdefault(row.hash_key, {})[row.range_key] = row
    table = SimpleNamespace(items=items, range_key_attr="u")

    on_index = candidates(
        table, {"index_name": "i", "hash_key_conditions": [("c", DynamoType({"S": "x"}))]}
    )
    assert on_index == [rows[1], rows[0]]
    assert candidates(table, {"hash_key": DynamoType({"S": "b"})}) == [rows[2], rows[0]]
    assert candidates(table, {"hash_key": DynamoType({"S": "nobody"})}) == []
    assert candidates(table, {"index_name": "i", "hash_key_conditions": None}) is None


def test_a_malformed_update_expression_is_left_to_motos_parser() -> None:
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

    with pytest.raises(AssertionError) as ours:
        validation_tree(verify=False)(["SET #a = :a"])  # type: ignore[arg-type]
    with pytest.raises(AssertionError) as theirs:
        UpdateExpressionParser.make(["SET #a = :a"])
    assert type(ours.value) is type(theirs.value)
    assert not isinstance(ours.value, TypeError)  # not the cache's "unhashable type"
