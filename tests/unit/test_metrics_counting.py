"""What the issue #16 metrics count, after review: one outcome per update
attempt (a campaign rollback's revert apart), certificate expiry without the
expired, a signer probe past its cache, a capped dead-letter listing, and a
signature-verification failure counted once its audit is out."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from ota_service_harness import Ota, S
from prometheus_client import REGISTRY, CollectorRegistry

from v2c.contract.errors import SigningUnavailable, TransientError
from v2c.handlers.dlq.store import S3DeadLetterStore
from v2c.handlers.ota import metrics as ota_metrics
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.handlers.ota.events import RecordingEventPublisher
from v2c.handlers.ota.updates.record import UpdateKind, VehicleUpdate
from v2c.handlers.signing.base import Signer, SigningPolicy
from v2c.handlers.signing.metrics import SigningMetrics
from v2c.handlers.vehicles import rotation
from v2c.handlers.vehicles.metrics import CertificateMetrics
from v2c.handlers.vehicles.record import Certificate, VehicleRecord, VehicleStatus
from v2c.handlers.vehicles.repository import Key, Page
from v2c.handlers.vehicles.rotation_service import RotationService
from v2c.infra.local.api_metrics import probe_signer_every
from v2c.v1.ota_pb2 import OTAStatus

OUTCOMES = "v2c_ota_update_outcomes_total"
NOW = 1_800_000_000_000
DAY = 86_400_000


def value(name: str, registry: CollectorRegistry = REGISTRY, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# -- 1. one update attempt, one outcome ---------------------------------------------------


def _update(state: UpdateState, reason: str = "") -> VehicleUpdate:
    return VehicleUpdate(
        "VIN-1", "u", UpdateKind.CAMPAIGN, "f", "2.0.0", state=state, reason=reason
    )


def test_a_change_between_end_states_is_no_second_outcome_but_a_revert_is_its_own() -> None:
    timed_out, completed = _update(UpdateState.TIMED_OUT), _update(UpdateState.COMPLETED)
    cancelled = _update(UpdateState.CANCELLED)
    # the vehicle's late final word after the cloud's timeout or cancel: counted already
    assert ota_metrics.ended(timed_out, completed) is None
    assert ota_metrics.ended(cancelled, _update(UpdateState.ROLLED_BACK, "BOOT_FAILURE")) is None
    # a campaign rollback reverting a completed update: `reverted`, in no rate
    rolled_back = _update(UpdateState.ROLLED_BACK)
    assert ota_metrics.ended(completed, rolled_back) == ("reverted", "NONE")
    # a retry is a new attempt: failed -> pending is nothing, pending -> failed counts
    failed = _update(UpdateState.FAILED, "FLASH_WRITE_FAILURE")
    pending = _update(UpdateState.PENDING)
    assert ota_metrics.ended(failed, pending) is None
    assert ota_metrics.ended(pending, failed) == ("failed", "FLASH_WRITE_FAILURE")


def test_rolling_back_a_healthy_campaign_counts_reverted_never_rolled_back() -> None:
    ota = Ota()
    ota.package("1.0.0")
    campaign_id = ota.campaign(3, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    completed = value(OUTCOMES, outcome="completed", reason="NONE")
    for vehicle in ota.notified():
        ota.finish(vehicle, update_id, ok=True)
    assert value(OUTCOMES, outcome="completed", reason="NONE") == completed + 3
    before = {
        outcome: sum(
            s.value
            for m in REGISTRY.collect()
            if m.name == "v2c_ota_update_outcomes"
            for s in m.samples
            if s.name == OUTCOMES and s.labels["outcome"] == outcome
        )
        for outcome in ("completed", "rolled_back", "reverted")
    }

    ota.campaigns.rollback(campaign_id, reason="field reports")
    for note in ota.notifier.sent[3:]:
        ota.finish(note.vehicle_id, note.update_id, ok=True, to="1.0.0")
        ota.report(note.vehicle_id, note.update_id, S.COMPLETED, installed="1.0.0")  # redelivery

    counters = ota.campaigns.get(campaign_id).counters
    assert (counters.completed, counters.rolled_back) == (0, 3)  # the campaign's own view
    after = value(OUTCOMES, outcome="reverted", reason="NONE")
    assert after == before["reverted"] + 3
    assert value(OUTCOMES, outcome="completed", reason="NONE") == completed + 3
    rolled_back = sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "v2c_ota_update_outcomes"
        for s in m.samples
        if s.name == OUTCOMES and s.labels["outcome"] == "rolled_back"
    )
    assert rolled_back == before["rolled_back"]


def test_reverted_exists_at_zero_and_writes_its_own_emf_metric(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reverted = {"outcome": "reverted", "reason": "NONE"}
    assert REGISTRY.get_sample_value(OUTCOMES, reverted) is not None  # there at 0
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "v2c-ota-status")
    ota_metrics.updates_ended([("reverted", "NONE"), ("completed", "NONE")])
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    names = {m["Name"] for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    # its own EMF metric: no alarm reads it as rolled back
    assert names == {"UpdatesReverted", "UpdatesCompleted"}


# -- 2. certificate expiry without the expired ----------------------------------------------


def _cert(days: float, name: str = "c") -> Certificate:
    return Certificate(name, "PEM", NOW + int(days * DAY), NOW - 300 * DAY, "k")


def _vehicle(number: int, certificate: Certificate | None, **fields: Any) -> VehicleRecord:
    record = VehicleRecord(f"VIN-{number:017d}", "Accord", "eu-west-1", certificate=certificate)
    return replace(record, **fields)


FLEET = [
    _vehicle(1, _cert(-40)),  # parked for weeks, certificate lapsed
    _vehicle(2, _cert(-0.5)),
    _vehicle(3, _cert(3)),  # the soonest that still connects
    _vehicle(4, _cert(200)),
    _vehicle(5, _cert(-9), status=VehicleStatus.DECOMMISSIONED),  # not active
    _vehicle(6, replace(_cert(-9), revoked_at_ms=NOW)),  # not live
    _vehicle(7, None),
]


def test_the_soonest_expiry_skips_expired_certificates_and_counts_them_apart() -> None:
    assert rotation.soonest_expiry_ms(FLEET, NOW) == NOW + 3 * DAY
    assert rotation.expired_count(FLEET, NOW) == 2
    assert rotation.soonest_expiry_ms(FLEET[:2], NOW) is None  # only expired ones: no series
    # across pages: the soonest so far carries over
    assert rotation.soonest_expiry_ms(FLEET[3:4], NOW, NOW + 3 * DAY) == NOW + 3 * DAY


class _Pages:
    """An inventory read in pages of two, for the expiry pass."""

    def __init__(self, records: list[VehicleRecord]) -> None:
        self._records = records

    def page(self, _query: Any, _limit: int, start: Key | None = None) -> Page:
        at = int(start["at"]) if start else 0
        rest = at + 2 < len(self._records)
        return Page(self._records[at : at + 2], {"at": at + 2} if rest else None, False)


def test_the_expiry_pass_sets_the_expired_count_and_the_soonest_unexpired(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "v2c-vehicle-certificates")
    registry = CollectorRegistry()
    metrics = CertificateMetrics(registry)
    service = RotationService(
        cast(Any, _Pages(FLEET)),
        cast(Any, None),
        cast(Any, None),
        metrics=metrics,
        clock=lambda: NOW / 1000,
    )
    service.end_overlaps()
    assert value("v2c_vehicle_certificates_expired", registry) == 2
    assert value("v2c_certificate_expiry_days", registry, subject="vehicle_min") == 3
    # the 7-day count still includes the expired (the CloudWatch alarm subtracts them)
    assert value("v2c_vehicle_certificates_expiring", registry, within_days="7") == 3
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    levels = {k: v[0] if isinstance(v, list) else v for k, v in line.items()}
    assert (levels["CertificatesExpired"], levels["CertificatesExpiringWithin7Days"]) == (2, 3)
    assert line["service"] == "vehicles"


# -- 3. the signer's probe reaches the backend past the cache ------------------------------


class _FlakySigner(Signer):
    backend = "kms"

    def __init__(self) -> None:
        super().__init__(key_id="k", policy=SigningPolicy(timeout_s=None, attempts=1))
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.down = False
        self.key_reads = 0

    def _sign(self, message: bytes) -> bytes:
        raise AssertionError("a probe signs nothing")

    def _public_key_der(self) -> bytes:
        self.key_reads += 1
        if self.down:
            raise ConnectionError("KMS endpoint unreachable")
        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def test_a_probe_sets_availability_back_after_a_transient_failure() -> None:
    metrics = SigningMetrics(CollectorRegistry())
    signer = _FlakySigner()
    signer._on_failure = metrics.failed
    signer.on_success = metrics.succeeded
    signer.public_key()  # cached from here on
    signer.down = True
    with pytest.raises(SigningUnavailable):
        signer.probe()
    assert value("v2c_signing_available", metrics.registry, backend="kms") == 0
    assert metrics.failure_count("kms", operation="probe") == 1
    signer.down = False
    reads = signer.key_reads
    signer.probe()
    assert signer.key_reads == reads + 1  # reached the backend, the cache notwithstanding
    assert value("v2c_signing_available", metrics.registry, backend="kms") == 1


def test_the_api_probes_the_signer_on_its_own_thread_until_stopped() -> None:
    signer = _FlakySigner()
    probed = threading.Event()
    calls: list[int] = []

    def succeeded(_backend: str) -> None:
        calls.append(1)
        if len(calls) >= 2:
            probed.set()

    signer.on_success = succeeded
    services = cast(Any, type("S", (), {"deps": type("D", (), {"signer": signer})})())
    stop = threading.Event()
    thread = threading.Thread(target=probe_signer_every, args=(services, stop, 0.01))
    thread.start()
    try:
        assert probed.wait(60)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert signer.key_reads >= 2


# -- 4. the telemetry dead-letter depth is a capped listing ---------------------------------


class _Listing:
    """list_objects_v2 pages of 1,000 keys, served one at a time."""

    def __init__(self, keys: int) -> None:
        self.keys = keys
        self.pages_served = 0

    def get_paginator(self, _operation: str) -> _Listing:
        return self

    def paginate(self, *, Bucket: str, Prefix: str) -> Iterator[dict[str, Any]]:  # noqa: N803
        for start in range(0, self.keys, 1000):
            self.pages_served += 1
            end = min(start + 1000, self.keys)
            yield {"Contents": [{"Key": f"{Prefix}{i:08d}.json"} for i in range(start, end)]}


def test_the_s3_depth_stops_counting_at_the_cap() -> None:
    big = _Listing(50_000)
    store = S3DeadLetterStore("telemetry", cast(Any, big), "bucket")
    assert store.depth() == S3DeadLetterStore.DEPTH_CAP == 10_001  # "at least"
    assert big.pages_served == 11  # not the 50 pages of the whole prefix
    small = _Listing(2_345)
    assert S3DeadLetterStore("telemetry", cast(Any, small), "bucket").depth() == 2_345
    assert S3DeadLetterStore("telemetry", cast(Any, _Listing(5000)), "b").depth(cap=3) == 3


# -- 5. a signature-verification failure counts once its audit is out -------------------------


@dataclass
class _FailingOnce(RecordingEventPublisher):
    """The event bus, unavailable for the next `failures` publishes."""

    failures: int = 0

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise TransientError("event bus unavailable")
        super().publish(detail_type, detail)


def test_an_unverified_report_whose_audit_is_retried_counts_once() -> None:
    events = _FailingOnce()
    ota = Ota(events=events)
    campaign_id = ota.campaign(2, deployment_strategy="immediate")
    update_id = ota.campaigns.start(campaign_id).release.update_id
    events.failures = 1
    name = "v2c_ota_signature_verification_failures_total"
    before = value(name, reason="NOTIFICATION_UNVERIFIED")
    report = OTAStatus(
        vehicle_id=ota.notified()[0],
        update_id=update_id,
        state=S.FAILED,
        sequence=1,
        notification_unverified=True,
    )
    [first] = ota.status.apply_batch([report])
    assert isinstance(first, TransientError)  # answered with the error: it comes back
    assert value(name, reason="NOTIFICATION_UNVERIFIED") == before
    [second] = ota.status.apply_batch([report])
    assert not isinstance(second, Exception)
    assert value(name, reason="NOTIFICATION_UNVERIFIED") == before + 1
    assert ota.event_types().count("update.unverified_notification") == 1
