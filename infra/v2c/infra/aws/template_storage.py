"""The stateful resources of `template.yaml`, rendered from the specs bootstrap converges.

Tables, buckets, queues, the signing key and the time-series stream come from
the same spec objects `v2c.infra.aws.resources` hands to the converge steps
(`TableSpec`, `BucketSpec`, `QueueSpec`, `DeliveryStreamSpec`), so the local
stack and an AWS account hold the same shapes; a test compares the two.

Every resource that holds data is `Retain` on deletion and on replacement
(`STATEFUL`): deleting or replacing the stack must never delete firmware,
campaign records or dead letters. Logical ids are the ones first deployed:
a new logical id replaces the resource, so none is ever renamed.
"""

from __future__ import annotations

import re
from typing import Any, Final

from v2c.gateway.rules import Rule
from v2c.infra.aws.converge import SIGNING_KEY_SPEC, SIGNING_KEY_USAGE, TableSpec
from v2c.infra.aws.converge_buckets import (
    OWNERSHIP,
    PUBLIC_ACCESS_BLOCK,
    SSE_ALGORITHM,
    BucketSpec,
    tls_only_policy,
)
from v2c.infra.aws.converge_firehose import (
    DeliveryStreamSpec,
    assume_role_policy,
    delivery_policy,
)
from v2c.infra.aws.converge_queues import QueueSpec
from v2c.infra.aws.resources import (
    bucket_specs,
    ingest_queue_name,
    ingest_rules,
    queue_specs,
    table_specs,
    timeseries_stream_spec,
)
from v2c.infra.names import ResourceNames

STATEFUL: Final = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
OTA_DLQ: Final = "OtaDlq"
INGEST_DLQ: Final = "IngestDlq"
FIRMWARE_BUCKET: Final = "FirmwareBucket"
DLQ_BUCKET: Final = "TelemetryDlqBucket"
ARCHIVE_BUCKET: Final = "TelemetryArchiveBucket"
SIGNING_KEY: Final = "SigningKey"
EVENT_BUS: Final = "EventBus"
TIMESERIES_STREAM: Final = "TimeseriesStream"
TIMESERIES_ROLE: Final = "TimeseriesDeliveryRole"


def logical(name: str, suffix: str = "") -> str:
    """A CloudFormation logical id from a resource or rule name (`v2c-campaigns`
    -> `V2cCampaigns` + suffix)."""
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]", name) if part) + suffix


def arn(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def sub(text: str) -> dict[str, Any]:
    return {"Fn::Sub": text}


def table_logical(name: str) -> str:
    return logical(name, "Table")


# S3 bucket names are global across accounts: a deployed bucket's name is the
# local one with the account and region appended (`v2c-firmware-<account>-<region>`),
# so `v2c-firmware` taken by anyone anywhere cannot fail a deploy, and one
# account may hold a stack per region. The local stack (one moto account)
# uses the bare names; functions get the deployed name by `Ref`.
BUCKET_SUFFIX: Final = "-${AWS::AccountId}-${AWS::Region}"


def bucket_name(name: str) -> dict[str, str]:
    """The template's `BucketName` of the bucket the local stack calls `name`."""
    return {"Fn::Sub": name + BUCKET_SUFFIX}


def local_bucket_name(value: Any) -> str:
    """The local stack's name of a template `BucketName` (`bucket_name` undone)."""
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        return str(value["Fn::Sub"]).removesuffix(BUCKET_SUFFIX)
    return str(value)


def bucket_logicals(names: ResourceNames) -> dict[str, str]:
    """Logical ids by bucket name (the first two as first deployed)."""
    return {
        names.firmware_bucket: FIRMWARE_BUCKET,
        names.telemetry_dlq_bucket: DLQ_BUCKET,
        names.timeseries_bucket: ARCHIVE_BUCKET,
    }


def queue_logicals(names: ResourceNames, rules: tuple[Rule, ...]) -> dict[str, str]:
    """Logical ids by queue name. The OTA DLQ keeps the id it was first
    deployed under: a new logical id would replace the queue, and its
    messages with it."""
    found = {names.ota_dlq_queue: OTA_DLQ, names.ingest_dlq_queue: INGEST_DLQ}
    for rule in ingest_rules(rules):
        found[ingest_queue_name(names, rule)] = logical(rule.name, "Queue")
    return found


def _keys(partition: Any, sort: Any) -> list[dict[str, str]]:
    schema = [{"AttributeName": partition.name, "KeyType": "HASH"}]
    if sort is not None:
        schema.append({"AttributeName": sort.name, "KeyType": "RANGE"})
    return schema


def table(spec: TableSpec) -> dict[str, Any]:
    keys = [spec.partition] + ([spec.sort] if spec.sort else [])
    attributes = {k.name: k.type for k in keys}
    for index in spec.indexes:
        attributes[index.partition.name] = index.partition.type
        if index.sort:
            attributes[index.sort.name] = index.sort.type
    props: dict[str, Any] = {
        "TableName": spec.name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": n, "AttributeType": t} for n, t in sorted(attributes.items())
        ],
        "KeySchema": _keys(spec.partition, spec.sort),
    }
    if spec.indexes:
        props["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index.name,
                "KeySchema": _keys(index.partition, index.sort),
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in spec.indexes
        ]
    if spec.ttl_attribute:
        props["TimeToLiveSpecification"] = {"AttributeName": spec.ttl_attribute, "Enabled": True}
    if spec.point_in_time_recovery:
        props["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": True}
    checks = [
        (
            "CKV_AWS_119",
            "the AWS owned key encrypts at rest at no cost; a CMK adds a KMS call per request "
            "and a key policy to run, and changes nobody's access (IAM decides that)",
        )
    ]
    if not spec.point_in_time_recovery:
        checks.append(
            ("CKV_AWS_28", "records expire by design; the time-series archive is their copy")
        )
    return {
        "Type": "AWS::DynamoDB::Table",
        **STATEFUL,
        "Properties": props,
        "Metadata": skip(*checks),
    }


def bucket(spec: BucketSpec) -> dict[str, Any]:
    rules = []
    for rule in spec.lifecycle:
        body: dict[str, Any] = {"Id": rule.id, "Status": "Enabled", "Prefix": rule.prefix}
        if rule.expire_days is not None:
            body["ExpirationInDays"] = rule.expire_days
        if rule.noncurrent_days is not None:
            body["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule.noncurrent_days}
        if rule.abort_multipart_days is not None:
            body["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": rule.abort_multipart_days
            }
        rules.append(body)
    props: dict[str, Any] = {
        "BucketName": bucket_name(spec.name),
        "VersioningConfiguration": {"Status": "Enabled"},
        "PublicAccessBlockConfiguration": dict(PUBLIC_ACCESS_BLOCK),
        "OwnershipControls": {"Rules": [{"ObjectOwnership": OWNERSHIP}]},
        "BucketEncryption": {
            "ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": SSE_ALGORITHM}}
            ]
        },
    }
    if rules:
        props["LifecycleConfiguration"] = {"Rules": rules}
    return {
        "Type": "AWS::S3::Bucket",
        **STATEFUL,
        "Properties": props,
        "Metadata": skip(
            (
                "CKV_AWS_18",
                "server access logs would need a log bucket of their own; CloudTrail data "
                "events are the audit trail for object access",
            ),
        ),
    }


def bucket_policy(logical_id: str) -> dict[str, Any]:
    return {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": {"Ref": logical_id},
            "PolicyDocument": tls_only_policy(arn(logical_id), sub(f"${{{logical_id}.Arn}}/*")),
        },
    }


def queue(spec: QueueSpec, logicals: dict[str, str]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "QueueName": spec.name,
        "MessageRetentionPeriod": spec.retention_seconds,
    }
    if spec.visibility_timeout_s is not None:
        props["VisibilityTimeout"] = spec.visibility_timeout_s
    if spec.dead_letter is not None:
        props["RedrivePolicy"] = {
            "deadLetterTargetArn": arn(logicals[spec.dead_letter]),
            "maxReceiveCount": spec.max_receive_count,
        }
    resource: dict[str, Any] = {"Type": "AWS::SQS::Queue", **STATEFUL, "Properties": props}
    if spec.managed_sse:
        props["SqsManagedSseEnabled"] = True
        resource["Metadata"] = skip(
            (
                "CKV_AWS_27",
                "encrypted at rest by SqsManagedSseEnabled (SSE-SQS); the check knows only "
                "KmsMasterKeyId, and a KMS key would need a key policy for the IoT rules",
            )
        )
    return resource


def signing_key(names: ResourceNames) -> dict[str, Any]:
    """The asymmetric signing key and its alias. The key policy's `Resource:
    "*"` is KMS's own convention: in a key policy it means this key."""
    return {
        SIGNING_KEY: {
            "Type": "AWS::KMS::Key",
            **STATEFUL,
            "Properties": {
                "Description": "v2c OTA manifest signing (ECDSA P-256)",
                "KeySpec": SIGNING_KEY_SPEC,
                "KeyUsage": SIGNING_KEY_USAGE,
                "KeyPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "AccountIamPoliciesDecide",
                            "Effect": "Allow",
                            "Principal": {
                                "AWS": sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")
                            },
                            "Action": "kms:*",
                            "Resource": "*",
                        }
                    ],
                },
            },
        },
        "SigningKeyAlias": {
            "Type": "AWS::KMS::Alias",
            "Properties": {
                "AliasName": names.signing_key_alias,
                "TargetKeyId": {"Ref": SIGNING_KEY},
            },
        },
    }


def timeseries(spec: DeliveryStreamSpec) -> dict[str, Any]:
    """The Firehose stream and the role it delivers with, scoped to its bucket."""
    bucket_arn, objects = arn(ARCHIVE_BUCKET), sub(f"${{{ARCHIVE_BUCKET}.Arn}}/*")
    return {
        TIMESERIES_ROLE: {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": assume_role_policy({"Ref": "AWS::AccountId"}),
                "Policies": [
                    {
                        "PolicyName": "archive-delivery",
                        "PolicyDocument": delivery_policy(bucket_arn, objects),
                    }
                ],
            },
        },
        TIMESERIES_STREAM: {
            "Type": "AWS::KinesisFirehose::DeliveryStream",
            "Properties": {
                "DeliveryStreamName": spec.name,
                "DeliveryStreamType": "DirectPut",
                "DeliveryStreamEncryptionConfigurationInput": {"KeyType": "AWS_OWNED_CMK"},
                "ExtendedS3DestinationConfiguration": spec.destination(
                    bucket_arn, arn(TIMESERIES_ROLE)
                ),
            },
        },
    }


def skip(*checks: tuple[str, str]) -> dict[str, Any]:
    """Resource metadata that suppresses checkov findings, each with its reason."""
    return {"checkov": {"skip": [{"id": check, "comment": why} for check, why in checks]}}


def storage(names: ResourceNames, rules: tuple[Rule, ...]) -> dict[str, Any]:
    """Every stateful resource, in the order bootstrap creates them."""
    resources: dict[str, Any] = {}
    for spec in table_specs(names):
        resources[table_logical(spec.name)] = table(spec)
    for bucket_spec in bucket_specs(names):
        logical_id = bucket_logicals(names)[bucket_spec.name]
        resources[logical_id] = bucket(bucket_spec)
        resources[f"{logical_id}Policy"] = bucket_policy(logical_id)
    queues = queue_logicals(names, rules)
    for queue_spec in queue_specs(names, rules):
        resources[queues[queue_spec.name]] = queue(queue_spec, queues)
    resources.update(signing_key(names))
    resources[EVENT_BUS] = {
        "Type": "AWS::Events::EventBus",
        "Properties": {"Name": names.event_bus},
    }
    resources.update(timeseries(timeseries_stream_spec(names)))
    return resources
