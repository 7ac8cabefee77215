"""moto's TransactWriteItems with an undo log of items, not of tables.

moto 5 makes a transaction atomic by deep-copying the whole table, once per
item of the transaction, before it applies anything, and putting the copies
back when an item fails. Its cost grows with the table, not the
transaction: measured on this machine, one 99-item transaction took 25 s
against a 10,000-item table (0.04 transactions/s). The batch-shaped data
path writes 100-item transactions into tables that hold a record per
vehicle, so on moto a 10,000-vehicle campaign would never finish, though in
DynamoDB the same request costs what its items cost.

`install` keeps moto's own transaction code (conditions, the one-operation-
per-item rule, the cancellation reasons) and changes only how it undoes:
before the transaction runs, each item it names is copied (the items, not
the tables), and when moto raises, those items are put back as they were,
removed if they did not exist. moto's table copy becomes the table itself,
so its own restore is a no-op. The DynamoDB lock in `moto_server` already
serializes requests, so no other request can observe the in-between state.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from typing import Any, Final

_MARK: Final = "_v2c_item_undo"

# (table, hash key, range key or None, the item before, or None if absent)
Snapshot = tuple[Any, Any, Any, Any]


def _table_copy_is_the_table() -> types.SimpleNamespace:
    """Stands in for the `copy` module inside moto's DynamoDB backend: a
    table "copy" is the table (undone item by item instead); everything
    else (moto also copies one item before an update) is a real deep copy."""
    from moto.dynamodb.models.table import Table

    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    return types.SimpleNamespace(deepcopy=deepcopy, copy=copy.copy)


def _snapshot(backend: Any, transact_items: list[dict[str, Any]]) -> list[Snapshot]:
    from moto.dynamodb.models.dynamo_type import DynamoType

    taken: list[Snapshot] = []
    seen: set[tuple[str, Any, Any]] = set()
    for entry in transact_items:
        if not isinstance(entry, dict) or len(entry) != 1:
            continue  # moto refuses it before writing anything
        op_type, op = next(iter(entry.items()))
        table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
        if table is None:
            continue
        key = op.get("Item") if op_type == "Put" else op.get("Key")
        try:
            hash_key = DynamoType(key[table.hash_key_attr])
            range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
        except (KeyError, TypeError):
            continue  # a malformed key: moto fails that item without writing it
        if (table.name, hash_key, range_key) in seen:
            continue
        seen.add((table.name, hash_key, range_key))
        before = table.get_item(hash_key, range_key)
        taken.append((table, hash_key, range_key, copy.deepcopy(before)))
    return taken


def _restore(taken: list[Snapshot]) -> None:
    for table, hash_key, range_key, before in reversed(taken):
        if range_key is None:
            if before is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = before
        elif before is None:
            table.items.get(hash_key, {}).pop(range_key, None)
        else:
            table.items[hash_key][range_key] = before


def install() -> None:
    """Patch moto's DynamoDB backend in this process (the moto server child)."""
    from moto.dynamodb import models

    original: Callable[..., None] = models.DynamoDBBackend.transact_write_items
    if getattr(original, _MARK, False):
        return

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        taken = _snapshot(self, transact_items)
        try:
            original(self, transact_items)
        except BaseException:
            _restore(taken)
            raise

    setattr(transact_write_items, _MARK, True)
    setattr(models, "copy", _table_copy_is_the_table())  # noqa: B010 - a module attribute
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
