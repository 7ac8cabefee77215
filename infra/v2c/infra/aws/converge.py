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
from typing import TYPE_CHECKING, Final, Literal

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
    # Continuous backups (35 days of point-in-time restore) for tables of record.
    point_in_time_recovery: bool = False


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
        changes += _converge_backups(ddb, spec)
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
    if spec.point_in_time_recovery:
        parts.append("pitr")
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


def point_in_time_recovery(ddb: DynamoDBClient, table: str) -> bool:
    described = ddb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    recovery = described.get("PointInTimeRecoveryDescription", {})
    return recovery.get("PointInTimeRecoveryStatus") in ("ENABLED", "ENABLING")


def _converge_backups(ddb: DynamoDBClient, spec: TableSpec) -> list[str]:
    """Point-in-time recovery on exactly the tables whose spec asks for it."""
    if point_in_time_recovery(ddb, spec.name) == spec.point_in_time_recovery:
        return []
    ddb.update_continuous_backups(
        TableName=spec.name,
        PointInTimeRecoverySpecification={
            "PointInTimeRecoveryEnabled": spec.point_in_time_recovery
        },
    )
    return ["pitr"]


def _wait_until(ready: Callable[[], bool], delay: float, attempts: int = 120) -> None:
    for _ in range(attempts):
        if ready():
            return
        time.sleep(delay)
    raise TransientError(f"resource not ready after {attempts * delay:.0f}s")


# ---- KMS, EventBridge, Timestream (S3: converge_buckets, SQS: converge_queues) ---------------


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
