"""The live dashboard's data endpoints (issue #16) over real HTTP, the production
services on moto: who am I, a campaign's updates by page, its timeline, the
fleet's versions, a vehicle's telemetry, and their 401/403/404s."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
import requests
from api_support import (
    API_KEYS,
    APPROVER_HEADERS,
    AUTH_HEADERS,
    TOKENS,
    VIEWER_HEADERS,
)
from ota_support import VehicleReporter, fleet, vin

from v2c.handlers.api import ApiAuth, ApiServices
from v2c.handlers.api.config import dashboard_reads
from v2c.handlers.api.roles import PERMISSIONS
from v2c.handlers.ota.config import OtaServices
from v2c.handlers.telemetry.model import (
    Arrival,
    Gps,
    OperationalRecord,
    Path,
    Sample,
    VehicleInfo,
)
from v2c.handlers.telemetry.store import DynamoRecordStore
from v2c.infra.local.http_adapter import ApiHttpServer
from v2c.v1.ota_pb2 import OTAStatus

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

OTA = "/api/v1/ota"
S = OTAStatus.State
R = OTAStatus.Reason
FLEET_KEY = "dashboard-fleet-2d9e"
OPERATOR_KEY = "dashboard-operator-6b1f"
HEADERS = {
    "viewer": VIEWER_HEADERS,
    "fleet_manager": {"X-API-Key": FLEET_KEY},
    "approver": APPROVER_HEADERS,
    "operator": {"X-API-Key": OPERATOR_KEY},
}
PRINCIPALS = {
    "viewer": "integration-viewer",
    "fleet_manager": "dashboard-fleet",
    "approver": "integration-approver",
    "operator": "dashboard-operator",
}
# The permissions each single role grants (README's role table).
GRANTS = {
    "viewer": set(),
    "fleet_manager": {
        "campaign.start",
        "campaign.pause",
        "campaign.resume",
        "campaign.cancel",
        "campaign.rollback",
    },
    "approver": {"campaign.approve", "campaign.reject"},
    "operator": {"dlq.read", "dlq.replay"},
}


@pytest.fixture
def api_auth() -> ApiAuth:
    """The shared keys plus one fleet manager and one operator holding only that role."""
    extra = [
        f"dashboard-fleet:fleet_manager:{FLEET_KEY}",
        f"dashboard-operator:operator:{OPERATOR_KEY}",
    ]
    return ApiAuth([*API_KEYS, *extra], TOKENS)


@pytest.fixture
def api_services(moto_api_services: ApiServices, moto_ota: OtaServices) -> ApiServices:
    """The production services, the dashboard's reads wired as the Lambda wires them."""
    reads = dashboard_reads(moto_ota, dict(os.environ))
    return replace(
        moto_api_services,
        campaign_updates=reads.campaign_updates,
        fleet=reads.fleet,
        telemetry=reads.telemetry,
    )


def get(server: ApiHttpServer, path: str, headers: dict[str, str] | None = None) -> Any:
    return requests.get(
        f"{server.base_url}{path}",
        headers=AUTH_HEADERS if headers is None else headers,
        timeout=30,
    )


def post(server: ApiHttpServer, path: str, body: Any = None, **headers: str) -> Any:
    return requests.post(
        f"{server.base_url}{path}",
        json=body if body is not None else {},
        headers=headers or AUTH_HEADERS,
        timeout=30,
    )


def create(server: ApiHttpServer, firmware_id: str, **spec: Any) -> dict[str, Any]:
    body = {"name": "dash", "firmware_id": firmware_id, "target_filter": "model = 'Accord'"}
    created = post(server, f"{OTA}/campaigns", {**body, **spec})
    assert created.status_code == 201, created.text
    campaign: dict[str, Any] = created.json()
    return campaign


# -- who am I ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", sorted(HEADERS))
def test_me_for_each_role_agrees_with_what_the_server_enforces(
    api_server: ApiHttpServer, role: str
) -> None:
    answer = get(api_server, "/api/v1/me", HEADERS[role])
    assert answer.status_code == 200, answer.text
    me = answer.json()
    assert (me["principal"], me["roles"]) == (PRINCIPALS[role], [role])
    assert set(me["permissions"]) == set(PERMISSIONS)
    assert {name for name, ok in me["permissions"].items() if ok} == GRANTS[role]

    # What it says is what the server does: a refusal by role is 403 exactly
    # where the permission is false (no campaign or queue exists: 404/400 else).
    unknown = "0" * 32
    tried = {
        "campaign.start": ("POST", f"{OTA}/campaigns/{unknown}/start", {}),
        "campaign.approve": ("POST", f"{OTA}/campaigns/{unknown}/approve", {}),
        "campaign.reject": ("POST", f"{OTA}/campaigns/{unknown}/reject", {"reason": "no"}),
        "dlq.read": ("GET", "/api/v1/dlq/nosuchqueue", None),
    }
    for name, (method, path, body) in tried.items():
        result = requests.request(
            method, f"{api_server.base_url}{path}", json=body, headers=HEADERS[role], timeout=30
        )
        assert (result.status_code == 403) is (not me["permissions"][name]), (name, result.text)


def test_me_needs_a_valid_credential(api_server: ApiHttpServer) -> None:
    missing = requests.get(f"{api_server.base_url}/api/v1/me", timeout=30)
    assert missing.status_code == 401
    assert missing.json()["reason"] == "missing_credentials"
    wrong = get(api_server, "/api/v1/me", {"X-API-Key": "not-a-key"})
    assert (wrong.status_code, wrong.json()["reason"]) == (401, "invalid_credentials")
    both = get(api_server, "/api/v1/me")  # viewer + fleet manager + operator in one
    assert both.json()["roles"] == ["fleet_manager", "operator", "viewer"]
    assert both.json()["permissions"]["campaign.approve"] is False


# -- a campaign's updates and its timeline ---------------------------------------------------


def test_campaign_updates_by_page_and_filter(
    api_server: ApiHttpServer, moto_ota: OtaServices, registered_firmware: str
) -> None:
    # Given seven Accords notified at once, two downloading and one failed
    moto_ota.deps.fleet.put(fleet(7))
    campaign = create(api_server, registered_firmware, deployment_strategy="immediate")
    campaign_id = campaign["campaign_id"]
    started = post(api_server, f"{OTA}/campaigns/{campaign_id}/start").json()
    assert started["counters"]["in_progress"] == 7
    release = started["release_update_id"]
    reporter = VehicleReporter()
    vehicles = sorted(v.vehicle_id for v in fleet(7))
    for vehicle in vehicles[:2]:
        for state in (S.ACCEPTED, S.DOWNLOADING):
            moto_ota.status.apply(reporter.status(vehicle, release, state))
    for state in (S.ACCEPTED, S.DOWNLOADING, S.FAILED):
        reason = R.CHECKSUM_MISMATCH if state == S.FAILED else 0
        moto_ota.status.apply(reporter.status(vehicles[6], release, state, reason=reason))

    # When a viewer pages through them three at a time
    path = f"{OTA}/campaigns/{campaign_id}/updates"
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        query = f"?limit=3&cursor={cursor}" if cursor else "?limit=3"
        answer = get(api_server, path + query, VIEWER_HEADERS)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        assert ("Link" in answer.headers) is (cursor is not None)
        if cursor is None:
            break

    # Then three pages hold every record once, in vehicle order
    assert [len(page) for page in pages] == [3, 3, 1]
    seen = [item["vehicle_id"] for page in pages for item in page]
    assert seen == vehicles
    first = pages[0][0]
    assert (first["campaign_id"], first["wave"], first["wave_name"]) == (campaign_id, 0, "all")
    assert first["state"] == "downloading"
    assert first["notified_at_ms"] > 0

    # And the filters select by state and wave, the failure with its reason
    downloading = get(api_server, f"{path}?state=downloading").json()
    assert [i["vehicle_id"] for i in downloading["items"]] == vehicles[:2]
    failed = get(api_server, f"{path}?state=failed").json()["items"]
    assert [(i["vehicle_id"], i["reason"]) for i in failed] == [(vehicles[6], "CHECKSUM_MISMATCH")]
    assert len(get(api_server, f"{path}?wave=all&state=notified").json()["items"]) == 4
    assert get(api_server, f"{path}?state=completed").json() == {"items": [], "next_cursor": None}
    stats = get(api_server, f"{OTA}/stats/campaigns/{campaign_id}").json()
    assert stats["failures_by_reason"] == {"CHECKSUM_MISMATCH": 1}

    # And what makes no sense is refused
    no_wave = get(api_server, f"{path}?wave=canary")
    assert no_wave.status_code == 400
    assert "wave" in no_wave.json()["detail"]
    first_cursor = get(api_server, f"{path}?limit=3").json()["next_cursor"]
    other_filter = get(api_server, f"{path}?limit=3&state=failed&cursor={first_cursor}")
    assert (other_filter.status_code, other_filter.json()["reason"]) == (400, "invalid_cursor")
    assert get(api_server, f"{path}?limit=201").status_code == 400
    unknown = get(api_server, f"{OTA}/campaigns/{'0' * 32}/updates")
    assert (unknown.status_code, unknown.json()["reason"]) == (404, "not_found")
    assert requests.get(f"{api_server.base_url}{path}", timeout=30).status_code == 401


def test_timeline_of_an_approved_started_and_paused_campaign(
    api_server: ApiHttpServer, moto_ota: OtaServices, registered_firmware: str
) -> None:
    moto_ota.deps.fleet.put(fleet(6))
    campaign = create(
        api_server,
        registered_firmware,
        deployment_strategy="canary",
        canary_size=2,
        requires_approval=True,
    )
    campaign_id = campaign["campaign_id"]
    path = f"{OTA}/campaigns/{campaign_id}/timeline"
    fresh = get(api_server, path, VIEWER_HEADERS).json()
    assert fresh["campaign_id"] == campaign_id
    assert [e["kind"] for e in fresh["events"]] == ["created"]

    approved = post(
        api_server, f"{OTA}/campaigns/{campaign_id}/approve", {"comment": "ok"}, **APPROVER_HEADERS
    )
    assert approved.status_code == 200, approved.text
    assert post(api_server, f"{OTA}/campaigns/{campaign_id}/start").status_code == 200
    assert post(api_server, f"{OTA}/campaigns/{campaign_id}/pause").status_code == 200

    events = get(api_server, path, VIEWER_HEADERS).json()["events"]
    assert [e["kind"] for e in events] == [
        "created",
        "approved",
        "started",
        "wave_started",
        "paused",
    ]
    assert events[1]["detail"] == "approved by integration-approver: ok"
    assert events[3]["detail"] == "wave canary: first vehicles notified"
    assert events[4]["detail"].startswith("paused by integration")
    assert all(e["at"].endswith("Z") for e in events)
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    missing = get(api_server, f"{OTA}/campaigns/{'0' * 32}/timeline")
    assert missing.status_code == 404
    assert requests.get(f"{api_server.base_url}{path}", timeout=30).status_code == 401


# -- the fleet's versions ---------------------------------------------------------------------


def test_fleet_versions_of_registered_vehicles(
    api_server: ApiHttpServer, moto_ota: OtaServices
) -> None:
    accords = fleet(4)  # regions us-east-1, eu-west-1, ap-southeast-2, us-east-1
    civics = fleet(2, model="Civic", version="3.0.0", start=100)
    retired = replace(fleet(1, start=200)[0], active=False)
    moto_ota.deps.fleet.put([*accords, *civics, retired])
    moto_ota.deps.fleet.set_installed_version(accords[3].vehicle_id, "2.0.0")

    answer = get(api_server, "/api/v1/fleet/versions", VIEWER_HEADERS)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["total"] == 6  # the decommissioned one is left out
    groups = {(g["model"], g["region"]): (g["total"], g["versions"]) for g in body["groups"]}
    assert groups == {
        ("Accord", "ap-southeast-2"): (1, {"1.0.0": 1}),
        ("Accord", "eu-west-1"): (1, {"1.0.0": 1}),
        ("Accord", "us-east-1"): (2, {"1.0.0": 1, "2.0.0": 1}),
        ("Civic", "eu-west-1"): (1, {"3.0.0": 1}),
        ("Civic", "us-east-1"): (1, {"3.0.0": 1}),
    }
    civic = get(api_server, "/api/v1/fleet/versions?model=Civic").json()
    assert civic["total"] == 2
    assert {g["model"] for g in civic["groups"]} == {"Civic"}
    us = get(api_server, "/api/v1/fleet/versions?region=us-east-1").json()
    assert us["total"] == 3
    assert get(api_server, "/api/v1/fleet/versions?model=Jazz").json() == {"total": 0, "groups": []}
    assert (
        requests.get(f"{api_server.base_url}/api/v1/fleet/versions", timeout=30).status_code == 401
    )


# -- a vehicle's telemetry --------------------------------------------------------------------


def _sample(vehicle_id: str, sequence: int, at_ms: int) -> OperationalRecord:
    sample = Sample(
        vehicle_id=vehicle_id,
        epoch=1,
        sequence=sequence,
        message_id=f"00000000-0000-0000-0000-{sequence:012d}",
        timestamp_ms=at_ms,
        schema_version="1.0",
        trace_id="",
        correlation_id="",
        speed_kmh=None if sequence == 1 else 40.0 + sequence / 2,
        rpm=1000 + sequence,
        gear="DRIVE",
        battery_voltage_v=12.5,
        state_of_charge_pct=90.0 - sequence,
        coolant_temp_c=88.5,
        fuel_level_pct=50.0,
        odometer_km=1000.25,
        gps=Gps(48.1, 11.5, 500.0, 180.0),
        tires=None,
        diagnostic_flags=0,
        dtc_codes=(),
        ignition_on=True,
        charging=False,
    )
    arrival = Arrival("eu-west-1", Path.INDIVIDUAL, at_ms + 50)
    return OperationalRecord(sample, arrival, VehicleInfo("Honda", "Accord", 2024))


def test_telemetry_of_a_vehicle_newest_first(
    api_server: ApiHttpServer, moto_ota: OtaServices, aws_stack: AwsStack
) -> None:
    vehicles = fleet(2)
    moto_ota.deps.fleet.put(vehicles)
    talking, quiet = vehicles[0].vehicle_id, vehicles[1].vehicle_id
    store = DynamoRecordStore(aws_stack.aws.client("dynamodb"), aws_stack.names.telemetry_table)
    # Recent by the real clock: the store expires samples 90 days after their time
    # and the read drops expired ones, so a fixed date would fail one day.
    now_ms = int(time.time()) * 1000
    written = store.put_many([_sample(talking, n, now_ms + n * 1000) for n in range(1, 6)])
    assert not written.failed

    path = f"/api/v1/vehicles/{talking}/telemetry"
    answer = get(api_server, f"{path}?limit=3", VIEWER_HEADERS)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["vehicle_id"] == talking
    assert [p["sequence"] for p in body["items"]] == [5, 4, 3]
    newest = body["items"][0]
    assert newest["timestamp_ms"] == now_ms + 5000
    expected = datetime.fromtimestamp((now_ms + 5000) / 1000, tz=UTC)
    assert newest["timestamp"] == expected.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert (newest["speed_kmh"], newest["rpm"], newest["state_of_charge_pct"]) == (42.5, 1005, 85.0)
    assert newest["received_at_ms"] == now_ms + 5050
    assert newest["gps"]["latitude"] == 48.1
    assert newest["gear"] == "DRIVE"
    everything = get(api_server, path).json()["items"]
    assert [p["sequence"] for p in everything] == [5, 4, 3, 2, 1]
    assert everything[-1]["speed_kmh"] is None  # not sent: null, never 0

    silent = get(api_server, f"/api/v1/vehicles/{quiet}/telemetry")
    assert silent.json() == {"vehicle_id": quiet, "items": []}
    stranger = get(api_server, f"/api/v1/vehicles/{vin(999)}/telemetry")
    assert (stranger.status_code, stranger.json()["reason"]) == (404, "not_found")
    assert get(api_server, f"{path}?limit=0").status_code == 400
    assert get(api_server, f"{path}?limit=501").status_code == 400
    assert requests.get(f"{api_server.base_url}{path}", timeout=30).status_code == 401
