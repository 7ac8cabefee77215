"""The telemetry time-series stream (Firehose into the archive bucket): one
spec, rendered into `template.yaml` and converged by `v2c aws bootstrap`.

The telemetry handlers put records on the stream (`TIMESERIES_SINK=firehose`);
Firehose buffers them, compresses them and writes objects under a Hive-style
partition prefix (`telemetry/year=YYYY/month=MM/day=DD/hour=HH/`) that Athena
or Glue can query without a crawler. Records Firehose cannot deliver land under
`errors/<error type>/...` in the same bucket, never dropped.

Buffering: 64 MiB or 300 s, whichever first. The archive is not the live path
(DynamoDB serves the recent records, `v2c.handlers.telemetry`), so five
minutes of delay cost nothing, while large objects keep the S3 request count
and a query's per-object overhead low; 64 MiB before GZIP is a few MiB
after, well inside what Athena scans efficiently. At low rates the 300 s
bound makes one object per five minutes per hour partition.

On moto the stream writes each batch straight to S3, uncompressed, under the
prefix taken literally (moto does not evaluate `!{timestamp:...}`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from v2c.infra.aws.converge import Action, ResourceMismatch, ResourceStatus, error_code

if TYPE_CHECKING:
    from mypy_boto3_firehose import FirehoseClient

PREFIX: Final = (
    "telemetry/year=!{timestamp:yyyy}/month=!{timestamp:MM}/"
    "day=!{timestamp:dd}/hour=!{timestamp:HH}/"
)
ERROR_PREFIX: Final = (
    "errors/!{firehose:error-output-type}/year=!{timestamp:yyyy}/month=!{timestamp:MM}/"
    "day=!{timestamp:dd}/hour=!{timestamp:HH}/"
)
BUFFER_MB: Final = 64
BUFFER_S: Final = 300
COMPRESSION: Final = "GZIP"
# What Firehose needs of its destination bucket (AWS's documented minimum for
# an S3 destination), on that bucket and its objects only.
DELIVERY_ACTIONS: Final = (
    "s3:AbortMultipartUpload",
    "s3:GetBucketLocation",
    "s3:GetObject",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
    "s3:PutObject",
)


@dataclass(frozen=True)
class DeliveryStreamSpec:
    name: str
    bucket: str
    prefix: str = PREFIX
    error_prefix: str = ERROR_PREFIX
    buffer_mb: int = BUFFER_MB
    buffer_s: int = BUFFER_S
    compression: str = COMPRESSION

    @property
    def role_name(self) -> str:
        """The delivery role bootstrap creates (the template's is unnamed:
        named IAM resources would need CAPABILITY_NAMED_IAM)."""
        return f"{self.name}-delivery"

    def destination(self, bucket_arn: Any, role_arn: Any) -> dict[str, Any]:
        """ExtendedS3DestinationConfiguration, the same keys in CloudFormation
        and in Firehose's API; ARNs as strings or intrinsic functions."""
        return {
            "BucketARN": bucket_arn,
            "RoleARN": role_arn,
            "Prefix": self.prefix,
            "ErrorOutputPrefix": self.error_prefix,
            "BufferingHints": {"SizeInMBs": self.buffer_mb, "IntervalInSeconds": self.buffer_s},
            "CompressionFormat": self.compression,
        }


def assume_role_policy(account: Any) -> dict[str, Any]:
    """Firehose may assume the role for this account's streams only."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "firehose.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": account}},
            }
        ],
    }


def delivery_policy(bucket_arn: Any, objects_arn: Any) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": list(DELIVERY_ACTIONS),
                "Resource": [bucket_arn, objects_arn],
            }
        ],
    }


def _role(iam: Any, spec: DeliveryStreamSpec, account: str) -> str:
    """The delivery role, created if missing and its policy put right; its ARN."""
    try:
        arn = str(iam.get_role(RoleName=spec.role_name)["Role"]["Arn"])
    except ClientError as exc:
        if error_code(exc) != "NoSuchEntity":
            raise
        created = iam.create_role(
            RoleName=spec.role_name,
            AssumeRolePolicyDocument=json.dumps(assume_role_policy(account)),
            Description="Firehose delivery into the v2c telemetry archive",
        )
        arn = str(created["Role"]["Arn"])
    bucket_arn = f"arn:aws:s3:::{spec.bucket}"
    iam.put_role_policy(
        RoleName=spec.role_name,
        PolicyName="archive-delivery",
        PolicyDocument=json.dumps(delivery_policy(bucket_arn, f"{bucket_arn}/*")),
    )
    return arn


def delivery_stream(
    firehose: FirehoseClient, iam: Any, spec: DeliveryStreamSpec, account: str
) -> ResourceStatus:
    """A DirectPut stream into the archive bucket. An existing stream whose
    destination differs from the spec is a mismatch: its destination id and
    version are Firehose's to manage, and the operator decides (update it, or
    delete it and bootstrap again)."""
    detail = f"to s3://{spec.bucket}/{spec.prefix.split('/')[0]}/, {spec.compression}"
    role_arn = _role(iam, spec, account)
    want = spec.destination(f"arn:aws:s3:::{spec.bucket}", role_arn)
    action: Action = "exists"
    try:
        described = firehose.describe_delivery_stream(DeliveryStreamName=spec.name)
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        arn = firehose.create_delivery_stream(
            DeliveryStreamName=spec.name,
            DeliveryStreamType="DirectPut",
            DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"},
            ExtendedS3DestinationConfiguration=want,  # type: ignore[arg-type]
        )["DeliveryStreamARN"]
        return ResourceStatus("firehose-stream", spec.name, "created", detail, arn)
    description = described["DeliveryStreamDescription"]
    have = stream_destination(description)
    mismatched = [key for key in want if key != "RoleARN" and have.get(key) != want[key]]
    if mismatched:
        raise ResourceMismatch(
            f"delivery stream {spec.name} differs from the spec in {', '.join(mismatched)}"
        )
    return ResourceStatus(
        "firehose-stream", spec.name, action, detail, description["DeliveryStreamARN"]
    )


def stream_destination(description: Any) -> dict[str, Any]:
    """The ExtendedS3 destination of a described stream (moto and AWS name it
    `ExtendedS3DestinationDescription`), {} if it has none."""
    for destination in description.get("Destinations", []):
        found = destination.get("ExtendedS3DestinationDescription")
        if found:
            return dict(found)
    return {}
