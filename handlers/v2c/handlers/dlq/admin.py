"""The dead-letter operations of `v2c dlq` as requests: what the `dlq_admin` Lambda answers.

Events (every key but `action` optional unless marked):

* `{"action": "list", "queue", "since": "2h" | ISO date, "reason", "limit": 100}`
  → record summaries (no payloads: a Lambda answer is capped at 6 MB);
* `{"action": "show", "record_id" (required), "queue"}` → the whole record,
  payload base64-encoded;
* `{"action": "replay", "queue", "record_id" | "all": true, "dry_run": false,
  "limit": 100}` → one outcome per record, at most `limit` of them (bounded
  work for the function's timeout); `limit_reached`: call again for the rest;
* `{"action": "purge", "older_than" (required), "queue", "confirm": true}`:
  `confirm` is the `--yes` of the command line, required;
* `{"action": "depths"}`.

`queue` is `telemetry`, `ota` or `ingest` (what SQS moved out of the rules'
ingest queues: `v2c.handlers.dlq.ingest`); another name is refused.

The answer is `{"ok": true, ...}`, or `{"ok": false, "error": reason, "detail",
"status"}` for a request the hierarchy in `v2c.contract.errors` refuses: a
Lambda invoked directly has no HTTP status of its own to answer with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, Final

from aws_lambda_powertools import Logger

from v2c.contract.dead_letter import DeadLetterRecord
from v2c.contract.errors import InvalidInput, V2CError
from v2c.handlers.dlq.service import DeadLetterService, ReplayStatus
from v2c.handlers.dlq.timespec import cutoff_ms

logger = Logger(service="v2c-dlq-admin")

JsonDict = dict[str, Any]
DEFAULT_LIST_LIMIT: Final = 100
DEFAULT_REPLAY_LIMIT: Final = 100


def summary(record: DeadLetterRecord) -> JsonDict:
    """A record without its payload: what a listing shows."""
    data = record.to_json()
    del data["payload_b64"]
    return data


def _text(event: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = event.get(key)
    if value is None or value == "":
        if required:
            raise InvalidInput(f"event needs {key!r}")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{key!r} must be a string")
    return value


def _flag(event: Mapping[str, Any], key: str) -> bool:
    value = event.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{key!r} must be true or false")
    return value


def handle(
    event: Mapping[str, Any], service: DeadLetterService, clock: Callable[[], float] = time.time
) -> JsonDict:
    """One admin request against `service`; a refused request becomes an answer."""
    try:
        return {"ok": True, **_dispatch(event, service, clock)}
    except V2CError as error:
        logger.warning("dlq admin request refused", extra={"reason": error.reason})
        return {
            "ok": False,
            "error": error.reason,
            "detail": error.detail,
            "status": error.http_status,
        }


def _limit(event: Mapping[str, Any], default: int) -> int:
    limit = event.get("limit", default)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidInput("'limit' must be a positive integer")
    return limit


def _list(
    event: Mapping[str, Any], service: DeadLetterService, queue: str | None, now_s: float
) -> JsonDict:
    since = _text(event, "since")
    limit = _limit(event, DEFAULT_LIST_LIMIT)
    found = service.records(
        queue,
        since_ms=None if since is None else cutoff_ms(since, now_s),
        reason=_text(event, "reason"),
    )
    records: list[JsonDict] = []
    for record in found:
        if len(records) == limit:
            return {"records": records, "count": limit, "truncated": True}
        records.append(summary(record))
    return {"records": records, "count": len(records), "truncated": False}


def _dispatch(
    event: Mapping[str, Any], service: DeadLetterService, clock: Callable[[], float]
) -> JsonDict:
    action = _text(event, "action", required=True)
    queue = _text(event, "queue")
    logger.info("dlq admin request", extra={"action": action, "queue": queue})
    if action == "list":
        return _list(event, service, queue, clock())
    if action == "show":
        record_id = _text(event, "record_id", required=True)
        return {"record": service.show(str(record_id), queue).to_json()}
    if action == "replay":
        limit, replay_all = _limit(event, DEFAULT_REPLAY_LIMIT), _flag(event, "all")
        outcomes = service.replay(
            queue=queue,
            record_id=_text(event, "record_id"),
            replay_all=replay_all,
            dry_run=_flag(event, "dry_run"),
            limit=limit,
        )
        failed = sum(1 for o in outcomes if o.status is ReplayStatus.FAILED)
        return {
            "outcomes": [asdict(o) for o in outcomes],
            "failed": failed,
            "limit_reached": replay_all and len(outcomes) >= limit,
        }
    if action == "purge":
        older_than = cutoff_ms(str(_text(event, "older_than", required=True)), clock())
        if not _flag(event, "confirm"):
            raise InvalidInput("purge deletes records for good: send 'confirm': true")
        return {"purged": service.purge(older_than, queue)}
    if action == "depths":
        return {"depths": service.depths()}
    raise InvalidInput(f"unknown action {action!r}: expected list, show, replay, purge or depths")
