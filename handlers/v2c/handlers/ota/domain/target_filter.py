"""The campaign target filter: a small, safe grammar over registry attributes.

    filter     := or_expr END
    or_expr    := and_expr ("OR" and_expr)*          -- AND binds tighter than OR
    and_expr   := primary ("AND" primary)*
    primary    := "(" or_expr ")" | comparison
    comparison := attribute op literal
                | attribute "IN" "(" literal ("," literal)* ")"
    op         := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    literal    := 'single-quoted string' | integer

A filter arrives from a fleet manager over the API, so it is treated as data
from end to end: parsed by hand into frozen dataclasses, type-checked against
an allow-list of attributes, and evaluated by `evaluate` against one vehicle's
attributes. It is never `eval`-ed and never spliced into a query string; a
repository that wants to push part of it into a DynamoDB expression walks the
AST and binds every literal as an expression attribute value.

Each attribute has a type that decides which literals and operators make
sense: text attributes compare for (in)equality only, since `region < 'eu'`
is almost certainly a mistake; `year` takes integers; `installed_version`
takes semantic versions and orders them by precedence, not as text.
Length and nesting are capped so a hostile filter costs bounded time and
stack. Any mistake raises `FilterSyntaxError` with the 1-based position.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Final

from v2c.contract.errors import FilterSyntaxError, ValidationFailed
from v2c.contract.semver import MAX_VERSION_LENGTH, SemVer
from v2c.handlers.ota.domain.filter_lexer import Token, TokenKind, fail, tokenize

MAX_FILTER_LENGTH: Final = 1_000
MAX_NESTING_DEPTH: Final = 16


class AttributeType(Enum):
    TEXT = "a string literal"
    INTEGER = "an integer"
    VERSION = "a quoted semantic version such as '2.4.1'"

    @property
    def expected(self) -> str:
        """What a literal for this type looks like, as error messages say it."""
        return str(self.value)


ATTRIBUTES: Final[Mapping[str, AttributeType]] = {
    "model": AttributeType.TEXT,
    "make": AttributeType.TEXT,
    "year": AttributeType.INTEGER,
    "region": AttributeType.TEXT,
    "hardware_id": AttributeType.TEXT,
    "installed_version": AttributeType.VERSION,
    "vin": AttributeType.TEXT,
}
_ATTRIBUTE_LIST: Final = ", ".join(ATTRIBUTES)


class Op(StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


_ORDERING: Final = frozenset({Op.LT, Op.LE, Op.GT, Op.GE})

Literal = str | int


def _literal_problem(attribute: str, value: Literal) -> str | None:
    """Why `value` cannot be compared with `attribute`, or None if it can."""
    kind = ATTRIBUTES.get(attribute)
    if kind is None:
        return f"one of {_ATTRIBUTE_LIST}"
    if kind is AttributeType.INTEGER:
        return None if type(value) is int else kind.expected
    if not isinstance(value, str):
        return kind.expected
    if kind is AttributeType.VERSION:
        try:
            SemVer.parse(value)
        except ValidationFailed:
            return kind.expected
    return None


def _operator_problem(attribute: str, op: Op) -> str | None:
    if op in _ORDERING and ATTRIBUTES.get(attribute) is AttributeType.TEXT:
        return f"=, != or IN ({attribute} is text and has no order)"
    return None


@dataclass(frozen=True, slots=True)
class Comparison:
    attribute: str
    op: Op
    value: Literal

    def __post_init__(self) -> None:
        problem = _literal_problem(self.attribute, self.value) or _operator_problem(
            self.attribute, self.op
        )
        if problem is not None:
            raise ValueError(f"invalid comparison {self}: expected {problem}")


@dataclass(frozen=True, slots=True)
class InList:
    attribute: str
    values: tuple[Literal, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("IN needs at least one value")
        for value in self.values:
            if (problem := _literal_problem(self.attribute, value)) is not None:
                raise ValueError(f"invalid IN value {value!r}: expected {problem}")


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("AND needs at least two operands")


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("OR needs at least two operands")


Expr = Comparison | InList | And | Or


class _Parser:
    """Recursive descent over the token list; recursion depth is bounded by
    MAX_NESTING_DEPTH because only a parenthesis opens a new level."""

    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens
        self._index = 0

    def _peek(self) -> Token:
        return self._tokens[self._index]

    def _next(self) -> Token:
        token = self._tokens[self._index]
        if token.kind is not TokenKind.END:
            self._index += 1
        return token

    def _expect(self, kind: TokenKind, expected: str | None = None) -> Token:
        token = self._next()
        if token.kind is not kind:
            raise fail(token.position, expected or kind.value, token.describe())
        return token

    def parse(self) -> Expr:
        expr = self._or_expr(0)
        end = self._peek()
        if end.kind is not TokenKind.END:
            raise fail(end.position, "AND, OR or the end of the filter", end.describe())
        return expr

    def _or_expr(self, depth: int) -> Expr:
        operands = [self._and_expr(depth)]
        while self._peek().kind is TokenKind.OR:
            self._next()
            operands.append(self._and_expr(depth))
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def _and_expr(self, depth: int) -> Expr:
        operands = [self._primary(depth)]
        while self._peek().kind is TokenKind.AND:
            self._next()
            operands.append(self._primary(depth))
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def _primary(self, depth: int) -> Expr:
        token = self._peek()
        if token.kind is not TokenKind.LPAREN:
            return self._comparison()
        if depth >= MAX_NESTING_DEPTH:
            raise fail(
                token.position,
                f"at most {MAX_NESTING_DEPTH} levels of parentheses",
                "a deeper '('",
            )
        self._next()
        expr = self._or_expr(depth + 1)
        self._expect(
            TokenKind.RPAREN, f"AND, OR or ')' to close the '(' at position {token.position}"
        )
        return expr

    def _comparison(self) -> Expr:
        name = self._expect(TokenKind.IDENT, f"an attribute name ({_ATTRIBUTE_LIST}) or '('")
        attribute = name.text.lower()  # names are case-insensitive, like the keywords
        if attribute not in ATTRIBUTES:
            raise fail(name.position, f"one of {_ATTRIBUTE_LIST}", name.describe())
        token = self._next()
        if token.kind is TokenKind.IN:
            return self._in_list(attribute)
        if token.kind is not TokenKind.OPERATOR:
            raise fail(token.position, "=, !=, <, <=, >, >= or IN", token.describe())
        op = Op(str(token.value))
        if (problem := _operator_problem(attribute, op)) is not None:
            raise fail(token.position, problem, token.describe())
        return Comparison(attribute, op, self._literal(attribute))

    def _in_list(self, attribute: str) -> Expr:
        self._expect(TokenKind.LPAREN, "'(' after IN")
        values = [self._literal(attribute)]
        while self._peek().kind is TokenKind.COMMA:
            self._next()
            values.append(self._literal(attribute))
        self._expect(TokenKind.RPAREN, "',' or ')' to close the IN list")
        return InList(attribute, tuple(values))

    def _literal(self, attribute: str) -> Literal:
        token = self._next()
        kind = ATTRIBUTES[attribute]
        literal = token.kind in (TokenKind.STRING, TokenKind.INTEGER)
        if literal and token.value is not None and _literal_problem(attribute, token.value) is None:
            return token.value
        raise fail(token.position, f"{kind.expected} for {attribute}", token.describe())


def parse(text: str) -> Expr:
    """Parse a filter into its AST, or raise `FilterSyntaxError` naming the position."""
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterSyntaxError(
            f"invalid target filter at position {MAX_FILTER_LENGTH + 1}: expected at most "
            f"{MAX_FILTER_LENGTH} characters, found {len(text)}",
            position=MAX_FILTER_LENGTH + 1,
            expected=f"at most {MAX_FILTER_LENGTH} characters",
        )
    return _Parser(tokenize(text)).parse()


# -- printing -----------------------------------------------------------------


def _quote(value: Literal) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _child(expr: Expr, parent: type[And] | type[Or]) -> str:
    # AND inside OR needs no parentheses (precedence); every other compound
    # child gets them, so printing then parsing gives back the very same tree.
    text = to_text(expr)
    if isinstance(expr, And | Or) and not (parent is Or and isinstance(expr, And)):
        return f"({text})"
    return text


def to_text(expr: Expr) -> str:
    """The canonical text of a filter: `parse(to_text(e)) == e` for every valid AST."""
    match expr:
        case Comparison(attribute, op, value):
            return f"{attribute}{op.value}{_quote(value)}"
        case InList(attribute, values):
            return f"{attribute} IN ({', '.join(_quote(v) for v in values)})"
        case And(operands):
            return " AND ".join(_child(o, And) for o in operands)
        case Or(operands):
            return " OR ".join(_child(o, Or) for o in operands)


def referenced_attributes(expr: Expr) -> frozenset[str]:
    """The attributes a filter reads: a repository fetches only these."""
    match expr:
        case Comparison(attribute, _, _) | InList(attribute, _):
            return frozenset({attribute})
        case And(operands) | Or(operands):
            return frozenset().union(*(referenced_attributes(o) for o in operands))


# -- evaluation -----------------------------------------------------------------


def _version(text: str) -> SemVer | None:
    # Versions repeat across a fleet, so parsing is cached; over-long text is
    # refused before it can become a cache key.
    return _parse_version(text) if len(text) <= MAX_VERSION_LENGTH else None


@functools.lru_cache(maxsize=4096)
def _parse_version(text: str) -> SemVer | None:
    try:
        return SemVer.parse(text)
    except ValidationFailed:
        return None


def _actual(kind: AttributeType, raw: object) -> str | int | SemVer | None:
    """A vehicle's attribute as a comparable value, or None if absent or ill-typed.

    Registries hand numbers over as `Decimal` (boto3's DynamoDB resource); a
    `bool` is not a year even though Python calls it an int.
    """
    if kind is AttributeType.TEXT:
        return raw if isinstance(raw, str) else None
    if kind is AttributeType.VERSION:
        return _version(raw) if isinstance(raw, str) else None
    if type(raw) is int:
        return raw
    if isinstance(raw, Decimal) and raw.is_finite() and raw == raw.to_integral_value():
        return int(raw)
    return None


def _expected(kind: AttributeType, literal: Literal) -> str | int | SemVer | None:
    if kind is AttributeType.VERSION and isinstance(literal, str):
        return _version(literal)
    return literal


_COMPARE: Final = {
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
}


def _holds(op: Op, actual: str | int | SemVer, expected: str | int | SemVer) -> bool:
    # Values of different types never match (a text `year` is not 2023); the
    # parser lets ordering operators reach integers and versions only.
    return type(actual) is type(expected) and bool(_COMPARE[op](actual, expected))


def evaluate(expr: Expr, vehicle: Mapping[str, object]) -> bool:
    """Does this vehicle match? A missing or ill-typed attribute makes every
    comparison on it false, `!=` included: a vehicle the registry knows too
    little about is left out of a campaign rather than updated by accident."""
    match expr:
        case Comparison(attribute, op, value):
            kind = ATTRIBUTES[attribute]
            actual = _actual(kind, vehicle.get(attribute))
            expected = _expected(kind, value)
            return actual is not None and expected is not None and _holds(op, actual, expected)
        case InList(attribute, values):
            kind = ATTRIBUTES[attribute]
            actual = _actual(kind, vehicle.get(attribute))
            return actual is not None and any(
                _holds(Op.EQ, actual, e) for v in values if (e := _expected(kind, v)) is not None
            )
        case And(operands):
            return all(evaluate(o, vehicle) for o in operands)
        case Or(operands):
            return any(evaluate(o, vehicle) for o in operands)
