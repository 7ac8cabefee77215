"""Who may touch what in `template.yaml`: one role per function, from a table.

A `FunctionAccess` is one row of the table (`template.function_accesses`,
filled from the profiles of `template_access`): per Lambda function, the
tables, object prefixes, queues, key, bus, topics, stream and functions it
reaches, read off what its handlers call. `role` turns one row into an
IAM role whose every statement names its resources by ARN; tests read
the table (telemetry cannot sign or publish) and the rendered roles (no
statement on `*` but the one IAM requires).

Roles are plain `AWS::IAM::Role` resources rather than SAM's generated ones:
SAM always attaches AWSLambdaBasicExecutionRole, whose log permissions are on
every log group of the account. Here each function writes to its own log
group only, created by the template with a retention.

The only `Resource: "*"` is `iot:CreateCertificateFromCsr` (onboarding and
rotation): IAM defines no resource for it, since the certificate does not
exist before the call. The role carries that reason in its metadata.

AWS IoT's certificate calls come in two profiles: `onboarding` (the API:
register, replace, decommission, so deleting things too) and `rotation`
(the function a vehicle's MQTT request drives: issue for the registered
thing, revoke the old certificate; no thing deleted, no principals listed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from v2c.contract.topics import PREFIX, VIN_PATTERN, Domain
from v2c.gateway.rules import Rule
from v2c.infra.aws.template_iot import VEHICLE_POLICY
from v2c.infra.aws.template_storage import (
    EVENT_BUS,
    OTA_DLQ,
    SIGNING_KEY,
    TIMESERIES_STREAM,
    arn,
    bucket_logicals,
    queue_logicals,
    skip,
    sub,
    table_logical,
)
from v2c.infra.names import ResourceNames

LOG_RETENTION_DAYS: Final = 90  # as long as the dead letters they explain

READ: Final = (
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:DescribeTable",
)
WRITE: Final = (
    *READ,
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
)
# The telemetry store: BatchWriteItem or PutItem per record, BatchGetItem to
# tell a redelivered sample from a new one.
TELEMETRY_WRITE: Final = ("dynamodb:PutItem", "dynamodb:BatchWriteItem", "dynamodb:BatchGetItem")
OBJECT_READ: Final = ("s3:GetObject",)  # HeadObject and presigned GETs need it too
OBJECT_WRITE: Final = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")
# The firmware registry on the versioned bucket: a presigned upload is read,
# copied and purged by version id (`ota.firmware.storage`).
OBJECT_VERSIONS: Final = ("s3:GetObjectVersion", "s3:DeleteObjectVersion")
OBJECT_UPLOAD: Final = (*OBJECT_WRITE, "s3:AbortMultipartUpload", *OBJECT_VERSIONS)
QUEUE_SEND: Final = ("sqs:SendMessage", "sqs:GetQueueUrl")
# What Lambda's poller needs of a queue it reads (AWSLambdaSQSQueueExecutionRole
# grants them on every queue; here each function gets them on its own).
QUEUE_READ_ACTIONS: Final = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
QUEUE_ADMIN: Final = (
    "sqs:SendMessage",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
)
# The ingest DLQ: read, release and delete, never send (only SQS's redrive writes it).
INGEST_DLQ_ADMIN: Final = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
)
SIGN: Final = ("kms:Sign", "kms:GetPublicKey")
CSR_WILDCARD: Final = (
    "iot:CreateCertificateFromCsr is granted on '*': IAM defines no resource for it (the "
    "certificate is created by the call); every other statement names its ARNs"
)
# A vehicle's thing is named by its id (`VIN-...`): onboarding touches no other thing.
VEHICLE_THINGS: Final = VIN_PATTERN.pattern.removeprefix("^").split("[", 1)[0] + "*"


@dataclass(frozen=True)
class TableGrant:
    table: str  # the table's name (ResourceNames)
    actions: tuple[str, ...]


@dataclass(frozen=True)
class ObjectGrant:
    bucket: str  # the bucket's name
    prefix: str  # "" = every key
    actions: tuple[str, ...]


@dataclass(frozen=True)
class QueueGrant:
    queue: str  # the queue's name
    actions: tuple[str, ...]


@dataclass(frozen=True)
class FunctionAccess:
    """One function: what it runs, and everything it may reach."""

    logical: str
    name: str
    handler: str
    timeout_s: int
    env: Mapping[str, Any] = field(default_factory=dict)
    tables: tuple[TableGrant, ...] = ()
    objects: tuple[ObjectGrant, ...] = ()
    queues: tuple[QueueGrant, ...] = ()
    sign: bool = False  # kms:Sign / GetPublicKey on the signing key
    put_events: bool = False  # events:PutEvents on the v2c bus
    publish: tuple[tuple[Domain, str], ...] = ()  # downlink (domain, kind) to any vehicle
    timeseries: bool = False  # firehose:PutRecordBatch on the archive stream
    invoke: tuple[str, ...] = ()  # logical ids of functions it invokes
    onboarding: bool = False  # creates and deletes things, issues certificates (the API)
    rotation: bool = False  # issues and revokes a registered thing's certificates
    reads_queue: str | None = None  # the queue (logical id) its mapping reads
    skips: tuple[tuple[str, str], ...] = ()  # checkov findings that do not apply, why

    @property
    def issues_certificates(self) -> bool:
        return self.onboarding or self.rotation

    @property
    def role(self) -> str:
        return f"{self.logical}Role"

    @property
    def log_group(self) -> str:
        return f"{self.logical}LogGroup"


def _iot_arn(resource: str) -> dict[str, Any]:
    return sub(f"arn:${{AWS::Partition}}:iot:${{AWS::Region}}:${{AWS::AccountId}}:{resource}")


def topic_arn(domain: Domain, kind: str) -> dict[str, Any]:
    """The IAM resource of a downlink kind to every vehicle in every region."""
    return _iot_arn("topic/" + "/".join((*PREFIX, "*", "*", domain.value, kind)))


# What `v2c.handlers.vehicles.iot_issuer` calls on a thing, per profile.
ONBOARDING_THING_ACTIONS: Final = (
    "iot:CreateThing",
    "iot:UpdateThing",
    "iot:DescribeThing",
    "iot:DeleteThing",
    "iot:ListThingPrincipals",
)
# `issue` makes sure of the thing (CreateThing; UpdateThing when it exists);
# `revoke` reads the certificate, revokes it, detaches policy and thing.
ROTATION_THING_ACTIONS: Final = ("iot:CreateThing", "iot:UpdateThing")


def _certificates(thing_actions: tuple[str, ...]) -> list[dict[str, Any]]:
    """Registering a vehicle (`v2c.handlers.vehicles.iot_issuer`): its thing
    (of the vehicle type), a certificate from its CSR, the vehicle policy and
    the thing attached to it; and the reverse. Resources per IoT's IAM table:
    things by name, certificates by id (a new certificate's id is unknown in
    advance); the policy's ARN is listed too, for evaluations by policy.
    `thing_actions`: what the profile may do to the thing itself."""
    things = _iot_arn(f"thing/{VEHICLE_THINGS}")
    certs = _iot_arn("cert/*")
    return [
        _allow(thing_actions, things),
        _allow(("iot:AttachThingPrincipal", "iot:DetachThingPrincipal"), [certs, things]),
        _allow(("iot:AttachPolicy", "iot:DetachPolicy"), [certs, arn(VEHICLE_POLICY)]),
        # IAM has no condition key for UpdateCertificate's new status: rotation
        # only ever sets REVOKED (`iot_issuer._revoke_arn`), but the grant cannot say so.
        _allow(("iot:UpdateCertificate", "iot:DescribeCertificate"), certs),
        # No resource exists for it in IAM: the certificate is made by the call.
        _allow(("iot:CreateCertificateFromCsr",), "*"),
    ]


def _allow(actions: tuple[str, ...], resource: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": list(actions), "Resource": resource}


def statements(access: FunctionAccess, names: ResourceNames, rules: tuple[Rule, ...]) -> list[Any]:
    """Every statement of the function's policy, each on named resources."""
    buckets, queues = bucket_logicals(names), queue_logicals(names, rules)
    out: list[Any] = [_allow(("logs:CreateLogStream", "logs:PutLogEvents"), arn(access.log_group))]
    for table_grant in access.tables:
        table = table_logical(table_grant.table)
        out.append(_allow(table_grant.actions, [arn(table), sub(f"${{{table}.Arn}}/index/*")]))
    listed: dict[str, tuple[str, ...]] = {}
    for grant in access.objects:
        bucket = buckets[grant.bucket]
        out.append(_allow(grant.actions, sub(f"${{{bucket}.Arn}}/{grant.prefix}*")))
        versions = ("s3:ListBucketVersions",) if "s3:DeleteObjectVersion" in grant.actions else ()
        listed[bucket] = tuple(dict.fromkeys((*listed.get(bucket, ()), "s3:ListBucket", *versions)))
    # Without ListBucket S3 answers a missing key with 403, not 404.
    out += [_allow(actions, arn(bucket)) for bucket, actions in listed.items()]
    out += [_allow(q.actions, arn(queues[q.queue])) for q in access.queues]
    if access.reads_queue is not None:
        out.append(_allow(QUEUE_READ_ACTIONS, arn(access.reads_queue)))
    if access.sign:
        out.append(_allow(SIGN, arn(SIGNING_KEY)))
    if access.put_events:
        out.append(_allow(("events:PutEvents",), arn(EVENT_BUS)))
    if access.publish:
        out.append(_allow(("iot:Publish",), [topic_arn(d, k) for d, k in access.publish]))
    if access.timeseries:
        out.append(_allow(("firehose:PutRecordBatch",), arn(TIMESERIES_STREAM)))
    if access.invoke:
        out.append(_allow(("lambda:InvokeFunction",), [arn(f) for f in access.invoke]))
    if access.onboarding:
        out += _certificates(ONBOARDING_THING_ACTIONS)
    elif access.rotation:
        out += _certificates(ROTATION_THING_ACTIONS)
    return out


def role(access: FunctionAccess, names: ResourceNames, rules: tuple[Rule, ...]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": _assume("lambda.amazonaws.com"),
            "Policies": [
                {
                    "PolicyName": "function",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": statements(access, names, rules),
                    },
                }
            ],
        },
    }
    if access.issues_certificates:
        resource["Metadata"] = {"Comment": CSR_WILDCARD}
    return resource


def log_group(access: FunctionAccess) -> dict[str, Any]:
    """Deleted with the stack, on purpose: the group is named after the
    function, so a retained one would make the next stack's create fail."""
    return {
        "Type": "AWS::Logs::LogGroup",
        "DeletionPolicy": "Delete",
        "UpdateReplacePolicy": "Delete",
        "Properties": {
            "LogGroupName": f"/aws/lambda/{access.name}",
            "RetentionInDays": LOG_RETENTION_DAYS,
        },
        "Metadata": skip(
            (
                "CKV_AWS_158",
                "CloudWatch Logs encrypts at rest already; the logs hold ids and outcomes, "
                "never secrets, so a CMK adds key management and no protection",
            ),
        ),
    }


def _assume(service: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
        ],
    }


def iot_rule_role(policy: str, actions: tuple[str, ...], resource: Any) -> dict[str, Any]:
    """A role IoT rules assume: `actions` on `resource` and nothing else."""
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": _assume("iot.amazonaws.com"),
            "Policies": [
                {
                    "PolicyName": policy,
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [_allow(actions, resource)],
                    },
                }
            ],
        },
    }


def dead_letter_role(names: ResourceNames) -> dict[str, Any]:
    """The rules' error actions: the OTA DLQ and the telemetry DLQ's `dlq/` keys."""
    bucket = bucket_logicals(names)[names.telemetry_dlq_bucket]
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": _assume("iot.amazonaws.com"),
            "Policies": [
                {
                    "PolicyName": "dead-letters",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            _allow(("sqs:SendMessage",), arn(OTA_DLQ)),
                            _allow(("s3:PutObject",), sub(f"${{{bucket}.Arn}}/dlq/*")),
                        ],
                    },
                }
            ],
        },
    }
