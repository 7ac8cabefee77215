"""Notifications that fail verification cannot touch a real update (issue #11).

A forged notification that reuses a real update id used to end that update:
the vehicle sent a final REJECTED under the update's own numbering and the
cloud ignored the genuine update's reports from then on. Now such a message
is answered by a report flagged `notification_unverified`, numbered apart,
and nothing else: the update's memo, sequence, outcome, the active update and
the duplicate detection stay as they were, so the genuine notification,
before or after, is installed. Every report also goes through the cloud's
state machine the way the status ingest applies it (see the harness).
"""

from __future__ import annotations

import pytest
from ota_agent_harness import (
    SIZE,
    VIN,
    Harness,
    of_type,
    other_signer,
    reason_name,
    signer,
    state_name,
)

from v2c.contract.notification import signed_part_sha256
from v2c.handlers.ota.domain.update_state import Outcome, UpdateState
from v2c.v1.ota_pb2 import OTAStatus, OTAUpdateAvailable
from v2c.vehicle_sim.ota.agent.effects import (
    CancelDownload,
    DiscardPackage,
    InstallStep,
    Report,
    SaveState,
    StartDownload,
)
from v2c.vehicle_sim.ota.agent.memory import Phase
from v2c.vehicle_sim.ota.agent.reports import report_message_id

S = OTAStatus


def forged(h: Harness, *, claim_key: bool = True, **overrides: object) -> OTAUpdateAvailable:
    """A notification for a real update id (upd-1 unless overridden), signed
    with a key the vehicle does not trust, claiming the trusted key's id."""
    n = h.notification(sign_with=other_signer(), version="9.9.9", **overrides)  # type: ignore[arg-type]
    if claim_key:
        n.key_id = signer().key_id
    return n


def flagged(effects: list[object]) -> OTAStatus:
    [report] = [e for e in effects if isinstance(e, Report)]
    status = report.status
    assert status.notification_unverified
    assert (state_name(status), reason_name(status)) == (
        "REJECTED",
        "SIGNATURE_VERIFICATION_FAILED",
    )
    return status


def genuine_states(h: Harness, update_id: str = "upd-1") -> list[str]:
    return [state_name(s) for s in h.reports(update_id) if not s.notification_unverified]


def complete(h: Harness, update_id: str = "upd-1", version: str = "2.5.0") -> None:
    h.download(update_id)
    h.install(update_id)
    h.boot(version, trial=True)
    h.verify(update_id)
    h.commit(update_id)
    h.conditions = h.conditions.with_(installed_version=version)


@pytest.mark.parametrize("claim_key", [True, False])
def test_forged_before_genuine_leaves_the_real_update_alone_and_it_installs(
    h: Harness, claim_key: bool
) -> None:
    genuine = h.notification()
    h.cloud_sends(genuine)  # the cloud's record says notified; the message is on its way
    fake = forged(h, claim_key=claim_key, message_id=genuine.header.message_id)
    # When the forged one arrives first
    effects = h.forge(fake)
    report = flagged(effects)
    assert [type(e) for e in effects] == [SaveState, Report]  # nothing else happens
    assert (report.update_id, report.sequence) == ("upd-1", 1)  # numbered apart
    assert report.header.message_id != report_message_id(VIN, "upd-1", 1)
    assert report.notification_sha256 == signed_part_sha256(
        fake.manifest, fake.signature, fake.key_id
    )
    assert h.agent.last_sequence("upd-1") == 0  # the real update's numbering untouched
    assert h.agent.active_update_id is None
    assert h.cloud["upd-1"].state is UpdateState.NOTIFIED  # the cloud's record untouched
    assert h.unverified[-1][1] is Outcome.UNVERIFIED
    # Then the genuine one is taken, numbered from 1, and installed
    h.redeliver(genuine)
    assert genuine_states(h) == ["ACCEPTED", "DOWNLOADING"]
    assert [s.sequence for s in h.reports("upd-1") if not s.notification_unverified] == [1, 2]
    complete(h)
    assert genuine_states(h)[-1] == "COMPLETED"
    assert h.cloud["upd-1"].state is UpdateState.COMPLETED


def test_forged_during_genuine_changes_nothing_and_the_update_completes(h: Harness) -> None:
    h.notify()
    h.progress("upd-1", SIZE // 2)
    sequence = h.agent.last_sequence("upd-1")
    effects = h.forge(forged(h))
    report = flagged(effects)
    assert report.update_id == "upd-1"
    assert not of_type(effects, StartDownload)
    assert not of_type(effects, CancelDownload)
    assert not of_type(effects, DiscardPackage)
    assert (h.agent.active_update_id, h.agent.phase) == ("upd-1", Phase.DOWNLOADING)
    assert h.agent.last_sequence("upd-1") == sequence
    assert h.cloud["upd-1"].state is UpdateState.DOWNLOADING
    assert h.cloud["upd-1"].last_sequence == sequence
    complete(h)
    assert genuine_states(h)[-1] == "COMPLETED"
    assert h.cloud["upd-1"].state is UpdateState.COMPLETED


def test_a_forged_copy_of_the_active_update_with_another_url_is_not_taken(h: Harness) -> None:
    genuine = h.notification()
    h.notify(genuine)
    copy = h.notification(url="https://attacker.example/pkg")
    copy.manifest = genuine.manifest
    copy.signature = genuine.signature[:-1] + bytes([genuine.signature[-1] ^ 1])
    effects = h.forge(copy)
    flagged(effects)
    assert not of_type(effects, StartDownload)  # the genuine URL stays


def test_a_forged_second_update_is_not_refused_update_in_progress(h: Harness) -> None:
    h.notify()  # upd-1 active
    genuine_2 = h.notification(update_id="upd-2", version="2.6.0")
    h.cloud_sends(genuine_2)
    report = flagged(h.forge(forged(h, update_id="upd-2")))
    assert report.update_id == "upd-2"
    assert h.cloud["upd-2"].state is UpdateState.NOTIFIED  # not REJECTED UPDATE_IN_PROGRESS
    assert h.agent.last_sequence("upd-2") == 0
    # A genuine second update while one is active is still refused, as before
    h.redeliver(genuine_2)
    assert [(state_name(s), reason_name(s)) for s in h.reports("upd-2")][-1] == (
        "REJECTED",
        "UPDATE_IN_PROGRESS",
    )


def test_a_flood_of_forged_notifications_does_not_erase_a_genuine_delivery(h: Harness) -> None:
    genuine = h.notification()
    h.notify(genuine)
    for i in range(h.policy.remembered_notifications + 50):
        h.forge(forged(h, message_id=i.to_bytes(16, "big")))
    assert h.redeliver(genuine) == []  # still recognised: processed once
    assert h.agent.phase is Phase.DOWNLOADING
    unverified = [s.sequence for s in h.reports() if s.notification_unverified]
    assert unverified == list(range(1, h.policy.remembered_notifications + 51))


def test_the_same_forged_delivery_is_reported_once_and_numbering_survives_a_restart(
    h: Harness,
) -> None:
    first = forged(h)
    assert flagged(h.forge(first)).sequence == 1
    assert h.forge(first) == []
    h.restart()
    assert h.forge(first) == []
    assert flagged(h.forge(forged(h, update_id="upd-7"))).sequence == 2


def test_an_unverified_report_confirms_nothing_about_the_update_it_names(h: Harness) -> None:
    h.notify()  # ACCEPTED 1, DOWNLOADING 2: the last report, unconfirmed
    h.forge(forged(h, message_id=b"\x01" * 16))
    second = flagged(h.forge(forged(h, message_id=b"\x02" * 16)))
    assert second.sequence == h.agent.last_sequence("upd-1") == 2  # same number, other space
    h.agent.on_report_delivered("upd-1", second.sequence, unverified=True)
    effects = h.restart()
    resent = [e for e in effects if isinstance(e, Report) and e.redelivery]
    assert [(state_name(e.status), e.status.sequence) for e in resent] == [("DOWNLOADING", 2)]


def test_the_clouds_own_notification_failing_on_the_vehicle_is_recorded_as_rejected(
    h: Harness,
) -> None:
    # The cloud signed with a key this vehicle does not hold (a key store
    # that lost a rotation): the report carries the digest of exactly what
    # the cloud sent, so the cloud records the rejection as its conclusion.
    sent = h.notification(sign_with=other_signer())
    report = flagged(h.notify(sent))
    assert report.notification_sha256 == signed_part_sha256(
        sent.manifest, sent.signature, sent.key_id
    )
    assert h.cloud["upd-1"].state is UpdateState.REJECTED
    assert h.cloud["upd-1"].decided_by_cloud
    assert h.cloud["upd-1"].last_sequence == 0
    # The cloud retries with a key the vehicle trusts: numbered from 1, installed
    h.notify()
    assert genuine_states(h) == ["ACCEPTED", "DOWNLOADING"]
    complete(h)
    assert h.cloud["upd-1"].state is UpdateState.COMPLETED


def test_reports_of_unverified_notifications_never_reuse_a_genuine_message_id(
    h: Harness,
) -> None:
    h.notify()
    for i in range(5):
        h.forge(forged(h, message_id=bytes([i + 1]) * 16))
        h.progress("upd-1", SIZE * (i + 1) // 6)
    h.finished()
    h.step(InstallStep.WRITE)
    genuine = {s.header.message_id for s in h.reports() if not s.notification_unverified}
    unverified = {s.header.message_id for s in h.reports() if s.notification_unverified}
    assert len(unverified) == 5
    assert not genuine & unverified
