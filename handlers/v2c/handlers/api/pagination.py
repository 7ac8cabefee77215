"""One pagination style for the API's lists: an opaque `cursor` and a `limit`, answered
`{items, next_cursor}` and an RFC 8288 `Link: <...>; rel="next"` header.

Every list of the API pages this way: vehicles and firmware with cursors
made here (firmware's position is the count of newest-first matches before
it), campaigns with their store's own opaque cursor and the same `Link`.

A cursor is base64url (no padding) of a small JSON object:

    {"v": 1, "q": "<query digest>", "k": {<the position: a store key>}}

* `k` is where the next page starts (a DynamoDB key, say). Only the fields a
  list declares are accepted, each with its type and a pattern, so a cursor
  can never smuggle another attribute, a nested document or a huge value
  into a store request;
* `q` binds the cursor to the filters of the request that produced it: the
  same cursor with other filters would skip or repeat items silently, so it
  is refused instead;
* anything else (not base64url, not JSON, another version, unknown fields,
  wrong types, too long) is `InvalidCursor`: 400 `invalid_cursor`.

The cursor is not signed: a client that edits one can only start a page
elsewhere in a list it may read anyway. It is opaque by contract, so its
format may change with `v`.

The `Link` target is a relative reference (`<?limit=50&cursor=...>`), which
RFC 8288 allows and which resolves against the request URI: the same in a
deployment behind an API Gateway stage or a custom domain's base path as on
the local server, where an absolute path would miss the stage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from v2c.contract.errors import InvalidInput

CURSOR_VERSION: Final = 1
MAX_CURSOR_CHARS: Final = 2000
_B64URL: Final = re.compile(r"^[A-Za-z0-9_-]+$")

Position = dict[str, str | int]
QueryValue = str | int | bool | None | Sequence[str]


class InvalidCursor(InvalidInput):
    """A cursor this API did not hand out for this query."""

    reason = "invalid_cursor"


@dataclass(frozen=True, slots=True)
class CursorField:
    """One field a list's cursor position may carry."""

    kind: type[str] | type[int]
    pattern: re.Pattern[str] | None = None  # for text
    max_chars: int = 200
    low: int = 0  # for integers
    high: int = 2**53

    def check(self, name: str, value: object) -> str | int:
        if self.kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidCursor(f"the cursor's {name} is not an integer")
            if not self.low <= value <= self.high:
                raise InvalidCursor(f"the cursor's {name} is out of range")
            return value
        if not isinstance(value, str) or len(value) > self.max_chars:
            raise InvalidCursor(f"the cursor's {name} is not a short text")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise InvalidCursor(f"the cursor's {name} is malformed")
        return value


def query_digest(params: Mapping[str, QueryValue]) -> str:
    """A short digest of a request's filters (not its cursor or limit): the
    cursor carries it so that it is used with the filters it was made for."""
    canonical = {
        name: sorted(value) if isinstance(value, list | tuple) else value
        for name, value in params.items()
        if name not in ("cursor", "limit") and value not in (None, "", [], ())
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_cursor(position: Mapping[str, str | int], query: str = "") -> str:
    """The opaque cursor for `position` under the query digest `query`."""
    document = {"v": CURSOR_VERSION, "q": query, "k": dict(position)}
    raw = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(
    token: str, fields: Mapping[str, CursorField], *, query: str = "", required: Sequence[str] = ()
) -> Position:
    """The position a cursor names; `InvalidCursor` (400) unless it is one this
    API encoded for a list with these `fields` and this `query`."""
    if not token or len(token) > MAX_CURSOR_CHARS or not _B64URL.fullmatch(token):
        raise InvalidCursor("the cursor is not one this API handed out")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        document = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidCursor("the cursor is not one this API handed out") from exc
    if not isinstance(document, dict) or set(document) != {"v", "q", "k"}:
        raise InvalidCursor("the cursor is not one this API handed out")
    if document["v"] != CURSOR_VERSION:
        raise InvalidCursor("the cursor is from another version of this API")
    if document["q"] != query:
        raise InvalidCursor("the cursor belongs to a request with other filters")
    position = document["k"]
    if not isinstance(position, dict) or not position:
        raise InvalidCursor("the cursor names no position")
    unknown = set(position) - set(fields)
    if unknown:
        raise InvalidCursor("the cursor names fields this list does not have")
    missing = [name for name in required if name not in position]
    if missing:
        raise InvalidCursor(f"the cursor lacks {', '.join(missing)}")
    return {name: fields[name].check(name, value) for name, value in position.items()}


def next_link(params: Mapping[str, QueryValue], next_cursor: str | None) -> str | None:
    """The `Link` header value for the next page, or None on the last page.
    `params` are the request's query parameters (the cursor is replaced);
    lists repeat their name (`attribute=a%3D1&attribute=b%3D2`)."""
    if next_cursor is None:
        return None
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        if name == "cursor" or value is None or value == "":
            continue
        if isinstance(value, list | tuple):
            pairs += [(name, str(v)) for v in value]
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        else:
            pairs.append((name, str(value)))
    pairs.append(("cursor", next_cursor))
    return f'<?{urlencode(pairs)}>; rel="next"'


def page_headers(params: Mapping[str, QueryValue], next_cursor: str | None) -> dict[str, str]:
    """The headers of a page answer: `Link` when there is a next page."""
    link = next_link(params, next_cursor)
    return {} if link is None else {"Link": link}
