"""The one pagination style: opaque cursors that survive a round trip and refuse tampering."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qsl

import pytest

from v2c.handlers.api.pagination import (
    CursorField,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
    next_link,
    page_headers,
    query_digest,
)

VIN = "VIN-1HGBH41JXMN109186"
FIELDS = {
    "vehicle_id": CursorField(str, re.compile(r"^VIN-[A-HJ-NPR-Z0-9]{17}$")),
    "model": CursorField(str, max_chars=100),
    "year": CursorField(int, high=2100),
}


def raw(document: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def test_a_cursor_names_its_position_again_under_the_same_query() -> None:
    digest = query_digest({"model": "Accord", "attribute": ["b=2", "a=1"]})
    position = {"vehicle_id": VIN, "model": "Accord", "year": 2024}
    cursor = encode_cursor(position, digest)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)  # URL-safe, no padding
    assert decode_cursor(cursor, FIELDS, query=digest, required=("vehicle_id",)) == position


def test_the_query_digest_ignores_cursor_limit_empties_and_list_order() -> None:
    a = query_digest({"model": "Accord", "attribute": ["a=1", "b=2"], "limit": 5, "region": None})
    b = query_digest({"attribute": ["b=2", "a=1"], "model": "Accord", "cursor": "x", "limit": 9})
    assert a == b
    assert a != query_digest({"model": "Civic"})


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64 !",
        "x" * 2001,
        raw([1, 2]),
        raw({"v": 1, "q": "", "k": {"vehicle_id": VIN}, "extra": 1}),
        raw({"v": 2, "q": "", "k": {"vehicle_id": VIN}}),
        raw({"v": 1, "q": "", "k": {}}),
        raw({"v": 1, "q": "", "k": {"vehicle_id": VIN, "owner": "x"}}),
        raw({"v": 1, "q": "", "k": {"vehicle_id": "VIN-short"}}),
        raw({"v": 1, "q": "", "k": {"vehicle_id": {"S": VIN}}}),
        raw({"v": 1, "q": "", "k": {"vehicle_id": VIN, "year": "2024"}}),
        raw({"v": 1, "q": "", "k": {"vehicle_id": VIN, "year": True}}),
        raw({"v": 1, "q": "", "k": {"vehicle_id": VIN, "year": 10**6}}),
        raw({"v": 1, "q": "", "k": {"vehicle_id": VIN, "model": "m" * 101}}),
        base64.urlsafe_b64encode(b"\xff\xfe{").decode().rstrip("="),
    ],
    ids=lambda c: c[:24] or "empty",
)
def test_anything_but_a_cursor_this_api_made_is_a_400(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as caught:
        decode_cursor(cursor, FIELDS)
    assert caught.value.http_status == 400
    assert caught.value.reason == "invalid_cursor"


def test_a_cursor_edited_by_one_character_is_refused() -> None:
    cursor = encode_cursor({"vehicle_id": VIN})
    flipped = {
        cursor[:i] + ("A" if cursor[i] != "A" else "B") + cursor[i + 1 :]
        for i in range(len(cursor))
    }
    accepted = []
    for edited in flipped:
        try:
            accepted.append(decode_cursor(edited, FIELDS))
        except InvalidCursor:
            continue
    # A one-character edit either breaks the cursor or still names a valid VIN:
    # it can never reach the store as anything but a well-formed position.
    assert all(
        set(p) == {"vehicle_id"} and re.fullmatch(r"VIN-\w{17}", str(p["vehicle_id"]))
        for p in accepted
    )


def test_a_cursor_of_another_query_or_missing_a_required_field_is_refused() -> None:
    cursor = encode_cursor({"vehicle_id": VIN}, query_digest({"model": "Accord"}))
    with pytest.raises(InvalidCursor, match="other filters"):
        decode_cursor(cursor, FIELDS, query=query_digest({"model": "Civic"}))
    same = query_digest({"model": "Accord"})
    with pytest.raises(InvalidCursor, match="lacks model, year"):
        decode_cursor(cursor, FIELDS, query=same, required=("vehicle_id", "model", "year"))


def test_the_link_header_is_rfc_8288_next_with_the_request_filters_and_the_new_cursor() -> None:
    params = {
        "model": "Accord",
        "attribute": ["a=1", "b=2"],
        "limit": 2,
        "cursor": "old",
        "x": None,
    }
    link = next_link(params, "NEXT")
    assert link is not None
    match = re.fullmatch(r'<\?([^>]*)>; rel="next"', link)
    assert match
    assert parse_qsl(match.group(1)) == [
        ("model", "Accord"),
        ("attribute", "a=1"),
        ("attribute", "b=2"),
        ("limit", "2"),
        ("cursor", "NEXT"),
    ]
    assert next_link(params, None) is None
    assert page_headers(params, None) == {}
    assert page_headers({"active": True}, "c") == {"Link": '<?active=true&cursor=c>; rel="next"'}
