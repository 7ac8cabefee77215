"""template.yaml declares what `v2c aws bootstrap` converges: the same spec objects.

Each stateful resource of the template is compared with the spec the local
stack's converge steps take (`table_specs`, `bucket_specs`, `queue_specs`,
the signing key, `timeseries_stream_spec`): keys, indexes, TTL and backups;
versioning, lifecycle, public-access block, encryption and policy; retention,
visibility, redrive and encryption; the key's spec; the stream's destination.
The integration test `test_bootstrap_matches_template` reads the same
settings back from a moto server after bootstrap.
"""

from __future__ import annotations

from typing import Any

import yaml

from v2c.infra.aws.converge import SIGNING_KEY_SPEC, SIGNING_KEY_USAGE
from v2c.infra.aws.converge_buckets import (
    OWNERSHIP,
    PUBLIC_ACCESS_BLOCK,
    SSE_ALGORITHM,
    lifecycle_as_read,
    s3_lifecycle_rules,
    tls_only_policy,
)
from v2c.infra.aws.resources import (
    bucket_specs,
    queue_specs,
    table_specs,
    timeseries_stream_spec,
)
from v2c.infra.aws.template import TEMPLATE_PATH
from v2c.infra.aws.template_storage import bucket_name, local_bucket_name
from v2c.infra.names import ResourceNames

Resources = dict[str, Any]
NAMES = ResourceNames()
STATEFUL = (
    "AWS::DynamoDB::Table",
    "AWS::S3::Bucket",
    "AWS::SQS::Queue",
    "AWS::KMS::Key",
    "AWS::Cognito::UserPool",
)


def _resources() -> Resources:
    resources: Resources = yaml.safe_load(TEMPLATE_PATH.read_text())["Resources"]
    return resources


def _by_name(resources: Resources, kind: str, prop: str) -> dict[str, dict[str, Any]]:
    return {r["Properties"][prop]: r["Properties"] for r in resources.values() if r["Type"] == kind}


def _keys(schema: list[dict[str, str]]) -> tuple[str | None, ...]:
    kinds = {k["KeyType"]: k["AttributeName"] for k in schema}
    return kinds["HASH"], kinds.get("RANGE")


def test_the_tables_are_the_specs_with_keys_indexes_ttl_and_backups() -> None:
    declared = _by_name(_resources(), "AWS::DynamoDB::Table", "TableName")

    for spec in table_specs(NAMES):
        props = declared.pop(spec.name)
        types = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert _keys(props["KeySchema"]) == (
            spec.partition.name,
            spec.sort.name if spec.sort else None,
        )
        keys = [spec.partition, spec.sort]
        for index in spec.indexes:
            keys += [index.partition, index.sort]
        assert types == {k.name: k.type for k in keys if k is not None}
        indexes = {i["IndexName"]: i for i in props.get("GlobalSecondaryIndexes", [])}
        assert set(indexes) == {index.name for index in spec.indexes}
        for index in spec.indexes:
            assert _keys(indexes[index.name]["KeySchema"]) == (
                index.partition.name,
                index.sort.name if index.sort else None,
            )
            assert indexes[index.name]["Projection"] == {"ProjectionType": "ALL"}
        ttl = props.get("TimeToLiveSpecification")
        assert (ttl["AttributeName"] if ttl else None) == spec.ttl_attribute
        pitr = props.get("PointInTimeRecoverySpecification", {})
        assert pitr.get("PointInTimeRecoveryEnabled", False) == spec.point_in_time_recovery
    assert declared == {}


def test_the_tables_of_record_have_point_in_time_recovery_and_telemetry_has_not() -> None:
    pitr = {spec.name: spec.point_in_time_recovery for spec in table_specs(NAMES)}

    assert pitr == {
        NAMES.telemetry_table: False,
        NAMES.vehicle_registry_table: True,
        NAMES.firmware_table: True,
        NAMES.campaigns_table: True,
        NAMES.vehicle_updates_table: True,
        NAMES.rollbacks_table: True,
    }


def _template_lifecycle(props: dict[str, Any]) -> list[dict[str, Any]]:
    """CloudFormation's rule shape as S3's API shape, for `lifecycle_as_read`."""
    rules = []
    for rule in props.get("LifecycleConfiguration", {}).get("Rules", []):
        api: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"]}
        api["Filter"] = {"Prefix": rule.get("Prefix", "")}
        if "ExpirationInDays" in rule:
            api["Expiration"] = {"Days": rule["ExpirationInDays"]}
        for key in ("NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload"):
            if key in rule:
                api[key] = rule[key]
        rules.append(api)
    return lifecycle_as_read(rules)  # type: ignore[arg-type]


def test_the_buckets_are_the_specs_hardened_alike() -> None:
    resources = _resources()
    declared = {
        local_bucket_name(r["Properties"]["BucketName"]): r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::S3::Bucket"
    }
    logical = {
        local_bucket_name(r["Properties"]["BucketName"]): k
        for k, r in resources.items()
        if r["Type"] == "AWS::S3::Bucket"
    }
    policies = {
        r["Properties"]["Bucket"]["Ref"]: r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy"
    }

    for spec in bucket_specs(NAMES):
        props = declared.pop(spec.name)
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert props["PublicAccessBlockConfiguration"] == PUBLIC_ACCESS_BLOCK
        assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": OWNERSHIP}]}
        (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert encryption["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": SSE_ALGORITHM}
        assert _template_lifecycle(props) == lifecycle_as_read(s3_lifecycle_rules(spec))
        name = logical[spec.name]
        assert policies.pop(name) == tls_only_policy(
            {"Fn::GetAtt": [name, "Arn"]}, {"Fn::Sub": f"${{{name}.Arn}}/*"}
        )
    assert declared == {}
    assert policies == {}


def test_the_tls_only_policy_denies_every_request_without_tls() -> None:
    (statement,) = tls_only_policy("arn:b", "arn:b/*")["Statement"]

    assert (statement["Effect"], statement["Principal"], statement["Action"]) == (
        "Deny",
        "*",
        "s3:*",
    )
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == ["arn:b", "arn:b/*"]


def test_the_queues_are_the_specs_and_encrypted() -> None:
    declared = _by_name(_resources(), "AWS::SQS::Queue", "QueueName")

    for spec in queue_specs(NAMES):
        props = declared.pop(spec.name)
        assert props["MessageRetentionPeriod"] == spec.retention_seconds
        assert props.get("VisibilityTimeout") == spec.visibility_timeout_s
        assert props.get("RedrivePolicy", {}).get("maxReceiveCount", 0) == spec.max_receive_count
        assert spec.managed_sse
        assert props["SqsManagedSseEnabled"] is True
    assert declared == {}


def test_the_signing_key_is_the_one_bootstrap_creates() -> None:
    resources = _resources()
    (key,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::KMS::Key"]
    (alias,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::KMS::Alias"]

    assert (key["KeySpec"], key["KeyUsage"]) == (SIGNING_KEY_SPEC, SIGNING_KEY_USAGE)
    assert alias["AliasName"] == NAMES.signing_key_alias


def test_the_delivery_stream_is_the_spec() -> None:
    resources = _resources()
    (stream,) = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::KinesisFirehose::DeliveryStream"
    ]
    spec = timeseries_stream_spec(NAMES)
    destination = stream["ExtendedS3DestinationConfiguration"]

    assert stream["DeliveryStreamName"] == spec.name == NAMES.timeseries_stream
    assert stream["DeliveryStreamType"] == "DirectPut"
    assert destination == spec.destination(
        {"Fn::GetAtt": ["TelemetryArchiveBucket", "Arn"]},
        {"Fn::GetAtt": ["TimeseriesDeliveryRole", "Arn"]},
    )
    assert resources["TelemetryArchiveBucket"]["Properties"]["BucketName"] == bucket_name(
        spec.bucket
    )
    assert destination["Prefix"].startswith("telemetry/year=!{timestamp:yyyy}/")
    assert destination["ErrorOutputPrefix"].startswith("errors/!{firehose:error-output-type}/")
    assert destination["CompressionFormat"] == "GZIP"


def test_every_resource_holding_data_is_retained_on_delete_and_on_replacement() -> None:
    for logical, resource in _resources().items():
        if resource["Type"] in STATEFUL:
            assert resource.get("DeletionPolicy") == "Retain", logical
            assert resource.get("UpdateReplacePolicy") == "Retain", logical


def test_there_is_no_idempotency_table_and_no_timestream_by_default() -> None:
    text = TEMPLATE_PATH.read_text()

    assert "idempotency" not in text
    assert "Timestream" not in text
    assert "TIMESTREAM" not in text
    assert NAMES.timestream_database is None


def test_deployed_bucket_names_carry_the_account_and_region_the_local_ones_do_not() -> None:
    # S3 names are global: a bare `v2c-firmware` could belong to anyone
    for resource in _resources().values():
        if resource["Type"] == "AWS::S3::Bucket":
            name = resource["Properties"]["BucketName"]
            assert name == {
                "Fn::Sub": local_bucket_name(name) + "-${AWS::AccountId}-${AWS::Region}"
            }
            assert local_bucket_name(name) in {
                NAMES.firmware_bucket,
                NAMES.telemetry_dlq_bucket,
                NAMES.timeseries_bucket,
            }
