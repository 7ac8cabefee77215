"""Create-or-converge for SQS queues, for `resources.ensure_resources`.

The same contract as `converge`'s other steps: describe, then create; put
retention, visibility timeout and the redrive policy right on an existing
queue, and report what changed. A queue's dead-letter queue is created first,
so its ARN exists when the redrive policy names it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from botocore.exceptions import ClientError

from v2c.contract.errors import ConfigurationError
from v2c.infra.aws.converge import ResourceStatus, error_code

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

    QueueAttributes: TypeAlias = dict[QueueAttributeNameType, str]


@dataclass(frozen=True)
class QueueSpec:
    name: str
    retention_seconds: int
    visibility_timeout_s: int | None = None  # None: SQS's default, not converged
    dead_letter: str | None = None  # the queue exhausted messages move to
    max_receive_count: int = 0  # receives before they move (with `dead_letter`)
    # Encryption at rest with SQS-owned keys (SSE-SQS): free, and, unlike a KMS
    # key, needs no key policy for the IoT rule that sends to the queue.
    managed_sse: bool = True


_MISSING_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


def queues(sqs: SQSClient, specs: Iterable[QueueSpec]) -> list[ResourceStatus]:
    """Standard queues with their retention, visibility timeout and redrive
    policy. A dead-letter queue must come before the queues that name it:
    a redrive policy names its target by ARN, which exists only once created."""
    arns: dict[str, str] = {}
    statuses = []
    for spec in specs:
        target = None
        if spec.dead_letter is not None:
            if spec.dead_letter not in arns:
                raise ConfigurationError(
                    f"queue {spec.name}: its dead-letter queue {spec.dead_letter} comes later"
                )
            target = arns[spec.dead_letter]
        status = _queue(sqs, spec, _queue_attributes(spec, target))
        arns[spec.name] = sqs.get_queue_attributes(
            QueueUrl=status.identifier, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        statuses.append(status)
    return statuses


def _queue_attributes(spec: QueueSpec, dead_letter_arn: str | None) -> QueueAttributes:
    want: QueueAttributes = {
        "MessageRetentionPeriod": str(spec.retention_seconds),
        "SqsManagedSseEnabled": "true" if spec.managed_sse else "false",
    }
    if spec.visibility_timeout_s is not None:
        want["VisibilityTimeout"] = str(spec.visibility_timeout_s)
    if dead_letter_arn is not None:
        want["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": spec.max_receive_count}
        )
    return want


def _queue_detail(spec: QueueSpec) -> str:
    parts = [f"retention {spec.retention_seconds}s"]
    if spec.visibility_timeout_s is not None:
        parts.append(f"visibility {spec.visibility_timeout_s}s")
    if spec.dead_letter is not None:
        parts.append(f"to {spec.dead_letter} after {spec.max_receive_count} receives")
    if spec.managed_sse:
        parts.append("SSE-SQS")
    return ", ".join(parts)


def _queue(sqs: SQSClient, spec: QueueSpec, want: QueueAttributes) -> ResourceStatus:
    detail = _queue_detail(spec)
    try:
        url = sqs.get_queue_url(QueueName=spec.name)["QueueUrl"]
    except ClientError as exc:
        if error_code(exc) not in _MISSING_QUEUE:
            raise
        url = sqs.create_queue(QueueName=spec.name, Attributes=want)["QueueUrl"]
        return ResourceStatus("sqs-queue", spec.name, "created", detail, url)
    have = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get("Attributes", {})
    drift: QueueAttributes = {
        key: value for key, value in want.items() if not _same_attribute(key, have.get(key), value)
    }
    if not drift:
        return ResourceStatus("sqs-queue", spec.name, "exists", detail, url)
    sqs.set_queue_attributes(QueueUrl=url, Attributes=drift)
    return ResourceStatus("sqs-queue", spec.name, "updated", detail, url)


def _same_attribute(key: str, have: str | None, want: str) -> bool:
    """SQS answers a redrive policy as JSON it wrote itself (the count may come
    back as a string), so it is compared as data, not as text."""
    if key == "SqsManagedSseEnabled":  # absent: never set, which is off
        return (have or "false").lower() == want
    if key != "RedrivePolicy" or have is None:
        return have == want
    try:
        mine, theirs = json.loads(want), json.loads(have)
        return bool(
            mine["deadLetterTargetArn"] == theirs.get("deadLetterTargetArn")
            and int(mine["maxReceiveCount"]) == int(theirs.get("maxReceiveCount", -1))
        )
    except (TypeError, ValueError):
        return False
