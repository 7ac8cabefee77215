"""The target-filter grammar: what it accepts, how it evaluates, how it refuses."""

from __future__ import annotations

from decimal import Decimal

import pytest

from v2c.contract.errors import FilterSyntaxError, InvalidInput
from v2c.handlers.ota.domain.target_filter import (
    MAX_FILTER_LENGTH,
    MAX_NESTING_DEPTH,
    And,
    Comparison,
    InList,
    Op,
    Or,
    evaluate,
    parse,
    referenced_attributes,
    to_text,
)

ACCORD_2024 = {
    "model": "Accord",
    "make": "Honda",
    "year": 2024,
    "region": "eu-west-1",
    "hardware_id": "hw-7",
    "installed_version": "2.9.3",
    "vin": "1HGBH41JXMN109186",
}


def test_spec_example_parses_into_and_of_two_comparisons() -> None:
    assert parse("model='Accord' AND year>=2023") == And(
        (Comparison("model", Op.EQ, "Accord"), Comparison("year", Op.GE, 2023))
    )


def test_and_binds_tighter_than_or() -> None:
    expr = parse("make='Honda' OR model='Accord' AND year=2024")
    assert expr == Or(
        (
            Comparison("make", Op.EQ, "Honda"),
            And((Comparison("model", Op.EQ, "Accord"), Comparison("year", Op.EQ, 2024))),
        )
    )


def test_parentheses_override_precedence() -> None:
    expr = parse("(make='Honda' OR model='Accord') AND year=2024")
    assert isinstance(expr, And)
    assert isinstance(expr.operands[0], Or)


def test_keywords_and_attribute_names_are_case_insensitive() -> None:
    assert parse("MODEL='Accord' and Year >= 2023 or vin in ('X')") == parse(
        "model='Accord' AND year>=2023 OR vin IN ('X')"
    )


def test_sql_style_not_equal_is_accepted_as_not_equal() -> None:
    assert parse("model<>'Civic'") == Comparison("model", Op.NE, "Civic")


def test_string_escapes_doubled_quote_and_backslash() -> None:
    assert parse(r"vin='O''Brien\'s \\ lab'") == Comparison("vin", Op.EQ, "O'Brien's \\ lab")


def test_canonical_text_round_trips() -> None:
    text = "(make='Honda' OR model='Accord') AND installed_version<'2.10.0' OR region IN ('a', 'b')"
    expr = parse(text)
    assert to_text(expr) == text
    assert parse(to_text(expr)) == expr


def test_nested_same_operator_keeps_its_parentheses_in_text() -> None:
    expr = And((And((Comparison("year", Op.EQ, 1), Comparison("year", Op.EQ, 2))),
                Comparison("year", Op.EQ, 3)))  # fmt: skip
    assert to_text(expr) == "(year=1 AND year=2) AND year=3"
    assert parse(to_text(expr)) == expr


def test_spec_example_matches_a_2024_accord_and_not_a_2022_one() -> None:
    expr = parse("model='Accord' AND year>=2023")
    assert evaluate(expr, ACCORD_2024)
    assert not evaluate(expr, {**ACCORD_2024, "year": 2022})


def test_installed_version_compares_by_semver_precedence_not_text() -> None:
    expr = parse("installed_version<'2.10.0'")
    assert evaluate(expr, {"installed_version": "2.9.3"})  # as text '2.9.3' > '2.10.0'
    assert not evaluate(expr, {"installed_version": "2.10.0"})
    assert evaluate(parse("installed_version<'2.10.0'"), {"installed_version": "2.10.0-rc.1"})


def test_installed_version_equality_ignores_build_metadata() -> None:
    assert evaluate(parse("installed_version='2.4.1'"), {"installed_version": "2.4.1+build.7"})


def test_in_list_matches_any_member() -> None:
    expr = parse("region IN ('us-east-1', 'eu-west-1')")
    assert evaluate(expr, ACCORD_2024)
    assert not evaluate(expr, {**ACCORD_2024, "region": "ap-south-1"})
    assert evaluate(parse("year IN (2023, 2024)"), ACCORD_2024)


def test_missing_attribute_never_matches_not_even_not_equal() -> None:
    assert not evaluate(parse("model!='Civic'"), {"year": 2024})
    assert not evaluate(parse("year!=2020"), {"model": "Accord"})


def test_ill_typed_vehicle_attributes_never_match() -> None:
    assert not evaluate(parse("year>=2023"), {"year": "2024"})
    assert not evaluate(parse("year>=1"), {"year": True})
    assert not evaluate(parse("installed_version>'1.0.0'"), {"installed_version": "v2"})
    assert not evaluate(parse("model='1'"), {"model": 1})


def test_dynamodb_decimal_years_compare_as_integers() -> None:
    assert evaluate(parse("year>=2023"), {"year": Decimal(2024)})
    assert not evaluate(parse("year=2024"), {"year": Decimal("2024.5")})


def test_referenced_attributes_lists_every_attribute_read() -> None:
    expr = parse("(model='A' OR make='B') AND year>1 AND region IN ('x')")
    assert referenced_attributes(expr) == {"model", "make", "year", "region"}


@pytest.mark.parametrize(
    ("text", "position", "expected_fragment"),
    [
        ("", 1, "attribute name"),
        ("model='Accord' AND", 19, "attribute name"),
        ("colour='red'", 1, "one of model"),
        ("model<'x'", 6, "=, != or IN"),
        ("year>='2023'", 7, "an integer for year"),
        ("model=2023", 7, "a string literal for model"),
        ("model='abc", 11, "closing quote for the string opened at position 7"),
        ("year>=2023 year=1", 12, "AND, OR or the end"),
        ("installed_version>'2.x'", 19, "semantic version"),
        ("model IN ()", 11, "a string literal for model"),
        ("model IN ('a' 'b')", 15, "',' or ')'"),
        ("model='a\\b'", 10, "after a backslash"),
        ('model="Accord"', 7, "an attribute name, a literal"),
        ("(model='a'", 11, "')' to close the '(' at position 1"),
        ("model='a')", 10, "AND, OR or the end"),
        ("model 'a'", 7, "=, !=, <, <=, >, >= or IN"),
        ("year=12345678901", 6, "at most 9 digits"),
        ("year=2023abc", 10, "after a number"),
        ("model='a\nb'", 9, "printable character"),
        ("model='a'; DROP TABLE vehicles", 10, "an attribute name, a literal"),
        ("__import__('os')", 1, "one of model"),
    ],
)
def test_errors_name_the_position_and_what_was_expected(
    text: str, position: int, expected_fragment: str
) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse(text)
    assert caught.value.position == position
    assert expected_fragment in caught.value.expected
    assert f"position {position}" in str(caught.value)


def test_filter_syntax_error_is_invalid_input_answered_with_400() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse("model=")
    assert caught.value.http_status == 400
    assert caught.value.reason == "invalid_target_filter"


def test_filter_longer_than_the_limit_is_refused_before_tokenizing() -> None:
    text = "model='" + "a" * MAX_FILTER_LENGTH + "'"
    with pytest.raises(FilterSyntaxError) as caught:
        parse(text)
    assert caught.value.position == MAX_FILTER_LENGTH + 1


def test_nesting_up_to_the_limit_parses_and_one_more_level_is_refused() -> None:
    deepest = "(" * MAX_NESTING_DEPTH + "year=1" + ")" * MAX_NESTING_DEPTH
    assert parse(deepest) == Comparison("year", Op.EQ, 1)
    too_deep = "(" + deepest + ")"
    with pytest.raises(FilterSyntaxError) as caught:
        parse(too_deep)
    assert caught.value.position == MAX_NESTING_DEPTH + 1


def test_ast_nodes_refuse_invalid_construction() -> None:
    with pytest.raises(ValueError, match="expected"):
        Comparison("colour", Op.EQ, "red")
    with pytest.raises(ValueError, match="no order"):
        Comparison("model", Op.LT, "x")
    with pytest.raises(ValueError, match="at least two"):
        And((Comparison("year", Op.EQ, 1),))
    with pytest.raises(ValueError, match="at least one"):
        InList("year", ())
