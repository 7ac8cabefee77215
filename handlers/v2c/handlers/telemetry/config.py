"""The Lambda form's wiring: configuration from environment variables, AWS style.

A Lambda function learns its resources from its environment (the SAM
template sets these), and boto3 finds region, credentials and endpoint by
itself: `AWS_ENDPOINT_URL` (honoured by botocore natively) points every
client at moto locally, nothing points them at AWS in production. Handlers
may not import `v2c.infra`, so this is the handlers' own small counterpart
of its settings; the defaults equal `v2c.infra.aws.resources.ResourceNames`'
(a unit test keeps them equal).

| variable | default | meaning |
|---|---|---|
| TELEMETRY_TABLE | v2c-telemetry | operational records |
| VEHICLE_REGISTRY_TABLE | v2c-vehicle-registry | make, model, year |
| TELEMETRY_DLQ_BUCKET | v2c-telemetry-dlq | dead letters (as `v2c.handlers.dlq_admin`) |
| TIMESERIES_SINK | firehose (see below) | `firehose`, `timestream` or `none` (else an error) |
| TIMESERIES_STREAM | v2c-telemetry-timeseries | the Firehose delivery stream (sink `firehose`) |
| TIMESTREAM_DATABASE | (none) | sink `timestream` only, which needs it |
| TIMESTREAM_TABLE | vehicle-telemetry | sink `timestream` only |
| TELEMETRY_DEDUP_WINDOW_S | 300 | in-process dedup window |
| VEHICLE_REGISTRY_CACHE_TTL_S | 300 | registry cache |
| TELEMETRY_RETENTION_DAYS | 90 | DynamoDB TTL of a record; 0: none |

The time-series sink: Timestream for LiveAnalytics takes no new customers and
the template never provisioned it, so the default is Firehose into S3
(`firehose_sink`). Timestream stays an opt-in. Without `TIMESERIES_SINK`,
a function configured before the choice existed keeps what it had: a
non-empty `TIMESTREAM_DATABASE` means `timestream`, an empty one (the old
"no time-series writes") `none`; only when neither is set is it `firehose`.
`TIMESERIES_SINK` set always wins; `timestream` without a database is a
`ConfigurationError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import boto3

from v2c.contract.errors import ConfigurationError
from v2c.handlers.aws_clients import DYNAMODB_CLIENT_CONFIG, aws_client_config
from v2c.handlers.dlq.store import S3DeadLetterStore
from v2c.handlers.per_container import PerContainer
from v2c.handlers.telemetry.dead_letters import QUEUE
from v2c.handlers.telemetry.dedup import DedupWindow
from v2c.handlers.telemetry.firehose_sink import FirehoseSink
from v2c.handlers.telemetry.metrics import TelemetryMetrics, default_metrics
from v2c.handlers.telemetry.registry import CachedRegistry, DynamoVehicleRegistry
from v2c.handlers.telemetry.service import TelemetryService
from v2c.handlers.telemetry.store import DynamoRecordStore
from v2c.handlers.telemetry.timeseries import TimeSeriesSink, TimestreamSink

ENV_TELEMETRY_TABLE: Final = "TELEMETRY_TABLE"
ENV_REGISTRY_TABLE: Final = "VEHICLE_REGISTRY_TABLE"
ENV_DLQ_BUCKET: Final = "TELEMETRY_DLQ_BUCKET"
ENV_TIMESERIES_SINK: Final = "TIMESERIES_SINK"
ENV_TIMESERIES_STREAM: Final = "TIMESERIES_STREAM"
ENV_TIMESTREAM_DATABASE: Final = "TIMESTREAM_DATABASE"
ENV_TIMESTREAM_TABLE: Final = "TIMESTREAM_TABLE"
ENV_DEDUP_WINDOW: Final = "TELEMETRY_DEDUP_WINDOW_S"
ENV_REGISTRY_TTL: Final = "VEHICLE_REGISTRY_CACHE_TTL_S"
ENV_RETENTION_DAYS: Final = "TELEMETRY_RETENTION_DAYS"
ENV_ENDPOINT: Final = "AWS_ENDPOINT_URL"

SinkKind = Literal["firehose", "timestream", "none"]
SINK_KINDS: Final[tuple[SinkKind, ...]] = get_args(SinkKind)


def sink_kind(env: Mapping[str, str]) -> SinkKind:
    """The time-series sink the environment asks for (the module docstring's rule)."""
    raw = (env.get(ENV_TIMESERIES_SINK) or "").strip().lower()
    if not raw:
        if ENV_TIMESTREAM_DATABASE in env:  # configured before TIMESERIES_SINK existed
            return "timestream" if env[ENV_TIMESTREAM_DATABASE] else "none"
        return "firehose"
    for kind in SINK_KINDS:
        if raw == kind:
            return kind
    raise ConfigurationError(
        f"{ENV_TIMESERIES_SINK}={env.get(ENV_TIMESERIES_SINK)!r}: expected one of "
        + ", ".join(SINK_KINDS)
    )


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    telemetry_table: str = "v2c-telemetry"
    registry_table: str = "v2c-vehicle-registry"
    dlq_bucket: str = "v2c-telemetry-dlq"
    timeseries_sink: SinkKind = "firehose"
    timeseries_stream: str = "v2c-telemetry-timeseries"
    timestream_database: str | None = None
    timestream_table: str = "vehicle-telemetry"
    dedup_window_s: float = 300.0
    registry_ttl_s: float = 300.0
    retention_days: int = 90
    endpoint_url: str | None = None  # informational: botocore reads the variable itself

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TelemetryConfig:
        env = os.environ if environ is None else environ
        defaults = cls()
        kind = sink_kind(env)
        database = env.get(ENV_TIMESTREAM_DATABASE, defaults.timestream_database) or None
        if kind == "timestream" and database is None:
            raise ConfigurationError(
                f"{ENV_TIMESERIES_SINK}=timestream needs a {ENV_TIMESTREAM_DATABASE}"
            )
        try:
            return cls(
                telemetry_table=env.get(ENV_TELEMETRY_TABLE) or defaults.telemetry_table,
                registry_table=env.get(ENV_REGISTRY_TABLE) or defaults.registry_table,
                dlq_bucket=env.get(ENV_DLQ_BUCKET) or defaults.dlq_bucket,
                timeseries_sink=kind,
                timeseries_stream=env.get(ENV_TIMESERIES_STREAM) or defaults.timeseries_stream,
                timestream_database=database,
                timestream_table=env.get(ENV_TIMESTREAM_TABLE) or defaults.timestream_table,
                dedup_window_s=float(env.get(ENV_DEDUP_WINDOW) or defaults.dedup_window_s),
                registry_ttl_s=float(env.get(ENV_REGISTRY_TTL) or defaults.registry_ttl_s),
                retention_days=int(env.get(ENV_RETENTION_DAYS) or defaults.retention_days),
                endpoint_url=env.get(ENV_ENDPOINT) or None,
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid telemetry handler setting: {exc}") from exc


def build_service(
    config: TelemetryConfig, session: boto3.Session | None = None, **service_kwargs: Any
) -> TelemetryService:
    """A service over real (or moto) AWS, clients made from `session`."""
    session = session or boto3.Session()
    local = config.endpoint_url is not None
    ddb: Any = session.client("dynamodb", config=DYNAMODB_CLIENT_CONFIG)
    s3: Any = session.client("s3", config=aws_client_config(local=local))
    timeseries = timeseries_sink(config, session)
    metrics: TelemetryMetrics = service_kwargs.get("metrics") or default_metrics()
    # The store's failed attempts (throttling and UnprocessedItems included),
    # labelled with the store's AWS region: one store serves every vehicle region.
    store_region = session.region_name or "unknown"
    return TelemetryService(
        records=DynamoRecordStore(
            ddb,
            config.telemetry_table,
            retention_s=config.retention_days * 86400 if config.retention_days > 0 else None,
            on_error=lambda code: metrics.dynamodb_errors.labels(store_region, code).inc(),
        ),
        dead_letters=S3DeadLetterStore(QUEUE, s3, config.dlq_bucket),
        timeseries=timeseries,
        registry=CachedRegistry(
            DynamoVehicleRegistry(ddb, config.registry_table), ttl_s=config.registry_ttl_s
        ),
        window=DedupWindow(config.dedup_window_s),
        **service_kwargs,
    )


def timeseries_sink(config: TelemetryConfig, session: boto3.Session) -> TimeSeriesSink | None:
    """The sink `config.timeseries_sink` names, or None for `none`."""
    local = config.endpoint_url is not None
    if config.timeseries_sink == "firehose":
        firehose: Any = session.client("firehose", config=aws_client_config(local=local))
        return FirehoseSink(firehose, config.timeseries_stream)
    if config.timeseries_sink == "timestream" and config.timestream_database:
        # Timestream uses endpoint discovery, which an endpoint from the
        # environment does not turn off (botocore would ask moto for an
        # endpoint and get AWS's): only an explicit endpoint_url does.
        ts: Any = session.client(
            "timestream-write",
            config=aws_client_config(local=local),
            endpoint_url=config.endpoint_url,
        )
        return TimestreamSink(ts, config.timestream_database, config.timestream_table)
    return None


# The process's service, shared by both telemetry handlers so that a sample
# seen on one path is in the dedup window of the other (`PerContainer`).
SERVICE: PerContainer[TelemetryService] = PerContainer(
    lambda: build_service(TelemetryConfig.from_env()), close=TelemetryService.close
)
default_service = SERVICE.get
set_default_service = SERVICE.install

__all__ = [
    "DYNAMODB_CLIENT_CONFIG",
    "SERVICE",
    "TelemetryConfig",
    "aws_client_config",
    "build_service",
    "default_service",
    "set_default_service",
    "sink_kind",
    "timeseries_sink",
]
