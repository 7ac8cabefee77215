"""What `v2c aws bootstrap` makes of a real moto server is what template.yaml declares.

Settings are read back over HTTP from moto after bootstrap and compared with
the template's properties: bucket versioning, public-access block, ownership,
encryption and lifecycle; table backups; queue encryption; the delivery
stream's destination, which then archives a record. One setting differs on
purpose: the TLS-only bucket policy is left off a plain-HTTP endpoint, and
`test_a_tls_only_policy_refuses_plain_http_on_moto` shows why.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from botocore.exceptions import ClientError

from v2c.infra.aws.converge import point_in_time_recovery
from v2c.infra.aws.converge_buckets import (
    BucketSpec,
    bucket,
    bucket_policy,
    lifecycle,
    lifecycle_as_read,
)
from v2c.infra.aws.converge_firehose import stream_destination
from v2c.infra.aws.resources import ensure_resources
from v2c.infra.aws.template import TEMPLATE_PATH
from v2c.infra.aws.template_storage import local_bucket_name

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

Resources = dict[str, Any]


def _resources() -> Resources:
    resources: Resources = yaml.safe_load(TEMPLATE_PATH.read_text())["Resources"]
    return resources


def _of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in _resources().items() if v["Type"] == kind}


def _template_lifecycle(props: dict[str, Any]) -> list[dict[str, Any]]:
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


def test_the_bootstrapped_buckets_hold_the_templates_settings(aws_stack: AwsStack) -> None:
    s3 = aws_stack.aws.client("s3")
    buckets = _of_type("AWS::S3::Bucket")

    assert len(buckets) == 3
    for props in buckets.values():
        name = local_bucket_name(props["BucketName"])
        block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        ownership = s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]
        (rule,) = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"][
            "Rules"
        ]
        (want_sse,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]

        versioning = s3.get_bucket_versioning(Bucket=name).get("Status")
        assert versioning == props["VersioningConfiguration"]["Status"]
        assert dict(block) == props["PublicAccessBlockConfiguration"]
        assert ownership == props["OwnershipControls"]
        assert (
            rule["ApplyServerSideEncryptionByDefault"] == want_sse["ServerSideEncryptionByDefault"]
        )
        assert lifecycle(s3, name) == _template_lifecycle(props)
        # moto is plain HTTP: no TLS-only policy here (see the next test)
        assert bucket_policy(s3, name) == {}


def test_a_tls_only_policy_refuses_plain_http_on_moto(aws_stack: AwsStack) -> None:
    # Given a scratch bucket converged as in an account: with the template's policy
    s3 = aws_stack.aws.client("s3")
    spec = BucketSpec("v2c-tls-probe")
    bucket(s3, spec, aws_stack.aws.region, tls_only=True)
    policy = _of_type("AWS::S3::BucketPolicy")["FirmwareBucketPolicy"]
    template_policy = json.loads(
        json.dumps(policy["PolicyDocument"])
        .replace('{"Fn::GetAtt": ["FirmwareBucket", "Arn"]}', f'"{spec.arn}"')
        .replace('{"Fn::Sub": "${FirmwareBucket.Arn}/*"}', f'"{spec.arn}/*"')
    )

    # Then the policy is the template's, and a plain-HTTP request is refused
    assert policy["Bucket"] == {"Ref": "FirmwareBucket"}
    assert bucket_policy(s3, spec.name) == template_policy
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=spec.name, Key="k", Body=b"x")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_the_bootstrapped_tables_have_the_templates_backups(aws_stack: AwsStack) -> None:
    ddb = aws_stack.aws.client("dynamodb")

    for props in _of_type("AWS::DynamoDB::Table").values():
        want = props.get("PointInTimeRecoverySpecification", {})
        have = point_in_time_recovery(ddb, props["TableName"])
        assert have == want.get("PointInTimeRecoveryEnabled", False), props["TableName"]


def test_the_bootstrapped_queues_are_encrypted_as_the_template_says(aws_stack: AwsStack) -> None:
    sqs = aws_stack.aws.client("sqs")

    for props in _of_type("AWS::SQS::Queue").values():
        url = sqs.get_queue_url(QueueName=props["QueueName"])["QueueUrl"]
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["SqsManagedSseEnabled"]
        )["Attributes"]
        assert attributes["SqsManagedSseEnabled"] == "true"
        assert props["SqsManagedSseEnabled"] is True


def test_the_delivery_stream_is_the_templates_and_archives_records(aws_stack: AwsStack) -> None:
    (props,) = _of_type("AWS::KinesisFirehose::DeliveryStream").values()
    want = props["ExtendedS3DestinationConfiguration"]
    archive = local_bucket_name(_resources()["TelemetryArchiveBucket"]["Properties"]["BucketName"])
    firehose: Any = aws_stack.aws.client("firehose")

    described = firehose.describe_delivery_stream(DeliveryStreamName=props["DeliveryStreamName"])
    have = stream_destination(described["DeliveryStreamDescription"])
    firehose.put_record_batch(
        DeliveryStreamName=props["DeliveryStreamName"], Records=[{"Data": b'{"v": 1}\n'}]
    )
    objects = aws_stack.aws.client("s3").list_objects_v2(Bucket=archive).get("Contents", [])

    assert have["BucketARN"] == f"arn:aws:s3:::{archive}"
    for key in ("Prefix", "ErrorOutputPrefix", "BufferingHints", "CompressionFormat"):
        assert have[key] == want[key], key
    assert [o["Key"].split("/")[0] for o in objects] == ["telemetry"]


def test_bootstrap_puts_drifted_hardening_back(aws_stack: AwsStack) -> None:
    # Given: someone removed a bucket's encryption and lifecycle and a table's backups
    aws, names = aws_stack.aws, aws_stack.names
    s3, ddb = aws.client("s3"), aws.client("dynamodb")
    s3.delete_bucket_encryption(Bucket=names.firmware_bucket)
    s3.delete_bucket_lifecycle(Bucket=names.timeseries_bucket)
    ddb.update_continuous_backups(
        TableName=names.campaigns_table,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False},
    )

    # When
    report = ensure_resources(aws, names)

    # Then
    updated = {item.name for item in report.items if item.action == "updated"}
    assert updated == {names.firmware_bucket, names.timeseries_bucket, names.campaigns_table}
    assert point_in_time_recovery(ddb, names.campaigns_table)
    assert ensure_resources(aws, names).changed is False
