"""JSON from a client, parsed within limits: size and nesting depth.

`json.loads` recurses once per nesting level: 10,000 nested `[` raise
`RecursionError`, which is no `ValueError` and became a 500. Every JSON text
the API parses from a request (a JSON body, the firmware `metadata` query
parameter, also on the local streaming upload) goes through `loads`, so too
deep or too big input is the client's 4xx in the API's `{detail, reason}`
shape, never a server error:

| limit | value | answer |
|---|---|---|
| nesting depth (objects and arrays) | 32 | 400 `json_too_deep` |
| a JSON request body | 4 MiB | 413 `payload_too_large` |

4 MiB holds the largest body the API defines (a campaign naming its maximum
of 100,000 vehicle ids is about 2.6 MB); the deepest structure it defines
is under 5 levels, so 32 leaves free-form metadata room. Invalid JSON
still raises `json.JSONDecodeError` (a `ValueError`), which the callers
already answer 400.
"""

from __future__ import annotations

import json
from typing import Any, Final

from v2c.contract.errors import InvalidInput, PayloadTooLarge

MAX_JSON_DEPTH: Final = 32
MAX_JSON_BODY_BYTES: Final = 4 * 1024 * 1024


class JsonTooDeep(InvalidInput):
    """JSON nested deeper than the API accepts."""

    reason = "json_too_deep"


def too_deep(what: str, max_depth: int = MAX_JSON_DEPTH) -> JsonTooDeep:
    return JsonTooDeep(f"{what} is nested deeper than {max_depth} levels")


def exceeds_depth(value: Any, max_depth: int) -> bool:
    """Whether `value` (parsed JSON) nests objects/arrays deeper than `max_depth`.
    Iterative, so it cannot itself overflow the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads(
    text: str | bytes,
    *,
    what: str = "the request body",
    max_depth: int = MAX_JSON_DEPTH,
    max_bytes: int = MAX_JSON_BODY_BYTES,
) -> Any:
    """`json.loads` within the limits; `JsonTooDeep` (400), `PayloadTooLarge`
    (413), or `json.JSONDecodeError` for text that is not JSON."""
    if len(text) > max_bytes:
        raise PayloadTooLarge(f"{what} is over {max_bytes} bytes of JSON")
    try:
        value = json.loads(text)
    except RecursionError:
        raise too_deep(what, max_depth) from None
    if exceeds_depth(value, max_depth):
        raise too_deep(what, max_depth)
    return value


def body_deserializer(text: str) -> Any:
    """The resolver's `json_body_deserializer`: a request body within the limits."""
    return loads(text)
