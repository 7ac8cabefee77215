"""Certificate rotation over MQTT: a vehicle's CSR in, its new certificate out on its downlink.

One request (`.../certificate/renew`, `v2c.contract.certificate_renewal`):

1. the CSR checked as onboarding checks it (`csr.check_csr`: CN = the
   topic's vehicle, whose topic the broker vouched for; P-256 or RSA;
   possession proved), the registry read, the decision taken (`rotation`);
2. the certificate issued through the same `CertificateIssuer` onboarding
   uses (AWS IoT Core's CreateCertificateFromCsr in AWS, the stack's CA
   locally), written into the record as the live one, the old one kept as
   the previous until the overlap ends, the vehicle's reported not-after
   recorded (a conditional write: a record that changed meanwhile is read
   again on the retry, and the certificate issued for it is revoked);
3. the answer published on the vehicle's `.../certificate/issued`.

A refusal (bad CSR, unknown or decommissioned vehicle, too early) is an
answer too, so the vehicle stops waiting; it is not a failure of the
record. What a retry can mend (the store, the issuer or the publish down)
raises, and the queue delivers the record again: issuing is idempotent for
a given key (a second request for the live key, by the same CSR or another,
is answered with the live certificate, also inside the 30-day window), so a
retry after a lost write or answer issues nothing twice, and neither does
the vehicle's own retry (it reuses the key it staged before its first CSR).

The expiry pass (`end_overlaps`, the function's schedule): revokes every
previous certificate whose overlap ended and counts the certificates
expiring within 7 and 30 days into the gauges of `vehicles.metrics`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from v2c.contract.certificate_renewal import RenewalAnswer, RenewalRequest
from v2c.contract.errors import Conflict, InvalidInput, NotFound, TransientError, V2CError
from v2c.contract.events import InboundEvent
from v2c.contract.topics import Domain, Topic
from v2c.handlers.vehicles import rotation
from v2c.handlers.vehicles.csr import CsrFacts, check_csr
from v2c.handlers.vehicles.metrics import WINDOWS_DAYS, CertificateMetrics
from v2c.handlers.vehicles.ports import CertificateIssuer, IssueRequest, revoke_quietly
from v2c.handlers.vehicles.record import Certificate, VehicleRecord
from v2c.handlers.vehicles.repository import InventoryRepository, Key
from v2c.handlers.vehicles.rules import VehicleQuery

logger = logging.getLogger(__name__)

RENEW_KIND: Final = "renew"
ISSUED_KIND: Final = "issued"
PASS_PAGE: Final = 1_000
# What refuses a request for good: the vehicle is answered, the record is done.
REFUSALS: Final = (InvalidInput, NotFound, Conflict)


class AnswerSink(Protocol):
    """Publishes to a vehicle's downlink (the OTA notification sinks fit)."""

    def send(
        self, topic: str, payload: bytes, *, correlation_id: str, context: dict[str, Any]
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class PassSummary:
    revoked: list[str] = field(default_factory=list)  # certificate ids
    expiring: dict[int, int] = field(default_factory=dict)  # within days -> vehicles
    evaluated: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "revoked": self.revoked,
            "expiring": {str(k): v for k, v in self.expiring.items()},
            "evaluated": self.evaluated,
        }


class RotationService:
    def __init__(
        self,
        repository: InventoryRepository,
        issuer: CertificateIssuer,
        answers: AnswerSink,
        *,
        metrics: CertificateMetrics | None = None,
        clock: Callable[[], float] = time.time,
        overlap_ms: int = rotation.DEFAULT_OVERLAP_MS,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_close = on_close
        self._repo = repository
        self._issuer = issuer
        self._answers = answers
        self._metrics = metrics
        self._clock = clock
        self._overlap_ms = overlap_ms

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def close(self) -> None:
        """Release what the composition root gave it (a local publisher)."""
        self._on_close()

    # -- one request ------------------------------------------------------------------

    def handle(self, event: Mapping[str, Any]) -> RenewalAnswer:
        """Answer one IoT event from `.../certificate/renew`; raises what a
        retry can mend (`TransientError`), and for an event that is none."""
        inbound = InboundEvent.parse(event)
        topic = inbound.topic
        if topic.domain is not Domain.CERTIFICATE or topic.kind != RENEW_KIND:
            raise InvalidInput(f"{topic} is not a certificate renewal topic")
        request_id = ""
        try:
            request = RenewalRequest.decode(inbound.payload)
            request_id = request.request_id
            answer = self._rotate(topic, request)
        except REFUSALS as exc:
            answer = RenewalAnswer.rejected(request_id, exc.detail)
            self._count("rejected")
            logger.warning(
                "certificate rotation refused",
                extra={"vehicle_id": topic.vehicle_id, "reason": exc.detail},
            )
        self._answer(topic, answer)
        return answer

    def _rotate(self, topic: Topic, request: RenewalRequest) -> RenewalAnswer:
        csr = check_csr(request.csr_pem, topic.vehicle_id)
        now = self._now_ms()
        record = self._repo.get(topic.vehicle_id)
        try:
            plan = rotation.plan_rotation(record, topic.region, csr, now)
        except REFUSALS:
            if record is not None and record.active:
                self._note_report(record, request.current_not_after_ms, now)
            raise
        assert record is not None  # `plan_rotation` refused otherwise
        if plan.outcome is rotation.RotationOutcome.REPEAT:
            assert plan.repeat is not None
            self._note_report(record, request.current_not_after_ms, now)
            self._count("repeated")
            return self._accepted(request.request_id, plan.repeat)
        issued = self._issue(record, csr)
        after = rotation.rotated(record, issued, now, self._overlap_ms)
        after = rotation.reported(after, request.current_not_after_ms, now)
        (stored,) = self._repo.save([(record, after)])
        if stored is None:
            revoke_quietly(self._issuer, record.vehicle_id, issued)
            raise TransientError(f"{record.vehicle_id} changed while its certificate rotated")
        if plan.revoke is not None:
            revoke_quietly(self._issuer, record.vehicle_id, plan.revoke)
        self._count("issued")
        logger.info(
            "certificate rotated",
            extra={
                "vehicle_id": record.vehicle_id,
                "certificate_id": issued.certificate_id,
                "previous_certificate_id": record.certificate.certificate_id
                if record.certificate is not None
                else None,
                "overlap_ends_at_ms": after.overlap_ends_at_ms,
            },
        )
        return self._accepted(request.request_id, issued)

    def _issue(self, record: VehicleRecord, csr: CsrFacts) -> Certificate:
        request = IssueRequest(
            record.vehicle_id,
            csr.pem,
            csr.public_key_sha256,
            record.model,
            record.region,
            record.year,
        )
        (issued,) = self._issuer.issue([request])
        if isinstance(issued, V2CError):
            raise issued
        return issued

    @staticmethod
    def _accepted(request_id: str, certificate: Certificate) -> RenewalAnswer:
        return RenewalAnswer.accepted(
            request_id, certificate.pem, certificate.certificate_id, certificate.expires_at_ms
        )

    def _note_report(self, record: VehicleRecord, not_after_ms: int, now_ms: int) -> None:
        """Record the vehicle's reported not-after; best effort (the next request reports again)."""
        after = rotation.reported(record, not_after_ms, now_ms)
        if after is not record:
            self._repo.save([(record, after)])

    def _answer(self, topic: Topic, answer: RenewalAnswer) -> None:
        downlink = str(Topic(topic.region, topic.vehicle_id, Domain.CERTIFICATE, ISSUED_KIND))
        delivered = self._answers.send(
            downlink,
            answer.encode(),
            correlation_id=answer.request_id or "certificate-renewal",
            context={"vehicle_id": topic.vehicle_id, "request_id": answer.request_id},
        )
        if not delivered:  # dead-lettered by the sink; the vehicle asks again anyway
            raise TransientError(f"the renewal answer to {topic.vehicle_id} was not published")

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.rotations.labels(outcome=outcome).inc()

    # -- the expiry pass --------------------------------------------------------------

    def end_overlaps(self) -> PassSummary:
        """Revoke previous certificates whose overlap ended; set the expiry
        gauges. One read of the registry (a page at a time)."""
        now = self._now_ms()
        revoked: list[str] = []
        counts = dict.fromkeys(WINDOWS_DAYS, 0)
        soonest: int | None = None
        expired = 0
        evaluated = 0
        start: Key | None = None
        while True:
            page = self._repo.page(VehicleQuery(), PASS_PAGE, start)
            evaluated += len(page.records)
            for days, count in rotation.expiry_counts(page.records, now, WINDOWS_DAYS).items():
                counts[days] += count
            soonest = rotation.soonest_expiry_ms(page.records, now, soonest)
            expired += rotation.expired_count(page.records, now)
            for record in page.records:
                self._end_overlap(record, now, revoked)
            if page.next_key is None:
                break
            start = page.next_key
        if self._metrics is not None:
            self._metrics.set_expiring(counts, soonest, now, expired=expired)
        return PassSummary(revoked, counts, evaluated)

    def _end_overlap(self, record: VehicleRecord, now: int, revoked: list[str]) -> None:
        old = rotation.overlap_ended(record, now)
        if old is None or not revoke_quietly(self._issuer, record.vehicle_id, old):
            return
        # Lost to a concurrent write: the next pass finds it still unrevoked
        # in the record and revokes again (idempotent at the issuer).
        self._repo.save([(record, rotation.previous_revoked(record, now))])
        revoked.append(old.certificate_id)
        if self._metrics is not None:
            self._metrics.revoked.inc()
