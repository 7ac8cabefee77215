"""moto's UpdateItem applied directly when the expression only sets and removes attributes.

Every status report the stack stores is an `Update` in a transaction whose
expression is `SET #n0 = :v0, #n3 = :v3 ... [REMOVE #d0, #d1]` (the update
repository writes only what changed). moto answers each by tokenizing and
parsing the expression into a tree, running ten validators over it, and
executing the tree; the tree work was 24 % of the moto server's CPU on the
1,000-vehicle rollout (py-spy, GIL samples), the largest share of the
server's time after answer writing (`moto_responses`).

`install` recognises exactly that shape (whole-attribute placeholders, one
SET clause, an optional REMOVE clause, every placeholder defined, nothing
named twice, no key attribute touched, no value of the wrong type for an
index key or empty where an index key cannot be, an existing item on a
table without a stream) and applies it directly: the same condition check
through moto's own condition parser, the same values, the size limit
measured once over the finished item. Anything else, and any item within
reach of the size limit, goes to moto's own `update_item`, so the direct
path refuses nothing moto accepts and accepts nothing moto refuses.

moto's request handler also parses every update expression of a request
(each `Update` of a transaction, and UpdateItem) only to list the `#name`
and `:value` placeholders it uses, then throws the tree away: 15 % of the
server's CPU on the same rollout, as the backend parses the same string
again to run it. `install` caches those validation trees per expression
string (`validation_tree`): the handler only reads them, while the backend
keeps parsing its own, which its validators rewrite.

`install(verify=True)` (the test suite) also applies every direct update
moto's way on a copy and raises if the two items differ, and checks each
cached validation tree's placeholders against a fresh parse.
"""

from __future__ import annotations

import copy
import functools
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from v2c.infra.local.moto_verify import ShortcutDiffers

_MARK: Final = "_v2c_direct_update"
_SET: Final = re.compile(r"^SET (#\w+ = :\w+(?:, #\w+ = :\w+)*)(?: REMOVE (#\w+(?:, #\w+)*))?$")
_PAIR: Final = re.compile(r"(#\w+) = (:\w+)")
# Updates this large take moto's path: moto checks the size at each SET with
# the replaced value and the attributes still to be removed counted, so its
# running total can pass the limit where the finished item does not. The
# direct path bounds that worst total (the old item plus every new value)
# well below moto's 405,000 bytes.
_DIRECT_MAX_BYTES: Final = 300_000
_SETS: Final = frozenset({"SS", "NS", "BS"})


# Distinct update expressions the handler's validation trees are kept for:
# the stack writes a few hundred shapes (which attributes changed).
_TREES: Final = 4096


class UpdatesDiffer(ShortcutDiffers):
    """The direct update and moto's own left different items (`verify=True` only)."""


def placeholders(tree: Any) -> tuple[list[str], list[str]]:
    """The `#name` and `:value` placeholders an update expression's tree uses,
    in the order moto's handler lists them."""
    from moto.dynamodb.parsing.expressions import (  # type: ignore[attr-defined]
        ExpressionAttributeName,
        ExpressionAttributeValue,
    )

    names = [
        n.get_attribute_name_placeholder() for n in tree.find_clauses([ExpressionAttributeName])
    ]
    values = [v.get_value_name() for v in tree.find_clauses([ExpressionAttributeValue])]
    return names, values


def validation_tree(verify: bool) -> Callable[[str], Any]:
    """`UpdateExpressionParser.make` for the handler's read-only use, one
    parse per distinct expression (a refused expression raises each time:
    errors are not cached)."""
    from moto.dynamodb.parsing.expressions import (  # type: ignore[attr-defined]
        UpdateExpressionParser,
    )

    lru = functools.lru_cache(maxsize=_TREES)(UpdateExpressionParser.make)

    def cached(expression: Any) -> Any:
        # Not a string (a malformed request): moto's own parser words the refusal.
        return (
            lru(expression) if type(expression) is str else UpdateExpressionParser.make(expression)
        )

    if not verify:
        return cached

    def checked(expression: str) -> Any:
        tree = cached(expression)
        fresh = placeholders(UpdateExpressionParser.make(expression))
        if placeholders(tree) != fresh:
            raise UpdatesDiffer(f"cached tree of {expression!r} differs from a fresh parse")
        return tree

    return checked


@dataclass(frozen=True, slots=True)
class Plan:
    """An update expression reduced to attribute names: what to set, what to remove."""

    sets: dict[str, dict[str, Any]]
    removes: tuple[str, ...]


def plan(
    expression: str | None,
    names: Mapping[str, str] | None,
    values: Mapping[str, Any] | None,
) -> Plan | None:
    """The plan of a SET/REMOVE-only expression, or None when it needs moto's parser."""
    match = _SET.match(expression or "")
    if match is None or not names or not values:
        return None
    sets: dict[str, dict[str, Any]] = {}
    for name_ref, value_ref in _PAIR.findall(match.group(1)):
        name, value = names.get(name_ref), values.get(value_ref)
        if name is None or not _plain_value(value) or name in sets:
            return None
        sets[name] = value  # type: ignore[assignment]
    removes = tuple(names.get(ref, "") for ref in (match.group(2) or "").split(", ") if ref)
    if "" in removes or len(set(removes)) != len(removes) or set(removes) & set(sets):
        return None
    return Plan(sets, removes)


def _plain_value(value: Any) -> bool:
    """A one-typed attribute value moto would take as it is (an empty set is refused)."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    [(kind, inner)] = value.items()
    return not (kind in _SETS and not inner)


def fits(table: Any, change: Plan) -> bool:
    """Whether `change` stays clear of what moto's validators look at (key
    attributes, an index key's type, an empty index key); anything they look
    at goes to moto's own path to be judged there."""
    touched = set(change.sets) | set(change.removes)
    if touched & set(table.table_key_attrs):
        return False
    defined = {d["AttributeName"]: d["AttributeType"] for d in table.attr}
    for name, value in change.sets.items():
        [(kind, inner)] = value.items()
        if name in defined and defined[name] != kind:
            return False
        if name in table.attribute_keys and kind in ("S", "B") and not inner:
            return False
    return True


def install(*, verify: bool = False) -> None:
    """Patch moto's DynamoDB backend in this process (the moto server child)."""
    from moto.dynamodb import responses
    from moto.dynamodb.comparisons import create_condition_expression_parser
    from moto.dynamodb.exceptions import ConditionalCheckFailed
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.utilities import bytesize

    if getattr(DynamoDBBackend.update_item, _MARK, False):
        return
    moto_update_item = DynamoDBBackend.update_item
    # The handler reads `UpdateExpressionParser.make` from its module's
    # globals; the backend's own import (models) keeps the uncached parser.
    responses.UpdateExpressionParser = types.SimpleNamespace(make=validation_tree(verify))  # type: ignore[attr-defined]

    def update_item(
        self: Any,
        table_name: str,
        key: dict[str, Any],
        update_expression: str,
        expression_attribute_names: dict[str, Any],
        expression_attribute_values: dict[str, Any],
        attribute_updates: dict[str, Any] | None = None,
        expected: dict[str, Any] | None = None,
        condition_expression: str | None = None,
        return_values_on_condition_check_failure: str | None = None,
    ) -> Any:
        def moto_way() -> Any:
            return moto_update_item(
                self,
                table_name,
                key,
                update_expression,
                expression_attribute_names,
                expression_attribute_values,
                attribute_updates,
                expected,
                condition_expression,
                return_values_on_condition_check_failure,
            )

        change = plan(update_expression, expression_attribute_names, expression_attribute_values)
        table = self.tables.get(table_name)
        if change is None or attribute_updates or expected or table is None:
            return moto_way()
        if table.stream_shard is not None or not fits(table, change):
            return moto_way()
        try:
            hash_key, range_key = self.get_keys_value(table, key)
        except Exception:
            return moto_way()  # moto words the refusal
        item = table.get_item(hash_key, range_key)
        if item is None:
            return moto_way()  # moto creates the item
        new = {name: DynamoType(value) for name, value in change.sets.items()}
        worst = sum(bytesize(k) + v.size() for k, v in (*item.attrs.items(), *new.items()))
        if worst > _DIRECT_MAX_BYTES:
            return moto_way()
        attrs = dict(item.attrs)
        attrs.update(new)
        for name in change.removes:
            attrs.pop(name, None)
        condition = create_condition_expression_parser(
            condition_expression, expression_attribute_names, expression_attribute_values
        ).parse()
        if not condition.expr(item):
            if return_values_on_condition_check_failure == "ALL_OLD":
                raise ConditionalCheckFailed(item=item.to_json()["Attributes"])
            raise ConditionalCheckFailed
        if verify:
            _check_against_moto(item, attrs, moto_way)
        dict.clear(item.attrs)
        dict.update(item.attrs, attrs)  # measured above: the per-insert check is moto's O(n²)
        return item

    setattr(update_item, _MARK, True)
    DynamoDBBackend.update_item = update_item  # type: ignore[method-assign]


def _check_against_moto(item: Any, attrs: dict[str, Any], moto_way: Any) -> None:
    """Apply the update moto's way, compare, and put the item back as it was
    (also when moto refuses what the direct path would have accepted)."""
    before = copy.deepcopy(item.attrs)
    try:
        moto_way()
        theirs = {k: v.to_json() for k, v in item.attrs.items()}
    except Exception as exc:
        raise UpdatesDiffer(f"moto refused what the direct path accepts: {exc!r}") from exc
    finally:
        dict.clear(item.attrs)
        dict.update(item.attrs, before)
    ours = {k: v.to_json() for k, v in attrs.items()}
    if theirs != ours:
        raise UpdatesDiffer(f"{theirs} != {ours}")
