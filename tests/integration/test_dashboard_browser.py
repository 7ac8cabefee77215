"""The fleet dashboard (issue #16) in a real headless Chromium, over one real `v2c stack up`.

One stack for the module: `v2c stack up --dir` as a subprocess (mosquitto, moto,
gateway, the API with a key per role), six simulated vehicles onboarded and
connected over mutual TLS with telemetry stored, and firmware 2.0.0 uploaded
through the API; the API also takes one bearer token (`V2C_API_TOKENS`, as a
Cognito ID token stands in AWS). Each test creates the campaign or dead letter
it needs, so the tests do not depend on their order. The page polls every
250 ms here (`?poll_ms=`); the costly panels (failures by reason, timeline,
version counts) are read every 10 or 30 s whatever `poll_ms` says, so a test
presses their "refresh"; every wait is on a condition the page reaches,
compared with what the API answers at that moment. Every page checked is
saved as `test-output/dashboard/<name>.png`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest
import requests
from browser_support import (
    browser,  # noqa: F401 (the session's Chromium, a fixture)
    cell_text,
    find,
    open_page,
    present,
    refresh_until,
    screenshot,
    sign_in,
    submit_login,
    text_of,
    wait_for,
    wait_text,
)
from fleet_support import LoopThread
from gateway_support import vehicle_client
from selenium.webdriver.remote.webdriver import WebDriver

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.contract.errors import TransientError
from v2c.contract.mqtt_endpoint import MqttEndpoint
from v2c.handlers.api.roles import Role
from v2c.infra.cli.api_client import ApiClient, ApiTarget
from v2c.infra.cli.demo_view import NEW_VERSION, OLD_VERSION, upload_package
from v2c.infra.local.fleet_provisioning import ensure_vehicle_certs, stack_fleet
from v2c.infra.local.wiring import dead_letter_stores
from v2c.infra.pki.authority import init_pki
from v2c.infra.settings import StackSettings, read_settings
from v2c.vehicle_sim.fleet.identity import DEFAULT_MODELS, vin_for
from v2c.vehicle_sim.fleet.simulator import FleetSimulator
from v2c.vehicle_sim.sampler import TelemetrySampler
from v2c.vehicle_sim.telemetry_publisher import PublisherConfig

pytestmark = pytest.mark.timeout(600)  # a bound for the whole module's setup and tests

V2C: Final = Path(sys.executable).parent / "v2c"
START_TIMEOUT: Final = 120.0
VEHICLES: Final = 6  # 3 Accord, 3 Civic, over 3 regions
VINS: Final = [vin_for(i) for i in range(VEHICLES)]
OUTSIDER: Final = vin_for(99)  # has a certificate, not in the fleet: sends the malformed payload
SAMPLES: Final = 12
COUNTERS: Final = ("total", "pending", "waiting", "in_progress", "completed", "failed",
                   "timed_out", "rolled_back", "cancelled")  # fmt: skip
NOT_CHARTED: Final = frozenset(  # ids, times and flags: no line worth drawing
    {"timestamp_ms", "sequence", "epoch", "received_at_ms", "clock_skew_ms", "diagnostic_flags"}
)
SETTLED: Final = frozenset({"completed", "cancelled", "rolled_back", "paused"})
TOKEN_PRINCIPAL: Final = "dashboard-token-viewer"  # the bearer token's principal


T = TypeVar("T")


def eventually(value: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    """`value()` once it is not None: a condition of the system, polled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = value()
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Stack:
    directory: Path
    settings: StackSettings
    url: str
    keys: dict[Role, str]
    token: str  # a viewer's bearer token
    firmware: dict[str, str]  # model -> firmware id of NEW_VERSION

    def call(self, role: Role, method: str, path: str, body: Any = None) -> requests.Response:
        return requests.request(
            method,
            f"{self.url}{path}",
            json=body,
            headers={"X-API-Key": self.keys[role]},
            timeout=30,
        )

    def get(self, role: Role, path: str) -> Any:
        answer = self.call(role, "GET", path)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def create_campaign(self, model: str, **spec: Any) -> dict[str, Any]:
        body = {
            "name": f"{model} {NEW_VERSION} dashboard",
            "firmware_id": self.firmware[model],
            "target_filter": f"model = '{model}'",
            "deployment_strategy": "canary",
            "canary_size": 1,
            "pause_threshold_percent": 10,
            "min_battery_level": 0,
            **spec,
        }
        answer = self.call(Role.FLEET_MANAGER, "POST", "/api/v1/ota/campaigns", body)
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created


def _wait_ready(directory: Path, process: subprocess.Popen[bytes], log: Path) -> StackSettings:
    stack_file = directory / "stack.json"
    eventually(
        lambda: True if stack_file.exists() or process.poll() is not None else None,
        "stack.json",
        START_TIMEOUT,
    )
    assert process.poll() is None, log.read_text()
    eventually(
        lambda: True if "v2c stack status" in log.read_text() else None,
        "the status table",
        START_TIMEOUT,
    )
    return read_settings(stack_file)


async def _send_telemetry(fleet: FleetSimulator, samples: int) -> int:
    """Each vehicle sends `samples` samples, one a minute up to now, through its
    own uplink; how many the broker acknowledged."""
    start_ms = int(time.time() * 1000) - samples * 60_000
    vehicles = sorted(fleet.vehicles.items())
    for number, (vehicle_id, vehicle) in enumerate(vehicles):
        for sample in TelemetrySampler(vehicle_id, seed=number, start_ms=start_ms).samples(samples):
            vehicle.telemetry.publish(sample)
    await asyncio.gather(*(v.telemetry.flush(60) for _, v in vehicles))
    return sum(v.telemetry.stats().delivered for _, v in vehicles)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("dashboard")
    directory, log = root / "stack", root / "up.log"
    # Certificates before the broker starts: it admits them at once (no live registration).
    init_pki(directory / "pki")
    ensure_vehicle_certs(directory / "pki", [*VINS, OUTSIDER])
    token = secrets.token_urlsafe(32)  # the API process inherits the variable
    environ = {**os.environ, "V2C_API_TOKENS": f"{TOKEN_PRINCIPAL}:viewer:{token}"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(V2C), "stack", "up", "--dir", str(directory)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ,
        )
    loop: LoopThread | None = None
    fleet: FleetSimulator | None = None
    try:
        settings = _wait_ready(directory, process, log)
        assert settings.api is not None
        keys = {Role(r): Path(f).read_text().strip() for r, f in settings.api.key_files.items()}
        manager = ApiClient(ApiTarget(settings.api.url, keys[Role.FLEET_MANAGER]))
        firmware = {
            model: upload_package(manager, model, NEW_VERSION, root / "packages")
            for model in DEFAULT_MODELS
        }
        fleet = stack_fleet(
            settings,
            VEHICLES,
            time_scale=0.002,
            base_dir=root / "fleet",
            installed_version=OLD_VERSION,
            telemetry=PublisherConfig(durable=False),
        )
        loop = LoopThread()
        loop.run(fleet.start(), timeout=120)
        assert loop.run(_send_telemetry(fleet, SAMPLES), timeout=90) == VEHICLES * SAMPLES
        yield Stack(directory, settings, settings.api.url, keys, token, firmware)
    finally:
        if loop is not None:
            if fleet is not None:
                loop.run(fleet.stop(), timeout=60)
            loop.close()
        if process.poll() is None:
            process.terminate()
            process.wait(90)


def shown_time(epoch_ms: int) -> str:
    """A time as the page writes it (UTC, to the second)."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _counters_on_page(driver: WebDriver) -> dict[str, str | None]:
    return {name: text_of(driver, f"counter-{name}") for name in COUNTERS}


def _row_counters(driver: WebDriver, campaign_id: str) -> dict[str, str | None]:
    row = find(driver, f"campaign-row-{campaign_id}")
    return {name: text_of(row, f"campaign-{name}") for name in COUNTERS}


def test_campaign_pages_follow_a_running_campaign_without_reloading(
    stack: Stack,
    browser: WebDriver,  # noqa: F811
) -> None:
    # Given a created campaign over the three Accord vehicles, seen by its fleet manager
    campaign = stack.create_campaign("Accord")
    cid = campaign["campaign_id"]
    assert campaign["target_count"] == 3
    sign_in(browser, stack.url, stack.keys[Role.FLEET_MANAGER], f"#/campaigns/{cid}")
    wait_for(
        browser,
        lambda: (
            _counters_on_page(browser)["pending"] == "3"
            and text_of(browser, "campaign-status") == "created"
        ),
        "the created campaign's counters",
    )
    assert text_of(browser, "campaign-strategy") == "canary"
    assert "≥ 95 %" in (text_of(browser, "campaign-success-rate") or "")
    browser.execute_script("window.sameDocument = true")

    # When the fleet manager starts it from the page
    find(browser, "action-start").click()

    # Then the page follows it to the end, in place: its numbers are the API's
    def settled_and_shown() -> dict[str, Any] | None:
        now = stack.get(Role.FLEET_MANAGER, f"/api/v1/ota/campaigns/{cid}")
        if now["status"] not in SETTLED:
            return None
        expected = {name: str(now["counters"][name]) for name in COUNTERS}
        if _counters_on_page(browser) != expected:
            return None
        return now if text_of(browser, "campaign-status") == now["status"] else None

    final = wait_for(browser, settled_and_shown, "the finished campaign's counters", 180)
    assert final["status"] == "completed", final
    assert final["counters"]["completed"] == 3
    assert browser.execute_script("return window.sameDocument === true")  # never reloaded
    gate = final["gate"]
    assert gate is not None
    assert gate["verdict"] == "pass"
    assert (text_of(browser, "campaign-gate") or "").startswith(f"{gate['wave']}: pass")
    # the waves' counters, who was notified when, the timeline
    for number, wave in enumerate(final["waves"]):
        wait_text(
            browser, f"wave-row-{number}", "wave-completed", str(wave["counters"]["completed"])
        )
    updates = stack.get(Role.FLEET_MANAGER, f"/api/v1/ota/campaigns/{cid}/updates")["items"]
    assert len(updates) == 3
    for update in updates:
        row = f"update-row-{update['vehicle_id']}"
        wait_text(browser, row, "update-state", "completed")
        assert update["notified_at_ms"] > 0
        wait_text(browser, row, "update-notified", shown_time(update["notified_at_ms"]))
    kinds = [
        e["kind"] for e in stack.get(Role.VIEWER, f"/api/v1/ota/campaigns/{cid}/timeline")["events"]
    ]
    assert {"created", "started", "gate_passed", "completed"} <= set(kinds)
    # the timeline is read every 10 s at most, failures by reason every 30 s: refreshed by hand
    refresh_until(
        browser,
        "timeline-refresh",
        lambda: (
            len(browser.find_elements("css selector", '[data-testid="timeline-event"]'))
            == len(kinds)
        ),
        "the timeline",
    )
    stats = stack.get(Role.VIEWER, f"/api/v1/ota/stats/campaigns/{cid}")
    assert stats["failures_by_reason"] == {}  # all three completed
    assert final["failures_by_reason"] == stats["failures_by_reason"]  # counted on the campaign
    refresh_until(
        browser,
        "failures-refresh",
        lambda: present(browser, "failures-table") and not present(browser, "failure-count"),
        "no failure reasons",
    )
    # read with the campaign on every poll: no pass over the records
    assert text_of(browser, "failures-as-of") == "counted with the campaign, every poll"
    assert browser.execute_script("return window.v2cDashboard.polling")  # the cheap poll runs
    assert not present(browser, "action-start")  # nothing to start any more
    screenshot(browser, "campaign")

    # And the campaigns page shows the same numbers in the campaign's row
    open_page(browser, "#/campaigns")
    expected = {name: str(final["counters"][name]) for name in COUNTERS}
    wait_for(browser, lambda: _row_counters(browser, cid) == expected, "the campaign's row")
    assert cell_text(browser, f"campaign-row-{cid}", "campaign-status") == "completed"
    gate_cell = cell_text(browser, f"campaign-row-{cid}", "campaign-gate") or ""
    assert gate_cell.startswith(f"{gate['wave']}: pass")
    assert gate["reason"] in gate_cell  # and why
    screenshot(browser, "campaigns")


def test_an_approver_approves_from_the_page_and_a_viewer_cannot(
    stack: Stack,
    browser: WebDriver,  # noqa: F811
) -> None:
    campaign = stack.create_campaign("Civic", requires_approval=True)
    cid = campaign["campaign_id"]
    page = f"#/campaigns/{cid}"

    # A campaign the API does not know: the page says so, with the API's detail
    unknown = "0" * 32
    missing = stack.call(Role.VIEWER, "GET", f"/api/v1/ota/campaigns/{unknown}")
    assert missing.status_code == 404
    sign_in(browser, stack.url, stack.keys[Role.VIEWER], f"#/campaigns/{unknown}")
    wait_for(
        browser,
        lambda: (
            (text_of(browser, "campaign-error") or "").startswith("not available (404")
            and missing.json()["detail"] in (text_of(browser, "campaign-error") or "")
        ),
        "the 404 in the campaign's section",
    )

    # A viewer sees the campaign awaiting approval, and no button to approve it
    open_page(browser, page)
    wait_for(
        browser,
        lambda: text_of(browser, "campaign-approval") == "awaiting approval",
        "a campaign awaiting approval",
    )
    wait_for(browser, lambda: present(browser, "actions-none"), "no actions for a viewer")
    assert not present(browser, "action-approve")
    # if the viewer forces the call through the page, it shows the server's refusal
    refused = stack.call(Role.VIEWER, "POST", f"/api/v1/ota/campaigns/{cid}/approve")
    assert refused.status_code == 403
    detail = refused.json()["detail"]
    browser.execute_script("window.v2cDashboard.act(arguments[0], 'approve', '')", cid)
    wait_for(browser, lambda: detail in (text_of(browser, "error") or ""), "the 403 detail")
    assert "403" in (text_of(browser, "error") or "")
    screenshot(browser, "campaign-viewer-forbidden")

    # The approver approves it with the page's button
    sign_in(browser, stack.url, stack.keys[Role.APPROVER], page)
    wait_for(browser, lambda: find(browser, "action-approve").is_displayed(), "approve")
    find(browser, "action-reason").send_keys("looks good")
    find(browser, "action-approve").click()
    approved = eventually(
        lambda: (
            c
            if (c := stack.get(Role.VIEWER, f"/api/v1/ota/campaigns/{cid}"))["approved_by"]
            else None
        ),
        "the approval",
    )
    assert approved["approved_by"] == "local-approver"
    assert approved["approval_comment"] == "looks good"
    assert approved["status"] in {"created", "in_progress"}
    wait_for(
        browser,
        lambda: (text_of(browser, "campaign-approval") or "").startswith(
            "approved by local-approver"
        ),
        "the approval on the page",
    )
    wait_for(browser, lambda: not present(browser, "action-approve"), "approve gone")
    assert text_of(browser, "error") in ("", None)  # the earlier refusal is cleared
    screenshot(browser, "campaign-approved")


def throttled_sample(vin: str, payload: bytes, error: str) -> DeadLetterRecord:
    """A real sample dead-lettered for a passing reason: replayable."""
    return DeadLetterRecord.from_error(
        queue="telemetry",
        direction=Direction.INBOUND,
        source="telemetry",
        topic=f"v2c/v1/eu-west-1/{vin}/telemetry/vehicle",
        payload=payload,
        error=TransientError(error),
        attempts=3,
        vehicle_id=vin,
    )


def test_an_operator_inspects_and_replays_a_dead_letter_from_the_page(
    stack: Stack,
    browser: WebDriver,  # noqa: F811
) -> None:
    # A vehicle publishes a payload that is no telemetry: dead-lettered by the gateway
    mqtt = stack.settings.require_mqtt()
    assert mqtt.tls_port is not None
    assert mqtt.ca_file is not None
    vehicles = stack.directory / "pki" / "vehicles"
    endpoint = MqttEndpoint(
        mqtt.host,
        mqtt.tls_port,
        ca_file=str(mqtt.ca_file),
        cert_file=str(vehicles / f"{OUTSIDER}.pem"),
        key_file=str(vehicles / f"{OUTSIDER}.key"),
    )
    with vehicle_client(endpoint, OUTSIDER) as client:
        topic = f"v2c/v1/eu-west-1/{OUTSIDER}/telemetry/vehicle"
        client.publish(topic, b"\x00 this is not protobuf", qos=1).wait_for_publish(10)

    def listed() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = stack.get(Role.OPERATOR, "/api/v1/dlq/telemetry")["items"]
        return items

    malformed = eventually(
        lambda: next((r for r in listed() if r["vehicle_id"] == OUTSIDER), None),
        "the malformed payload's dead letter",
    )
    # and a real sample that failed for a passing reason: replayable
    (sample,) = TelemetrySampler(VINS[0], seed=5).samples(1)
    record = throttled_sample(VINS[0], sample.SerializeToString(), "the table was throttled")
    dead_letter_stores(stack.settings)["telemetry"].put(record)

    # The operator sees both, counted by reason
    sign_in(browser, stack.url, stack.keys[Role.OPERATOR], "#/dlq")
    for rid in (malformed["record_id"], record.record_id):
        wait_text(browser, f"dlq-row-{rid}", "dlq-record-id", rid)
    counts: dict[str, int] = {}
    for item in listed():
        counts[item["reason"]] = counts.get(item["reason"], 0) + 1
    for reason, count in counts.items():
        wait_text(browser, "dlq-reasons", f"dlq-reason-{reason}", f"{reason} ({count})")
    # it lists once and never polls (a listing hides SQS messages): Refresh lists again
    assert browser.execute_script("return window.v2cDashboard.polling") is False
    late = throttled_sample(VINS[1], sample.SerializeToString(), "the table was throttled again")
    dead_letter_stores(stack.settings)["telemetry"].put(late)
    find(browser, "dlq-refresh").click()
    wait_text(browser, f"dlq-row-{late.record_id}", "dlq-record-id", late.record_id)
    # a reason chosen is the API's filter: only its records are listed
    reason = malformed["reason"]
    assert record.reason != reason
    find(browser, f"dlq-reason-{reason}").click()
    wait_for(
        browser,
        lambda: (
            (text_of(browser, "dlq-count") or "").endswith(f"reason {reason}")
            and not present(browser, f"dlq-row-{record.record_id}")
        ),
        f"only the {reason} records",
    )
    assert present(browser, f"dlq-row-{malformed['record_id']}")
    find(browser, "dlq-reason-all").click()
    wait_for(browser, lambda: present(browser, f"dlq-row-{record.record_id}"), "every reason")
    # inspects the replayable one
    find(browser, f"dlq-inspect-{record.record_id}").click()
    wait_for(
        browser,
        lambda: text_of(browser, "dlq-field-record_id") == record.record_id,
        "the inspected record",
    )
    assert text_of(browser, "dlq-field-reason") == record.reason
    assert text_of(browser, "dlq-field-vehicle_id") == VINS[0]
    # the record whole (the operator-only read): its payload, shown as text
    payload = record.payload
    shown = text_of(browser, "dlq-field-payload") or ""
    assert shown.startswith(("binary, ", "text, ")), shown
    assert f"{len(payload)} bytes: " in shown
    if shown.startswith("binary, "):
        assert payload[:4].hex(" ") in shown
    screenshot(browser, "dlq-inspect")

    # and replays it from the page: handled, so gone from the queue
    find(browser, "dlq-replay").click()
    wait_for(
        browser,
        lambda: (text_of(browser, "dlq-outcome") or "").startswith(f"{record.record_id}: replayed"),
        "the replay's outcome",
    )
    assert record.record_id not in {r["record_id"] for r in listed()}
    assert malformed["record_id"] in {r["record_id"] for r in listed()}
    wait_for(browser, lambda: not present(browser, f"dlq-row-{record.record_id}"), "row gone")
    screenshot(browser, "dlq")


def test_fleet_and_vehicle_pages_show_versions_certificates_and_telemetry(
    stack: Stack,
    browser: WebDriver,  # noqa: F811
) -> None:
    # A bearer token (a Cognito ID token in AWS) typed as a key is refused...
    submit_login(browser, stack.url, stack.token, "#/fleet")
    wait_for(browser, lambda: "(401)" in (text_of(browser, "error") or ""), "the 401")
    assert find(browser, "login").is_displayed()
    assert not find(browser, "nav").is_displayed()
    # ...and signs in as a token: every call sends it as Authorization: Bearer
    sign_in(browser, stack.url, stack.token, "#/fleet", kind="token")
    assert (text_of(browser, "who") or "").startswith(f"{TOKEN_PRINCIPAL} (viewer; bearer token)")

    # The version distribution per model and region is the API's (read every 30 s at most)
    def distribution_shown() -> bool:
        answer = stack.get(Role.VIEWER, "/api/v1/fleet/versions")
        if answer["total"] < VEHICLES or not answer["groups"]:
            return False
        for group in answer["groups"]:
            row = find(browser, f"versions-row-{group['model']}-{group['region']}")
            if text_of(row, "versions-total") != str(group["total"]):
                return False
            for version, count in group["versions"].items():
                if text_of(row, f"version-{version}") != f"{version}: {count}":
                    return False
        return True

    refresh_until(browser, "versions-refresh", distribution_shown, "the version distribution")
    assert {"Accord", "Civic"} <= {
        g["model"] for g in stack.get(Role.VIEWER, "/api/v1/fleet/versions")["groups"]
    }
    # a search finds one vehicle, with its certificate's expiry
    find(browser, "search-vin").send_keys(VINS[0])
    find(browser, "search-submit").click()
    wait_for(
        browser,
        lambda: (
            len(browser.find_elements("css selector", '[data-testid^="vehicle-row-"]')) == 1
            and present(browser, f"vehicle-row-{VINS[0]}")
        ),
        "the one vehicle found",
    )
    vehicle = stack.get(Role.VIEWER, f"/api/v1/vehicles/{VINS[0]}")
    expires = vehicle["certificate"]["expires_at"]
    shown = text_of(find(browser, f"vehicle-row-{VINS[0]}"), "vehicle-cert-expiry") or ""
    assert shown.startswith(expires[:10]), (shown, expires)
    screenshot(browser, "fleet")

    # The vehicle's page draws its recent telemetry as charts, one per signal
    open_page(browser, f"#/vehicles/{VINS[0]}")

    def charted() -> bool:
        items = stack.get(Role.VIEWER, f"/api/v1/vehicles/{VINS[0]}/telemetry")["items"]
        expected = Counter(
            name
            for item in items
            for name, value in item.items()
            if name not in NOT_CHARTED
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        )
        charts = browser.find_elements("css selector", '[data-testid^="chart-"]')
        shown = {
            str(c.get_attribute("data-testid")).removeprefix("chart-"): c.get_attribute(
                "data-points"
            )
            for c in charts
        }
        return expected["battery_voltage_v"] >= SAMPLES and shown == {
            name: str(count) for name, count in expected.items()
        }

    # one chart per numeric signal, of as many points as the API has samples with it
    wait_for(browser, charted, "a chart of every stored signal")
    wait_for(
        browser,
        lambda: (
            text_of(browser, "vehicle-version")
            == stack.get(Role.VIEWER, f"/api/v1/vehicles/{VINS[0]}")["installed_version"]
        ),
        "the installed version the API has",
    )
    polyline = find(browser, "chart-battery_voltage_v").find_element("css selector", "polyline")
    assert len((polyline.get_attribute("points") or "").split()) >= SAMPLES
    screenshot(browser, "vehicle")

    # An id in the fragment that is no VIN never reaches an API path
    open_page(browser, "#/vehicles/..")
    wait_for(
        browser,
        lambda: (text_of(browser, "error") or "").startswith('not found: ".." is no vehicle id'),
        "not found",
    )
    assert not present(browser, "vehicle")  # no section, so no request
