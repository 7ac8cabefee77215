"""Properties of the target-filter grammar over generated ASTs and hostile text."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from v2c.contract.errors import FilterSyntaxError
from v2c.handlers.ota.domain.target_filter import (
    ATTRIBUTES,
    MAX_FILTER_LENGTH,
    And,
    AttributeType,
    Comparison,
    Expr,
    InList,
    Op,
    Or,
    evaluate,
    parse,
    to_text,
)

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any printable text: the grammar refuses control characters inside literals.
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")),
    max_size=12,
)
VERSIONS = st.builds(
    lambda a, b, c, pre: f"{a}.{b}.{c}" + (f"-{pre}" if pre else ""),
    st.integers(0, 30),
    st.integers(0, 30),
    st.integers(0, 30),
    st.sampled_from(["", "rc.1", "beta", "alpha.2.x"]),
)
INTEGERS = st.integers(0, 999_999_999)


def _literal(kind: AttributeType) -> st.SearchStrategy[str | int]:
    if kind is AttributeType.INTEGER:
        return INTEGERS
    if kind is AttributeType.VERSION:
        return VERSIONS
    return TEXT


@st.composite
def comparisons(draw: st.DrawFn) -> Expr:
    attribute = draw(st.sampled_from(sorted(ATTRIBUTES)))
    kind = ATTRIBUTES[attribute]
    if draw(st.booleans()):
        values = draw(st.lists(_literal(kind), min_size=1, max_size=3))
        return InList(attribute, tuple(values))
    ops = [Op.EQ, Op.NE] if kind is AttributeType.TEXT else list(Op)
    return Comparison(attribute, draw(st.sampled_from(ops)), draw(_literal(kind)))


def _compound(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    operands = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.builds(And, operands) | st.builds(Or, operands)


EXPRESSIONS = st.recursive(comparisons(), _compound, max_leaves=10)


@SETTINGS
@given(EXPRESSIONS)
def test_every_valid_ast_prints_and_parses_back_to_itself(expr: Expr) -> None:
    text = to_text(expr)
    assume(len(text) <= MAX_FILTER_LENGTH)
    assert parse(text) == expr


TOKENS = st.sampled_from(
    [
        "model", "year", "installed_version", "region", "colour", "AND", "OR", "IN", "and",
        "(", ")", ",", "=", "!=", "<>", "<", "<=", ">", ">=", "==", "!", "'Accord'", "'2.4.1'",
        "'", "''", "\\", "2023", "-1", "0x10", " ", "\t", "\n", "\x00", "é", ";", "--", "*",
    ]
)  # fmt: skip


def _parse_or_error(text: str) -> Expr | FilterSyntaxError:
    """Any exception other than FilterSyntaxError escapes and fails the test."""
    try:
        return parse(text)
    except FilterSyntaxError as exc:
        return exc


def _check(text: str) -> None:
    result = _parse_or_error(text)
    if isinstance(result, FilterSyntaxError):
        assert 1 <= result.position <= len(text) + 1
        assert result.expected
        assert f"position {result.position}" in str(result)
    else:
        assert parse(to_text(result)) == result


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_filter_syntax_error_only(text: str) -> None:
    _check(text)


@SETTINGS
@given(st.lists(TOKENS, max_size=30).map("".join))
def test_token_soup_parses_or_raises_filter_syntax_error_only(text: str) -> None:
    _check(text)


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.decimals(allow_nan=True),
    st.text(max_size=10),
    VERSIONS,
    st.lists(st.integers(), max_size=2),
)


@SETTINGS
@given(EXPRESSIONS, st.dictionaries(st.sampled_from(sorted(ATTRIBUTES)), ANY_VALUE))
def test_evaluation_never_raises_on_any_vehicle_attributes(
    expr: Expr, vehicle: dict[str, object]
) -> None:
    assert evaluate(expr, vehicle) in (True, False)


@SETTINGS
@given(st.integers(1900, 2100), st.integers(1900, 2100))
def test_integer_comparisons_agree_with_python(year: int, bound: int) -> None:
    for op, expected in [
        ("=", year == bound),
        ("!=", year != bound),
        ("<", year < bound),
        ("<=", year <= bound),
        (">", year > bound),
        (">=", year >= bound),
    ]:
        expr = parse(f"year{op}{bound}")
        assert evaluate(expr, {"year": year}) is expected
        assert evaluate(expr, {"year": Decimal(year)}) is expected
