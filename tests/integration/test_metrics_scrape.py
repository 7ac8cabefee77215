"""Issue #16's metrics, scraped from one running stack: the gateway's, the API
process's and the simulator's `/metrics` over real HTTP, after a small fleet
ran a campaign, sent telemetry and one malformed status report, and a fleet
manager rolled the campaign back. Every metric name of the shared contract
(docs/observability.md, "Metrics") is there with values that agree with what
happened (the campaign gauges equal the API's counters), and every metric the
alert rules name is one the processes export. The simulator's exporter is
the process's one `SIM_METRICS`, which other fleets of the same test worker
count into too: its counters are compared with a scrape taken before this
fleet started."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import yaml
from gateway_support import wait_until
from prometheus_client.parser import text_string_to_metric_families

from v2c.infra.cli import demo_view as demo
from v2c.infra.cli.api_client import ApiClient
from v2c.infra.local.fleet_provisioning import ensure_vehicle_certs, stack_fleet
from v2c.infra.local.stack import LocalStack
from v2c.infra.net import free_port
from v2c.infra.pki.authority import init_pki
from v2c.infra.settings import StackSettings
from v2c.vehicle_sim.fleet.identity import vin_for
from v2c.vehicle_sim.fleet.simulator import FleetSimulator
from v2c.vehicle_sim.metrics import SIM_METRICS
from v2c.vehicle_sim.sampler import TelemetrySampler

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "v2c" / "infra" / "observability" / "v2c.rules.yml"
VEHICLES = 3
MODEL = "Accord"
SAMPLES = 5  # per vehicle
WAIT = 240.0  # a bound, not an expectation: the machine is shared

# Contract C: the new names, and the existing ones used as they are.
CLOUD_NEW = (
    "v2c_ota_campaign_status",
    "v2c_ota_campaign_updates",
    "v2c_ota_campaign_wave_updates",
    "v2c_ota_campaign_last_update_timestamp_seconds",
    "v2c_ota_update_outcomes_total",
    "v2c_ota_rollbacks_total",
    "v2c_ota_signature_verification_failures_total",
    "v2c_certificate_expiry_days",
    "v2c_vehicle_certificates_expired",
    "v2c_telemetry_publish_to_stored_seconds",
    "v2c_dlq_depth",
    "v2c_signing_available",
)
VEHICLE_SIDE = (
    "v2c_connection_attempts_total",
    "v2c_telemetry_publish_total",
    "v2c_local_buffer_depth",
)
EXISTING = (
    "v2c_batch_decompression_errors_total",
    "v2c_telemetry_messages_total",
    "v2c_dlq_messages_total",
    "v2c_signing_failures_total",
    "v2c_ota_alerts_total",
    "v2c_vehicle_certificates_expiring",
    "v2c_gateway_connected",
    "v2c_gateway_messages_received_total",
)
# The campaign's counters as the API answers them (it adds rates beside them).
STATES = (
    "pending",
    "in_progress",
    "completed",
    "failed",
    "rolled_back",
    "cancelled",
    "timed_out",
    "waiting",
)
SUFFIXES = ("_bucket", "_count", "_sum", "_created")


class _Loop:
    """The fleet's event loop on a thread, as `v2c demo` runs it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Scrape:
    """One /metrics answer: {sample name: [(labels, value)]} and every family named."""

    samples: dict[str, list[tuple[dict[str, str], float]]]
    names: set[str]

    def value(self, name: str, **labels: str) -> float | None:
        for found, value in self.samples.get(name, []):
            if all(found.get(k) == v for k, v in labels.items()):
                return value
        return None

    def total(self, name: str, **labels: str) -> float:
        return sum(
            value
            for found, value in self.samples.get(name, [])
            if all(found.get(k) == v for k, v in labels.items())
        )


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
            names.add(sample.name)
    # a labelled family with no child yet is named by its HELP/TYPE lines only
    names |= set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    counters = re.findall(r"^# TYPE (\S+) counter", text, re.M)
    names |= {n if n.endswith("_total") else f"{n}_total" for n in counters}
    return Scrape(samples, names)


def base_name(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


@dataclass
class Running:
    settings: StackSettings
    client: ApiClient
    fleet: FleetSimulator
    loop: _Loop
    sim_url: str
    workdir: Path
    sim_before: Scrape  # the process-wide exporter before this fleet started


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("metrics")
    pki = directory / "stack" / "pki"
    init_pki(pki)
    ensure_vehicle_certs(pki, [vin_for(i) for i in range(VEHICLES)])
    # The gateway's expiry pass every 2 s: the fleet's certificates show up
    # as `vehicle_min` soon after onboarding instead of an hour later.
    stack = LocalStack(directory / "stack", certificate_expiry_interval=2.0, start_timeout=WAIT)
    settings = stack.start()
    loop = _Loop()
    sim_server = SIM_METRICS.serve(port := free_port())  # what `v2c sim --metrics-port` calls
    sim_url = f"http://127.0.0.1:{port}/metrics"
    fleet: FleetSimulator | None = None
    try:
        assert settings.api is not None
        client = ApiClient(demo.target_for(settings.api.url, settings.api.key_file))
        fleet = stack_fleet(
            settings,
            VEHICLES,
            models=(MODEL,),
            regions=1,
            time_scale=0.005,
            base_dir=directory / "fleet",
            installed_version=demo.OLD_VERSION,
        )
        sim_before = scrape(sim_url)
        loop.run(fleet.start())
        yield Running(settings, client, fleet, loop, sim_url, directory, sim_before)
    finally:
        if fleet is not None:
            loop.run(fleet.stop(), timeout=60)
        loop.close()
        sim_server.shutdown()
        sim_server.server_close()
        stack.stop()


async def _send_telemetry(fleet: FleetSimulator) -> int:
    start_ms = int(time.time() * 1000) - SAMPLES * 1000
    for number, (vehicle_id, vehicle) in enumerate(sorted(fleet.vehicles.items())):
        for sample in TelemetrySampler(vehicle_id, seed=number, start_ms=start_ms).samples(SAMPLES):
            vehicle.telemetry.publish(sample)
    flushed = await asyncio.gather(*(v.telemetry.flush(60) for v in fleet.vehicles.values()))
    assert all(flushed)
    return sum(v.telemetry.stats().delivered for v in fleet.vehicles.values())


async def _send_garbage(fleet: FleetSimulator) -> bool:
    """A status report that is no OTAStatus, from a real vehicle on its own topic."""
    vehicle = next(iter(fleet.vehicles.values()))
    topic = f"v2c/v1/{vehicle.spec.region}/{vehicle.vehicle_id}/ota/status"
    return await vehicle.session.publish(topic, b"\xffnot a protobuf status", qos=2)


def _campaign(client: ApiClient, workdir: Path) -> str:
    demo.upload_package(client, MODEL, demo.OLD_VERSION, workdir / "packages")
    firmware_id = demo.upload_package(client, MODEL, demo.NEW_VERSION, workdir / "packages")
    created = client.post(
        f"{demo.BASE}/campaigns",
        {
            "name": "metrics scrape",
            "firmware_id": firmware_id,
            "target_filter": f"model = '{MODEL}'",
            "deployment_strategy": "immediate",
            "min_battery_level": 30,
        },
    )
    campaign_id = str(created["campaign_id"])
    client.post(f"{demo.BASE}/campaigns/{campaign_id}/start")
    return campaign_id


def test_every_contract_metric_is_scraped_with_values_that_match_what_happened(
    running: Running,
) -> None:
    settings, client, fleet = running.settings, running.client, running.fleet
    assert settings.api is not None
    assert settings.api.metrics_url == f"{settings.api.url}/metrics"
    assert settings.gateway is not None
    assert settings.gateway.metrics_url is not None
    gateway_url, api_url = settings.gateway.metrics_url, settings.api.metrics_url

    # Given telemetry from every vehicle, one malformed status report, and a
    # campaign that ran to its end on every vehicle
    delivered = running.loop.run(_send_telemetry(fleet))
    assert delivered == VEHICLES * SAMPLES
    assert running.loop.run(_send_garbage(fleet))
    campaign_id = _campaign(client, running.workdir)
    wait_until(
        lambda: client.get(f"{demo.BASE}/campaigns/{campaign_id}")["status"] == "completed",
        timeout=WAIT,
        what="the campaign to complete",
    )
    campaign = client.get(f"{demo.BASE}/campaigns/{campaign_id}")

    # Then the API process's /metrics has the campaign as the API shows it
    api = scrape(api_url)
    cid = {"campaign_id": campaign_id}
    assert api.value("v2c_ota_campaign_status", **cid, status="completed") == 1
    assert api.total("v2c_ota_campaign_status", **cid) == 1  # one status at a time
    for state in STATES:
        count = campaign["counters"][state]
        assert api.value("v2c_ota_campaign_updates", **cid, state=state) == count, state
    assert api.value("v2c_ota_campaign_updates", **cid, state="total") == VEHICLES
    for wave in campaign["waves"]:
        for state in STATES:
            count = wave["counters"][state]
            labels = {**cid, "wave": wave["name"], "state": state}
            assert api.value("v2c_ota_campaign_wave_updates", **labels) == count, labels
    changed = api.value("v2c_ota_campaign_last_update_timestamp_seconds", **cid)
    assert changed is not None
    assert 0 < time.time() - changed < 3600
    # the signer answered (the campaign was signed in this process), and the
    # malformed report waits in the OTA dead-letter queue
    assert api.samples["v2c_signing_available"]
    assert all(v == 1 for _, v in api.samples["v2c_signing_available"])
    wait_until(
        lambda: (scrape(api_url).value("v2c_dlq_depth", queue="ota") or 0) >= 1,
        what="the malformed report in the OTA DLQ",
    )
    assert scrape(api_url).value("v2c_dlq_depth", queue="telemetry") == 0
    # the stack's own certificates: years left on the fleet CA, some on the services'
    fleet_ca = api.value("v2c_certificate_expiry_days", subject="fleet_ca")
    service = api.value("v2c_certificate_expiry_days", subject="service")
    assert fleet_ca is not None
    assert fleet_ca > 365
    assert service is not None
    assert 0 < service <= fleet_ca

    # And the gateway's /metrics counted each ended update once, each stored
    # sample's age once, and the dead letter
    gateway = scrape(gateway_url)
    outcomes = gateway.total("v2c_ota_update_outcomes_total", outcome="completed")
    assert outcomes == campaign["counters"]["completed"] == VEHICLES
    stored = gateway.total("v2c_telemetry_messages_total", status="stored")
    assert stored == VEHICLES * SAMPLES
    assert gateway.total("v2c_telemetry_publish_to_stored_seconds_count") == stored
    assert gateway.total("v2c_dlq_messages_total", queue="ota") >= 1
    wait_until(
        lambda: (
            scrape(gateway_url).value("v2c_certificate_expiry_days", subject="vehicle_min")
            is not None
        ),
        what="the expiry pass over the onboarded fleet",
    )
    gateway = scrape(gateway_url)
    vehicle_min = gateway.value("v2c_certificate_expiry_days", subject="vehicle_min")
    assert vehicle_min is not None
    assert 0 < vehicle_min <= fleet_ca
    assert gateway.value("v2c_vehicle_certificates_expired") == 0  # a fresh fleet

    # When a fleet manager rolls the campaign back
    client.post(f"{demo.BASE}/campaigns/{campaign_id}/rollback", {"reason": "metrics test"})
    # Then the API process counted it by its trigger
    api = scrape(api_url)
    assert api.value("v2c_ota_rollbacks_total", trigger="manual") == 1
    assert api.value("v2c_ota_campaign_status", **cid, status="completed") is None
    # And once the vehicles went back, the gateway counted each completed update
    # reverted, never a second outcome: no rollback rate from a healthy campaign
    wait_until(
        lambda: client.get(f"{demo.BASE}/campaigns/{campaign_id}")["status"] == "rolled_back",
        timeout=WAIT,
        what="the rollback to finish",
    )
    gateway = scrape(gateway_url)
    assert gateway.total("v2c_ota_update_outcomes_total", outcome="reverted") == VEHICLES
    assert gateway.total("v2c_ota_update_outcomes_total", outcome="completed") == VEHICLES
    assert gateway.total("v2c_ota_update_outcomes_total", outcome="rolled_back") == 0

    # And the simulator's /metrics saw this fleet's connections and acknowledged
    # publishes (deltas: other fleets of this worker count into the same exporter),
    # and gave nothing up
    sim, before = scrape(running.sim_url), running.sim_before

    def grew(name: str, **labels: str) -> float:
        return (sim.value(name, **labels) or 0) - (before.value(name, **labels) or 0)

    assert grew("v2c_connection_attempts_total", result="success") >= VEHICLES
    assert sim.value("v2c_connection_attempts_total", result="failure") is not None
    assert grew("v2c_telemetry_publish_total", status="success") >= 1
    assert grew("v2c_telemetry_publish_total", status="failure") == 0
    # this fleet's buffers are empty; the gauge is the process's deepest buffer
    assert all(v.telemetry.stats().buffered == 0 for v in fleet.vehicles.values())
    assert sim.value("v2c_local_buffer_depth") == SIM_METRICS.deepest()

    # And every name of the contract is served by one of the three processes
    served = api.names | scrape(gateway_url).names | sim.names
    missing = [n for n in (*CLOUD_NEW, *VEHICLE_SIDE, *EXISTING) if n not in served]
    assert missing == []
    assert (
        api.value(
            "v2c_ota_signature_verification_failures_total", reason="SIGNATURE_VERIFICATION_FAILED"
        )
        == 0
    )

    # And every metric an alert rule names is among them (when the rules file exists)
    if not RULES.exists():
        pytest.skip(f"no alert rules at {RULES} yet")
    rules = yaml.safe_load(RULES.read_text())
    used = {
        base_name(name)
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"v2c_[a-z0-9_]+", str(rule.get("expr", "")))
    }
    assert used, "the rules name no v2c metric"
    bases = {base_name(n) for n in served} | served
    assert sorted(used - bases) == []


def test_the_api_metrics_endpoint_needs_no_credential_and_answers_only_get(
    running: Running,
) -> None:
    settings = running.settings
    assert settings.api is not None
    assert settings.api.metrics_url is not None
    answer = requests.get(settings.api.metrics_url, timeout=10)
    assert answer.status_code == 200
    assert "# TYPE v2c_ota_campaign_status gauge" in answer.text
    assert "X-Request-Id" in answer.headers  # answered by the adapter, like every request
    refused = requests.post(settings.api.metrics_url, data=b"", timeout=10)
    assert (refused.status_code, refused.json()["reason"]) == (405, "method_not_allowed")
    # the API itself still wants its key
    assert requests.get(f"{settings.api.url}/api/v1/ota/campaigns", timeout=10).status_code == 401
