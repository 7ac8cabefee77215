"""Every AWS resource v2c uses, by name and shape, and an idempotent bootstrap.

`ensure_resources` converges an account (or a moto server) to these specs:
missing resources are created, existing ones are checked and their mutable
settings (TTL, lifecycle, retention, versioning) put right, and a second run
reports everything as "exists". A resource whose immutable shape differs
(another key schema, another key spec) is a `ResourceMismatch`: replacing it
would lose data, so an operator decides.

DynamoDB tables (all PAY_PER_REQUEST; names are `ResourceNames` defaults;
key attributes are strings unless marked N; PITR: point-in-time recovery):

| table | partition key | sort key | GSIs (partition, sort) | TTL | PITR |
|---|---|---|---|---|---|
| v2c-telemetry | vehicle_id | sample_key | - | expires_at | - |
| v2c-vehicle-registry | vehicle_id | - | by-model-year (model, year N) | - | yes |
| v2c-firmware | firmware_id | - | by-device-model (device_model, version) | - | yes |
| v2c-campaigns | campaign_id | - | by-status (status, created_at) | - | yes |
| v2c-vehicle-updates | vehicle_id | update_id | by-campaign (campaign_id, vehicle_id) | - | yes |
|                     |            |           | by-update (device_update_id) |   |   |
|                     |            |           | by-due (due_shard, due_at_ms N), sparse |   |   |
| v2c-rollbacks | vehicle_id | rollback_id | by-campaign (campaign_id, vehicle_id) | - | yes |

All indexes project ALL attributes.

Why these keys:
* telemetry: `sample_key` is derived from the sample (e.g. zero-padded
  epoch and sequence), so a redelivered sample overwrites itself: the
  idempotent backstop BatchWriteItem needs, as it cannot carry conditions.
  That key is the dedup too: there is no dedup table (ADR 0001). TTL
  deletion is lazy (up to days in AWS): readers must still compare
  `expires_at` with now. No PITR: the records expire by design and the
  time-series archive (Firehose into S3) is their durable copy.
* vehicle registry: campaign targeting (`model = X AND year >= Y`) is one
  Query on by-model-year instead of a Scan.
* firmware: `firmware_id` is deterministic (BR-OTA-004); by-device-model
  serves `GET /firmware?device_model=` and the model+version uniqueness
  check (BR-OTA-005). `version` sorts as a string, not as semver.
* campaigns: by-status lists the running campaigns for the monitors.
* vehicle updates and rollbacks: keyed by vehicle so "one update in flight
  per vehicle" and `GET /devices/{id}/updates` are a single-partition Query;
  by-campaign serves statistics and the canary gate; by-update maps the
  API's per-vehicle `device_update_id` (`GET /updates/{update_id}`) to the
  record, whose sort key is the signed release's id the vehicle reports;
  by-due holds only the updates the monitor must look at by a time (a
  deadline in flight, a recheck while waiting: `domain.timeouts`), sharded,
  so a pass reads those whose time came and nothing else.

There is no idempotency table: nothing ever used the one provisioned for
Powertools' idempotency layer (a campaign's creation key derives its id).

S3 buckets (`bucket_specs`; every one versioned, private, ACLs off, SSE-S3,
TLS only: `converge_buckets`):

| bucket | holds | lifecycle (old = noncurrent versions) |
|---|---|---|
| v2c-firmware | packages, uploads, plans, fleet index | old index 1 d, old packages 30 d |
| v2c-telemetry-dlq | the telemetry DLQ (`dlq/`) | objects 90 d, old ones 90 d later |
| v2c-telemetry-archive | the time series (Firehose) | old objects 30 d |

Every bucket also drops unfinished multipart uploads after 7 days.

The fleet index is rewritten on every registry change, so each write leaves
a noncurrent version behind: kept one day, enough to read an index that was
being replaced, without piling up millions of versions.

Other resources: SQS `v2c-ota-dlq` (14-day retention, SQS's maximum); KMS
key ECC_NIST_P256 / SIGN_VERIFY behind `alias/v2c-ota-signing`; EventBridge
bus `v2c-events`; Firehose `v2c-telemetry-timeseries` into the archive
bucket (`converge_firehose`); Timestream database and table only when
`timestream_database` is named (AWS no longer takes new Timestream for
LiveAnalytics customers, so it is never a default).

SQS queues of the batch-shaped data path (ADR 0009), one per queue-fed rule
of `v2c.gateway.rules.RULES`:

| queue | retention | visibility | redrive |
|---|---|---|---|
| v2c-ota-status-ingest | 4 d | 6 x function timeout (180 s) | v2c-ingest-dlq after 3 receives |
| v2c-telemetry-ingest | 4 d | 180 s | v2c-ingest-dlq after 3 receives |
| v2c-telemetry-batch-ingest | 4 d | 180 s | v2c-ingest-dlq after 3 receives |
| v2c-vehicle-certificates-ingest | 4 d | 180 s | v2c-ingest-dlq after 3 receives |
| v2c-ingest-dlq | 14 d | - | - |

The receive count is the rule's `max_receive_count` and the visibility
timeout follows the rule's timeout, so the queues cannot drift from the rules.
The local stack provisions them too, although its gateway plays queue and
event source mapping in memory (`v2c.gateway.batcher`): what `v2c aws
bootstrap` makes of moto is what it makes of an account.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.exceptions import ReadTimeoutError

from v2c.contract.errors import ConfigurationError, TransientError
from v2c.gateway.rules import RULES, EventSource, Rule
from v2c.handlers.ota.firmware.storage import PACKAGE_PREFIX
from v2c.handlers.ota.fleet_index.store import PREFIX as FLEET_INDEX_PREFIX
from v2c.handlers.ota.fleet_index.store import FleetIndex
from v2c.infra.aws import converge, converge_buckets, converge_firehose, converge_queues
from v2c.infra.aws.converge import (
    Index,
    Key,
    ResourceMismatch,
    ResourceStatus,
    TableSpec,
)
from v2c.infra.aws.converge_buckets import BucketSpec, LifecycleRule
from v2c.infra.aws.converge_firehose import DeliveryStreamSpec
from v2c.infra.aws.converge_queues import QueueSpec
from v2c.infra.names import DLQ_RETENTION_DAYS, SQS_MAX_RETENTION_SECONDS, ResourceNames

if TYPE_CHECKING:
    from v2c.infra.settings import AwsSettings

__all__ = [
    "BucketSpec",
    "DeliveryStreamSpec",
    "LifecycleRule",
    "QueueSpec",
    "ResourceMismatch",
    "ResourceReport",
    "ResourceStatus",
    "TableSpec",
    "bucket_specs",
    "ensure_resources",
    "function_timeout_s",
    "ingest_queue_name",
    "ingest_rules",
    "queue_specs",
    "table_specs",
    "timeseries_stream_spec",
]

# SQS's own default, stated so the template and bootstrap agree: a record is
# handled within seconds or dead-lettered after its receives, and the DLQ must
# keep it longer, since a message moved there keeps its first enqueue time.
INGEST_RETENTION_SECONDS: Final = 4 * 24 * 3600
# AWS guidance for a queue a Lambda function reads: hide a received batch for
# at least six function timeouts, so that a batch Lambda is still retrying
# (throttled, or waiting for a free instance) is not delivered a second time.
VISIBILITY_PER_FUNCTION_TIMEOUT: Final = 6


def table_specs(names: ResourceNames) -> tuple[TableSpec, ...]:
    """The DynamoDB tables, as in the module docstring's table."""
    vehicle = Key("vehicle_id")
    by_campaign = Index("by-campaign", Key("campaign_id"), vehicle)
    record = True  # a table of record: point-in-time recovery on
    return (
        TableSpec(names.telemetry_table, vehicle, Key("sample_key"), ttl_attribute="expires_at"),
        TableSpec(
            names.vehicle_registry_table,
            vehicle,
            indexes=(Index("by-model-year", Key("model"), Key("year", "N")),),
            point_in_time_recovery=record,
        ),
        TableSpec(
            names.firmware_table,
            Key("firmware_id"),
            indexes=(Index("by-device-model", Key("device_model"), Key("version")),),
            point_in_time_recovery=record,
        ),
        TableSpec(
            names.campaigns_table,
            Key("campaign_id"),
            indexes=(Index("by-status", Key("status"), Key("created_at")),),
            point_in_time_recovery=record,
        ),
        TableSpec(
            names.vehicle_updates_table,
            vehicle,
            Key("update_id"),
            indexes=(
                by_campaign,
                Index("by-update", Key("device_update_id")),
                Index("by-due", Key("due_shard"), Key("due_at_ms", "N")),
            ),
            point_in_time_recovery=record,
        ),
        TableSpec(
            names.rollbacks_table,
            vehicle,
            Key("rollback_id"),
            indexes=(by_campaign,),
            point_in_time_recovery=record,
        ),
    )


# Noncurrent fleet-index versions: kept a day (see the module docstring).
FLEET_INDEX_VERSIONS_DAYS: Final = 1
# Old package versions (an overwritten or deleted package) and old archive
# objects: a month to notice a mistake and restore the version.
NONCURRENT_DAYS: Final = 30
ABORT_UPLOADS_DAYS: Final = 7


def bucket_specs(names: ResourceNames) -> tuple[BucketSpec, ...]:
    """The S3 buckets, as in the module docstring's table."""
    abort = LifecycleRule("abort-incomplete-uploads", abort_multipart_days=ABORT_UPLOADS_DAYS)
    return (
        BucketSpec(
            names.firmware_bucket,
            (
                LifecycleRule(
                    "fleet-index-versions",
                    prefix=FLEET_INDEX_PREFIX.split("/")[0] + "/",
                    noncurrent_days=FLEET_INDEX_VERSIONS_DAYS,
                ),
                LifecycleRule(
                    "package-versions", prefix=PACKAGE_PREFIX, noncurrent_days=NONCURRENT_DAYS
                ),
                abort,
            ),
            purpose="firmware, plans, fleet index",
        ),
        BucketSpec(
            names.telemetry_dlq_bucket,
            (
                LifecycleRule(
                    "expire-dead-letters",
                    expire_days=DLQ_RETENTION_DAYS,
                    noncurrent_days=DLQ_RETENTION_DAYS,
                    abort_multipart_days=ABORT_UPLOADS_DAYS,
                ),
            ),
            purpose="telemetry DLQ",
        ),
        BucketSpec(
            names.timeseries_bucket,
            (
                LifecycleRule(
                    "archive-versions",
                    noncurrent_days=NONCURRENT_DAYS,
                    abort_multipart_days=ABORT_UPLOADS_DAYS,
                ),
            ),
            purpose="telemetry archive",
        ),
    )


def timeseries_stream_spec(names: ResourceNames) -> DeliveryStreamSpec:
    """The Firehose stream that archives telemetry (`converge_firehose`)."""
    return DeliveryStreamSpec(names.timeseries_stream, names.timeseries_bucket)


def function_timeout_s(rule: Rule) -> int:
    """The Lambda timeout of a rule's function: whole seconds, never below the
    gateway's own timeout for the rule."""
    return math.ceil(rule.timeout_s)


def ingest_rules(rules: Sequence[Rule] = RULES) -> tuple[Rule, ...]:
    """The rules an IoT rule feeds through a queue (the others invoke their
    function directly, one event per message)."""
    return tuple(rule for rule in rules if rule.source is EventSource.SQS)


def ingest_queue_name(names: ResourceNames, rule: Rule) -> str:
    """The provisioned name of a queue-fed rule's queue: `ResourceNames` owns
    names (a prefix renames it), the rule only the default."""
    try:
        return names.ingest_queues[rule.name]
    except KeyError:
        raise ConfigurationError(
            f"rule {rule.name} is fed by a queue ResourceNames has no name for"
        ) from None


def queue_specs(names: ResourceNames, rules: Sequence[Rule] = RULES) -> tuple[QueueSpec, ...]:
    """The SQS queues, dead-letter queues first (a redrive policy names its
    target's ARN), as in the module docstring's table."""
    specs = [
        QueueSpec(names.ota_dlq_queue, SQS_MAX_RETENTION_SECONDS),
        QueueSpec(names.ingest_dlq_queue, SQS_MAX_RETENTION_SECONDS),
    ]
    specs += [
        QueueSpec(
            ingest_queue_name(names, rule),
            INGEST_RETENTION_SECONDS,
            visibility_timeout_s=VISIBILITY_PER_FUNCTION_TIMEOUT * function_timeout_s(rule),
            dead_letter=names.ingest_dlq_queue,
            max_receive_count=rule.max_receive_count,
        )
        for rule in ingest_rules(rules)
    ]
    return tuple(specs)


@dataclass
class ResourceReport:
    items: list[ResourceStatus] = field(default_factory=list)

    @property
    def created(self) -> list[ResourceStatus]:
        return [item for item in self.items if item.action == "created"]

    @property
    def changed(self) -> bool:
        return any(item.action != "exists" for item in self.items)

    def find(self, kind: str, name: str) -> ResourceStatus:
        for item in self.items:
            if item.kind == kind and item.name == name:
                return item
        raise KeyError((kind, name))


def start_fleet_index(aws: AwsSettings, names: ResourceNames, report: ResourceReport) -> None:
    """The fleet index (`v2c.handlers.ota.fleet_index`, in the firmware
    bucket) of a registry table created just now is empty too: mark it built.
    An older table's index is built from it by the monitor's first pass (a
    table scan), so campaigns never miss its vehicles. Not a resource of its
    own in the report: it is data the handlers keep, like the plans."""
    if report.find("dynamodb-table", names.vehicle_registry_table).action != "created":
        return
    index = FleetIndex(aws.client("s3"), names.firmware_bucket)
    if not index.is_built():
        index.mark_built(0)


def ensure_resources(aws: AwsSettings, names: ResourceNames | None = None) -> ResourceReport:
    """Create or converge every resource; safe to run any number of times.

    Talks to wherever `aws` points: moto locally, the account otherwise.
    """
    names = names or ResourceNames()
    report = ResourceReport()
    try:
        report.items.extend(
            converge.tables(aws.client("dynamodb"), table_specs(names), aws.is_local)
        )
        s3 = aws.client("s3")
        # A plain-HTTP endpoint (moto) would refuse every request under a TLS-only policy.
        tls = not (aws.endpoint_url or "").startswith("http://")
        for bucket in bucket_specs(names):
            report.items.append(converge_buckets.bucket(s3, bucket, aws.region, tls_only=tls))
        start_fleet_index(aws, names, report)
        report.items.extend(converge_queues.queues(aws.client("sqs"), queue_specs(names)))
        report.items.append(converge.signing_key(aws.client("kms"), names.signing_key_alias))
        report.items.append(converge.event_bus(aws.client("events"), names.event_bus))
        firehose: Any = aws.client("firehose")
        sts: Any = aws.client("sts")
        account = str(sts.get_caller_identity()["Account"])
        report.items.append(
            converge_firehose.delivery_stream(
                firehose, aws.client("iam"), timeseries_stream_spec(names), account
            )
        )
        if names.timestream_database is not None:
            report.items.extend(
                converge.timestream(
                    aws.client("timestream-write"),
                    names.timestream_database,
                    names.timestream_table,
                )
            )
    except (BotocoreConnectionError, ReadTimeoutError) as exc:
        where = aws.endpoint_url or f"AWS {aws.region}"
        raise TransientError(f"cannot reach {where} (is the moto server running?)") from exc
    return report
