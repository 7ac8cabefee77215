"""The dead-letter operations of `v2c dlq` as a Lambda function, for AWS.

Events (every key but `action` optional unless marked):

* `{"action": "list", "queue", "since": "2h" | ISO date, "reason", "limit": 100}`
  → record summaries (no payloads: a Lambda answer is capped at 6 MB);
* `{"action": "show", "record_id" (required), "queue"}` → the whole record,
  payload base64-encoded;
* `{"action": "replay", "queue", "record_id" | "all": true, "dry_run": false}`
  → one outcome per record;
* `{"action": "purge", "older_than" (required), "queue", "confirm": true}`:
  `confirm` is the `--yes` of the command line, required;
* `{"action": "depths"}`.

The answer is `{"ok": true, ...}`, or `{"ok": false, "error": reason, "detail",
"status"}` for a request the hierarchy in `v2c.contract.errors` refuses.

On AWS an inbound record goes back to the Lambda function of the rule that
failed it (`RULE_FUNCTION_PREFIX` + rule name), with the event an IoT topic
rule sends; an outbound record is published again through IoT Core's
`iot-data` API, at QoS 1 (IoT Core's highest). The gateway's redrivers do the
same locally; this module does not import the gateway (handlers must not), so
it builds the IoT-rule event itself, in the gateway's shape.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import ConfigurationError, InvalidInput, TransientError, V2CError
from v2c.contract.events import build_event
from v2c.contract.topics import Topic
from v2c.handlers.dlq.service import DeadLetterService, Redrive, ReplayStatus
from v2c.handlers.dlq.store import DeadLetterStore, S3DeadLetterStore, SqsDeadLetterStore
from v2c.handlers.dlq.timespec import cutoff_ms

logger = Logger(service="v2c-dlq-admin")

JsonDict = dict[str, Any]
ClientFactory = Callable[[str], Any]

ENV_TELEMETRY_BUCKET = "TELEMETRY_DLQ_BUCKET"
ENV_OTA_QUEUE_URL = "OTA_DLQ_QUEUE_URL"
ENV_FUNCTION_PREFIX = "RULE_FUNCTION_PREFIX"
DEFAULT_LIST_LIMIT = 100


class RemoteHandlerFailed(V2CError):
    """The rule's Lambda function ran and raised: the record stays queued."""

    reason = "handler_error"


def iot_rule_event(record: DeadLetterRecord) -> JsonDict:
    """The event the rule's function received the first time, marked as a replay."""
    return build_event(
        rule=record.source,
        topic=record.topic,
        payload=record.payload,
        qos=Topic.parse(record.topic).qos,
        properties={**record.properties, "replayed_from": record.record_id},
        received_at_ms=record.first_failed_at,
    )


class LambdaRedriver:
    """Inbound records: invoke the rule's function synchronously; a function
    error or an AWS error fails this record's replay."""

    def __init__(self, client: Any, function_prefix: str = "v2c-") -> None:
        self._lambda = client
        self._prefix = function_prefix

    def __call__(self, record: DeadLetterRecord) -> None:
        function = f"{self._prefix}{record.source}"
        try:
            answer = self._lambda.invoke(
                FunctionName=function,
                InvocationType="RequestResponse",
                Payload=json.dumps(iot_rule_event(record)).encode(),
            )
        except (BotoCoreError, ClientError) as exc:
            raise TransientError(f"invoking {function} failed: {exc}") from exc
        if answer.get("FunctionError"):
            body = answer["Payload"].read().decode(errors="replace")
            raise RemoteHandlerFailed(f"{function} failed: {body[:500]}")


class IotDataRedriver:
    """Outbound records: publish through IoT Core with the MQTT 5 properties
    the record kept (botocore encodes the user-properties header itself)."""

    def __init__(self, client: Any) -> None:
        self._iot = client

    def __call__(self, record: DeadLetterRecord) -> None:
        props = record.properties
        request: JsonDict = {
            "topic": record.topic,
            "qos": min(int(record.context.get("qos", 1)), 1),
            "retain": False,
            "payload": record.payload,
        }
        if "message_expiry_interval" in props:
            request["messageExpiry"] = int(props["message_expiry_interval"])
        if "content_type" in props:
            request["contentType"] = str(props["content_type"])
        if "correlation_data_b64" in props:
            request["correlationData"] = str(props["correlation_data_b64"])
        if props.get("user_properties"):
            request["userProperties"] = [{str(k): str(v)} for k, v in props["user_properties"]]
        try:
            self._iot.publish(**request)
        except (BotoCoreError, ClientError) as exc:
            raise TransientError(f"publishing to {record.topic} failed: {exc}") from exc


def _boto3_client(service: str) -> Any:
    import boto3

    return boto3.client(service)  # type: ignore[call-overload]


def build_service(
    environ: Mapping[str, str] | None = None, client: ClientFactory | None = None
) -> DeadLetterService:
    """The service over the deployed DLQs; resource names come from the environment."""
    env = os.environ if environ is None else environ
    make = client or _boto3_client
    missing = [name for name in (ENV_TELEMETRY_BUCKET, ENV_OTA_QUEUE_URL) if not env.get(name)]
    if missing:
        raise ConfigurationError(f"the function's environment lacks {', '.join(missing)}")
    stores: dict[str, DeadLetterStore] = {
        "telemetry": S3DeadLetterStore("telemetry", make("s3"), env[ENV_TELEMETRY_BUCKET]),
        "ota": SqsDeadLetterStore("ota", make("sqs"), env[ENV_OTA_QUEUE_URL]),
    }
    redrivers: dict[Direction, Redrive] = {
        Direction.INBOUND: LambdaRedriver(make("lambda"), env.get(ENV_FUNCTION_PREFIX, "v2c-")),
        Direction.OUTBOUND: IotDataRedriver(make("iot-data")),
    }
    return DeadLetterService(stores, redrivers)


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


def _dispatch(
    event: Mapping[str, Any], service: DeadLetterService, clock: Callable[[], float]
) -> JsonDict:
    action = _text(event, "action", required=True)
    queue = _text(event, "queue")
    logger.info("dlq admin request", extra={"action": action, "queue": queue})
    if action == "list":
        since = _text(event, "since")
        limit = event.get("limit", DEFAULT_LIST_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise InvalidInput("'limit' must be a positive integer")
        found = service.records(
            queue,
            since_ms=None if since is None else cutoff_ms(since, clock()),
            reason=_text(event, "reason"),
        )
        records: list[JsonDict] = []
        for record in found:
            if len(records) == limit:
                return {"records": records, "count": limit, "truncated": True}
            records.append(summary(record))
        return {"records": records, "count": len(records), "truncated": False}
    if action == "show":
        record_id = _text(event, "record_id", required=True)
        return {"record": service.show(str(record_id), queue).to_json()}
    if action == "replay":
        outcomes = service.replay(
            queue=queue,
            record_id=_text(event, "record_id"),
            replay_all=_flag(event, "all"),
            dry_run=_flag(event, "dry_run"),
        )
        failed = sum(1 for o in outcomes if o.status is ReplayStatus.FAILED)
        return {"outcomes": [asdict(o) for o in outcomes], "failed": failed}
    if action == "purge":
        older_than = cutoff_ms(str(_text(event, "older_than", required=True)), clock())
        if not _flag(event, "confirm"):
            raise InvalidInput("purge deletes records for good: send 'confirm': true")
        return {"purged": service.purge(older_than, queue)}
    if action == "depths":
        return {"depths": service.depths()}
    raise InvalidInput(f"unknown action {action!r}: expected list, show, replay, purge or depths")


_SERVICE: DeadLetterService | None = None


def lambda_handler(event: dict[str, Any], context: Any) -> JsonDict:
    """Entry point; the service (clients, stores) is built once per container."""
    global _SERVICE
    if _SERVICE is None:
        _SERVICE = build_service()
    return handle(event, _SERVICE)
