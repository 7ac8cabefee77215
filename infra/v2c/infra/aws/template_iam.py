"""Who may touch what in `template.yaml`: one role per function, from a table.

`function_access` is the table: per Lambda function, the tables, object
prefixes, queues, key, bus, topics, stream and functions it reaches, read off
what its handlers call (the `*.config` modules and the stores they build).
`role` turns one row into an IAM role whose every statement names its
resources by ARN; tests read the table (telemetry cannot sign or publish) and
the rendered roles (no statement on `*` but the one IAM requires).

Roles are plain `AWS::IAM::Role` resources rather than SAM's generated ones:
SAM always attaches AWSLambdaBasicExecutionRole, whose log permissions are on
every log group of the account. Here each function writes to its own log
group only, created by the template with a retention.

The only `Resource: "*"` is `iot:CreateCertificateFromCsr` (onboarding):
IAM defines no resource for it, since the certificate does not exist before
the call. The role carries that reason in its metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from v2c.contract.errors import ConfigurationError
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
from v2c.infra.device_policy import DOWNLINK
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
    onboarding: bool = False  # creates things and certificates (the vehicles API)
    reads_queue: str | None = None  # the queue (logical id) its mapping reads
    skips: tuple[tuple[str, str], ...] = ()  # checkov findings that do not apply, why

    @property
    def role(self) -> str:
        return f"{self.logical}Role"

    @property
    def log_group(self) -> str:
        return f"{self.logical}LogGroup"


def ota_grants(names: ResourceNames, *, api: bool) -> dict[str, Any]:
    """What the OTA services (`v2c.handlers.ota.config.build_services`) reach:
    every OTA table; firmware only read, but by the API; in the firmware
    bucket the packages (read: presigned URLs), the campaign plans and the
    fleet index; the OTA DLQ for failed notifications and refused reports;
    the key, the bus and `ota/available` of every vehicle."""
    firmware_bucket = names.firmware_bucket
    objects = (
        (ObjectGrant(firmware_bucket, "", OBJECT_UPLOAD),)
        if api
        else (
            ObjectGrant(firmware_bucket, "firmware/", OBJECT_READ),
            ObjectGrant(firmware_bucket, "campaign-plans/", OBJECT_WRITE),
            ObjectGrant(firmware_bucket, "fleet-index/", OBJECT_WRITE),
        )
    )
    # The API's vehicle inventory reads when each vehicle was last heard
    # from in the telemetry records (`v2c.handlers.vehicles.sightings`).
    sightings = (TableGrant(names.telemetry_table, ("dynamodb:Query",)),) if api else ()
    return {
        "tables": (
            TableGrant(names.campaigns_table, WRITE),
            TableGrant(names.vehicle_updates_table, WRITE),
            TableGrant(names.rollbacks_table, WRITE),
            TableGrant(names.vehicle_registry_table, WRITE),
            TableGrant(names.firmware_table, WRITE if api else READ),
            *sightings,
        ),
        "objects": objects,
        "queues": (QueueGrant(names.ota_dlq_queue, QUEUE_SEND),),
        "sign": True,
        "put_events": True,
        "publish": ((Domain.OTA, "available"),),
    }


def telemetry_grants(names: ResourceNames) -> dict[str, Any]:
    """The telemetry service (`v2c.handlers.telemetry.config.build_service`):
    its records, the registry read, its DLQ objects, the archive stream."""
    return {
        "tables": (
            TableGrant(names.telemetry_table, TELEMETRY_WRITE),
            TableGrant(names.vehicle_registry_table, READ),
        ),
        "objects": (ObjectGrant(names.telemetry_dlq_bucket, "dlq/", ("s3:PutObject",)),),
        "timeseries": True,
    }


# Which grants each rule handler's function needs (a rule added with a new
# handler must say so here: no default access).
RULE_PROFILES: Final = {
    "v2c.handlers.ota_status:lambda_handler": "ota",
    "v2c.handlers.telemetry_ingest:lambda_handler": "telemetry",
    "v2c.handlers.telemetry_batch:lambda_handler": "telemetry",
}

_VPC = (
    "CKV_AWS_117",
    "reaches only AWS APIs over TLS, authorised by IAM; a VPC would add NAT or "
    "endpoints and there is no private resource to reach",
)
_ENV = ("CKV_AWS_173", "the environment holds resource names only, no secret")


def rule_skips() -> tuple[tuple[str, str], ...]:
    return (
        _VPC,
        _ENV,
        (
            "CKV_AWS_116",
            "invoked synchronously by its SQS mapping: a failed record goes back to the "
            "queue, and to the queue's dead-letter queue after maxReceiveCount",
        ),
        ("CKV_AWS_115", "its mapping's ScalingConfig.MaximumConcurrency bounds it"),
    )


def rule_access(rule: Rule, names: ResourceNames, env: Mapping[str, Any]) -> dict[str, Any]:
    """The grants of the function a rule's handler runs in."""
    profile = RULE_PROFILES.get(rule.handler)
    if profile is None:
        raise ConfigurationError(
            f"rule {rule.name}: no access profile for {rule.handler} (template_iam.RULE_PROFILES)"
        )
    grants = ota_grants(names, api=False) if profile == "ota" else telemetry_grants(names)
    return {**grants, "env": env, "skips": rule_skips()}


def dlq_grants(
    names: ResourceNames, rule_functions: tuple[str, ...], ingest_queues: tuple[str, ...]
) -> dict[str, Any]:
    """What the dead-letter service (`v2c.handlers.dlq.config.build_service`)
    reaches: the telemetry DLQ's objects, the OTA DLQ, the ingest DLQ and the
    ingest queues its records replay onto (`dlq.ingest`), the rules'
    functions an inbound record replays into (`LambdaRedriver`), and the
    downlink topics an outbound record is published to again (`IotDataRedriver`)."""
    downlink = tuple((domain, kind) for domain, kinds in DOWNLINK.items() for kind in kinds)
    return {
        "objects": (ObjectGrant(names.telemetry_dlq_bucket, "dlq/", OBJECT_WRITE),),
        "queues": (
            QueueGrant(names.ota_dlq_queue, QUEUE_ADMIN),
            QueueGrant(names.ingest_dlq_queue, INGEST_DLQ_ADMIN),
            *(QueueGrant(queue, QUEUE_SEND) for queue in ingest_queues),
        ),
        "invoke": rule_functions,
        "publish": downlink,
    }


def _union(*groups: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(item for group in groups for item in group))


def merge_grants(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """Two services' grants in one function: tuples joined without repeats,
    a queue granted by both once with the actions of both, flags or-ed."""
    merged = dict(first)
    for key, value in second.items():
        if key not in merged:
            merged[key] = value
        elif key == "queues":
            actions: dict[str, tuple[str, ...]] = {}
            for grant in (*merged[key], *value):
                actions[grant.queue] = _union(actions.get(grant.queue, ()), grant.actions)
            merged[key] = tuple(QueueGrant(queue, acts) for queue, acts in actions.items())
        elif isinstance(value, tuple):
            merged[key] = _union(merged[key], value)
        else:
            merged[key] = merged[key] or value
    return merged


def api_access(
    names: ResourceNames, env: Mapping[str, Any], monitor: str, dlq: Mapping[str, Any]
) -> dict[str, Any]:
    """The OTA services, the planner it invokes, onboarding, and the
    dead-letter service behind `/api/v1/dlq` (`dlq`: `dlq_grants`)."""
    return {
        **merge_grants(ota_grants(names, api=True), {**dlq, "invoke": (monitor, *dlq["invoke"])}),
        "env": env,
        "onboarding": True,
        "skips": (
            _VPC,
            _ENV,
            ("CKV_AWS_116", "invoked synchronously by API Gateway: the caller gets the error"),
            (
                "CKV_AWS_115",
                "the API stage's throttling bounds it; reserved concurrency would come out of "
                "the account's pool (an account limited to 10 cannot reserve any)",
            ),
        ),
    }


def monitor_access(names: ResourceNames, env: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **ota_grants(names, api=False),
        "env": env,
        "skips": (
            _VPC,
            _ENV,
            (
                "CKV_AWS_116",
                "each one-minute pass redoes what a failed one missed, and re-plans a campaign "
                "a failed planner invocation left in `planning`",
            ),
            ("CKV_AWS_115", "one schedule tick a minute, plus the API's planner invocations"),
        ),
    }


def device_events_access(names: ResourceNames, env: Mapping[str, Any]) -> dict[str, Any]:
    """`v2c.handlers.ota_device_events`: the OTA services, to cancel a
    decommissioned vehicle's updates (an EventBridge rule on the v2c bus)."""
    return {
        **ota_grants(names, api=False),
        "env": env,
        "skips": (
            _VPC,
            _ENV,
            (
                "CKV_AWS_116",
                "the decommission request cancels the updates itself; this consumer is the "
                "idempotent backstop, and EventBridge retries it for 24 hours",
            ),
            ("CKV_AWS_115", "one event per decommissioned vehicle"),
        ),
    }


def dlq_admin_access(env: Mapping[str, Any], dlq: Mapping[str, Any]) -> dict[str, Any]:
    """`v2c.handlers.dlq_admin`: the dead-letter service (`dlq_grants`): list,
    show, replay and purge every DLQ."""
    return {
        **dlq,
        "env": env,
        "skips": (
            _VPC,
            _ENV,
            ("CKV_AWS_116", "invoked directly and synchronously by an operator"),
            ("CKV_AWS_115", "invoked by operators, one request at a time"),
        ),
    }


def _iot_arn(resource: str) -> dict[str, Any]:
    return sub(f"arn:${{AWS::Partition}}:iot:${{AWS::Region}}:${{AWS::AccountId}}:{resource}")


def topic_arn(domain: Domain, kind: str) -> dict[str, Any]:
    """The IAM resource of a downlink kind to every vehicle in every region."""
    return _iot_arn("topic/" + "/".join((*PREFIX, "*", "*", domain.value, kind)))


def _onboarding() -> list[dict[str, Any]]:
    """Registering a vehicle (`v2c.handlers.vehicles.iot_issuer`): its thing
    (of the vehicle type), a certificate from its CSR, the vehicle policy and
    the thing attached to it; and the reverse. Resources per IoT's IAM table:
    things by name, certificates by id (a new certificate's id is unknown in
    advance); the policy's ARN is listed too, for evaluations by policy."""
    things = _iot_arn(f"thing/{VEHICLE_THINGS}")
    certs = _iot_arn("cert/*")
    return [
        _allow(
            (
                "iot:CreateThing",
                "iot:UpdateThing",
                "iot:DescribeThing",
                "iot:DeleteThing",
                "iot:ListThingPrincipals",
            ),
            things,
        ),
        _allow(("iot:AttachThingPrincipal", "iot:DetachThingPrincipal"), [certs, things]),
        _allow(("iot:AttachPolicy", "iot:DetachPolicy"), [certs, arn(VEHICLE_POLICY)]),
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
        out += _onboarding()
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
    if access.onboarding:
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
