"""The pure parts of the dashboard's data endpoints (issue #16): permissions from the
role table, the campaign timeline, a stored telemetry item as plain numbers,
and the fleet's version distribution."""

from __future__ import annotations

import re
from typing import Any

import pytest

from v2c.handlers.api.openapi import default_app
from v2c.handlers.api.roles import PERMISSIONS, Role, allowed_roles, permissions
from v2c.handlers.api.routes.me import Permissions
from v2c.handlers.api.timeline import campaign_timeline
from v2c.handlers.ota.campaigns.record import Campaign, Release
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.plan import Wave
from v2c.handlers.ota.fleet_index.codec import Columns, IndexRow
from v2c.handlers.ota.fleet_index.versions import UNKNOWN_VERSION, version_distribution
from v2c.handlers.telemetry.model import (
    Arrival,
    Gps,
    OperationalRecord,
    Path,
    Sample,
    VehicleInfo,
)
from v2c.handlers.telemetry.recent import iso_ms, number, telemetry_point
from v2c.handlers.telemetry.store import DynamoRecordStore

# -- permissions ----------------------------------------------------------------


def _concrete(template: str) -> str:
    return re.sub(r"<[^>]+>", lambda m: "a" * 32 if "campaign" in m.group() else "ota", template)


def test_every_permission_names_a_route_the_server_registers() -> None:
    app = default_app()
    for name, (method, template) in PERMISSIONS.items():
        assert app.route_template(method, _concrete(template)) == template, name


@pytest.mark.parametrize(
    ("roles", "allowed"),
    [
        ({Role.VIEWER}, set()),
        (
            {Role.FLEET_MANAGER},
            {"start", "pause", "resume", "cancel", "rollback"},
        ),
        ({Role.APPROVER}, {"approve", "reject"}),
        ({Role.OPERATOR}, {"dlq.read", "dlq.replay"}),
    ],
)
def test_permissions_follow_the_role_table(roles: set[Role], allowed: set[str]) -> None:
    granted = permissions(frozenset(roles))
    assert set(granted) == set(PERMISSIONS)
    expected = {
        name for name in PERMISSIONS if name in allowed or name.removeprefix("campaign.") in allowed
    }
    assert {name for name, ok in granted.items() if ok} == expected
    for name, (method, template) in PERMISSIONS.items():  # never disagrees with enforcement
        assert granted[name] == bool(frozenset(roles) & allowed_roles(method, template))


def test_all_roles_allow_everything_and_the_model_keeps_the_dotted_names() -> None:
    granted = permissions(frozenset(Role))
    assert all(granted.values())
    dumped = Permissions.model_validate(granted).model_dump(by_alias=True)
    assert dumped == granted


# -- timeline -------------------------------------------------------------------

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _campaign(**changes: Any) -> Campaign:
    spec = CampaignSpec.model_validate(
        {"name": "spring", "firmware_id": "f" * 32, "target_filter": "year > 0"}
    )
    campaign = Campaign(
        campaign_id="c" * 32,
        spec=spec,
        status=CampaignStatus.CREATED,
        firmware_id="f" * 32,
        version="2.0.0",
        device_model="Accord",
        release=Release("u" * 32, b"m", b"s", "k", T0 + 10**9),
        target_count=10,
        waves=(Wave("canary", 2, True), Wave("rest", 10, False)),
        created_at_ms=T0,
        created_by="alice",
    )
    return campaign.evolve(**changes)


def _kinds(campaign: Campaign, waves: dict[int, int] | None = None) -> list[str]:
    return [e.kind for e in campaign_timeline(campaign, waves)]


def test_a_new_campaign_has_only_its_creation() -> None:
    (event,) = campaign_timeline(_campaign())
    assert (event.kind, event.detail, event.at) == (
        "created",
        "created by alice",
        "2026-01-01T00:00:00.000Z",
    )


def test_a_gated_campaign_paused_at_its_gate_in_order() -> None:
    gate = {
        "wave": "canary",
        "verdict": "fail_pause",
        "reason": "success rate 50.0% below 95.0%",
        "success_rate": 50.0,
        "success_threshold_percent": 95.0,
        "completed": 1,
        "failures": 1,
        "eligible": 2,
        "decided_at": T0 + 5_000,
    }
    campaign = _campaign(
        status=CampaignStatus.PAUSED,
        approved_by="bob",
        approved_at_ms=T0 + 1_000,
        approval_comment="ship it",
        started_at_ms=T0 + 2_000,
        updated_at_ms=T0 + 2_000,  # a failed gate pauses without touching it
        gate=gate,
        status_reason="canary gate failed: success rate 50.0% below 95.0%",
    )
    events = campaign_timeline(campaign, {0: T0 + 2_000})
    assert [e.kind for e in events] == [
        "created",
        "approved",
        "started",
        "wave_started",
        "gate_failed",
        "paused",
    ]
    assert events[1].detail == "approved by bob: ship it"
    assert events[3].detail == "wave canary: first vehicles notified"
    assert "canary gate failed" in events[4].detail
    assert "2 eligible" in events[4].detail
    assert events[5].at_ms == T0 + 5_000  # dated by the gate's decision
    assert [e.at_ms for e in events] == sorted(e.at_ms for e in events)


def test_a_passed_gate_the_next_wave_and_completion() -> None:
    campaign = _campaign(
        status=CampaignStatus.COMPLETED,
        started_at_ms=T0 + 1,
        gate={"wave": "canary", "verdict": "pass", "reason": "", "decided_at": T0 + 50},
        finished_at_ms=T0 + 90,
    )
    assert _kinds(campaign, {0: T0 + 1, 1: T0 + 60, 7: T0 + 61}) == [
        "created",
        "started",
        "wave_started",
        "gate_passed",
        "wave_started",  # wave 7 does not exist: left out
        "completed",
    ]


def test_rejection_stall_rollback_and_events_without_a_time() -> None:
    rejected = _campaign(
        status=CampaignStatus.REJECTED,
        rejected_by="bob",
        rejected_at_ms=T0 + 3,
        finished_at_ms=T0 + 3,
        status_reason="wrong package",
    )
    events = campaign_timeline(rejected)
    assert [(e.kind, e.detail) for e in events][-1] == (
        "rejected",
        "rejected by bob: wrong package",
    )
    rolling = _campaign(
        status=CampaignStatus.ROLLING_BACK,
        started_at_ms=T0 + 1,
        stalled=True,
        last_progress_at_ms=T0 + 4,
        updated_at_ms=T0 + 9,
        status_reason="manual: bad brakes",
        gate={"wave": "canary", "verdict": "pass"},  # no decided_at: not dated, left out
    )
    assert _kinds(rolling) == ["created", "started", "stalled", "rollback_started"]
    assert campaign_timeline(rolling)[-1].detail == "manual: bad brakes"
    done = _campaign(status=CampaignStatus.ROLLED_BACK, finished_at_ms=T0 + 20)
    assert _kinds(done)[-1] == "rolled_back"


# -- telemetry items ---------------------------------------------------------------


def _record(**changes: Any) -> OperationalRecord:
    fields: dict[str, Any] = {
        "vehicle_id": "VIN-1HGCM82633A004352",
        "epoch": 3,
        "sequence": 41,
        "message_id": "00000000-0000-0000-0000-000000000000",
        "timestamp_ms": T0 + 123,
        "schema_version": "1.0",
        "trace_id": "",
        "correlation_id": "",
        "speed_kmh": 52.5,
        "rpm": 1800,
        "gear": "DRIVE",
        "battery_voltage_v": 12.6,
        "state_of_charge_pct": 80.0,
        "coolant_temp_c": 90.5,
        "fuel_level_pct": 40.0,
        "odometer_km": 12345.6,
        "gps": Gps(48.1, 11.5, 520.0, 90.0),
        "tires": None,
        "diagnostic_flags": 0,
        "dtc_codes": ("P0101",),
        "ignition_on": True,
        "charging": False,
    }
    fields.update(changes)
    arrival = Arrival("eu-west-1", Path.INDIVIDUAL, T0 + 200)
    return OperationalRecord(Sample(**fields), arrival, VehicleInfo("Honda", "Accord", 2024))


STORE = DynamoRecordStore(None, "t")  # type: ignore[arg-type]  # item() only: no I/O


def test_a_stored_item_comes_back_as_plain_numbers() -> None:
    point = telemetry_point(STORE.item(_record()), now_s=T0 / 1000)
    assert point is not None
    assert point["timestamp"] == "2026-01-01T00:00:00.123Z"
    assert (point["timestamp_ms"], point["sequence"], point["epoch"]) == (T0 + 123, 41, 3)
    assert point["speed_kmh"] == 52.5
    assert isinstance(point["speed_kmh"], float)
    assert point["rpm"] == 1800
    assert isinstance(point["rpm"], int)
    assert point["state_of_charge_pct"] == 80.0
    assert point["received_at_ms"] == T0 + 200
    assert point["clock_skew_ms"] == -77
    assert point["gps"] == {
        "latitude": 48.1,
        "longitude": 11.5,
        "altitude_m": 520.0,
        "heading_deg": 90.0,
    }
    assert (point["gear"], point["ignition_on"], point["charging"]) == ("DRIVE", True, False)
    assert point["dtc_codes"] == ["P0101"]
    assert "tire_pressures_kpa" not in point  # absent in the record: absent here


def test_an_absent_signal_stays_absent_and_an_expired_item_is_dropped() -> None:
    item = STORE.item(_record(speed_kmh=None, gps=None))
    point = telemetry_point(item, now_s=T0 / 1000)
    assert point is not None
    assert "speed_kmh" not in point
    assert "gps" not in point
    expires = number(item["expires_at"])
    assert isinstance(expires, int)
    assert telemetry_point(item, now_s=expires + 1) is None
    assert telemetry_point({"timestamp": {"N": "1"}}, now_s=0) is None  # no sequence


def test_numbers_and_times() -> None:
    assert number({"N": "7"}) == 7
    assert number({"N": "-2.5"}) == -2.5
    assert number({"S": "7"}) is None
    assert number({"N": "x"}) is None
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"


# -- fleet versions ------------------------------------------------------------------


def _columns(model: str, rows: list[tuple[str, str, str, bool]]) -> Columns:
    columns = Columns(model)
    columns.apply(
        [
            IndexRow(vin, model, region, 2024, installed_version=version, stamp=1, retired=retired)
            for vin, region, version, retired in rows
        ]
    )
    return columns


MODELS = {
    "Accord": _columns(
        "Accord",
        [
            ("VIN-A1", "eu-west-1", "1.0.0", False),
            ("VIN-A2", "eu-west-1", "2.0.0", False),
            ("VIN-A3", "eu-west-1", "2.0.0", False),
            ("VIN-A4", "us-east-1", "1.0.0", False),
            ("VIN-A5", "us-east-1", "1.0.0", True),  # decommissioned: not counted
            ("VIN-A6", "us-east-1", "", False),
        ],
    ),
    "Civic": _columns("Civic", [("VIN-C1", "eu-west-1", "3.1.0", False)]),
}


def test_versions_fold_per_model_and_region_active_only() -> None:
    found = version_distribution(MODELS)
    assert found.total == 6
    assert [(g.model, g.region, g.total, g.versions) for g in found.groups] == [
        ("Accord", "eu-west-1", 3, {"2.0.0": 2, "1.0.0": 1}),
        ("Accord", "us-east-1", 2, {"1.0.0": 1, UNKNOWN_VERSION: 1}),
        ("Civic", "eu-west-1", 1, {"3.1.0": 1}),
    ]


def test_versions_filtered_by_model_and_region() -> None:
    by_region = version_distribution(MODELS, region="eu-west-1")
    assert [(g.model, g.total) for g in by_region.groups] == [("Accord", 3), ("Civic", 1)]
    by_model = version_distribution(MODELS, model="Civic")
    assert by_model.total == 1
    assert version_distribution(MODELS, model="Jazz").groups == []
