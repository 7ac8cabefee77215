"""FMEA phase 2 through the agent: one scenario per acceptance failure mode.

Every report of every scenario is also applied to the cloud's state machine
by the harness; the fixture fails the test if the cloud would refuse one.
"""

from __future__ import annotations

from typing import Any

import pytest
from ota_agent_harness import (
    DAY_MS,
    SIZE,
    Harness,
    of_type,
    reason_name,
    state_name,
)
from signing_helpers import flip_bit

from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.ota.agent.effects import Dropped, Report, ScheduleTick, StartDownload
from v2c.vehicle_sim.ota.agent.memory import Phase
from v2c.vehicle_sim.ota.agent.vehicle_state import Gear

S = OTAStatus


def test_a_second_update_while_one_is_active_is_rejected_update_in_progress(h: Harness) -> None:
    h.notify()
    effects = h.notify(update_id="upd-2", version="2.6.0")
    [report] = of_type(effects, Report)
    assert (report.update_id, state_name(report.status), reason_name(report.status)) == (
        "upd-2",
        "REJECTED",
        "UPDATE_IN_PROGRESS",
    )
    assert report.status.sequence == 1
    assert "upd-1" in report.status.error_detail
    assert not of_type(effects, StartDownload)
    assert h.agent.active_update_id == "upd-1"


def test_a_deferred_update_counts_as_active(h: Harness) -> None:
    h.set(battery_percent=10)
    h.notify()
    assert h.states() == ["DEFERRED"]
    h.notify(update_id="upd-2", version="2.6.0")
    assert h.states("upd-2") == ["REJECTED"]


@pytest.mark.parametrize(
    ("field", "index"), [("manifest", 20), ("manifest", -1), ("signature", 8), ("signature", -1)]
)
def test_a_flipped_bit_is_rejected_signature_verification_failed(
    h: Harness, field: str, index: int
) -> None:
    notification = h.notification()
    setattr(notification, field, flip_bit(getattr(notification, field), index))
    effects = h.notify(notification)
    [report] = of_type(effects, Report)
    assert (report.update_id, state_name(report.status), reason_name(report.status)) == (
        "upd-1",
        "REJECTED",
        "SIGNATURE_VERIFICATION_FAILED",
    )
    assert not of_type(effects, StartDownload)
    assert h.agent.active_update_id is None


def test_a_tampered_update_id_only_addresses_the_rejection(h: Harness) -> None:
    # Byte 3 is inside the update id: the forged id is used to say "rejected"
    # and for nothing else.
    notification = h.notification()
    notification.manifest = flip_bit(notification.manifest, 3)
    effects = h.notify(notification)
    [report] = of_type(effects, Report)
    assert (report.update_id, reason_name(report.status)) == (
        "uqd-1",
        "SIGNATURE_VERIFICATION_FAILED",
    )
    assert not of_type(effects, StartDownload)


def test_a_bad_signature_on_a_readable_manifest_names_the_update(h: Harness) -> None:
    notification = h.notification()
    notification.signature = flip_bit(notification.signature, -1)
    effects = h.notify(notification)
    [report] = of_type(effects, Report)
    assert (report.update_id, reason_name(report.status)) == (
        "upd-1",
        "SIGNATURE_VERIFICATION_FAILED",
    )
    assert report.status.installed_version == "2.4.1"


def test_low_battery_defers_then_proceeds_when_charging(h: Harness) -> None:
    h.set(battery_percent=25)
    effects = h.notify()
    report = h.last()
    assert (state_name(report), reason_name(report), report.retry_after_sec) == (
        "DEFERRED",
        "INSUFFICIENT_BATTERY",
        3600,
    )
    assert of_type(effects, ScheduleTick) == [ScheduleTick(h.now + 3600 * 1000)]
    assert not of_type(effects, StartDownload)

    # Still low, a little higher: the same deferral, nothing to say.
    assert h.set(battery_percent=27) == []
    effects = h.set(charging=True)
    assert h.states() == ["DEFERRED", "ACCEPTED", "DOWNLOADING"]
    [start] = of_type(effects, StartDownload)
    assert (start.update_id, start.size_bytes, start.resume) == ("upd-1", SIZE, False)


def test_low_battery_is_retried_at_the_retry_time(h: Harness) -> None:
    h.set(battery_percent=25)
    h.notify()
    assert h.advance(3599 * 1000) == []  # not yet
    effects = h.advance(1000)
    # Still low at the retry time: deferred again, with a new retry time.
    assert h.states() == ["DEFERRED", "DEFERRED"]
    assert of_type(effects, ScheduleTick) == [ScheduleTick(h.now + 3600 * 1000)]
    # A runtime that polls the vehicle passes its conditions with the tick.
    h.advance(60_000, polled=h.conditions.with_(battery_percent=90))
    assert h.states()[-2:] == ["ACCEPTED", "DOWNLOADING"]


def test_a_manifest_that_expires_while_deferred_is_rejected(h: Harness) -> None:
    h.set(battery_percent=25)
    h.notify(expires_at=h.now + 1800 * 1000)
    h.advance(3600 * 1000)
    report = h.last()
    assert (state_name(report), reason_name(report)) == ("REJECTED", "MANIFEST_EXPIRED")
    assert h.agent.active_update_id is None


def test_vehicle_in_use_defers_then_proceeds_when_parked(h: Harness) -> None:
    h.set(speed_kmh=65.0, gear=Gear.DRIVE, ignition_on=True)
    h.notify()
    report = h.last()
    assert (state_name(report), reason_name(report)) == ("DEFERRED", "VEHICLE_IN_USE")
    assert "65 km/h" in report.error_detail
    assert h.set(speed_kmh=0.0) == []  # stopped at a light: still in use
    assert h.set(gear=Gear.PARK) == []  # parked, ignition still on
    effects = h.set(ignition_on=False)
    assert h.states() == ["DEFERRED", "ACCEPTED", "DOWNLOADING"]
    assert of_type(effects, StartDownload)


def test_a_manifest_that_allows_driving_is_not_deferred(h: Harness) -> None:
    h.set(speed_kmh=65.0, gear=Gear.DRIVE, ignition_on=True)
    h.notify(can_install_while_driving=True)
    assert h.states() == ["ACCEPTED", "DOWNLOADING"]


def test_a_change_of_reason_while_deferred_is_reported(h: Harness) -> None:
    h.set(battery_percent=25, ignition_on=True)
    h.notify()
    h.set(battery_percent=80)  # battery fine now, but the ignition is on
    assert [reason_name(s) for s in h.reports()] == ["INSUFFICIENT_BATTERY", "VEHICLE_IN_USE"]


def test_insufficient_storage_is_rejected(h: Harness) -> None:
    h.set(free_storage_bytes=30 * 1024 * 1024)
    effects = h.notify()
    report = h.last()
    assert (state_name(report), reason_name(report)) == ("REJECTED", "INSUFFICIENT_STORAGE")
    assert not of_type(effects, StartDownload)


@pytest.mark.parametrize("version", ["2.4.1", "2.4.0", "1.9.9"])
def test_a_version_not_newer_is_rejected_version_downgrade(h: Harness, version: str) -> None:
    h.notify(version=version)
    assert [(state_name(s), reason_name(s)) for s in h.reports()] == [
        ("REJECTED", "VERSION_DOWNGRADE")
    ]


def test_a_signed_rollback_is_accepted_and_installs_the_older_version(h: Harness) -> None:
    h.notify(version="2.3.0", is_rollback=True, min_installed_version="2.0.0")
    assert h.states() == ["ACCEPTED", "DOWNLOADING"]
    h.download()
    h.install()
    h.boot("2.3.0", trial=True)
    h.verify()
    h.commit()
    done = h.last()
    assert (state_name(done), done.installed_version) == ("COMPLETED", "2.3.0")
    assert h.agent.rollback_floor == "2.0.0"


def test_an_expired_manifest_is_rejected(h: Harness) -> None:
    h.notify(expires_at=h.now - 1)
    assert [(state_name(s), reason_name(s)) for s in h.reports()] == [
        ("REJECTED", "MANIFEST_EXPIRED")
    ]


@pytest.mark.parametrize("overrides", [{"target_model": "Civic"}, {"target_hardware_id": "HW-9"}])
def test_another_model_or_hardware_is_rejected_model_mismatch(
    h: Harness, overrides: dict[str, Any]
) -> None:
    h.notify(**overrides)
    assert [(state_name(s), reason_name(s)) for s in h.reports()] == [
        ("REJECTED", "MODEL_MISMATCH")
    ]


def test_a_notification_delivered_twice_is_processed_once(h: Harness) -> None:
    notification = h.notification()
    first = h.notify(notification)
    assert len(of_type(first, StartDownload)) == 1
    assert h.notify(notification) == []
    # Even after a power cut: the delivery's fingerprint was saved.
    h.restart()
    effects = h.notify(notification)
    assert effects == []
    assert h.states() == ["ACCEPTED", "DOWNLOADING"]


def test_a_new_notification_for_the_active_update_rereports_without_redoing(
    h: Harness,
) -> None:
    h.notify()
    h.progress("upd-1", SIZE // 2)
    effects = h.notify()  # the cloud re-notified (new message id, same update)
    [report] = of_type(effects, Report)
    assert (state_name(report.status), report.status.sequence, report.status.progress_percent) == (
        "DOWNLOADING",
        h.last_sequence["upd-1"],
        50,
    )
    assert not of_type(effects, StartDownload)


def test_a_fresh_download_url_restarts_the_download_from_its_partial_file(h: Harness) -> None:
    notification = h.notification(url="https://old.example/pkg")
    h.notify(notification)
    h.progress("upd-1", SIZE // 4)
    renewed = h.notification(url="https://new.example/pkg")
    renewed.manifest, renewed.signature = notification.manifest, notification.signature
    effects = h.notify(renewed)
    [start] = of_type(effects, StartDownload)
    assert (start.url, start.resume) == ("https://new.example/pkg", True)


def test_a_completed_update_notified_again_reports_completed_again(h: Harness) -> None:
    h.notify()
    h.download()
    h.install()
    h.boot("2.5.0", trial=True)
    h.verify()
    h.commit()
    h.conditions = h.conditions.with_(installed_version="2.5.0")
    effects = h.notify()
    [report] = of_type(effects, Report)
    assert (state_name(report.status), report.status.installed_version) == ("COMPLETED", "2.5.0")
    assert not of_type(effects, StartDownload)


def test_a_rejected_update_notified_again_is_retried_with_continued_sequence(
    h: Harness,
) -> None:
    h.set(free_storage_bytes=0)
    h.notify()
    assert h.last().sequence == 1
    h.set(free_storage_bytes=10 * SIZE)
    h.notify()  # the cloud's retry
    assert [(state_name(s), s.sequence) for s in h.reports()] == [
        ("REJECTED", 1),
        ("ACCEPTED", 2),
        ("DOWNLOADING", 3),
    ]


def test_unreadable_notifications_are_dropped_without_a_report(h: Harness) -> None:
    effects = h.agent.on_notification(b"\xff\xff\xff", h.conditions, h.now)
    assert [type(e) for e in effects] == [type(effects[0]), Dropped]
    nameless = h.notification(update_id="")
    effects = h.agent.on_notification(nameless, h.conditions, h.now)
    assert of_type(effects, Dropped)
    assert not of_type(effects, Report)


def test_a_cancel_that_overtakes_its_notification_refuses_it(h: Harness) -> None:
    h.cancel("upd-1")
    effects = h.notify()
    assert not of_type(effects, StartDownload)
    [report] = of_type(effects, Report)
    assert (state_name(report.status), reason_name(report.status)) == (
        "REJECTED",
        "CAMPAIGN_CANCELLED",
    )
    assert h.agent.phase is None


def test_reports_are_numbered_per_update_from_one(h: Harness) -> None:
    h.notify()
    h.notify(update_id="upd-2", version="2.6.0")
    h.notify(update_id="upd-3", version="2.7.0")
    h.download()
    assert [s.sequence for s in h.reports("upd-2")] == [1]
    assert [s.sequence for s in h.reports("upd-3")] == [1]
    sequences = [s.sequence for s in h.reports("upd-1")]
    assert sequences == list(range(1, len(sequences) + 1))
    assert h.agent.phase is Phase.INSTALLING


def test_the_deferral_retry_is_scheduled_for_the_runtime(h: Harness) -> None:
    h.set(battery_percent=5)
    effects = h.notify(expires_at=h.now + 2 * DAY_MS)
    assert of_type(effects, ScheduleTick)[0].at_ms == h.now + h.policy.battery_retry_after_s * 1000
