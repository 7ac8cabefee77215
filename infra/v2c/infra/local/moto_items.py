"""moto's DynamoDB item construction in linear time.

moto builds every stored item attribute by attribute into a dict that, on
each insert, re-measures every attribute already in it to enforce the
400 KB item limit: quadratic in the attributes. For the 15-attribute update
records a campaign chunk writes, that re-measuring was 28 % of a 99-item
transaction's time on the server (cProfile, `moto_server` in-process). The
limit stays enforced, measured once over the finished item: the sum only
grows as attributes are added, so one check at the end refuses exactly what
the check per insert refused.
"""

from __future__ import annotations

from typing import Any, Final

_MARK: Final = "_v2c_linear_item"
# moto's own bound (it measured DynamoDB's real limit between 409 and 410 KB).
_MAX_ITEM_BYTES: Final = 405_000


def install() -> None:
    """Patch moto's `Item` in this process (the moto server child)."""
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models import dynamo_type
    from moto.dynamodb.models.utilities import bytesize

    if getattr(dynamo_type.Item.__init__, _MARK, False):
        return

    def __init__(  # noqa: N807 - replaces moto's constructor
        self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]
    ) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        values = {key: dynamo_type.DynamoType(value) for key, value in attrs.items()}
        if sum(bytesize(key) + value.size() for key, value in values.items()) > _MAX_ITEM_BYTES:
            raise ItemSizeTooLarge
        self.attrs = dynamo_type.LimitedSizeDict(values)  # later inserts are still checked

    setattr(__init__, _MARK, True)
    dynamo_type.Item.__init__ = __init__  # type: ignore[method-assign]
