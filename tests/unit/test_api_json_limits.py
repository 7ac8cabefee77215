"""JSON from clients within limits: nesting depth and size, never a RecursionError."""

from __future__ import annotations

import json

import pytest

from v2c.contract.errors import PayloadTooLarge
from v2c.handlers.api.json_limits import JsonTooDeep, exceeds_depth, loads


def nested(levels: int) -> str:
    return '{"a": ' * (levels - 1) + "[1]" + "}" * (levels - 1)


def test_depth_32_is_accepted_and_33_refused() -> None:
    assert exceeds_depth(loads(nested(32)), 32) is False
    with pytest.raises(JsonTooDeep, match="nested deeper than 32 levels"):
        loads(nested(33))


def test_nesting_past_pythons_recursion_is_refused_not_a_crash() -> None:
    with pytest.raises(JsonTooDeep) as raised:
        loads("[" * 100_000 + "]" * 100_000, what="metadata")
    assert raised.value.http_status == 400
    assert raised.value.reason == "json_too_deep"
    assert raised.value.detail == "metadata is nested deeper than 32 levels"


def test_a_wide_document_is_fine_and_too_many_bytes_are_413() -> None:
    wide = json.dumps({"ids": [f"VIN-{n:017d}" for n in range(100_000)]})
    assert len(loads(wide)["ids"]) == 100_000
    with pytest.raises(PayloadTooLarge):
        loads(wide, max_bytes=1024)


def test_invalid_json_is_still_a_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads('{"a": ')
