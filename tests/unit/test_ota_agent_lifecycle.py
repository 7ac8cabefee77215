"""FMEA phases 2-3 through the agent: download, installation, boot, verification.

The ports are played by hand; every report is checked against the cloud's
state machine by the harness (see the fixture).
"""

from __future__ import annotations

import hashlib

import pytest
from ota_agent_harness import MIB, SIZE, URL, Harness, of_type, reason_name, state_name

from v2c.handlers.ota.domain.update_state import UpdateState
from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.ota.agent.effects import (
    CancelDownload,
    CommitUpdate,
    DiscardPackage,
    InstallStep,
    Reboot,
    Report,
    RollBack,
    RunVerification,
    StartDownload,
    StartInstall,
)
from v2c.vehicle_sim.ota.agent.memory import Phase
from v2c.vehicle_sim.ota.agent.vehicle_state import Gear

S = OTAStatus


def test_happy_path_reports_every_phase_and_completes_with_durations(h: Harness) -> None:
    received = h.now
    effects = h.notify()
    [start] = of_type(effects, StartDownload)
    assert (start.url, start.size_bytes, start.sha256, start.resume) == (
        URL,
        SIZE,
        hashlib.sha256(b"package").digest(),  # signing_helpers' package checksum
        False,
    )
    effects += h.download(ms_per_chunk=10_000)  # 50 chunks: 500 s
    downloaded = h.now
    effects += h.install(ms_per_step=60_000)  # 6 steps: 360 s
    [install] = of_type(effects, StartInstall)
    assert (install.version, install.attempt) == ("2.5.0", 1)
    assert of_type(effects, Reboot)
    effects += h.boot("2.5.0", trial=True, ms=60_000)
    [verification] = of_type(effects, RunVerification)
    assert verification.version == "2.5.0"
    effects += h.verify()  # 12 s
    assert of_type(effects, CommitUpdate)
    assert h.states()[-1] == "VERIFYING"  # committing is not a state of its own
    effects += h.commit()

    phases = [s for i, s in enumerate(h.states()) if i == 0 or s != h.states()[i - 1]]
    assert phases == [
        "ACCEPTED",
        "DOWNLOADING",
        "DOWNLOADED",
        "INSTALLING",
        "REBOOTING",
        "VERIFYING",
        "COMPLETED",
    ]
    done = h.last()
    assert (done.progress_percent, done.installed_version, done.bytes_downloaded) == (
        100,
        "2.5.0",
        SIZE,
    )
    assert done.download_duration_ms == 500_000
    assert done.total_duration_ms == h.now - received
    assert done.install_duration_ms == h.now - downloaded
    assert done.header.correlation_id  # ties every report to the notification
    assert of_type(effects, DiscardPackage) == [DiscardPackage("upd-1")]
    assert h.agent.active_update_id is None
    assert h.cloud["upd-1"].state is UpdateState.COMPLETED


def test_report_sequences_strictly_increase_and_ids_are_derived(h: Harness) -> None:
    h.notify()
    h.download()
    h.install()
    reports = h.reports()
    sequences = [r.sequence for r in reports]
    assert sequences == sorted(set(sequences))
    assert sequences[0] == 1
    assert len({r.header.message_id for r in reports}) == len(reports)
    assert all(r.vehicle_id == h.agent.vehicle_id for r in reports)


def test_download_progress_is_reported_at_every_ten_percent(h: Harness) -> None:
    h.notify()
    h.download(chunk=MIB)
    percents = [s.progress_percent for s in h.reports() if state_name(s) == "DOWNLOADING"]
    assert percents == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


def test_coarse_chunks_still_report_each_ten_percent_crossed(h: Harness) -> None:
    h.notify()
    h.download(chunk=3 * MIB)  # 6 % per chunk
    percents = [s.progress_percent for s in h.reports() if state_name(s) == "DOWNLOADING"]
    for decile in range(10, 100, 10):
        crossed = [p for p in percents if decile <= p < decile + 6]
        assert crossed, f"no report for the {decile} % mark in {percents}"
    assert len(percents) <= 12  # at most one per decile, not one per chunk


def test_connection_lost_pauses_and_resume_continues(h: Harness) -> None:
    h.notify()
    h.progress("upd-1", 10 * MIB)
    h.paused(10 * MIB, "connection timeout")
    paused = h.last()
    assert (state_name(paused), paused.bytes_downloaded, paused.progress_percent) == (
        "PAUSED",
        10 * MIB,
        20,
    )
    assert paused.error_detail == "connection timeout"
    h.now += 300_000
    h.resumed()
    assert h.states()[-1] == "DOWNLOADING"
    h.download(start=10 * MIB)
    assert h.states()[-1] == "INSTALLING"


def test_progress_while_paused_means_resumed(h: Harness) -> None:
    h.notify()
    h.paused(0)
    h.progress("upd-1", MIB)
    assert h.states()[-2:] == ["PAUSED", "DOWNLOADING"]


@pytest.mark.parametrize("reason", [S.S3_UNAVAILABLE, S.CHECKSUM_MISMATCH])
def test_a_failed_download_fails_the_update_and_discards_the_package(
    h: Harness, reason: int
) -> None:
    h.notify()
    h.progress("upd-1", SIZE)
    effects = h.finished(failure=reason, detail="503 Slow Down", attempts=3)
    failed = h.last()
    assert (failed.state, failed.reason, failed.attempts) == (S.FAILED, reason, 3)
    assert failed.installed_version == "2.4.1"
    assert of_type(effects, DiscardPackage)
    assert h.agent.active_update_id is None


def test_the_download_deadline_fails_the_update(h: Harness) -> None:
    h.notify()
    h.progress("upd-1", 5 * MIB)
    assert h.advance(3599 * 1000) == []
    effects = h.advance(1000)
    assert of_type(effects, CancelDownload) == [CancelDownload("upd-1")]
    assert (state_name(h.last()), reason_name(h.last())) == ("FAILED", "DOWNLOAD_TIMEOUT")


def test_in_use_after_the_download_defers_the_installation_until_parked(h: Harness) -> None:
    h.notify()
    h.set(ignition_on=True, gear=Gear.DRIVE, speed_kmh=30.0)  # driving away mid-download
    assert h.states()[-1] == "DOWNLOADING"  # the download carries on
    effects = h.download()
    deferred = h.last()
    assert (state_name(deferred), reason_name(deferred), deferred.progress_percent) == (
        "DEFERRED",
        "VEHICLE_IN_USE",
        100,
    )
    assert not of_type(effects, StartInstall)
    effects = h.set(ignition_on=False, gear=Gear.PARK, speed_kmh=0.0)
    assert h.states()[-1] == "INSTALLING"
    assert of_type(effects, StartInstall)


def test_a_critical_dtc_fails_the_installation(h: Harness) -> None:
    h.notify()
    h.set(critical_dtcs=("P0601",))
    h.download()
    failed = h.last()
    assert (state_name(failed), reason_name(failed)) == ("FAILED", "CRITICAL_DTC_PRESENT")
    assert "P0601" in failed.error_detail


@pytest.mark.parametrize(
    "reason", [S.EXTRACTION_FAILED, S.FLASH_WRITE_FAILURE, S.PARTITION_UNAVAILABLE]
)
def test_an_installer_failure_fails_the_update(h: Harness, reason: int) -> None:
    h.notify()
    h.download()
    h.step(InstallStep.EXTRACT)
    effects = h.installed(failure=reason)
    assert (h.last().state, h.last().reason) == (S.FAILED, reason)
    assert h.last().installed_version == "2.4.1"
    assert not of_type(effects, Reboot)


def test_install_progress_follows_the_steps(h: Harness) -> None:
    h.notify()
    h.download()
    h.install()
    installing = [s.progress_percent for s in h.reports() if state_name(s) == "INSTALLING"]
    assert installing == [0, 5, 10, 20, 40, 70, 80]
    assert h.last().progress_percent == 90  # REBOOTING


def test_boot_failure_rolls_back_with_the_boot_attempts(h: Harness) -> None:
    h.notify()
    h.download()
    h.install()
    effects = h.boot("2.4.1", fell_back=True, attempts=3)
    rolled = h.last()
    assert (state_name(rolled), reason_name(rolled), rolled.attempts) == (
        "ROLLED_BACK",
        "BOOT_FAILURE",
        3,
    )
    assert rolled.installed_version == "2.4.1"
    assert rolled.install_duration_ms > 0
    assert of_type(effects, DiscardPackage)


def test_verification_failure_rolls_back_to_the_previous_slot(h: Harness) -> None:
    h.notify()
    h.download()
    h.install()
    h.boot("2.5.0", trial=True)
    effects = h.verify(ok=False)
    assert of_type(effects, RollBack) == [RollBack("upd-1")]
    assert not of_type(effects, Report)  # reported once the old slot runs
    h.boot("2.4.1")
    rolled = h.last()
    assert (state_name(rolled), reason_name(rolled), rolled.installed_version) == (
        "ROLLED_BACK",
        "POST_INSTALL_VERIFICATION_FAILED",
        "2.4.1",
    )


def test_a_new_slot_running_the_wrong_version_is_rolled_back(h: Harness) -> None:
    h.notify()
    h.download()
    h.install()
    effects = h.boot("2.4.9", trial=True)
    assert of_type(effects, RollBack)
    h.boot("2.4.1")
    assert reason_name(h.last()) == "POST_INSTALL_VERIFICATION_FAILED"


def test_cancel_before_installing_stops_and_reports_rejected_cancelled(h: Harness) -> None:
    h.notify()
    h.progress("upd-1", 20 * MIB)
    effects = h.cancel()
    assert of_type(effects, CancelDownload) == [CancelDownload("upd-1")]
    assert of_type(effects, DiscardPackage) == [DiscardPackage("upd-1")]
    assert (state_name(h.last()), reason_name(h.last())) == ("REJECTED", "CAMPAIGN_CANCELLED")
    # The cloud keeps its own decision: the update stays cancelled, not failed.
    assert h.cloud["upd-1"].state is UpdateState.CANCELLED
    assert h.agent.active_update_id is None
    # A late download callback for it changes nothing.
    assert h.progress("upd-1", 30 * MIB) == []


def test_cancel_while_deferred_needs_no_download_cleanup(h: Harness) -> None:
    h.set(battery_percent=5)
    h.notify()
    effects = h.cancel()
    assert not of_type(effects, CancelDownload)
    assert not of_type(effects, DiscardPackage)
    assert reason_name(h.last()) == "CAMPAIGN_CANCELLED"


def test_cancel_during_installation_is_ignored(h: Harness) -> None:
    h.notify()
    h.download()
    assert h.cancel() == []
    assert h.agent.phase is Phase.INSTALLING


def test_callbacks_for_another_update_or_phase_are_ignored(h: Harness) -> None:
    h.notify()
    assert h.progress("upd-other", MIB) == []
    assert h.agent.on_install_step("upd-1", InstallStep.WRITE, h.now) == []
    assert h.agent.on_install_finished("upd-1", h.now) == []
    assert h.agent.on_verification("upd-1", h.now, ok=True) == []
    assert h.agent.on_committed("upd-1", h.now) == []
    assert h.agent.on_download_resumed("upd-1", h.now) == []
    assert h.agent.phase is Phase.DOWNLOADING
