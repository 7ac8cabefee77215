"""Create-or-converge steps, one per AWS service, for `resources.ensure_resources`.

Each step looks before it leaps (describe, then create), tolerates losing a
race to a concurrent bootstrap, puts mutable settings right on an existing
resource and reports what it did. Shapes that cannot change in place raise
`ResourceMismatch` rather than being replaced: replacing loses data.
No retry loops here: the clients carry botocore's retry configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final, Literal, cast

from botocore.exceptions import ClientError

from v2c.contract.errors import ConfigurationError, TransientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeDefinitionTypeDef,
        GlobalSecondaryIndexTypeDef,
        KeySchemaElementTypeDef,
        TableDescriptionTypeDef,
    )
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import LifecycleRuleTypeDef, PublicAccessBlockConfigurationTypeDef
    from mypy_boto3_timestream_write import TimestreamWriteClient

KeyType = Literal["S", "N", "B"]


@dataclass(frozen=True)
class Key:
    name: str
    type: KeyType = "S"


@dataclass(frozen=True)
class Index:
    name: str
    partition: Key
    sort: Key | None = None


@dataclass(frozen=True)
class TableSpec:
    name: str
    partition: Key
    sort: Key | None = None
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str | None = None


Action = Literal["created", "exists", "updated"]


class ResourceMismatch(ConfigurationError):
    """An existing resource has a shape bootstrap cannot change in place."""

    reason = "resource_mismatch"


@dataclass(frozen=True)
class ResourceStatus:
    kind: str  # "dynamodb-table", "s3-bucket", "sqs-queue", "kms-key", ...
    name: str
    action: Action
    detail: str = ""
    identifier: str = ""  # ARN, queue URL or key id, where AWS gives one


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


# ---- DynamoDB ------------------------------------------------------------


def _key_schema(partition: Key, sort: Key | None) -> list[KeySchemaElementTypeDef]:
    schema: list[KeySchemaElementTypeDef] = [{"AttributeName": partition.name, "KeyType": "HASH"}]
    if sort is not None:
        schema.append({"AttributeName": sort.name, "KeyType": "RANGE"})
    return schema


def _attributes(spec: TableSpec) -> list[AttributeDefinitionTypeDef]:
    keys = [spec.partition, spec.sort]
    for index in spec.indexes:
        keys += [index.partition, index.sort]
    types = {key.name: key.type for key in keys if key is not None}
    return [{"AttributeName": name, "AttributeType": t} for name, t in sorted(types.items())]


def _gsi(index: Index) -> GlobalSecondaryIndexTypeDef:
    return {
        "IndexName": index.name,
        "KeySchema": _key_schema(index.partition, index.sort),
        "Projection": {"ProjectionType": "ALL"},
    }


def tables(ddb: DynamoDBClient, specs: Iterable[TableSpec], local: bool) -> list[ResourceStatus]:
    """PAY_PER_REQUEST tables with their indexes and TTL; missing indexes are
    added to existing tables, a different key schema is a mismatch."""
    existing = {
        n for page in ddb.get_paginator("list_tables").paginate() for n in page["TableNames"]
    }
    created: set[str] = set()
    specs = list(specs)
    for spec in specs:  # create all first: AWS builds them in parallel
        if spec.name in existing:
            continue
        try:
            if spec.indexes:  # AWS refuses an empty GlobalSecondaryIndexes list
                ddb.create_table(
                    TableName=spec.name,
                    BillingMode="PAY_PER_REQUEST",
                    KeySchema=_key_schema(spec.partition, spec.sort),
                    AttributeDefinitions=_attributes(spec),
                    GlobalSecondaryIndexes=[_gsi(index) for index in spec.indexes],
                )
            else:
                ddb.create_table(
                    TableName=spec.name,
                    BillingMode="PAY_PER_REQUEST",
                    KeySchema=_key_schema(spec.partition, spec.sort),
                    AttributeDefinitions=_attributes(spec),
                )
            created.add(spec.name)
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":  # a concurrent bootstrap won
                raise
    waiter = ddb.get_waiter("table_exists")
    statuses = []
    for spec in specs:
        table = ddb.describe_table(TableName=spec.name)["Table"]
        if table.get("TableStatus") != "ACTIVE":
            waiter.wait(TableName=spec.name, WaiterConfig={"Delay": 1 if local else 5})
            table = ddb.describe_table(TableName=spec.name)["Table"]
        changes = [] if spec.name in created else _converge_indexes(ddb, spec, table, local)
        changes += _converge_ttl(ddb, spec)
        action: Action = "created" if spec.name in created else ("updated" if changes else "exists")
        arn = table.get("TableArn", "")
        statuses.append(ResourceStatus("dynamodb-table", spec.name, action, _describe(spec), arn))
    return statuses


def _describe(spec: TableSpec) -> str:
    keys = "/".join(k.name for k in (spec.partition, spec.sort) if k is not None)
    parts = [f"key {keys}"]
    parts += [f"gsi {index.name}" for index in spec.indexes]
    if spec.ttl_attribute:
        parts.append(f"ttl {spec.ttl_attribute}")
    return "; ".join(parts)


def _converge_indexes(
    ddb: DynamoDBClient, spec: TableSpec, table: TableDescriptionTypeDef, local: bool
) -> list[str]:
    want = _key_schema(spec.partition, spec.sort)
    if table["KeySchema"] != want:
        raise ResourceMismatch(
            f"table {spec.name} has key schema {table['KeySchema']}, expected {want}: "
            "keys cannot change in place; delete the table or use another name"
        )
    have = {gsi["IndexName"]: gsi for gsi in table.get("GlobalSecondaryIndexes", [])}
    added = []
    for index in spec.indexes:  # AWS adds one index per UpdateTable call
        if index.name in have:
            if have[index.name]["KeySchema"] != _key_schema(index.partition, index.sort):
                raise ResourceMismatch(f"index {index.name} on {spec.name} has other keys")
            continue
        ddb.update_table(
            TableName=spec.name,
            AttributeDefinitions=_attributes(spec),
            GlobalSecondaryIndexUpdates=[{"Create": _gsi(index)}],
        )
        _wait_until(partial(_index_active, ddb, spec.name, index.name), 1 if local else 5)
        added.append(index.name)
    return added


def _index_active(ddb: DynamoDBClient, table: str, index: str) -> bool:
    described = ddb.describe_table(TableName=table)["Table"]
    for gsi in described.get("GlobalSecondaryIndexes", []):
        if gsi["IndexName"] == index:
            return gsi.get("IndexStatus", "ACTIVE") == "ACTIVE"
    return False


def _converge_ttl(ddb: DynamoDBClient, spec: TableSpec) -> list[str]:
    if spec.ttl_attribute is None:
        return []
    ttl = ddb.describe_time_to_live(TableName=spec.name)["TimeToLiveDescription"]
    status, attribute = ttl.get("TimeToLiveStatus"), ttl.get("AttributeName")
    if status in ("ENABLED", "ENABLING"):
        if attribute != spec.ttl_attribute:
            raise ResourceMismatch(
                f"table {spec.name} expires items by {attribute!r}, expected {spec.ttl_attribute!r}"
            )
        return []
    ddb.update_time_to_live(
        TableName=spec.name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
    )
    return ["ttl"]


def _wait_until(ready: Callable[[], bool], delay: float, attempts: int = 120) -> None:
    for _ in range(attempts):
        if ready():
            return
        time.sleep(delay)
    raise TransientError(f"resource not ready after {attempts * delay:.0f}s")


# ---- S3 ------------------------------------------------------------------

_LIFECYCLE_RULE_ID = "v2c-expire"


def bucket(
    s3: S3Client, name: str, region: str, *, expire_days: int | None = None
) -> ResourceStatus:
    """A private, versioned bucket; with `expire_days`, objects expire after
    that many days and superseded versions the same number of days later."""
    created = False
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as exc:
        if error_code(exc) == "403":
            raise ResourceMismatch(
                f"bucket {name} belongs to another account: bucket names are global, "
                "choose another prefix (ResourceNames.with_prefix)"
            ) from exc
        if error_code(exc) not in ("404", "NoSuchBucket"):
            raise
        created = _create_bucket(s3, name, region)
    changes = _converge_bucket(s3, name, expire_days)
    detail = "versioned, private" + (f", expire {expire_days}d" if expire_days else "")
    action: Action = "created" if created else ("updated" if changes else "exists")
    return ResourceStatus("s3-bucket", name, action, detail, f"arn:aws:s3:::{name}")


def _create_bucket(s3: S3Client, name: str, region: str) -> bool:
    try:
        if region == "us-east-1":  # the one region that refuses a LocationConstraint
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(
                Bucket=name,
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


def _converge_bucket(s3: S3Client, name: str, expire_days: int | None) -> list[str]:
    changes = []
    if s3.get_bucket_versioning(Bucket=name).get("Status") != "Enabled":
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        changes.append("versioning")
    block: PublicAccessBlockConfigurationTypeDef = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    try:
        have = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchPublicAccessBlockConfiguration":
            raise
        have = {}
    if any(have.get(k) is not True for k in block):
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=block)
        changes.append("public access block")
    if expire_days is not None and not _lifecycle_ok(s3, name, expire_days):
        s3.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={"Rules": [_lifecycle_rule(expire_days)]},
        )
        changes.append("lifecycle")
    return changes


def _lifecycle_rule(days: int) -> LifecycleRuleTypeDef:
    return {
        "ID": _LIFECYCLE_RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "Expiration": {"Days": days},
        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    }


def _lifecycle_ok(s3: S3Client, name: str, days: int) -> bool:
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    except ClientError as exc:
        if error_code(exc) != "NoSuchLifecycleConfiguration":
            raise
        return False
    for rule in rules:
        if rule.get("ID") == _LIFECYCLE_RULE_ID:
            return (
                rule.get("Status") == "Enabled"
                and rule.get("Expiration", {}).get("Days") == days
                and rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == days
            )
    return False


# ---- KMS, EventBridge, Timestream (SQS: converge_queues) -------------------------------------


SIGNING_KEY_SPEC: Final = "ECC_NIST_P256"
SIGNING_KEY_USAGE: Final = "SIGN_VERIFY"


def signing_key(kms: KMSClient, alias: str) -> ResourceStatus:
    """An ECC P-256 signing key behind `alias`; the alias is the identity
    (rotation points it at a new key), so the key itself is found through it."""
    detail = f"{SIGNING_KEY_SPEC} {SIGNING_KEY_USAGE}"
    try:
        meta = kms.describe_key(KeyId=alias)["KeyMetadata"]
    except ClientError as exc:
        if error_code(exc) != "NotFoundException":
            raise
        meta = kms.create_key(
            KeySpec=SIGNING_KEY_SPEC,
            KeyUsage=SIGNING_KEY_USAGE,
            Description="v2c OTA manifest signing (ECDSA P-256)",
        )["KeyMetadata"]
        try:
            kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
        except ClientError as alias_exc:
            if error_code(alias_exc) != "AlreadyExistsException":
                raise
            # A concurrent bootstrap won: drop our key and use theirs.
            kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
            return signing_key(kms, alias)
        return ResourceStatus("kms-key", alias, "created", detail, meta["Arn"])
    if meta.get("KeySpec") != SIGNING_KEY_SPEC or meta.get("KeyUsage") != SIGNING_KEY_USAGE:
        raise ResourceMismatch(
            f"{alias} points at a {meta.get('KeySpec')}/{meta.get('KeyUsage')} key, "
            f"expected {detail}"
        )
    if meta.get("KeyState") != "Enabled":
        raise ResourceMismatch(f"{alias} points at a key in state {meta.get('KeyState')}")
    return ResourceStatus("kms-key", alias, "exists", detail, meta["Arn"])


def event_bus(events: EventBridgeClient, name: str) -> ResourceStatus:
    try:
        arn = events.describe_event_bus(Name=name)["Arn"]
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        arn = events.create_event_bus(Name=name)["EventBusArn"]
        return ResourceStatus("event-bus", name, "created", "", arn)
    return ResourceStatus("event-bus", name, "exists", "", arn)


MEMORY_STORE_HOURS = 24
MAGNETIC_STORE_DAYS = 365


def timestream(ts: TimestreamWriteClient, database: str, table: str) -> list[ResourceStatus]:
    statuses = []
    try:
        arn = ts.describe_database(DatabaseName=database)["Database"]["Arn"]
        statuses.append(ResourceStatus("timestream-database", database, "exists", "", arn))
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        arn = ts.create_database(DatabaseName=database)["Database"]["Arn"]
        statuses.append(ResourceStatus("timestream-database", database, "created", "", arn))
    detail = f"memory {MEMORY_STORE_HOURS}h, magnetic {MAGNETIC_STORE_DAYS}d"
    qualified = f"{database}.{table}"
    try:
        arn = ts.describe_table(DatabaseName=database, TableName=table)["Table"]["Arn"]
        statuses.append(ResourceStatus("timestream-table", qualified, "exists", detail, arn))
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        arn = ts.create_table(
            DatabaseName=database,
            TableName=table,
            RetentionProperties={
                "MemoryStoreRetentionPeriodInHours": MEMORY_STORE_HOURS,
                "MagneticStoreRetentionPeriodInDays": MAGNETIC_STORE_DAYS,
            },
        )["Table"]["Arn"]
        statuses.append(ResourceStatus("timestream-table", qualified, "created", detail, arn))
    return statuses
