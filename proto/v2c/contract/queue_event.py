"""The batch event a queue-fed handler receives: SQS records, written and read here.

In AWS an IoT topic rule with an SQS action puts the rule's SQL output (the
IoT event of `v2c.contract.events`, as JSON) on a queue, and a Lambda event
source mapping hands the function up to `BatchSize` records at once, waiting
at most `MaximumBatchingWindowInSeconds` to fill a batch (ADR 0009). The
function answers with a partial-batch response, `{"batchItemFailures":
[{"itemIdentifier": messageId}, ...]}`; the records it names are delivered
again, and after `maxReceiveCount` receives they move to the queue's DLQ.

Locally the gateway plays the queue and the mapping: it writes exactly this
shape (`sqs_event`), and reads the answer with `failed_item_ids`. Writer and
reader live in one module so the gateway, the handlers and the template
cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from v2c.contract.errors import InvalidInput

JsonDict = dict[str, Any]

EVENT_SOURCE: Final = "aws:sqs"
LOCAL_ACCOUNT: Final = "000000000000"


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """One message on the queue: the IoT event it carries, and its delivery facts."""

    message_id: str
    event: JsonDict
    sent_at_ms: int
    receive_count: int = 1


def sqs_record(message: QueuedMessage, *, queue: str, region: str) -> JsonDict:
    """One record as the SQS event source writes it (the fields Lambda documents)."""
    body = json.dumps(message.event, separators=(",", ":"))
    return {
        "messageId": message.message_id,
        "receiptHandle": f"local-{message.message_id}-{message.receive_count}",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(message.receive_count),
            "SentTimestamp": str(message.sent_at_ms),
            "SenderId": "iot.amazonaws.com",
            "ApproximateFirstReceiveTimestamp": str(message.sent_at_ms),
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": EVENT_SOURCE,
        "eventSourceARN": f"arn:aws:sqs:{region}:{LOCAL_ACCOUNT}:{queue}",
        "awsRegion": region,
    }


def sqs_event(messages: Sequence[QueuedMessage], *, queue: str, region: str) -> JsonDict:
    """The event a batch of `messages` makes for the function behind `queue`."""
    return {"Records": [sqs_record(m, queue=queue, region=region) for m in messages]}


def is_sqs_event(event: Mapping[str, Any]) -> bool:
    """Whether a handler was invoked by the queue (a batch) or directly (one IoT event)."""
    return isinstance(event.get("Records"), list)


def record_event(body: str) -> JsonDict:
    """The IoT event a record's body carries; `InvalidInput` when it carries none."""
    try:
        event = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"queue record body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise InvalidInput("queue record body is not a JSON object")
    return event


def failed_item_ids(response: Any) -> set[str]:
    """The records a partial-batch response names as failed. Anything but a
    well-formed response means the whole batch failed, as Lambda reads it:
    the caller must then treat every record as failed (`InvalidInput` here)."""
    if response is None:
        return set()
    if not isinstance(response, Mapping):
        raise InvalidInput(f"a batch handler answered {type(response).__name__}, not a mapping")
    failures = response.get("batchItemFailures", [])
    if not isinstance(failures, list):
        raise InvalidInput("batchItemFailures is not a list")
    ids: set[str] = set()
    for item in failures:
        if not isinstance(item, Mapping) or not item.get("itemIdentifier"):
            raise InvalidInput(f"batch item failure without an itemIdentifier: {item!r}")
        ids.add(str(item["itemIdentifier"]))
    return ids
