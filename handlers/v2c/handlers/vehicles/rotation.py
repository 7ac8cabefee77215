"""Certificate rotation decisions: values in, decisions out (no I/O, no clock).

A vehicle asks over MQTT for a certificate for a NEW key
(`v2c.contract.certificate_renewal`); given the registry's record, the topic
the request came on and the checked CSR (`csr.check_csr`: CN = the topic's
vehicle, P-256 or RSA, self-signature verified), `plan_rotation` decides,
the first row that matches:

| registry holds | CSR's key | decision |
|---|---|---|
| nothing, decommissioned, another region, no live certificate | any | refused |
| a live certificate from a rotation | the live one's | repeat: the live one again (1) |
| a live certificate | the live or the previous one's | refused: needs a new key |
| a live certificate valid beyond `RENEW_WITHIN_MS` | new | refused: too early (2) |
| a live certificate expiring within `RENEW_WITHIN_MS` | new | issue (3) |

(1) The answer was lost (the vehicle's wait ended before the queue's retry,
its connection dropped, it crashed before writing): the vehicle staged the
key before sending its CSR and asks with it until a certificate arrives
(`v2c.vehicle_sim.identity.renewal`). The repeat comes before the window:
the live certificate, issued minutes ago, is valid for a year, and refusing
its own key as too early would leave the vehicle on the old certificate
until the overlap revokes it, locked out for good. Idempotent and safe:
the CSR proves possession of the live key, and the certificate is no secret.
(2) Also during the overlap, on whichever certificate the request came (the
cloud does not see it): a new key then would replace a live certificate
that a stolen PREVIOUS key has no business replacing, and the vehicle never
needs it, since it asks with the staged key. (3) The live one becomes the
previous.

Why the window: a vehicle (or a stolen key) asking every minute would get a
certificate every minute; 30 days before the end (the spec's rotation at 11
months of a 12-month certificate) allows one rotation a year and leaves
the vehicle's 7-day threshold well inside it.

The overlap: the old certificate stays active until `overlap_ends_at_ms`
(`DEFAULT_OVERLAP_MS`, 1 hour after the rotation), so a vehicle that did
not get the answer, or got it but crashed before writing the new pair,
still connects with the old one and asks again (a repeat; the vehicle asks
again within minutes, `identity.schedule`). Then
it is revoked by whichever comes first: the scheduled pass
(`RotationService.end_overlaps`, `overlap_ended`) or the vehicle's next
rotation, which revokes any previous certificate still active
(`RotationPlan.revoke`). The old certificate expires within
`RENEW_WITHIN_MS` of the rotation in any case.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from v2c.contract.errors import Conflict, InvalidField, NotFound
from v2c.handlers.vehicles.csr import CsrFacts
from v2c.handlers.vehicles.record import Certificate, VehicleRecord
from v2c.handlers.vehicles.rules import RENEW_WITHIN_MS

DEFAULT_OVERLAP_MS: Final = 3600 * 1000
DAY_MS: Final = 24 * 3600 * 1000


class RotationOutcome(StrEnum):
    ISSUE = "issue"
    REPEAT = "repeat"


@dataclass(frozen=True, slots=True)
class RotationPlan:
    outcome: RotationOutcome
    repeat: Certificate | None = None  # REPEAT: the certificate to answer with
    revoke: Certificate | None = None  # ISSUE: an earlier previous one still active


def plan_rotation(
    record: VehicleRecord | None, region: str, csr: CsrFacts, now_ms: int
) -> RotationPlan:
    """The decision of the module docstring's table; `NotFound`, `Conflict`
    or `InvalidField` say why not (the vehicle is answered with it)."""
    if record is None:
        raise NotFound(f"vehicle {csr.common_name} is not registered")
    if not record.active:
        raise Conflict(f"vehicle {record.vehicle_id} is decommissioned")
    if record.region != region:
        raise Conflict(f"vehicle {record.vehicle_id} is registered in {record.region}")
    live = record.certificate
    if live is None or live.revoked_at_ms:
        raise Conflict(f"vehicle {record.vehicle_id} holds no live certificate: register it")
    previous = record.previous_certificate
    if csr.public_key_sha256 == live.public_key_sha256:
        if previous is not None and previous.public_key_sha256 != live.public_key_sha256:
            return RotationPlan(RotationOutcome.REPEAT, repeat=live)
        raise InvalidField("csr", "a rotation needs a new key, not the current certificate's")
    if previous is not None and csr.public_key_sha256 == previous.public_key_sha256:
        raise InvalidField("csr", "a rotation needs a new key, not a previous certificate's")
    if live.expires_at_ms - now_ms > RENEW_WITHIN_MS:
        days = RENEW_WITHIN_MS // DAY_MS
        raise Conflict(
            f"certificate {live.certificate_id} is valid for more than {days} days: "
            f"rotation opens {days} days before it expires"
        )
    still_active = previous if previous is not None and not previous.revoked_at_ms else None
    return RotationPlan(RotationOutcome.ISSUE, revoke=still_active)


def rotated(
    record: VehicleRecord, certificate: Certificate, now_ms: int, overlap_ms: int
) -> VehicleRecord:
    """The record once `certificate` is live and the old one overlaps with it."""
    previous = record.previous_certificate
    if previous is not None and not previous.revoked_at_ms:
        previous = replace(previous, revoked_at_ms=now_ms)  # `RotationPlan.revoke`: revoked
    old = record.certificate
    return replace(
        record,
        certificate=certificate,
        previous_certificate=old if old is not None else previous,
        overlap_ends_at_ms=now_ms + overlap_ms,
    )


def reported(record: VehicleRecord, not_after_ms: int, now_ms: int) -> VehicleRecord:
    """The record with the vehicle's report of the not-after it holds (0: none)."""
    if not not_after_ms:
        return record
    return replace(record, reported_expires_at_ms=not_after_ms, reported_at_ms=now_ms)


def overlap_ended(record: VehicleRecord, now_ms: int) -> Certificate | None:
    """The previous certificate to revoke now: its overlap ended (or the
    vehicle was decommissioned) and it is not revoked yet."""
    previous = record.previous_certificate
    if previous is None or previous.revoked_at_ms:
        return None
    if record.active and now_ms < record.overlap_ends_at_ms:
        return None
    return previous


def previous_revoked(record: VehicleRecord, now_ms: int) -> VehicleRecord:
    previous = record.previous_certificate
    if previous is None or previous.revoked_at_ms:
        return record
    return replace(record, previous_certificate=replace(previous, revoked_at_ms=now_ms))


def _live_expiry_ms(record: VehicleRecord) -> int | None:
    """When the live certificate of an active vehicle expires (None: no such certificate)."""
    live = record.certificate
    if not record.active or live is None or live.revoked_at_ms:
        return None
    return live.expires_at_ms


def soonest_expiry_ms(
    records: list[VehicleRecord], now_ms: int, soonest: int | None = None
) -> int | None:
    """When the first unexpired live certificate of an active vehicle expires
    (None: no such certificate), starting from `soonest` (the pages read
    before). Expired ones are left out: `expired_count` counts them, so one
    parked vehicle with a lapsed certificate neither keeps the expiry gauge
    negative for good nor hides the next vehicle's approaching end."""
    for record in records:
        expires = _live_expiry_ms(record)
        if expires is None or expires <= now_ms:
            continue
        if soonest is None or expires < soonest:
            soonest = expires
    return soonest


def expired_count(records: list[VehicleRecord], now_ms: int) -> int:
    """Active vehicles whose live certificate has expired (the broker refuses them)."""
    return sum(
        1 for r in records if (expires := _live_expiry_ms(r)) is not None and expires <= now_ms
    )


def expiry_counts(
    records: list[VehicleRecord], now_ms: int, within_days: tuple[int, ...]
) -> dict[int, int]:
    """Active vehicles whose live certificate expires within each of
    `within_days` days (expired ones included): what the expiry gauge shows."""
    counts = dict.fromkeys(within_days, 0)
    for record in records:
        live = record.certificate
        if not record.active or live is None or live.revoked_at_ms:
            continue
        for days in within_days:
            if live.expires_at_ms - now_ms <= days * DAY_MS:
                counts[days] += 1
    return counts
