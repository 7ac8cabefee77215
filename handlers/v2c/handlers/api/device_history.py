"""`GET /devices/{device_id}/updates` paging: the API's cursor style over a vehicle's history.

The order and the success rate are `v2c.handlers.ota.updates.history`'s;
this module turns a page's position into the opaque cursor of
`v2c.handlers.api.pagination` (`{"t": created_at_ms, "u": update_id}`, bound
to the vehicle by the query digest, so a cursor of one vehicle is a 400 on
another) and back, and makes the `Link` header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Final

from aws_lambda_powertools.event_handler.openapi.params import Query

from v2c.handlers.api.pagination import (
    CursorField,
    decode_cursor,
    encode_cursor,
    page_headers,
    query_digest,
)
from v2c.handlers.ota.updates.history import HistoryPage, history_page
from v2c.handlers.ota.updates.record import VehicleUpdate

MAX_HISTORY_LIMIT: Final = 100
HISTORY_LIMIT: Final = 50
CURSOR_FIELDS: Final = {
    "t": CursorField(int),
    "u": CursorField(str, pattern=re.compile(r"[0-9A-Za-z_./:-]{1,128}"), max_chars=128),
}

HistoryLimit = Annotated[int, Query(ge=1, le=MAX_HISTORY_LIMIT, description="updates per page")]
HistoryCursor = Annotated[
    str | None, Query(max_length=2000, description="the previous page's `next_cursor`")
]


def history_answer(
    device_id: str, updates: Sequence[VehicleUpdate], limit: int, cursor: str | None
) -> tuple[HistoryPage, str | None, dict[str, str]]:
    """The page `cursor` names (None: the newest), its next cursor, its headers."""
    digest = query_digest({"device_id": device_id})
    after = None
    if cursor is not None:
        position = decode_cursor(cursor, CURSOR_FIELDS, query=digest, required=("t", "u"))
        after = (int(position["t"]), str(position["u"]))
    page = history_page(updates, limit=limit, after=after)
    next_cursor = None
    if page.next_position is not None:
        created_at_ms, update_id = page.next_position
        next_cursor = encode_cursor({"t": created_at_ms, "u": update_id}, digest)
    return page, next_cursor, page_headers({"limit": limit}, next_cursor)
