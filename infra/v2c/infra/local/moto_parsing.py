"""moto's DynamoDB request parameters and condition lexing, without repeating work.

moto 5.2 parses every request by walking the operation's botocore input shape
member by member: each attribute value of each item is a ten-member
structure, asked for all ten by name through a handler looked up per node.
For DynamoDB's JSON protocol the result is the request's JSON with three
changes: structures keep only their modelled, non-null members (in the
shape's order), binary values (`B`, `BS`) are base64-decoded to bytes, and
integers pass through `int`. On the 1,000-vehicle rollout that walk was
about 5 % of the moto server's CPU (py-spy, GIL samples).

`install` gives the data-plane operations (`moto_responses.DATA_PLANE`) a
converter compiled once per operation from the same shape: the same
conversions (moto's own blob parser, `int`) applied in the same order, with
one-member structures (nearly every attribute value) answered by one lookup.
Anything it does not mirror exactly goes to moto's parser: a body that is
not a JSON object, a value not of its shape's JSON type (where moto would
iterate a string or fail), a content type moto reads as another protocol,
a conversion that raises, a shape type it does not know (timestamps).

Condition and filter expressions are lexed by moto with a list of regexes
compiled on every call, per token, though a stack sends the same few
expressions again and again: about 7 % of the server's CPU. `install`
keeps the lexed tokens per expression string (bounded, least recently
used) and hands each parse a new deque of them. The tokens themselves are
shared: they are immutable named tuples whose only mutable part, an empty
`children` list, no later stage writes to (`_parse_paths` replaces operand
tokens with new nodes; the other stages pop tokens from the deque and put
them into new nodes' fresh lists; nothing assigns to or appends to a
token's children).

`install(verify=True)` (the test suite) also runs moto's parser on every
shortcut request and fails the request if the two parameter dicts differ
in any key, key order, type or value, and compares every cached lexing with
a fresh one.
"""

from __future__ import annotations

import functools
import json
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from v2c.infra.local.moto_responses import DATA_PLANE
from v2c.infra.local.moto_verify import ShortcutDiffers, same

_MARK: Final = "_v2c_direct_params"
# Distinct condition/filter expressions whose tokens are kept: the stack
# sends a few dozen.
_LEXINGS: Final = 1024

Convert = Callable[[Any], Any]


class ParamsDiffer(ShortcutDiffers):
    """The direct parameters and moto's parser's differ (`verify=True` only)."""


class LexingDiffers(ShortcutDiffers):
    """A cached lexing and a fresh one differ (`verify=True` only)."""


class NotMirrored(Exception):
    """A value or shape moto's parser must judge itself."""


def _structure(
    members: list[tuple[str, str, Convert | None]],
    by_wire: dict[str, tuple[str, Convert | None]],
) -> Convert:
    """moto's `_parse_structure`: modelled, non-null members in the shape's
    order. Both tables are filled after the converter exists (shapes recurse)."""

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is not dict:
            raise NotMirrored
        if len(value) == 1:  # an attribute value: one lookup, not one per member
            [(wire, raw)] = value.items()
            member = by_wire.get(wire)
            if member is None or raw is None:
                return {}
            name, conv = member
            if conv is None and name == wire:
                return value  # equal to the one-member dict moto builds
            return {name: raw if conv is None else conv(raw)}
        parsed = {}
        for name, wire, conv in members:
            raw = value.get(wire)
            if raw is not None:
                parsed[name] = raw if conv is None else conv(raw)
        return parsed

    return convert


def _list(member: Convert | None) -> Convert:
    def convert(value: Any) -> Any:
        if type(value) is not list:
            raise NotMirrored  # moto would iterate a string's characters
        return list(value) if member is None else [member(item) for item in value]

    return convert


def _map(value_conv: Convert | None) -> Convert:
    def convert(value: Any) -> Any:
        if type(value) is not dict:
            raise NotMirrored
        if value_conv is None:
            return dict(value)
        return {key: value_conv(item) for key, item in value.items()}

    return convert


def compile_shape(shape: Any, done: dict[str, Convert | None] | None = None) -> Convert | None:
    """The converter moto's JSON parser amounts to for `shape`; None where the
    parser hands the value back as it is (strings, booleans, documents).
    Raises `NotMirrored` for a shape type it does not mirror."""
    from moto.core.parse import default_blob_parser

    done = {} if done is None else done
    kind = shape.type_name
    if kind in ("string", "boolean"):
        return None
    if kind == "blob":
        return default_blob_parser
    if kind in ("integer", "long", "short", "byte"):
        return int
    if kind in ("float", "double"):
        return float
    if kind == "list":
        return _list(compile_shape(shape.member, done))
    if kind == "map":
        if compile_shape(shape.key, done) is not None:
            raise NotMirrored(kind)
        return _map(compile_shape(shape.value, done))
    if kind != "structure":
        raise NotMirrored(kind)
    if shape.is_document_type:
        return None
    if shape.name in done:
        return done[shape.name]
    members: list[tuple[str, str, Convert | None]] = []
    by_wire: dict[str, tuple[str, Convert | None]] = {}
    convert = done[shape.name] = _structure(members, by_wire)
    for name, member in shape.members.items():
        wire, conv = member.serialization.get("name", name), compile_shape(member, done)
        members.append((name, wire, conv))
        by_wire[wire] = (name, conv)
    return convert


@functools.cache
def _converter(action: str) -> Convert | None:
    from moto.core.utils import get_service_model

    shape = get_service_model("dynamodb").operation_model(action).input_shape
    if shape is None:
        return None
    try:
        return compile_shape(shape)
    except NotMirrored:
        return None


def direct_params(action: str, content_type: str | None, body: bytes) -> dict[str, Any] | None:
    """The parameters moto's parser makes of this DynamoDB request, or None
    when the request is one that parser must judge."""
    from moto.core.request import determine_request_protocol
    from moto.core.utils import get_service_model

    if action not in DATA_PLANE or not body:
        return None
    convert = _converter(action)
    if convert is None:
        return None
    try:
        if determine_request_protocol(get_service_model("dynamodb"), content_type) != "json":
            return None
        value = json.loads(body.decode("utf-8"))
        if type(value) is not dict:
            return None
        params: dict[str, Any] = convert(value)
    except Exception:  # whatever fails here, moto's parser words it
        return None
    return params


def cached_lexing(
    moto_lex: Callable[[Any], deque[Any]],
    make_parser: Callable[[str], Any],
    *,
    verify: bool = False,
) -> Callable[[Any], deque[Any]]:
    """A `_lex_condition_expression` that lexes each expression string once
    (`make_parser(expression)` builds the parser moto's lexer runs on)."""

    @functools.lru_cache(maxsize=_LEXINGS)
    def tokens(expression: str) -> tuple[Any, ...]:
        return tuple(moto_lex(make_parser(expression)))

    def lex(parser: Any) -> deque[Any]:
        expression = parser.condition_expression
        if type(expression) is not str:
            return moto_lex(parser)  # unhashable or odd: moto words the failure
        cached = tokens(expression)
        if verify and cached != tuple(moto_lex(parser)):
            raise LexingDiffers(f"cached lexing of {expression!r} differs from a fresh one")
        return deque(cached)

    return lex


def direct_parsing(
    moto_parse: Callable[[Any, Any], None], *, verify: bool = False
) -> Callable[[Any, Any], None]:
    """A `parse_parameters` that sets the handler's `params` from
    `direct_params` where it can, and through `moto_parse` otherwise."""

    def parse_parameters(handler: Any, request: Any) -> None:
        params = direct_params(handler._get_action(), request.content_type, request.data)
        if params is None:
            moto_parse(handler, request)
            return
        if verify:
            try:
                moto_parse(handler, request)
            except Exception as exc:
                raise ParamsDiffer(
                    f"moto's parser refused what the direct path took: {exc!r}"
                ) from exc
            if not same(handler.params, params):
                raise ParamsDiffer(f"{handler._get_action()}: {handler.params!r} != {params!r}")
        handler.params = params

    return parse_parameters


def install(*, verify: bool = False) -> None:
    """Patch moto's DynamoDB handler and condition parser in this process
    (the moto server child)."""
    from moto.dynamodb.comparisons import ConditionExpressionParser
    from moto.dynamodb.responses import DynamoHandler

    moto_parse = DynamoHandler.parse_parameters
    # The converters build plain dicts, as moto's parser does for this handler.
    if not getattr(moto_parse, _MARK, False) and DynamoHandler.PROTOCOL_PARSER_MAP_TYPE is dict:
        parse_parameters = direct_parsing(moto_parse, verify=verify)
        setattr(parse_parameters, _MARK, True)
        DynamoHandler.parse_parameters = parse_parameters  # type: ignore[method-assign,assignment]
    moto_lex = ConditionExpressionParser._lex_condition_expression
    if not getattr(moto_lex, _MARK, False):
        lex = cached_lexing(
            moto_lex,
            lambda expression: ConditionExpressionParser(expression, None, None),
            verify=verify,
        )
        setattr(lex, _MARK, True)
        ConditionExpressionParser._lex_condition_expression = lex  # type: ignore[method-assign,assignment]
