"""`StatusService` over the in-memory stores: reports move records and counters exactly once."""

from __future__ import annotations

import pytest
from ota_service_harness import Ota, S

from v2c.contract.errors import Conflict, NotFound
from v2c.handlers.ota.campaigns.deps import CampaignConfig
from v2c.handlers.ota.domain.update_state import Outcome, UpdateState
from v2c.v1.ota_pb2 import OTAStatus


@pytest.fixture
def ota() -> Ota:
    return Ota()


def _started(ota: Ota, n: int = 3) -> tuple[str, str]:
    campaign_id = ota.campaign(n, deployment_strategy="immediate")
    return campaign_id, ota.campaigns.start(campaign_id).release.update_id


def test_a_report_moves_the_record_and_the_campaign_counters_together(ota: Ota) -> None:
    campaign_id, update_id = _started(ota)
    vehicle = ota.notified()[0]
    ota.clock.advance(30)
    report = ota.report(vehicle, update_id, S.ACCEPTED)
    assert (report.outcome, report.state) == (Outcome.APPLIED, "accepted")
    record = ota.update_store.get(vehicle, update_id)
    assert (record.state, record.last_sequence) == (UpdateState.ACCEPTED, 1)
    assert record.started_at_ms == int(ota.clock() * 1000)
    campaign = ota.campaigns.get(campaign_id)
    assert campaign.last_progress_at_ms == int(ota.clock() * 1000)  # progress, no counter move
    assert campaign.counters.in_progress == 3


def test_duplicate_and_stale_reports_change_nothing(ota: Ota) -> None:
    campaign_id, update_id = _started(ota)
    vehicle = ota.notified()[0]
    first = OTAStatus(vehicle_id=vehicle, update_id=update_id, state=S.ACCEPTED, sequence=1)
    assert ota.status.apply(first).outcome is Outcome.APPLIED
    assert ota.status.apply(first).outcome is Outcome.DUPLICATE
    later = OTAStatus(vehicle_id=vehicle, update_id=update_id, state=S.DOWNLOADING, sequence=2)
    ota.status.apply(later)
    assert ota.status.apply(first).outcome is Outcome.STALE
    record = ota.update_store.get(vehicle, update_id)
    assert (record.state, record.last_sequence) == (UpdateState.DOWNLOADING, 2)
    assert ota.campaigns.get(campaign_id).counters.in_progress == 3


def test_a_report_that_loses_a_race_is_applied_once_on_the_fresh_record(ota: Ota) -> None:
    campaign_id, update_id = _started(ota)
    vehicle = ota.notified()[0]
    for state in (S.ACCEPTED, S.DOWNLOADING, S.DOWNLOADED, S.INSTALLING, S.REBOOTING):
        ota.report(vehicle, update_id, state)
    ota.report(vehicle, update_id, S.VERIFYING)
    ota.update_store.conflicts = 2  # two writers got there first
    report = ota.report(vehicle, update_id, S.COMPLETED, installed="2.0.0")
    assert report.outcome is Outcome.APPLIED
    counters = ota.campaigns.get(campaign_id).counters
    assert (counters.completed, counters.in_progress) == (1, 2)  # moved once, not three times


def test_a_record_that_keeps_changing_answers_409() -> None:
    ota = Ota(config=CampaignConfig(conflict_retries=3))
    campaign_id, update_id = _started(ota)
    vehicle = ota.notified()[0]
    ota.update_store.conflicts = 3
    with pytest.raises(Conflict, match="keeps changing"):
        ota.report(vehicle, update_id, S.ACCEPTED)
    assert ota.update_store.get(vehicle, update_id).state is UpdateState.NOTIFIED
    assert ota.campaigns.get(campaign_id).counters.in_progress == 3


def test_a_report_about_an_unknown_update_is_not_found(ota: Ota) -> None:
    _started(ota)
    with pytest.raises(NotFound):
        ota.report(ota.notified()[0], "no-such-release", S.ACCEPTED)


def test_a_completed_vehicle_is_recorded_on_its_new_version(ota: Ota) -> None:
    _campaign_id, update_id = _started(ota)
    vehicle = ota.notified()[0]
    ota.finish(vehicle, update_id, ok=True)
    assert ota.fleet.get(vehicle).installed_version == "2.0.0"  # type: ignore[union-attr]
    assert ota.update_store.get(vehicle, update_id).completed_at_ms == int(ota.clock() * 1000)


def test_a_failure_report_moves_the_update_to_failed(ota: Ota) -> None:
    campaign_id, update_id = _started(ota, 20)
    vehicle = ota.notified()[0]
    ota.report(vehicle, update_id, S.ACCEPTED)
    ota.report(vehicle, update_id, S.FAILED, reason=OTAStatus.Reason.S3_UNAVAILABLE)
    record = ota.update_store.get(vehicle, update_id)
    assert (record.state, record.reason) == (UpdateState.FAILED, "S3_UNAVAILABLE")
    assert ota.campaigns.get(campaign_id).counters.failed == 1
