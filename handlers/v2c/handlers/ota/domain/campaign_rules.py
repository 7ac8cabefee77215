"""`CampaignSpec`: the campaign creation input, validated per BR-OTA-011..020 and the PRD.

Every range and default below is the business rule's, named next to the field,
so a change of rule is a one-line change here and the message a caller gets
cites the rule. `parse_campaign_spec` is the entry point for untrusted input:
it reports every problem at once as a `FieldValidationFailed` (400).

Two failure thresholds exist on purpose, because the documents set two:
`pause_threshold_percent` (default 5 %, the FMEA and the issue: failures above
5 % pause the campaign and alert) and `failure_threshold_percent` (BR-OTA-019,
default 20 %: above it, `auto_rollback` rolls the campaign back). Pausing at
the lower rate stops new notifications early; in-flight updates then finish,
and only if they push the rate past the higher one is the fleet rolled back.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from v2c.contract.errors import FilterSyntaxError, ValidationFailed
from v2c.contract.semver import SemVer
from v2c.contract.topics import VIN_PATTERN
from v2c.handlers.ota.domain.campaign_health import HealthPolicy
from v2c.handlers.ota.domain.canary import GateThresholds
from v2c.handlers.ota.domain.maintenance_window import MaintenanceWindow
from v2c.handlers.ota.domain.rollout import rollout_count
from v2c.handlers.ota.domain.target_filter import Expr, to_text
from v2c.handlers.ota.domain.target_filter import parse as parse_filter
from v2c.handlers.ota.domain.update_steps import StepSpec, check_steps
from v2c.handlers.ota.domain.validation import (
    CrossFieldProblems,
    FieldProblem,
    rule_error,
    shown,
    validate,
)
from v2c.v1 import ota_pb2

MAX_VERSION_LENGTH: Final = 50  # BR-OTA-006
MAX_TARGET_DEVICES: Final = 100_000  # PRD NFR-3: 100,000+ devices per campaign
MAX_TARGET_GROUPS: Final = 100
MAX_STAGES: Final = 20
DEFAULT_STAGES: Final = (1, 10, 50, 100)  # solution design §7: canary 1 %, pilot 10 %, 50 %, all
_FIRMWARE_ID: Final = re.compile(r"[0-9a-f]{32}")  # BR-OTA-004: SHA256(...)[:32], hex
_GROUP: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


class Strategy(StrEnum):
    """BR-OTA-013."""

    IMMEDIATE = "immediate"
    SCHEDULED = "scheduled"
    STAGED = "staged"
    CANARY = "canary"
    BLUE_GREEN = "blue_green"


class Priority(StrEnum):
    """BR-OTA-014. The wire enum has no EMERGENCY: it travels as CRITICAL."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"
    EMERGENCY = "emergency"

    def to_proto(self) -> ota_pb2.UpdatePriority.ValueType:
        return _PRIORITY_TO_PROTO[self]


class UpdateType(StrEnum):
    FIRMWARE = "firmware"
    SOFTWARE = "software"
    CONFIGURATION = "configuration"
    SECURITY_PATCH = "security_patch"

    def to_proto(self) -> ota_pb2.UpdateType.ValueType:
        return _TYPE_TO_PROTO[self]


_PRIORITY_TO_PROTO: Final = {
    Priority.LOW: ota_pb2.UPDATE_PRIORITY_LOW,
    Priority.NORMAL: ota_pb2.UPDATE_PRIORITY_NORMAL,
    Priority.HIGH: ota_pb2.UPDATE_PRIORITY_HIGH,
    Priority.CRITICAL: ota_pb2.UPDATE_PRIORITY_CRITICAL,
    Priority.EMERGENCY: ota_pb2.UPDATE_PRIORITY_CRITICAL,
}
_TYPE_TO_PROTO: Final = {
    UpdateType.FIRMWARE: ota_pb2.UPDATE_TYPE_FIRMWARE,
    UpdateType.SOFTWARE: ota_pb2.UPDATE_TYPE_SOFTWARE,
    UpdateType.CONFIGURATION: ota_pb2.UPDATE_TYPE_CONFIGURATION,
    UpdateType.SECURITY_PATCH: ota_pb2.UPDATE_TYPE_SECURITY_PATCH,
}

# How a range violation is worded, with the rule it comes from.
LIMITS: Final[Mapping[str, str]] = {
    "name": "1-200 characters",
    "description": "at most 2000 characters",
    "target_devices": f"at most {MAX_TARGET_DEVICES} vehicle ids",
    "target_groups": f"at most {MAX_TARGET_GROUPS} group names",
    "rollout_percentage": "an integer from 1 to 100 (BR-OTA-015)",
    "max_concurrent_updates": "from 1 to 1000 (BR-OTA-016)",
    "batch_size": "from 1 to 500 (BR-OTA-017)",
    "timeout_minutes": "from 5 to 1440 minutes (BR-OTA-018)",
    "failure_threshold_percent": "from 1 to 100 (BR-OTA-019)",
    "max_retries": "from 0 to 10 (BR-OTA-024)",
    "pause_threshold_percent": "from 0 to 100",
    "success_threshold_percent": "from 1 to 100",
    "canary_percentage": "greater than 0 and at most 50 (a canary is a small part of the fleet)",
    "canary_size": "from 1 to 10000",
    "green_percentage": "from 1 to 99 (both cohorts must be non-empty)",
    "min_battery_level": "from 0 to 100 percent",
    "estimated_install_time_sec": "from 1 to 86400 seconds",
}

# Fields that mean something for one strategy only; setting one for another
# strategy is a mistake worth reporting, not something to ignore silently.
_STRATEGY_FIELDS: Final = {
    "stage_percentages": Strategy.STAGED,
    "stage_success_percentages": Strategy.STAGED,
    "canary_percentage": Strategy.CANARY,
    "canary_size": Strategy.CANARY,
    "green_percentage": Strategy.BLUE_GREEN,
}

Percent = Annotated[float, Field(allow_inf_nan=False)]


def _no_control_characters(value: str) -> str:
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise rule_error("must not contain control characters")
    return value


class CampaignSpec(BaseModel):
    """A campaign as requested; the service resolves targets and creates it."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    firmware_id: str  # BR-OTA-011: the service checks it exists and is available
    version: str | None = None  # if given, must equal the firmware's version
    update_type: UpdateType = UpdateType.FIRMWARE

    # BR-OTA-012: at least one of the three.
    target_devices: tuple[str, ...] = Field(default=(), max_length=MAX_TARGET_DEVICES)
    target_groups: tuple[str, ...] = Field(default=(), max_length=MAX_TARGET_GROUPS)
    target_filter: str | None = None  # kept in canonical form

    deployment_strategy: Strategy = Strategy.STAGED  # BR-OTA-013: staged is the safest
    priority: Priority = Priority.NORMAL  # BR-OTA-014
    rollout_percentage: int = Field(default=100, ge=1, le=100)  # BR-OTA-015
    max_concurrent_updates: int = Field(default=10, ge=1, le=1000)  # BR-OTA-016
    batch_size: int = Field(default=50, ge=1, le=500)  # BR-OTA-017
    timeout_minutes: int = Field(default=60, ge=5, le=1440)  # BR-OTA-018
    max_retries: int = Field(default=3, ge=0, le=10)  # BR-OTA-024

    failure_threshold_percent: int = Field(default=20, ge=1, le=100)  # BR-OTA-019
    auto_rollback: bool = True  # BR-OTA-020
    pause_threshold_percent: Percent = Field(default=5.0, ge=0, le=100)  # FMEA / issue
    success_threshold_percent: Percent = Field(default=95.0, ge=1, le=100)  # canary gate

    stage_percentages: tuple[int, ...] = DEFAULT_STAGES  # staged: cumulative waves
    # staged: the success rate each stage must reach before the next starts
    # (solution design §7: canary 99 %, pilot 98 %, production 97 %); one per
    # gate, i.e. per stage but the last; empty: `success_threshold_percent` for all.
    stage_success_percentages: tuple[Percent, ...] = ()
    canary_percentage: Percent = Field(default=1.0, gt=0, le=50)
    canary_size: int | None = Field(default=None, ge=1, le=10_000)  # FMEA: canary_size: 100
    green_percentage: int = Field(default=50, ge=1, le=99)  # blue_green: the first cohort

    scheduled_start: datetime | None = None
    maintenance_window: MaintenanceWindow | None = None
    requires_approval: bool = False

    # Carried into the signed manifest.
    pre_update_steps: tuple[StepSpec, ...] = ()  # BR-OTA-027: before the slot is written
    post_update_steps: tuple[StepSpec, ...] = ()  # BR-OTA-027: after the commit
    min_battery_level: int = Field(default=30, ge=0, le=100)
    can_install_while_driving: bool = False
    estimated_install_time_sec: int = Field(default=600, ge=1, le=86_400)

    _filter: Expr | None = PrivateAttr(default=None)

    @field_validator("name", "description")
    @classmethod
    def _check_text(cls, value: str) -> str:
        return _no_control_characters(value)

    @field_validator("firmware_id")
    @classmethod
    def _check_firmware_id(cls, value: str) -> str:
        if not _FIRMWARE_ID.fullmatch(value):
            raise rule_error(
                f"must be 32 lowercase hex characters (BR-OTA-004), got {shown(value)}"
            )
        return value

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) > MAX_VERSION_LENGTH:
            raise rule_error(f"must be at most {MAX_VERSION_LENGTH} characters (BR-OTA-006)")
        try:
            SemVer.parse(value)
        except ValidationFailed:
            raise rule_error(
                f"must be a semantic version MAJOR.MINOR.PATCH such as 2.4.1, got {shown(value)}"
            ) from None
        return value

    @field_validator("target_devices")
    @classmethod
    def _check_devices(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, vehicle_id in enumerate(value):
            if not VIN_PATTERN.fullmatch(vehicle_id):
                raise rule_error(
                    f"item {index} must be a vehicle id VIN- and 17 characters, "
                    f"got {shown(vehicle_id)}"
                )
        return tuple(dict.fromkeys(value))  # duplicates name the same vehicle once

    @field_validator("target_groups")
    @classmethod
    def _check_groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, group in enumerate(value):
            if not _GROUP.fullmatch(group):
                raise rule_error(
                    f"item {index} must be a group name of letters, digits and _.:- "
                    f"(at most 128), got {shown(group)}"
                )
        return tuple(dict.fromkeys(value))

    @field_validator("target_filter")
    @classmethod
    def _check_filter(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            return to_text(parse_filter(value))
        except FilterSyntaxError as exc:
            raise rule_error(str(exc)) from None

    @field_validator("stage_percentages")
    @classmethod
    def _check_stages(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not 1 <= len(value) <= MAX_STAGES:
            raise rule_error(f"must list 1 to {MAX_STAGES} cumulative percentages")
        if any(not 1 <= p <= 100 for p in value):
            raise rule_error(f"each stage must be from 1 to 100 percent, got {list(value)}")
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise rule_error(f"must be strictly increasing (cumulative), got {list(value)}")
        if value[-1] != 100:
            raise rule_error(f"the last stage must be 100 (all of the rollout), got {value[-1]}")
        return value

    @field_validator("pre_update_steps", "post_update_steps")
    @classmethod
    def _check_steps(cls, value: tuple[StepSpec, ...]) -> tuple[StepSpec, ...]:
        return check_steps(value)

    @field_validator("stage_success_percentages")
    @classmethod
    def _check_stage_success(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 1 <= p <= 100 for p in value):
            raise rule_error(f"each stage's success rate must be from 1 to 100, got {list(value)}")
        return value

    @field_validator("scheduled_start")
    @classmethod
    def _check_start(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise rule_error("must carry a timezone offset, such as 2026-01-31T02:00:00Z")
        return value

    @model_validator(mode="after")
    def _check_across_fields(self, info: ValidationInfo) -> CampaignSpec:
        problems: list[FieldProblem] = []
        if not (self.target_devices or self.target_groups or self.target_filter):
            problems.append(
                FieldProblem(
                    "target_devices",
                    "at least one of target_devices, target_groups or target_filter "
                    "is required (BR-OTA-012)",
                )
            )
        for field, strategy in _STRATEGY_FIELDS.items():
            if field in self.model_fields_set and self.deployment_strategy is not strategy:
                problems.append(
                    FieldProblem(field, f"applies to the {strategy.value} strategy only")
                )
        gates = len(self.stage_percentages) - 1
        if self.stage_success_percentages and len(self.stage_success_percentages) != gates:
            problems.append(
                FieldProblem(
                    "stage_success_percentages",
                    f"needs one success rate per stage but the last ({gates}), "
                    f"got {len(self.stage_success_percentages)}",
                )
            )
        if self.deployment_strategy is Strategy.SCHEDULED and self.scheduled_start is None:
            problems.append(FieldProblem("scheduled_start", "is required for a scheduled campaign"))
        now = (info.context or {}).get("now")
        start = self.scheduled_start
        if isinstance(now, datetime) and start is not None and start <= now:
            problems.append(FieldProblem("scheduled_start", "must be in the future"))
        if problems:
            raise CrossFieldProblems(problems)
        if self.target_filter is not None:
            self._filter = parse_filter(self.target_filter)
        return self

    @property
    def filter_expr(self) -> Expr | None:
        """The parsed target filter, for the repository to evaluate per vehicle."""
        return self._filter

    def rollout_count(self, n_targets: int) -> int:
        """How many of the resolved targets the campaign updates at all (BR-OTA-015)."""
        return rollout_count(n_targets, self.rollout_percentage)

    def gate_thresholds(self, wave: int = 0) -> GateThresholds:
        """The gate after `wave`: the canary's, a blue/green switch-over's, or a
        stage's, which has its own success rate when `stage_success_percentages`
        gives one (spec 002 §7)."""
        success = self.success_threshold_percent
        staged = self.deployment_strategy is Strategy.STAGED
        if staged and wave < len(self.stage_success_percentages):
            success = self.stage_success_percentages[wave]
        return GateThresholds(
            success_threshold_percent=success,
            failure_threshold_percent=self.pause_threshold_percent,
        )

    def health_policy(self) -> HealthPolicy:
        return HealthPolicy(
            pause_threshold_percent=self.pause_threshold_percent,
            failure_threshold_percent=self.failure_threshold_percent,
            auto_rollback=self.auto_rollback,
        )

    def canary_count(self, n_targets: int) -> int:
        """The canary group's size: `canary_size` if given, else `canary_percentage`
        of the targets rounded up, at least one vehicle and never more than all."""
        if n_targets <= 0:
            return 0
        wanted = self.canary_size or math.ceil(n_targets * self.canary_percentage / 100)
        return max(1, min(n_targets, wanted))


def parse_campaign_spec(data: object, *, now: datetime | None = None) -> CampaignSpec:
    """Validate untrusted creation input; raise `FieldValidationFailed` listing every problem.

    `now` (timezone-aware) lets the rule "a scheduled start lies in the future"
    be checked without this module reading a clock.
    """
    if now is not None and now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    context: dict[str, Any] = {"now": now} if now is not None else {}
    return validate(CampaignSpec, data, subject="campaign", limits=LIMITS, context=context)
