"""Timeouts and cross-campaign coordination over a real moto server: the
sparse `by-due` index the monitor reads, the conditional writes, the exact
counters on the campaign items, and the signed commands the sink carries.

The notification sink records here (the services' contract is "send this");
the closed loop with simulated vehicles runs over a real broker elsewhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from ota_support import OtaServices, VehicleReporter, fleet, ota_services

from v2c.contract.command import decode_envelope, verify_command
from v2c.contract.keyset import TrustedKey, TrustedKeySet
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.handlers.ota.domain.timeouts import DueKind
from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.v1.command_pb2 import OTACommand
from v2c.v1.ota_pb2 import OTAStatus

if TYPE_CHECKING:
    from moto_fixtures import AwsStack

S = OTAStatus.State
MINUTE = 60.0
TO_COMPLETION = (S.ACCEPTED, S.DOWNLOADING, S.DOWNLOADED, S.INSTALLING, S.REBOOTING, S.VERIFYING)


@pytest.fixture
def ota(aws_stack: AwsStack) -> OtaServices:
    return ota_services(aws_stack)


def _create(ota: OtaServices, version: str, n: int, **spec: Any) -> str:
    ota.register(fleet(n))
    package = ota.packages.add(version, f"firmware-{version}".encode() * 100)
    body = {
        "name": f"release {version}",
        "firmware_id": package.firmware_id,
        "target_filter": "model = 'Accord'",
        "deployment_strategy": "immediate",
        **spec,
    }
    return ota.campaigns.create(body).campaign.campaign_id


def _notified(ota: OtaServices) -> list[str]:
    return [t.split("/")[3] for t, _ in ota.sink.sent if t.endswith("/ota/available")]


def _commands(ota: OtaServices) -> list[OTACommand]:
    """The signed commands the sink carried, verified as their vehicle verifies them."""
    since = datetime(2020, 1, 1, tzinfo=UTC)
    keys = TrustedKeySet([TrustedKey(ota.signer.key_id, ota.signer.public_key(), since)])
    return [
        verify_command(
            decode_envelope(payload),
            trusted=keys,
            now=ota.now(),
            vehicle_id=topic.split("/")[3],
        )
        for topic, payload in ota.sink.sent
        if topic.endswith("/commands/request")
    ]


def _finish(ota: OtaServices, reporter: VehicleReporter, vehicle: str, update_id: str) -> None:
    for state in TO_COMPLETION:
        ota.status.apply(reporter.status(vehicle, update_id, state))
    ota.status.apply(reporter.status(vehicle, update_id, S.COMPLETED, installed_version="x"))


def test_a_monitor_pass_times_out_past_deadline_updates_from_the_due_index(
    ota: OtaServices,
) -> None:
    campaign_id = _create(
        ota,
        "2.0.0",
        4,
        timeout_minutes=5,
        max_retries=0,
        pause_threshold_percent=100,
        failure_threshold_percent=100,
    )
    ota.campaigns.start(campaign_id)
    update_id = ota.campaigns.get(campaign_id).release.update_id
    done, downloading, silent, late = _notified(ota)
    reporter = VehicleReporter()
    _finish(ota, reporter, done, update_id)
    ota.status.apply(reporter.status(downloading, update_id, S.ACCEPTED))
    ota.status.apply(reporter.status(downloading, update_id, S.DOWNLOADING))
    ota.status.apply(reporter.status(late, update_id, S.ACCEPTED))

    updates = ota.deps.updates
    ota.clock.now += 5 * MINUTE - 1
    assert ota.campaigns.monitor()["timed_out"] == 0
    ota.clock.now += 1
    due = updates.due(DueKind.TIMEOUT, int(ota.clock.now * 1000), 10)
    assert sorted(u.vehicle_id for u in due) == sorted([downloading, silent, late])

    assert ota.campaigns.monitor()["timed_out"] == 3
    assert updates.due(DueKind.TIMEOUT, int(ota.clock.now * 1000) + 10**9, 10) == []
    for vehicle in (downloading, silent, late):
        assert updates.get(vehicle, update_id).state is UpdateState.TIMED_OUT
    cancels = [c for c in _commands(ota) if c.kind == OTACommand.CANCEL_UPDATE]
    assert sorted(c.vehicle_id for c in cancels) == sorted([downloading, silent, late])
    assert {c.update_id for c in cancels} == {update_id}
    counters = ota.campaigns.get(campaign_id).counters
    assert (counters.completed, counters.timed_out, counters.in_progress, counters.total) == (
        1,
        3,
        0,
        4,
    )

    # A late vehicle that was installing after all: its COMPLETED is the truth.
    for state in TO_COMPLETION[1:]:
        ota.status.apply(reporter.status(late, update_id, state))
    ota.status.apply(reporter.status(late, update_id, S.COMPLETED, installed_version="2.0.0"))
    counters = ota.campaigns.get(campaign_id).counters
    assert (counters.completed, counters.timed_out, counters.total) == (2, 2, 4)
    assert ota.campaigns.get(campaign_id).status is CampaignStatus.COMPLETED


def test_a_retry_renotifies_with_a_new_deadline(ota: OtaServices) -> None:
    campaign_id = _create(
        ota, "2.0.0", 1, timeout_minutes=5, max_retries=1, pause_threshold_percent=100
    )
    ota.campaigns.start(campaign_id)
    update_id = ota.campaigns.get(campaign_id).release.update_id
    [vehicle] = _notified(ota)
    ota.clock.now += 5 * MINUTE
    assert ota.campaigns.monitor()["retried"] == 1
    record = ota.deps.updates.get(vehicle, update_id)
    assert (record.state, record.retries, record.notifications) == (UpdateState.NOTIFIED, 1, 2)
    assert _notified(ota) == [vehicle, vehicle]
    now_ms = int(ota.clock.now * 1000)
    assert ota.deps.updates.due(DueKind.TIMEOUT, now_ms, 10) == []  # the deadline moved
    assert len(ota.deps.updates.due(DueKind.TIMEOUT, now_ms + 5 * 60_000, 10)) == 1


def test_two_overlapping_campaigns_never_count_a_busy_vehicle_as_failed(
    ota: OtaServices,
) -> None:
    first = _create(ota, "2.0.0", 3, priority="normal")
    ota.campaigns.start(first)
    first_update = ota.campaigns.get(first).release.update_id
    vehicles = _notified(ota)
    second = _create(ota, "2.1.0", 3, priority="normal")
    started = ota.campaigns.start(second)
    second_update = started.release.update_id
    assert _notified(ota) == vehicles
    assert (started.counters.waiting, started.counters.failures) == (3, 0)

    # One notification crossed anyway (a vehicle the cloud thought free):
    # its busy rejection queues it, it is not a failure.
    reporter = VehicleReporter()
    assert ota.deps.updates.get(vehicles[0], second_update).state is UpdateState.WAITING
    _finish(ota, reporter, vehicles[0], first_update)
    ota.clock.now += MINUTE
    assert ota.campaigns.monitor()["released"] == 1
    answer = ota.status.apply(
        reporter.status(vehicles[0], second_update, S.REJECTED, reason=OTAStatus.UPDATE_IN_PROGRESS)
    )
    assert answer.state == "waiting"
    counters = ota.campaigns.get(second).counters
    assert (counters.waiting, counters.in_progress, counters.failures) == (3, 0, 0)

    for vehicle in vehicles[1:]:
        _finish(ota, reporter, vehicle, first_update)
    ota.clock.now += MINUTE
    assert ota.campaigns.monitor()["released"] == 3
    for vehicle in vehicles:
        _finish(ota, reporter, vehicle, second_update)
    done = ota.campaigns.get(second)
    assert done.status is CampaignStatus.COMPLETED
    assert (done.counters.completed, done.counters.failures, done.counters.total) == (3, 0, 3)
    assert ota.campaigns.get(first).counters.failures == 0


def test_a_critical_campaign_supersedes_a_low_one_not_yet_installing(ota: OtaServices) -> None:
    low = _create(ota, "2.0.0", 2, priority="low")
    ota.campaigns.start(low)
    low_update = ota.campaigns.get(low).release.update_id
    downloading, installing = _notified(ota)
    reporter = VehicleReporter()
    for state in TO_COMPLETION[:2]:
        ota.status.apply(reporter.status(downloading, low_update, state))
    for state in TO_COMPLETION[:4]:
        ota.status.apply(reporter.status(installing, low_update, state))

    critical = _create(ota, "2.1.0", 2, priority="critical")
    started = ota.campaigns.start(critical)
    assert _notified(ota)[2:] == [downloading]
    assert (started.counters.in_progress, started.counters.waiting) == (1, 1)
    low_counters = ota.campaigns.get(low).counters
    assert (low_counters.cancelled, low_counters.failures) == (1, 0)
    cancels = [c for c in _commands(ota) if c.kind == OTACommand.CANCEL_UPDATE]
    assert [(c.vehicle_id, c.update_id) for c in cancels] == [(downloading, low_update)]
