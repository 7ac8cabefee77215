"""The moto server's shortcuts (`moto_responses`, `moto_updates`): their pure decisions."""

from __future__ import annotations

import json

from v2c.infra.local.moto_responses import direct_body
from v2c.infra.local.moto_updates import Plan, fits, plan

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
