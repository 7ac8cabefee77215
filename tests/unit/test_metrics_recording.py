"""Issue #16's metrics, their pure parts: the recording functions (Prometheus and,
in Lambda, EMF), the campaign collector over a fake source, the DLQ depth
collector, the telemetry age histogram and the simulator's exporter."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from ota_service_harness import Ota, S
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from v2c.contract.dead_letter import DeadLetterRecord, Direction
from v2c.handlers.dlq.metrics import DeadLetterDepthCollector
from v2c.handlers.dlq.store import InMemoryDeadLetterStore
from v2c.handlers.ota import metrics as ota_metrics
from v2c.handlers.ota.campaign_metrics import (
    MAX_CAMPAIGNS,
    CampaignCollector,
    families,
    select_recent,
)
from v2c.handlers.ota.campaigns.record import Campaign, Release
from v2c.handlers.ota.domain.campaign_rules import CampaignSpec
from v2c.handlers.ota.domain.counters import CampaignCounters
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.plan import Wave
from v2c.handlers.ota.domain.rollback_rules import RollbackTrigger
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.handlers.signing.base import SigningFailure
from v2c.handlers.signing.metrics import SigningMetrics
from v2c.handlers.telemetry.metrics import TelemetryMetrics
from v2c.handlers.vehicles.metrics import CertificateMetrics
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.metrics import SimMetrics

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS = 86_400_000


def value(name: str, registry: CollectorRegistry = REGISTRY, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def emf_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def emf_metrics(line: dict[str, Any]) -> tuple[str, str, dict[str, float]]:
    """(namespace, service dimension, {metric: value}) of one EMF line."""
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    names = [m["Name"] for m in directive["Metrics"]]
    assert directive["Dimensions"] == [["service"]]  # the contract: `service` only
    values = {n: line[n][0] if isinstance(line[n], list) else line[n] for n in names}
    return directive["Namespace"], line["service"], values


@pytest.fixture
def in_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "v2c-ota-status")


# -- OTA recording functions ---------------------------------------------------------------


def _update(state: UpdateState, *, kind: UpdateKind = UpdateKind.CAMPAIGN, reason: str = "") -> Any:
    return VehicleUpdate("VIN-1", "u", kind, "f", "2.0.0", state=state, reason=reason)


def test_an_update_ends_once_by_outcome_and_the_vehicles_reason() -> None:
    notified = _update(UpdateState.INSTALLING)
    assert ota_metrics.ended(notified, _update(UpdateState.COMPLETED)) == ("completed", "NONE")
    failed = _update(UpdateState.FAILED, reason="FLASH_WRITE_FAILURE")
    assert ota_metrics.ended(notified, failed) == ("failed", "FLASH_WRITE_FAILURE")
    rejected = _update(UpdateState.REJECTED, reason="INSUFFICIENT_BATTERY")
    assert ota_metrics.ended(notified, rejected) == ("failed", "INSUFFICIENT_BATTERY")
    # the cloud's free-text reasons never become label values
    timed_out = _update(UpdateState.TIMED_OUT, reason="no report within 60 minutes")
    assert ota_metrics.ended(notified, timed_out) == ("timed_out", "NONE")
    # no change of state, a state that is not an end, a rollback update: nothing
    assert ota_metrics.ended(failed, failed) is None
    assert ota_metrics.ended(notified, _update(UpdateState.DOWNLOADING)) is None
    rollback = _update(UpdateState.COMPLETED, kind=UpdateKind.ROLLBACK)
    assert (
        ota_metrics.ended(_update(UpdateState.NOTIFIED, kind=UpdateKind.ROLLBACK), rollback) is None
    )


def test_the_label_sets_exist_at_zero_before_any_event() -> None:
    text = generate_latest(REGISTRY).decode()
    for trigger in ("manual", "failure_rate", "health_check", "timeout", "error_threshold"):
        assert f'v2c_ota_rollbacks_total{{trigger="{trigger}"}}' in text
    assert 'v2c_ota_rollbacks_total{trigger="device"}' in text
    for outcome in ("completed", "failed", "rolled_back", "cancelled", "timed_out", "reverted"):
        assert f'v2c_ota_update_outcomes_total{{outcome="{outcome}",reason="NONE"}}' in text
    assert (
        'v2c_ota_signature_verification_failures_total{reason="SIGNATURE_VERIFICATION_FAILED"}'
        in text
    )


def test_recording_functions_count_and_stay_quiet_outside_lambda(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    name = "v2c_ota_update_outcomes_total"
    before = value(name, outcome="failed", reason="BOOT_FAILURE")
    ota_metrics.updates_ended([("failed", "BOOT_FAILURE")] * 2)
    assert value(name, outcome="failed", reason="BOOT_FAILURE") == before + 2
    assert capsys.readouterr().out == ""


def test_in_lambda_one_call_writes_one_emf_line_with_the_service_dimension(
    in_lambda: None, capsys: pytest.CaptureFixture[str]
) -> None:
    ota_metrics.updates_ended(
        [("completed", "NONE"), ("completed", "NONE"), ("rolled_back", "BOOT_FAILURE")]
    )
    ota_metrics.rollback_started(RollbackTrigger.FAILURE_RATE.value)
    ota_metrics.signature_failures(["SIGNATURE_VERIFICATION_FAILED"])
    ota_metrics.never_notified_cancelled(40)
    ota_metrics.updates_ended([])  # nothing: no line
    lines = [emf_metrics(line) for line in emf_lines(capsys)]
    assert lines == [
        ("v2c", "ota", {"UpdatesCompleted": 2, "UpdatesRolledBack": 1}),
        ("v2c", "ota", {"Rollbacks": 1}),
        ("v2c", "ota", {"SignatureVerificationFailures": 1}),
        ("v2c", "ota", {"UpdatesCancelled": 40}),
    ]


def test_signing_failures_and_availability_and_their_emf(
    in_lambda: None, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = SigningMetrics(CollectorRegistry())
    metrics.succeeded("kms")
    assert value("v2c_signing_available", metrics.registry, backend="kms") == 1
    metrics(SigningFailure("kms", "sign", "timeout", 3, "SigningTimeout", None))
    assert value("v2c_signing_available", metrics.registry, backend="kms") == 0
    assert metrics.failure_count("kms") == 1
    [line] = emf_lines(capsys)
    assert emf_metrics(line) == ("v2c", "signing", {"SigningFailures": 1})


def test_the_expiry_pass_sets_the_soonest_vehicle_certificate_and_its_emf(
    in_lambda: None, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = CollectorRegistry()
    metrics = CertificateMetrics(registry)
    now = T0
    metrics.set_expiring(
        {7: 2, 30: 5}, soonest_ms=now + 3 * DAY_MS + DAY_MS // 2, now_ms=now, expired=1
    )
    assert value("v2c_certificate_expiry_days", registry, subject="vehicle_min") == 3.5
    assert value("v2c_vehicle_certificates_expired", registry) == 1
    [line] = emf_lines(capsys)
    assert emf_metrics(line) == (
        "v2c",
        "vehicles",
        {"CertificatesExpiringWithin7Days": 2, "CertificatesExpired": 1},
    )
    # no active vehicle with a certificate any more: the series goes, the counts stay
    metrics.set_expiring({7: 0, 30: 0}, soonest_ms=None, now_ms=now)
    text = generate_latest(registry).decode()
    assert 'subject="vehicle_min"' not in text
    assert 'v2c_vehicle_certificates_expiring{within_days="7"} 0.0' in text
    assert "v2c_vehicle_certificates_expired 0.0" in text


# -- where the OTA events are counted (the in-memory services) -----------------------------


def test_reports_that_end_updates_are_counted_once_redeliveries_never() -> None:
    ota = Ota()
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    first, second, _third = ota.notified()
    name = "v2c_ota_update_outcomes_total"
    completed = value(name, outcome="completed", reason="NONE")
    rolled_back = value(name, outcome="rolled_back", reason="BOOT_FAILURE")
    ota.finish(first, update_id, ok=True)
    ota.report(first, update_id, S.COMPLETED, installed="2.0.0")  # a repeat: stale/duplicate
    ota.report(second, update_id, S.ACCEPTED)
    ota.report(second, update_id, S.ROLLED_BACK, reason=OTAStatus.BOOT_FAILURE)
    assert value(name, outcome="completed", reason="NONE") == completed + 1
    assert value(name, outcome="rolled_back", reason="BOOT_FAILURE") == rolled_back + 1


def test_a_signature_failure_report_is_counted_once() -> None:
    ota = Ota()
    campaign_id = ota.campaign(4, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    first = ota.notified()[0]
    name = "v2c_ota_signature_verification_failures_total"
    before = value(name, reason="SIGNATURE_VERIFICATION_FAILED")
    ota.report(first, update_id, S.ACCEPTED)
    ota.report(first, update_id, S.FAILED, reason=OTAStatus.SIGNATURE_VERIFICATION_FAILED)
    repeat = OTAStatus(
        vehicle_id=first,
        update_id=update_id,
        state=S.FAILED,
        sequence=2,
        reason=OTAStatus.SIGNATURE_VERIFICATION_FAILED,
    )
    ota.status.apply(repeat)  # redelivered: a duplicate, not a second failure
    assert value(name, reason="SIGNATURE_VERIFICATION_FAILED") == before + 1


def test_a_cancel_counts_every_update_it_ends_notified_or_not() -> None:
    ota = Ota()
    campaign_id = ota.campaign(5, deployment_strategy="immediate", max_concurrent_updates=2)
    ota.campaigns.start(campaign_id)
    assert len(ota.notified()) == 2
    name = "v2c_ota_update_outcomes_total"
    cancelled = value(name, outcome="cancelled", reason="NONE")
    counters = ota.campaigns.cancel(campaign_id).counters
    # two notified (one by one) and three never notified (in bulk), each once
    assert counters.cancelled == 5
    assert value(name, outcome="cancelled", reason="NONE") == cancelled + 5


def test_a_campaign_rollback_is_counted_by_its_trigger() -> None:
    ota = Ota()
    campaign_id = ota.campaign(2, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    for vehicle in ota.notified():
        ota.finish(vehicle, update_id, ok=True)
    before = value("v2c_ota_rollbacks_total", trigger="health_check")
    ota.campaigns.rollback(campaign_id, trigger=RollbackTrigger.HEALTH_CHECK)
    assert value("v2c_ota_rollbacks_total", trigger="health_check") == before + 1


# -- campaign gauges ---------------------------------------------------------------------


def _campaign(campaign_id: str, status: CampaignStatus, **changes: Any) -> Campaign:
    spec = CampaignSpec.model_validate(
        {"name": "spring", "firmware_id": "f" * 32, "target_filter": "year > 0"}
    )
    campaign = Campaign(
        campaign_id=campaign_id,
        spec=spec,
        status=status,
        firmware_id="f" * 32,
        version="2.0.0",
        device_model="Accord",
        release=Release("u" * 32, b"m", b"s", "k", T0 + 10**9),
        target_count=10,
        waves=(Wave("canary", 2, True), Wave("rest", 10, False)),
        created_at_ms=T0,
    )
    return campaign.evolve(**changes)


def samples(collector: CampaignCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


def test_the_collector_turns_campaigns_into_the_four_gauge_families() -> None:
    running = _campaign(
        "a" * 32,
        CampaignStatus.IN_PROGRESS,
        counters=CampaignCounters(pending=6, in_progress=2, completed=1, failed=1),
        wave_counters=(CampaignCounters(completed=1, failed=1), CampaignCounters(pending=6)),
        updated_at_ms=T0 + 9_500,  # a write that is not progress (a lease): not a change
        last_progress_at_ms=T0 + 9_000,
    )
    collector = CampaignCollector(lambda: [running], clock=lambda: (T0 + 10_000) / 1000)
    got = samples(collector)
    cid = ("campaign_id", "a" * 32)
    assert got[("v2c_ota_campaign_status", (cid, ("status", "in_progress")))] == 1
    assert got[("v2c_ota_campaign_updates", (cid, ("state", "total")))] == 10
    assert got[("v2c_ota_campaign_updates", (cid, ("state", "failed")))] == 1
    assert got[("v2c_ota_campaign_updates", (cid, ("state", "waiting")))] == 0
    wave = ("v2c_ota_campaign_wave_updates", (cid, ("state", "completed"), ("wave", "canary")))
    assert got[wave] == 1
    rest = ("v2c_ota_campaign_wave_updates", (cid, ("state", "pending"), ("wave", "rest")))
    assert got[rest] == 6
    assert got[("v2c_ota_campaign_last_update_timestamp_seconds", (cid,))] == (T0 + 9_000) / 1000
    # one status series per campaign, nine counter series, nine per wave
    assert sum(1 for name, _ in got if name == "v2c_ota_campaign_status") == 1
    assert sum(1 for name, _ in got if name == "v2c_ota_campaign_updates") == 9
    assert sum(1 for name, _ in got if name == "v2c_ota_campaign_wave_updates") == 18


def test_only_running_and_recently_finished_campaigns_at_most_the_limit() -> None:
    now = T0 + 30 * DAY_MS
    old = _campaign("o" * 32, CampaignStatus.COMPLETED, finished_at_ms=now - 2 * DAY_MS)
    recent = _campaign("r" * 32, CampaignStatus.CANCELLED, finished_at_ms=now - DAY_MS + 1)
    # an old campaign still running is shown, however old
    paused = _campaign("p" * 32, CampaignStatus.PAUSED, updated_at_ms=T0)
    rejected = _campaign("j" * 32, CampaignStatus.REJECTED, updated_at_ms=now - 1000)
    chosen = select_recent([paused, old, recent, rejected, paused], now)
    assert [c.campaign_id for c in chosen] == ["p" * 32, "r" * 32, "j" * 32]
    many = [_campaign(f"{i:032x}", CampaignStatus.IN_PROGRESS) for i in range(MAX_CAMPAIGNS + 5)]
    assert len(select_recent(many, now)) == MAX_CAMPAIGNS
    assert len(select_recent(many, now, limit=3)) == 3


def test_a_source_that_fails_yields_nothing_and_registering_reads_nothing() -> None:
    calls = []

    def broken() -> list[Campaign]:
        calls.append(1)
        raise RuntimeError("table unavailable")

    registry = CollectorRegistry()
    registry.register(CampaignCollector(broken))
    assert calls == []  # describe() answered the names without a read
    text = generate_latest(registry).decode()  # the scrape itself does not fail
    assert calls == [1]
    assert "v2c_ota_campaign_status{" not in text
    assert families([])[0].name == "v2c_ota_campaign_status"


# -- DLQ depth, telemetry age ----------------------------------------------------------------


class _Unreachable(InMemoryDeadLetterStore):
    def depth(self) -> int:
        raise RuntimeError("SQS down")


def test_dlq_depth_per_queue_read_on_scrape_a_failing_one_left_out() -> None:
    ota = InMemoryDeadLetterStore("ota")
    registry = CollectorRegistry()
    registry.register(
        DeadLetterDepthCollector(
            {
                "ota": ota,
                "telemetry": InMemoryDeadLetterStore("telemetry"),
                "ingest": _Unreachable("ingest"),
            }
        )
    )
    record = DeadLetterRecord.from_error(
        queue="ota",
        direction=Direction.INBOUND,
        source="ota_status",
        topic="v2c/v1/eu-west-1/VIN-1/ota/status",
        payload=b"garbage",
        error=ValueError("not an OTAStatus message"),
        attempts=1,
    )
    ota.put(record)
    assert value("v2c_dlq_depth", registry, queue="ota") == 1
    assert value("v2c_dlq_depth", registry, queue="telemetry") == 0
    assert registry.get_sample_value("v2c_dlq_depth", {"queue": "ingest"}) is None


def test_publish_to_stored_is_observed_per_sample_from_its_own_clock_clamped_at_zero() -> None:
    registry = CollectorRegistry()
    metrics = TelemetryMetrics(registry)
    now_ms = int(time.time() * 1000)
    metrics.samples_stored("batch", [now_ms - 120_000, now_ms + 60_000])  # one from the future
    name = "v2c_telemetry_publish_to_stored_seconds"
    assert value(f"{name}_count", registry, topic="batch") == 2
    assert value(f"{name}_bucket", registry, topic="batch", le="0.05") == 1  # the clamped one
    assert 120 <= value(f"{name}_sum", registry, topic="batch") < 180


# -- the simulator's exporter ------------------------------------------------------------------


class _Buffer:
    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __len__(self) -> int:
        return self.depth


def test_the_exporter_counts_and_reads_the_deepest_buffer_on_scrape() -> None:
    metrics = SimMetrics(CollectorRegistry())
    shallow, deep = _Buffer(3), _Buffer(250)
    metrics.track_buffer(shallow)
    metrics.track_buffer(deep)
    metrics.connect_success.inc()
    metrics.connect_failure.inc(2)
    metrics.publish_success.inc(5)
    registry = metrics.registry
    assert value("v2c_local_buffer_depth", registry) == 250
    deep.depth = 0  # flushed: read again when scraped, nothing pushed
    assert value("v2c_local_buffer_depth", registry) == 3
    metrics.untrack_buffer(shallow)
    metrics.untrack_buffer(deep)
    assert value("v2c_local_buffer_depth", registry) == 0
    assert value("v2c_connection_attempts_total", registry, result="success") == 1
    assert value("v2c_connection_attempts_total", registry, result="failure") == 2
    assert value("v2c_telemetry_publish_total", registry, status="success") == 5
    assert value("v2c_telemetry_publish_total", registry, status="failure") == 0  # there at 0
