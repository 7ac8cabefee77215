"""Campaign creation input: defaults, ranges of BR-OTA-011..020 and their messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from v2c.contract.errors import ValidationFailed
from v2c.handlers.ota.domain.campaign_rules import (
    CampaignSpec,
    Priority,
    Strategy,
    parse_campaign_spec,
)
from v2c.handlers.ota.domain.maintenance_window import MaintenanceWindow
from v2c.handlers.ota.domain.target_filter import Comparison, Op
from v2c.handlers.ota.domain.validation import FieldProblem, FieldValidationFailed
from v2c.v1 import ota_pb2

FIRMWARE_ID = "a1b2c3d4e5f6789012345678901234ab"
VIN = "VIN-1HGBH41JXMN109186"
NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def _spec(**fields: Any) -> dict[str, Any]:
    return {
        "name": "Security Patch Q4",
        "firmware_id": FIRMWARE_ID,
        "target_devices": [VIN],
    } | fields


def _problems(data: object, now: datetime | None = NOW) -> dict[str, str]:
    with pytest.raises(FieldValidationFailed) as caught:
        parse_campaign_spec(data, now=now)
    return {p.field: p.reason for p in caught.value.problems}


def test_minimal_campaign_gets_the_business_rule_defaults() -> None:
    spec = parse_campaign_spec(_spec())
    assert spec.deployment_strategy is Strategy.STAGED  # BR-OTA-013
    assert spec.priority is Priority.NORMAL  # BR-OTA-014
    assert spec.rollout_percentage == 100  # BR-OTA-015
    assert spec.max_concurrent_updates == 10  # BR-OTA-016
    assert spec.batch_size == 50  # BR-OTA-017
    assert spec.timeout_minutes == 60  # BR-OTA-018
    assert spec.failure_threshold_percent == 20  # BR-OTA-019
    assert spec.auto_rollback is True  # BR-OTA-020
    assert spec.pause_threshold_percent == 5.0  # FMEA: failures above 5 % pause
    assert spec.success_threshold_percent == 95.0  # FMEA: canary success >= 95 %
    assert spec.requires_approval is False


def test_prd_example_request_is_valid() -> None:
    spec = parse_campaign_spec(
        _spec(
            description="Critical security update",
            deployment_strategy="staged",
            priority="high",
            rollout_percentage=100,
            max_concurrent_updates=50,
            batch_size=100,
            timeout_minutes=60,
            auto_rollback=True,
            failure_threshold_percent=20,
        )
    )
    assert spec.batch_size == 100


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("rollout_percentage", 0, "from 1 to 100 (BR-OTA-015), got 0"),
        ("rollout_percentage", 101, "BR-OTA-015"),
        ("max_concurrent_updates", 1001, "from 1 to 1000 (BR-OTA-016)"),
        ("batch_size", 0, "from 1 to 500 (BR-OTA-017)"),
        ("batch_size", 501, "BR-OTA-017"),
        ("timeout_minutes", 4, "from 5 to 1440 minutes (BR-OTA-018)"),
        ("timeout_minutes", 1441, "BR-OTA-018"),
        ("failure_threshold_percent", 0, "BR-OTA-019"),
        ("max_retries", 11, "BR-OTA-024"),
        ("success_threshold_percent", 0, "from 1 to 100"),
        ("pause_threshold_percent", 100.5, "from 0 to 100"),
        ("deployment_strategy", "rolling", "must be one of 'immediate', 'scheduled'"),
        ("priority", "urgent", "'emergency', got 'urgent'"),
        ("firmware_id", "ABC", "32 lowercase hex characters (BR-OTA-004)"),
        ("version", "2.4", "semantic version"),
        ("version", "1.0.0-" + "a" * 50, "at most 50 characters (BR-OTA-006)"),
        ("name", "", "1-200 characters"),
        ("name", "bad\x00name", "control characters"),
        ("target_devices", ["device_001"], "item 0 must be a vehicle id"),
        ("target_groups", ["../etc"], "item 0 must be a group name"),
        ("stage_percentages", [10, 5, 100], "strictly increasing"),
        ("batch_size", "many", "must be a valid integer"),
        ("auto_rollback", "perhaps", "must be a valid boolean"),
        ("failure_treshold_percent", 5, "is not a known field"),
    ],
)
def test_each_violation_is_reported_under_its_field(
    field: str, value: object, fragment: str
) -> None:
    strategy = {"stage_percentages": {"deployment_strategy": "staged"}}.get(field, {})
    problems = _problems(_spec(**{field: value}, **strategy))
    assert fragment in problems[field], problems


def test_all_field_problems_are_reported_together_in_the_detail() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_campaign_spec(_spec(batch_size=0, timeout_minutes=1, priority="x"))
    detail = caught.value.detail
    assert detail.startswith("invalid campaign: ")
    for field in ("batch_size", "timeout_minutes", "priority"):
        assert f"{field}: " in detail
    assert caught.value.http_status == 400


def test_no_targets_at_all_is_refused_per_br_ota_012() -> None:
    problems = _problems(_spec(target_devices=[]))
    assert "BR-OTA-012" in problems["target_devices"]


def test_target_filter_error_names_its_position() -> None:
    problems = _problems(_spec(target_filter="model='Accord' AND year>="))
    assert "position 26" in problems["target_filter"]


def test_target_filter_alone_is_a_valid_target_and_is_kept_canonical() -> None:
    spec = parse_campaign_spec(_spec(target_devices=[], target_filter="model = 'Accord'"))
    assert spec.target_filter == "model='Accord'"
    assert spec.filter_expr == Comparison("model", Op.EQ, "Accord")


def test_duplicate_target_devices_count_once() -> None:
    spec = parse_campaign_spec(_spec(target_devices=[VIN, VIN]))
    assert spec.target_devices == (VIN,)


def test_scheduled_strategy_requires_a_future_timezone_aware_start() -> None:
    assert "is required" in _problems(_spec(deployment_strategy="scheduled"))["scheduled_start"]
    past = (NOW - timedelta(minutes=1)).isoformat()
    problems = _problems(_spec(deployment_strategy="scheduled", scheduled_start=past))
    assert problems["scheduled_start"] == "must be in the future"
    naive = _problems(_spec(deployment_strategy="scheduled", scheduled_start="2027-01-01T00:00:00"))
    assert "timezone" in naive["scheduled_start"]
    later = (NOW + timedelta(days=1)).isoformat()
    spec = parse_campaign_spec(
        _spec(deployment_strategy="scheduled", scheduled_start=later), now=NOW
    )
    assert spec.scheduled_start == NOW + timedelta(days=1)


@pytest.mark.parametrize(
    ("field", "value", "strategy"),
    [
        ("canary_size", 100, "staged"),
        ("canary_percentage", 2.0, "immediate"),
        ("stage_percentages", [50, 100], "canary"),
        ("green_percentage", 30, "staged"),
    ],
)
def test_strategy_specific_fields_for_another_strategy_are_refused(
    field: str, value: object, strategy: str
) -> None:
    problems = _problems(_spec(**{field: value}, deployment_strategy=strategy))
    assert "strategy only" in problems[field]


def test_canary_count_uses_size_or_percentage_and_stays_within_the_fleet() -> None:
    by_percent = parse_campaign_spec(_spec(deployment_strategy="canary", canary_percentage=2))
    assert by_percent.canary_count(5000) == 100
    assert by_percent.canary_count(10) == 1  # at least one
    assert by_percent.canary_count(0) == 0
    by_size = parse_campaign_spec(_spec(deployment_strategy="canary", canary_size=100))
    assert by_size.canary_count(5000) == 100
    assert by_size.canary_count(40) == 40
    assert (
        "at most 50"
        in _problems(_spec(deployment_strategy="canary", canary_percentage=60))["canary_percentage"]
    )


def test_maintenance_window_is_validated_per_br_ota_028() -> None:
    problems = _problems(
        _spec(maintenance_window={"start": "24:00", "end": "2:00", "timezone": "Mars/Olympus"})
    )
    assert "HH:MM" in problems["maintenance_window.start"]
    assert "HH:MM" in problems["maintenance_window.end"]
    assert "IANA" in problems["maintenance_window.timezone"]
    same = _problems(_spec(maintenance_window={"start": "02:00", "end": "02:00"}))
    assert same["maintenance_window.end"] == "must differ from start"


def test_maintenance_window_across_midnight_in_local_time() -> None:
    window = MaintenanceWindow(start="22:00", end="04:00", timezone="Europe/Berlin")
    # 21:30 UTC in January is 22:30 in Berlin.
    assert window.contains(datetime(2026, 1, 10, 21, 30, tzinfo=UTC))
    assert window.contains(datetime(2026, 1, 11, 2, 59, tzinfo=UTC))
    assert not window.contains(datetime(2026, 1, 11, 3, 0, tzinfo=UTC))  # 04:00 Berlin
    with pytest.raises(ValueError, match="timezone-aware"):
        window.contains(datetime(2026, 1, 11, 3, 0))


def test_priorities_map_onto_the_wire_enum_with_emergency_as_critical() -> None:
    assert Priority.EMERGENCY.to_proto() == ota_pb2.UPDATE_PRIORITY_CRITICAL
    assert Priority.LOW.to_proto() == ota_pb2.UPDATE_PRIORITY_LOW


def test_non_object_body_is_one_problem_on_the_body() -> None:
    assert "body" in _problems([1, 2])


def test_thresholds_and_policy_come_from_the_spec() -> None:
    spec = parse_campaign_spec(
        _spec(pause_threshold_percent=3, failure_threshold_percent=10, auto_rollback=False)
    )
    assert spec.gate_thresholds().failure_threshold_percent == 3
    assert spec.gate_thresholds().success_threshold_percent == 95
    policy = spec.health_policy()
    assert (policy.pause_threshold_percent, policy.failure_threshold_percent) == (3, 10)
    assert policy.auto_rollback is False


def test_spec_is_immutable_once_validated() -> None:
    spec = parse_campaign_spec(_spec())
    with pytest.raises(ValueError, match="frozen"):
        spec.batch_size = 1


def test_field_problem_list_is_structured_for_the_api() -> None:
    with pytest.raises(FieldValidationFailed) as caught:
        parse_campaign_spec(_spec(batch_size=0))
    assert caught.value.problems == (
        FieldProblem("batch_size", "must be from 1 to 500 (BR-OTA-017), got 0"),
    )
    assert isinstance(CampaignSpec.model_json_schema(), dict)


def test_a_flood_of_bad_items_is_summarised_not_echoed() -> None:
    with pytest.raises(FieldValidationFailed) as caught:
        parse_campaign_spec(_spec(target_devices=list(range(1000))))
    assert len(caught.value.problems) == 20
    assert caught.value.detail.endswith("and 980 more")
