"""moto's Query reading only the items its key condition can match, not the whole table sorted.

moto 5.2 answers every Query, on the table or on an index, by sorting every
item of the table (`Table.all_items`), keeping those whose key matches, and
sorting the survivors again by the queried key. The work grows with the
table, not the answer: on the 1,000-vehicle rollout it was already 5 % of
the server's CPU (py-spy, GIL samples), and the coordination, timeout and
campaign-page queries run against a table that holds a record per vehicle,
so at 10,000 vehicles each costs ten times as much, and there are ten times
as many.

`install` hands moto's own `Table.query` the candidates only: on the table,
the items under the queried hash key (a dict lookup); on an index, the items
whose index hash key attributes equal the query's (one pass over the
table, then only the candidates sorted in table order). The
candidates keep `all_items`' order, so moto's own filtering, sorting,
paging, limits and projection run unchanged on them and give the same
answer: moto drops every item a key condition refuses, and the candidates
leave out only such items. A query this module cannot narrow (no hash key
condition) gets every item, as before.

`install(verify=True)` (the test suite) also runs each query moto's way
and raises if the answers differ.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from typing import Any, Final

from v2c.infra.local.moto_verify import ShortcutDiffers

_MARK: Final = "_v2c_narrow_query"


class QueriesDiffer(ShortcutDiffers):
    """The narrowed query and moto's own answered differently (`verify=True` only)."""


def _every_item(table: Any) -> Iterator[Any]:
    for hash_set in table.items.values():
        if table.range_key_attr:
            yield from hash_set.values()
        else:
            yield hash_set


def _table_order(item: Any) -> Any:
    """`Table.all_items`' sort key: the table's own key."""
    return (item.hash_key, item.range_key) if item.range_key else item.hash_key


def candidates(table: Any, arguments: dict[str, Any]) -> list[Any] | None:
    """The items a query with these (bound) arguments can return, in
    `all_items`' order, or None when only the whole table will do."""
    if arguments.get("index_name"):
        conditions = arguments.get("hash_key_conditions")
        if not conditions:
            return None
        found = [
            item
            for item in _every_item(table)
            if all(
                (value := item.attrs.get(name)) and value == expected
                for name, expected in conditions
            )
        ]
    else:
        hash_key = arguments.get("hash_key")
        if hash_key is None:
            return None
        hash_set = table.items.get(hash_key)
        if hash_set is None:
            found = []
        elif table.range_key_attr:
            found = list(hash_set.values())
        else:
            found = [hash_set]
    found.sort(key=_table_order)
    return found


def _answer(result: tuple[list[Any], int, Any]) -> tuple[list[Any], int, Any]:
    items, scanned, last_key = result
    return [item.to_json() for item in items], scanned, last_key


def install(*, verify: bool = False) -> None:
    """Patch moto's DynamoDB `Table` in this process (the moto server child)."""
    from moto.dynamodb.models.table import Table

    if getattr(Table.query, _MARK, False):
        return
    moto_query = Table.query
    moto_all_items = Table.all_items
    signature = inspect.signature(moto_query)
    # The query being narrowed on this thread, and its candidates: moto reads
    # the table through `all_items`, and for that one call on that one table
    # it reads the candidates instead. Per thread, so that nothing else moto
    # runs meanwhile (another request, a table export's own thread) sees them.
    narrowing = threading.local()

    def all_items(self: Any) -> Any:
        if getattr(narrowing, "table", None) is self:
            return list(narrowing.items)
        return moto_all_items(self)

    def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        narrowed = candidates(self, signature.bind(self, *args, **kwargs).arguments)
        if narrowed is None:
            return moto_query(self, *args, **kwargs)
        narrowing.table, narrowing.items = self, narrowed
        try:
            result = _outcome(moto_query, self, *args, **kwargs)
        finally:
            narrowing.table = narrowing.items = None
        if verify:
            theirs = _outcome(moto_query, self, *args, **kwargs)
            if _seen(theirs) != _seen(result):
                raise QueriesDiffer(f"{_seen(theirs)!r} != {_seen(result)!r}")
        if isinstance(result, BaseException):
            raise result
        return result

    setattr(query, _MARK, True)
    Table.all_items = all_items  # type: ignore[method-assign]
    Table.query = query  # type: ignore[method-assign]


def _outcome(call: Any, *args: Any, **kwargs: Any) -> Any:
    """The call's answer, or the exception it raised (compared in verify mode)."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # moto's own refusal, raised again by the caller
        return exc


def _seen(outcome: Any) -> Any:
    """What a caller sees of a query's outcome: the answer, or the error's type and words."""
    if isinstance(outcome, BaseException):
        return (type(outcome).__name__, str(outcome))
    return _answer(outcome)
