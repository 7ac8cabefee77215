"""S3 buckets: one spec, rendered into `template.yaml` and converged by `v2c aws bootstrap`.

Every v2c bucket is hardened the same way, in AWS and on moto alike:
versioning on, every public-access block on, ACLs off (bucket owner
enforced), SSE-S3 default encryption, a bucket policy that refuses any
request not made over TLS, and the spec's lifecycle rules. `BucketSpec` is
that one definition: `template.py` renders it as CloudFormation properties,
`bucket` below puts the same settings on an existing bucket and reports
what it changed, so the two provisioning paths cannot disagree (a test
compares them, and reads the settings back from a moto server).

One setting differs on a plain-HTTP endpoint (the local moto server): the
TLS-only policy is left off (`tls_only=False`), since there every request is
plain HTTP and the policy would refuse them all (moto evaluates bucket
policies on object requests). A test puts it on a scratch bucket of moto and
shows exactly that refusal.

SSE-S3 rather than SSE-KMS: vehicles download firmware through presigned
URLs, which with a KMS key would need `kms:Decrypt` for every signer and a
KMS request per download, for no gain in who may read the object (IAM and
the bucket policy decide that).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from botocore.exceptions import ClientError

from v2c.infra.aws.converge import Action, ResourceMismatch, ResourceStatus, error_code

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import (
        LifecycleRuleOutputTypeDef,
        LifecycleRuleTypeDef,
        PublicAccessBlockConfigurationTypeDef,
    )

SSE_ALGORITHM: Final = "AES256"
OWNERSHIP: Final = "BucketOwnerEnforced"
PUBLIC_ACCESS_BLOCK: Final[dict[str, bool]] = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
TLS_ONLY_SID: Final = "DenyInsecureTransport"


@dataclass(frozen=True)
class LifecycleRule:
    """One lifecycle rule over the keys under `prefix` ("" = every key)."""

    id: str
    prefix: str = ""
    expire_days: int | None = None  # current versions become noncurrent
    noncurrent_days: int | None = None  # noncurrent versions are deleted
    abort_multipart_days: int | None = None  # unfinished uploads are dropped


@dataclass(frozen=True)
class BucketSpec:
    name: str
    lifecycle: tuple[LifecycleRule, ...] = ()
    purpose: str = ""  # one line for the bootstrap report

    @property
    def arn(self) -> str:
        return f"arn:aws:s3:::{self.name}"


def tls_only_policy(bucket_arn: Any, objects_arn: Any) -> dict[str, Any]:
    """The bucket policy: deny every request made without TLS. The ARNs are
    strings for bootstrap and intrinsic functions in the template."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": TLS_ONLY_SID,
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, objects_arn],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def s3_lifecycle_rules(spec: BucketSpec) -> list[LifecycleRuleTypeDef]:
    """The rules in the shape of S3's API (`put_bucket_lifecycle_configuration`)."""
    rules: list[LifecycleRuleTypeDef] = []
    for rule in spec.lifecycle:
        body: LifecycleRuleTypeDef = {
            "ID": rule.id,
            "Status": "Enabled",
            "Filter": {"Prefix": rule.prefix},
        }
        if rule.expire_days is not None:
            body["Expiration"] = {"Days": rule.expire_days}
        if rule.noncurrent_days is not None:
            body["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule.noncurrent_days}
        if rule.abort_multipart_days is not None:
            body["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": rule.abort_multipart_days
            }
        rules.append(body)
    return rules


def _detail(spec: BucketSpec, tls_only: bool) -> str:
    parts = [spec.purpose] if spec.purpose else []
    parts.append("versioned, private, SSE-S3, " + ("TLS only" if tls_only else "plain HTTP too"))
    for rule in spec.lifecycle:
        where = rule.prefix or "*"
        if rule.expire_days is not None:
            parts.append(f"expire {where} {rule.expire_days}d")
        if rule.noncurrent_days is not None:
            parts.append(f"old versions of {where} {rule.noncurrent_days}d")
    return ", ".join(parts)


def bucket(s3: S3Client, spec: BucketSpec, region: str, *, tls_only: bool = True) -> ResourceStatus:
    """Create the bucket if missing, then converge every hardening setting
    (`tls_only=False`: no TLS-only policy, for a plain-HTTP endpoint)."""
    created = False
    try:
        s3.head_bucket(Bucket=spec.name)
    except ClientError as exc:
        if error_code(exc) == "403":
            raise ResourceMismatch(
                f"bucket {spec.name} belongs to another account: bucket names are global, "
                "choose another prefix (ResourceNames.with_prefix)"
            ) from exc
        if error_code(exc) not in ("404", "NoSuchBucket"):
            raise
        created = _create(s3, spec.name, region)
    changes = _converge(s3, spec, tls_only, fresh=created)
    action: Action = "created" if created else ("updated" if changes else "exists")
    return ResourceStatus("s3-bucket", spec.name, action, _detail(spec, tls_only), spec.arn)


def _create(s3: S3Client, name: str, region: str) -> bool:
    try:
        if region == "us-east-1":  # the one region that refuses a LocationConstraint
            s3.create_bucket(Bucket=name, ObjectOwnership=OWNERSHIP)
        else:
            s3.create_bucket(
                Bucket=name,
                ObjectOwnership=OWNERSHIP,
                CreateBucketConfiguration={
                    "LocationConstraint": cast("BucketLocationConstraintType", region)
                },
            )
    except ClientError as exc:
        if error_code(exc) == "BucketAlreadyOwnedByYou":
            return False
        if error_code(exc) == "BucketAlreadyExists":
            raise ResourceMismatch(f"bucket name {name} is taken by another account") from exc
        raise
    return True


def _missing(exc: ClientError, *codes: str) -> bool:
    """Whether `exc` says the setting is absent (else it is a real error)."""
    if error_code(exc) in codes:
        return True
    raise exc


def _converge(s3: S3Client, spec: BucketSpec, tls_only: bool, *, fresh: bool) -> list[str]:
    """Each setting read, compared with the spec and put only if it differs
    (`fresh`: a bucket created just now, whose settings need no reading: it
    has S3's defaults, ownership already enforced by the create call)."""
    name, changes = spec.name, []
    if fresh:
        _put_fresh(s3, spec, tls_only)
        return []
    if s3.get_bucket_versioning(Bucket=name).get("Status") != "Enabled":
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        changes.append("versioning")
    if _public_access_block(s3, name) != PUBLIC_ACCESS_BLOCK:
        block = cast("PublicAccessBlockConfigurationTypeDef", dict(PUBLIC_ACCESS_BLOCK))
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=block)
        changes.append("public access block")
    if _ownership(s3, name) != OWNERSHIP:
        s3.put_bucket_ownership_controls(
            Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": OWNERSHIP}]}
        )
        changes.append("ownership")
    if _encryption(s3, name) != SSE_ALGORITHM:
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": SSE_ALGORITHM}}]
            },
        )
        changes.append("encryption")
    want_policy = tls_only_policy(spec.arn, f"{spec.arn}/*") if tls_only else {}
    if bucket_policy(s3, name) != want_policy:
        if want_policy:
            s3.put_bucket_policy(Bucket=name, Policy=json.dumps(want_policy))
        else:
            s3.delete_bucket_policy(Bucket=name)
        changes.append("policy")
    if lifecycle(s3, name) != lifecycle_as_read(s3_lifecycle_rules(spec)):
        if spec.lifecycle:
            s3.put_bucket_lifecycle_configuration(
                Bucket=name, LifecycleConfiguration={"Rules": s3_lifecycle_rules(spec)}
            )
        else:
            s3.delete_bucket_lifecycle(Bucket=name)
        changes.append("lifecycle")
    return changes


def _put_fresh(s3: S3Client, spec: BucketSpec, tls_only: bool) -> None:
    name = spec.name
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    block = cast("PublicAccessBlockConfigurationTypeDef", dict(PUBLIC_ACCESS_BLOCK))
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=block)
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": SSE_ALGORITHM}}]
        },
    )
    if tls_only:
        policy = tls_only_policy(spec.arn, f"{spec.arn}/*")
        s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
    if spec.lifecycle:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration={"Rules": s3_lifecycle_rules(spec)}
        )


def _public_access_block(s3: S3Client, name: str) -> dict[str, bool]:
    try:
        have = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        _missing(exc, "NoSuchPublicAccessBlockConfiguration")
        return {}
    return {key: bool(have.get(key)) for key in PUBLIC_ACCESS_BLOCK}


def _ownership(s3: S3Client, name: str) -> str:
    try:
        rules = s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"]
    except ClientError as exc:
        _missing(exc, "OwnershipControlsNotFoundError")
        return ""
    return str(rules[0].get("ObjectOwnership", "")) if rules else ""


def _encryption(s3: S3Client, name: str) -> str:
    try:
        rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError as exc:
        _missing(exc, "ServerSideEncryptionConfigurationNotFoundError")
        return ""
    default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    return str(default.get("SSEAlgorithm", ""))


def bucket_policy(s3: S3Client, name: str) -> dict[str, Any]:
    """The bucket's policy as data ({} without one)."""
    try:
        text = s3.get_bucket_policy(Bucket=name)["Policy"]
    except ClientError as exc:
        _missing(exc, "NoSuchBucketPolicy")
        return {}
    policy: dict[str, Any] = json.loads(text)
    return policy


def lifecycle(s3: S3Client, name: str) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules, normalised for comparison (`lifecycle_as_read`)."""
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    except ClientError as exc:
        _missing(exc, "NoSuchLifecycleConfiguration")
        return []
    return lifecycle_as_read(rules)


def lifecycle_as_read(
    rules: list[LifecycleRuleOutputTypeDef] | list[LifecycleRuleTypeDef],
) -> list[dict[str, Any]]:
    """Rules as comparable data: the fields v2c sets, sorted by id (S3 may add
    defaults, such as a `Filter` with `Prefix: ""`, or reorder the rules)."""
    out = []
    for rule in rules:
        raw = cast("dict[str, Any]", rule)
        prefix = raw.get("Filter", {}).get("Prefix", raw.get("Prefix", ""))
        out.append(
            {
                "id": raw.get("ID"),
                "status": raw.get("Status"),
                "prefix": prefix or "",
                "expire_days": raw.get("Expiration", {}).get("Days"),
                "noncurrent_days": raw.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays"),
                "abort_days": raw.get("AbortIncompleteMultipartUpload", {}).get(
                    "DaysAfterInitiation"
                ),
            }
        )
    return sorted(out, key=lambda rule: str(rule["id"]))
