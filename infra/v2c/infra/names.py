"""The name of every resource v2c provisions, at the bottom of `v2c.infra`.

`ResourceNames` is part of a stack's description (`stack.json`) and of the
SAM template, so both `settings` and the AWS wing read it; keeping it (and
the patterns its fields are checked against) apart from the code that
provisions the resources keeps `settings` from importing `aws` and back.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PREFIX = "v2c"
DLQ_RETENTION_DAYS = 90
SQS_MAX_RETENTION_SECONDS = 14 * 24 * 3600  # 1209600

_TABLE = r"^[A-Za-z0-9_.-]{3,255}$"
_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_QUEUE = r"^[A-Za-z0-9_-]{1,80}$"
_ALIAS = r"^alias/[A-Za-z0-9/_-]{1,250}$"
_TS_NAME = r"^[A-Za-z0-9_.-]{3,256}$"
_STREAM = r"^[A-Za-z0-9_.-]{1,64}$"
_IOT_POLICY = r"^[\w+=,.@-]{1,128}$"
_THING_TYPE = r"^[A-Za-z0-9:_-]{1,128}$"
# A Lambda function name is this prefix and a rule's name (or the function's
# role): the DLQ replay finds a rule's function by it (RULE_FUNCTION_PREFIX).
_FUNCTION_PREFIX = r"^[A-Za-z0-9_-]{1,40}$"
_USER_POOL = r"^[\w\s+=,.@-]{1,128}$"

# Names an older stack.json may still carry for resources v2c no longer has:
# the telemetry dedup table (ADR 0001, point 6: the record's own key dedups)
# and the idempotency table nothing ever read or wrote (a campaign's creation
# key is its id: `uuid5` of the key).
RETIRED = frozenset({"dedup_table", "idempotency_table"})


class ResourceNames(BaseModel):
    """The names of every resource; stored in stack.json under `resources`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    telemetry_table: str = Field(default=f"{PREFIX}-telemetry", pattern=_TABLE)
    vehicle_registry_table: str = Field(default=f"{PREFIX}-vehicle-registry", pattern=_TABLE)
    firmware_table: str = Field(default=f"{PREFIX}-firmware", pattern=_TABLE)
    campaigns_table: str = Field(default=f"{PREFIX}-campaigns", pattern=_TABLE)
    vehicle_updates_table: str = Field(default=f"{PREFIX}-vehicle-updates", pattern=_TABLE)
    rollbacks_table: str = Field(default=f"{PREFIX}-rollbacks", pattern=_TABLE)
    firmware_bucket: str = Field(default=f"{PREFIX}-firmware", pattern=_BUCKET)
    telemetry_dlq_bucket: str = Field(default=f"{PREFIX}-telemetry-dlq", pattern=_BUCKET)
    ota_dlq_queue: str = Field(default=f"{PREFIX}-ota-dlq", pattern=_QUEUE)
    # The queues the production IoT rules deliver into and the functions read
    # in batches (ADR 0009), and where SQS moves a record they failed too often.
    ota_status_ingest_queue: str = Field(default=f"{PREFIX}-ota-status-ingest", pattern=_QUEUE)
    telemetry_ingest_queue: str = Field(default=f"{PREFIX}-telemetry-ingest", pattern=_QUEUE)
    telemetry_batch_ingest_queue: str = Field(
        default=f"{PREFIX}-telemetry-batch-ingest", pattern=_QUEUE
    )
    vehicle_certificates_ingest_queue: str = Field(
        default=f"{PREFIX}-vehicle-certificates-ingest", pattern=_QUEUE
    )
    ingest_dlq_queue: str = Field(default=f"{PREFIX}-ingest-dlq", pattern=_QUEUE)
    signing_key_alias: str = Field(default=f"alias/{PREFIX}-ota-signing", pattern=_ALIAS)
    event_bus: str = Field(default=f"{PREFIX}-events", pattern=_QUEUE)
    # Time series: a Firehose stream archives telemetry in its own bucket (GZIP
    # under `telemetry/year=.../`); Timestream only when a database is named
    # explicitly (closed to new AWS customers, so never by default).
    timeseries_stream: str = Field(default=f"{PREFIX}-telemetry-timeseries", pattern=_STREAM)
    timeseries_bucket: str = Field(default=f"{PREFIX}-telemetry-archive", pattern=_BUCKET)
    timestream_database: str | None = Field(default=None, pattern=_TS_NAME)
    timestream_table: str = Field(default="vehicle-telemetry", pattern=_TS_NAME)
    # Device identity in AWS IoT: the policy every vehicle certificate gets and
    # the thing type of every vehicle (the onboarding API attaches both).
    iot_policy: str = Field(default=f"{PREFIX}-vehicle", pattern=_IOT_POLICY)
    thing_type: str = Field(default=f"{PREFIX}-vehicle", pattern=_THING_TYPE)
    function_prefix: str = Field(default=f"{PREFIX}-", pattern=_FUNCTION_PREFIX)
    # The Cognito user pool of the API's users (fleet managers, approvers, operators).
    user_pool: str = Field(default=f"{PREFIX}-operators", pattern=_USER_POOL)

    @model_validator(mode="before")
    @classmethod
    def _drop_retired(cls, data: Any) -> Any:
        """Forget retired names, so a stack described before they went still loads;
        any other unknown name is still refused (`extra="forbid"`): a typo must not
        pass for a retired resource."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if key not in RETIRED}
        return data

    @property
    def ingest_queues(self) -> dict[str, str]:
        """Each production rule's queue, by the rule's name: the rules table sits
        above this module (`v2c.gateway.rules`), so the names meet it by key and
        a test checks that every queue-fed rule has one."""
        return {
            "ota_status": self.ota_status_ingest_queue,
            "telemetry": self.telemetry_ingest_queue,
            "telemetry_batch": self.telemetry_batch_ingest_queue,
            "vehicle_certificates": self.vehicle_certificates_ingest_queue,
        }

    @field_validator("signing_key_alias")
    @classmethod
    def _not_aws_managed(cls, alias: str) -> str:
        if alias.startswith("alias/aws/"):
            raise ValueError("alias/aws/ is reserved for AWS managed keys")
        return alias

    @classmethod
    def with_prefix(cls, prefix: str) -> ResourceNames:
        """Every default name with `v2c` replaced by `prefix`: S3 bucket names
        are global, so a real account needs its own prefix."""
        values: dict[str, str | None] = {}
        for name, info in cls.model_fields.items():
            default = info.default
            if isinstance(default, str) and default.startswith(PREFIX):
                values[name] = prefix + default.removeprefix(PREFIX)
            elif isinstance(default, str) and default.startswith(f"alias/{PREFIX}"):
                values[name] = f"alias/{prefix}" + default.removeprefix(f"alias/{PREFIX}")
        return cls.model_validate(values)
