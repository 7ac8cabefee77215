"""Certificate rotation: the cloud's decisions, the wire messages, the expiry gauge, and the
vehicle's parts (when to rotate, finishing an interrupted write, a lost answer recovered
with the staged key against the cloud's own decision)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from v2c.contract.certificate_renewal import RenewalAnswer, RenewalRequest, RenewalStatus
from v2c.contract.errors import Conflict, InvalidField, InvalidInput, NotFound
from v2c.handlers.vehicles.csr import CsrFacts, check_csr, public_key_sha256
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
from v2c.vehicle_sim.identity.renewal import (
    CertificateRenewal,
    IdentityFiles,
    RenewalConfig,
    RenewalTimeout,
    Renewed,
    build_csr,
    complete_staged,
    is_due,
    key_pem,
)

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


@pytest.mark.parametrize("later_ms", [1, HOUR - 1, HOUR, 10 * DAY])
def test_the_live_key_gets_the_live_certificate_again_inside_the_too_early_window(
    later_ms: int,
) -> None:
    # the answer to k2 was lost; the live certificate is valid for a year, so any
    # new key is too early, but the live key itself is answered with it again
    # (also after the overlap pass revoked the previous one)
    new = cert("k2", 365, "new")
    after = rotated(vehicle(cert("k1", 5, "old")), new, NOW, HOUR)
    if later_ms >= HOUR:
        after = previous_revoked(after, NOW + HOUR)

    again = plan_rotation(after, REGION, csr("k2"), NOW + later_ms)

    assert (again.outcome, again.repeat, again.revoke) == (RotationOutcome.REPEAT, new, None)
    with pytest.raises(Conflict, match="valid for more than 30 days"):
        plan_rotation(after, REGION, csr("k3"), NOW + later_ms)


def test_a_new_key_during_the_overlap_cannot_replace_the_live_certificate() -> None:
    # on the previous certificate's connection (a vehicle that lost its staged key,
    # or whoever stole the previous key), a new key is refused: only the live
    # key's repeat is answered, so the live certificate is never swapped out
    after = rotated(vehicle(cert("k1", 5, "old")), cert("k2", 365, "new"), NOW, HOUR)

    with pytest.raises(Conflict, match="rotation opens"):
        plan_rotation(after, REGION, csr("k3"), NOW + HOUR // 2)
    with pytest.raises(InvalidField, match="previous"):
        plan_rotation(after, REGION, csr("k1"), NOW + HOUR // 2)


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
    # a key staged without its certificate is the pending key: it stays for the
    # next attempt (the cloud may have certified it), and the pair stays as it is
    files.staged().key.write_text("pending")
    assert not complete_staged(files, durable=False)
    assert files.staged().key.read_text() == "pending"
    assert (files.cert.read_text(), files.key.read_text()) == ("new cert", "new key")


# -- the vehicle against the cloud's decision: a lost answer ------------------------------


def signed(ca: ec.EllipticCurvePrivateKey, public: ec.EllipticCurvePublicKey, days: int) -> str:
    """A certificate for `VIN`'s `public` key, ending in `days` days (issuer: the test CA)."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, VIN)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    built = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(ca, hashes.SHA256())
    )
    return built.public_bytes(serialization.Encoding.PEM).decode()


def as_record(pem: str, public: ec.EllipticCurvePublicKey) -> Certificate:
    parsed = x509.load_pem_x509_certificate(pem.encode())
    return Certificate(
        certificate_id=f"{parsed.serial_number:x}",
        pem=pem,
        expires_at_ms=int(parsed.not_valid_after_utc.timestamp() * 1000),
        issued_at_ms=int(parsed.not_valid_before_utc.timestamp() * 1000),
        public_key_sha256=public_key_sha256(public),
    )


class Cloud:
    """The cloud's side in memory, deciding as `RotationService` does: the
    CSR checked, `plan_rotation` on the one record, a certificate issued
    and recorded (`rotated`) or the live one repeated, a refusal answered."""

    def __init__(self, files: IdentityFiles) -> None:
        self.ca = ec.generate_private_key(ec.SECP256R1())
        key = ec.generate_private_key(ec.SECP256R1())
        pem = signed(self.ca, key.public_key(), 5)  # due: 5 days left
        files.key.write_bytes(key_pem(key))
        files.cert.write_text(pem)
        self.record = vehicle(as_record(pem, key.public_key()))
        self.issued: list[str] = []  # certificate ids, in order

    def answer(self, request: RenewalRequest) -> RenewalAnswer:
        now = int(time.time() * 1000)
        try:
            facts = check_csr(request.csr_pem, VIN)
            plan = plan_rotation(self.record, REGION, facts, now)
        except (InvalidInput, NotFound, Conflict) as exc:
            return RenewalAnswer.rejected(request.request_id, exc.detail)
        if plan.outcome is RotationOutcome.REPEAT:
            assert plan.repeat is not None
            live = plan.repeat
        else:
            csr_key = x509.load_pem_x509_csr(request.csr_pem.encode()).public_key()
            assert isinstance(csr_key, ec.EllipticCurvePublicKey)
            live = as_record(signed(self.ca, csr_key, 365), csr_key)
            self.record = rotated(self.record, live, now, HOUR)
            self.issued.append(live.certificate_id)
        return RenewalAnswer.accepted(
            request.request_id, live.pem, live.certificate_id, live.expires_at_ms
        )


class Link:
    """The vehicle's session to `cloud`: each request is decided at once; the
    first `lose` answers never reach the vehicle (the vehicle is answered on
    its `renewal`'s handler otherwise, as its session routes a message)."""

    def __init__(self, cloud: Cloud, lose: int) -> None:
        self.cloud = cloud
        self.lose = lose
        self.renewal: CertificateRenewal | None = None
        self.requests: list[RenewalRequest] = []
        self.reconnects = 0
        self._deliveries: set[asyncio.Task[bool]] = set()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> Awaitable[bool]:
        request = RenewalRequest.decode(payload)
        self.requests.append(request)
        answer = self.cloud.answer(request)
        loop = asyncio.get_running_loop()
        if self.lose:
            self.lose -= 1
        else:
            assert self.renewal is not None
            task = loop.create_task(
                self.renewal.handle_message(self.renewal.answer_topic, answer.encode())
            )
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        acked: asyncio.Future[bool] = loop.create_future()
        acked.set_result(True)
        return acked

    async def reconnect(self, offline: Callable[[], Awaitable[None]] | None = None) -> None:
        self.reconnects += 1


def test_a_lost_answer_is_recovered_with_the_staged_key_after_a_restart(tmp_path: Path) -> None:
    files = IdentityFiles(tmp_path / "cert.pem", tmp_path / "key.pem")
    cloud = Cloud(files)
    old_pair = (files.cert.read_bytes(), files.key.read_bytes())
    link = Link(cloud, lose=1)
    config = RenewalConfig(answer_timeout_s=0.05)  # the wait ends; nothing asserts its length

    async def first_attempt() -> None:
        link.renewal = CertificateRenewal(VIN, REGION, link, files, config=config)
        with pytest.raises(RenewalTimeout):
            await link.renewal.renew()

    async def after_a_restart() -> Renewed:
        # a new module over the same files: what the vehicle builds when it boots
        link.renewal = CertificateRenewal(VIN, REGION, link, files, config=config)
        return await link.renewal.renew()

    # Given the cloud issued a certificate for the CSR and made it live, but the
    # answer never reached the vehicle
    asyncio.run(first_attempt())
    assert len(cloud.issued) == 1
    # Then the vehicle still holds its old pair, and the key it asked with is staged
    assert (files.cert.read_bytes(), files.key.read_bytes()) == old_pair
    assert not files.staged().cert.exists()
    assert (files.staged().key.stat().st_mode & 0o777) == 0o600
    staged = serialization.load_pem_private_key(files.staged().key.read_bytes(), password=None)
    assert isinstance(staged, ec.EllipticCurvePrivateKey)
    live = cloud.record.certificate
    assert live is not None
    assert live.public_key_sha256 == public_key_sha256(staged.public_key())
    # and a fresh key would be refused now (the live certificate has a year left)
    fresh = RenewalRequest("fresh", build_csr(ec.generate_private_key(ec.SECP256R1()), VIN), 0)
    assert cloud.answer(fresh).status is RenewalStatus.REJECTED

    # When the vehicle, restarted, asks again
    renewed = asyncio.run(after_a_restart())

    # Then it asked with the same key and the cloud answered with the same certificate
    keys = {check_csr(r.csr_pem, VIN).public_key_sha256 for r in link.requests}
    assert keys == {live.public_key_sha256}
    assert len(link.requests) == 2
    assert cloud.issued == [renewed.certificate_id] == [live.certificate_id]
    # and the vehicle holds that pair, the staged files gone, and reconnected with it
    written = x509.load_pem_x509_certificate(files.cert.read_bytes())
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert written.public_key() == key.public_key() == staged.public_key()
    assert files.cert.read_text() == live.pem
    assert (files.key.stat().st_mode & 0o777) == 0o600
    assert not files.staged().key.exists()
    assert not files.staged().cert.exists()
    assert link.reconnects == 1
    # the next rotation makes a new key again
    assert CertificateRenewal(VIN, REGION, link, files).due() is False
