"""Certificate rotation: the cloud's decisions, the wire messages, the expiry gauge, and the
vehicle's pure parts (when to rotate, finishing an interrupted write)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from v2c.contract.certificate_renewal import RenewalAnswer, RenewalRequest, RenewalStatus
from v2c.contract.errors import Conflict, InvalidField, InvalidInput, NotFound
from v2c.handlers.vehicles.csr import CsrFacts
from v2c.handlers.vehicles.metrics import CertificateMetrics
from v2c.handlers.vehicles.record import Certificate, VehicleRecord, VehicleStatus
from v2c.handlers.vehicles.rotation import (
    RotationOutcome,
    expiry_counts,
    overlap_ended,
    plan_rotation,
    previous_revoked,
    reported,
    rotated,
)
from v2c.vehicle_sim.identity.renewal import IdentityFiles, complete_staged, is_due

VIN = "VIN-1HGBH41JXMN109186"
REGION = "eu-west-1"
NOW = 1_800_000_000_000
DAY = 24 * 3600 * 1000
HOUR = 3600 * 1000


def cert(key: str, expires_in_days: int, name: str = "live") -> Certificate:
    return Certificate(name, "PEM", NOW + expires_in_days * DAY, NOW - 300 * DAY, key)


def csr(key: str) -> CsrFacts:
    return CsrFacts("CSR", VIN, "EC P-256", key)


def vehicle(live: Certificate | None, **fields: object) -> VehicleRecord:
    return replace(VehicleRecord(VIN, "Accord", REGION, certificate=live), **fields)  # type: ignore[arg-type]


# -- the cloud's decision -------------------------------------------------------------


def test_a_new_key_within_30_days_of_the_end_is_issued() -> None:
    plan = plan_rotation(vehicle(cert("k1", 5)), REGION, csr("k2"), NOW)
    assert plan.outcome is RotationOutcome.ISSUE
    assert plan.revoke is None


@pytest.mark.parametrize(
    ("record", "region", "key", "error"),
    [
        (None, REGION, "k2", NotFound),
        (vehicle(cert("k1", 5), status=VehicleStatus.DECOMMISSIONED), REGION, "k2", Conflict),
        (vehicle(cert("k1", 5)), "us-east-1", "k2", Conflict),
        (vehicle(None), REGION, "k2", Conflict),
        (vehicle(replace(cert("k1", 5), revoked_at_ms=NOW)), REGION, "k2", Conflict),
        (vehicle(cert("k1", 5)), REGION, "k1", InvalidField),  # not a new key
        (vehicle(cert("k1", 31)), REGION, "k2", Conflict),  # too early
    ],
    ids=["unknown", "decommissioned", "other-region", "no-cert", "revoked", "same-key", "early"],
)
def test_what_is_refused(
    record: VehicleRecord | None, region: str, key: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        plan_rotation(record, region, csr(key), NOW)


def test_asking_again_with_the_new_key_repeats_the_certificate_and_the_old_key_is_refused() -> None:
    before = vehicle(cert("k1", 5, "old"))
    new = cert("k2", 365, "new")
    after = rotated(before, new, NOW, HOUR)

    assert after.certificate == new
    assert after.previous_certificate == before.certificate
    assert after.overlap_ends_at_ms == NOW + HOUR
    again = plan_rotation(after, REGION, csr("k2"), NOW + 1)
    assert (again.outcome, again.repeat) == (RotationOutcome.REPEAT, new)
    with pytest.raises(InvalidField, match="previous"):
        plan_rotation(after, REGION, csr("k1"), NOW + 1)


def test_the_old_certificate_is_revoked_once_the_overlap_ends_or_by_the_next_rotation() -> None:
    after = rotated(vehicle(cert("k1", 5, "old")), cert("k2", 30, "new"), NOW, HOUR)

    assert overlap_ended(after, NOW + HOUR - 1) is None
    ended = overlap_ended(after, NOW + HOUR)
    assert ended is not None
    assert ended.certificate_id == "old"
    done = previous_revoked(after, NOW + HOUR)
    assert overlap_ended(done, NOW + 2 * HOUR) is None
    # a decommissioned vehicle's previous one does not wait for the overlap
    gone = replace(after, status=VehicleStatus.DECOMMISSIONED)
    assert overlap_ended(gone, NOW) is not None
    # the next rotation (the new one near its end) revokes a previous one still active
    plan = plan_rotation(after, REGION, csr("k3"), NOW)
    assert plan.outcome is RotationOutcome.ISSUE
    assert plan.revoke is not None
    assert plan.revoke.certificate_id == "old"


def test_the_vehicles_report_of_its_not_after_is_recorded() -> None:
    record = vehicle(cert("k1", 5))
    assert reported(record, 0, NOW) is record
    noted = reported(record, NOW + 5 * DAY, NOW)
    assert (noted.reported_expires_at_ms, noted.reported_at_ms) == (NOW + 5 * DAY, NOW)


def test_the_rotation_fields_survive_the_item_round_trip() -> None:
    after = rotated(vehicle(cert("k1", 5, "old")), cert("k2", 365, "new"), NOW, HOUR)
    after = previous_revoked(reported(after, NOW + 5 * DAY, NOW), NOW + HOUR)
    item = {k: v for k, v in after.to_item().items() if v is not None}  # as `ddb.to_item`
    assert VehicleRecord.from_item(item) == after


# -- detection: the expiry gauge --------------------------------------------------------


def test_the_gauge_counts_active_live_certificates_expiring_within_7_and_30_days() -> None:
    records = [
        vehicle(cert("a", -1)),  # expired: due too
        vehicle(cert("b", 3)),
        vehicle(cert("c", 20)),
        vehicle(cert("d", 200)),
        vehicle(None),  # inventory only
        vehicle(cert("e", 3), status=VehicleStatus.DECOMMISSIONED),
        vehicle(replace(cert("f", 3), revoked_at_ms=NOW)),
    ]
    counts = expiry_counts(records, NOW, (7, 30))
    assert counts == {7: 2, 30: 3}

    registry = CollectorRegistry()
    metrics = CertificateMetrics(registry)
    metrics.set_expiring(counts)
    for days, expected in ((7, 2), (30, 3)):
        value = registry.get_sample_value(
            "v2c_vehicle_certificates_expiring", {"within_days": str(days)}
        )
        assert value == expected


# -- the wire ---------------------------------------------------------------------------


def test_requests_and_answers_round_trip_and_garbage_is_refused() -> None:
    request = RenewalRequest("r1", "-----BEGIN CERTIFICATE REQUEST-----", NOW)
    assert RenewalRequest.decode(request.encode()) == request
    accepted = RenewalAnswer.accepted("r1", "PEM", "id", NOW + 365 * DAY)
    assert RenewalAnswer.decode(accepted.encode()) == accepted
    rejected = RenewalAnswer.rejected("r1", "too early")
    assert RenewalAnswer.decode(rejected.encode()).status is RenewalStatus.REJECTED
    for bad in (b"[]", b"{", b'{"request_id": "r", "csr": "", "current_not_after_ms": 1}'):
        with pytest.raises(InvalidInput):
            RenewalRequest.decode(bad)
    with pytest.raises(InvalidInput):
        RenewalRequest.decode(b"x" * 20_000)


# -- the vehicle ------------------------------------------------------------------------


def test_a_certificate_is_due_inside_the_threshold() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert is_due(now + timedelta(days=6, hours=23), now, 7)
    assert not is_due(now + timedelta(days=7, hours=1), now, 7)
    assert is_due(now - timedelta(days=1), now, 7)  # expired: due (the broker refuses it)
    assert is_due(now + timedelta(days=20), now, 30)  # configurable


def test_a_rotation_interrupted_between_its_renames_is_finished(tmp_path: Path) -> None:
    files = IdentityFiles(tmp_path / "cert.pem", tmp_path / "key.pem")
    files.cert.write_text("old cert")
    files.key.write_text("new key")  # the key moved, then the power went
    files.staged().cert.write_text("new cert")

    assert complete_staged(files, durable=False)
    assert (files.cert.read_text(), files.key.read_text()) == ("new cert", "new key")
    assert not files.staged().cert.exists()
    # a key staged without its certificate is no pair: dropped, the old pair stays
    files.staged().key.write_text("orphan")
    assert not complete_staged(files, durable=False)
    assert not files.staged().key.exists()
    assert files.key.read_text() == "new key"
