"""A handler that accepts every event: the baseline of `v2c bench gateway` and
the placeholder for a route whose feature has not landed yet."""

from __future__ import annotations

from typing import Any


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"status": "ok", "topic": event.get("topic")}
