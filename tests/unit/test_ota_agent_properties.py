"""Properties over random event sequences: whatever the vehicle, the ports, the
cloud and the power supply do, in any order,

* every report's sequence is exactly one above the last for its update
  (strictly increasing, no gaps, across restarts), re-sends excepted; reports
  of unverified notifications are numbered apart, the same way;
* the cloud's state machine accepts every report (never INVALID, STALE or an
  unexpected DUPLICATE);
* the agent's snapshot survives JSON and an update is never active twice.

Events are drawn one at a time against the agent's current phase: half of
them are what a healthy port would do next (so runs reach the install and
boot phases), half are anything at all (late, duplicated, out of order).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ota_agent_harness import MIB, SIZE, Harness, good_conditions
from signing_helpers import flip_bit

from v2c.v1.ota_pb2 import OTAStatus, OTAUpdateAvailable
from v2c.vehicle_sim.ota.agent.effects import BootResult, InstallStep, StartDownload
from v2c.vehicle_sim.ota.agent.memory import Phase
from v2c.vehicle_sim.ota.agent.vehicle_state import Gear

S = OTAStatus
UPDATES = ("upd-1", "upd-2", "upd-3")
VERSIONS = {"upd-1": "2.5.0", "upd-2": "2.6.0", "upd-3": "2.3.0"}
DOWNLOAD_FAILURES = (S.S3_UNAVAILABLE, S.CHECKSUM_MISMATCH, S.DOWNLOAD_TIMEOUT)
INSTALL_FAILURES = (S.EXTRACTION_FAILED, S.FLASH_WRITE_FAILURE, S.PARTITION_UNAVAILABLE)
BAD_CONDITIONS: list[dict[str, object]] = [
    {"battery_percent": 5.0, "charging": False},
    {"speed_kmh": 50.0, "gear": Gear.DRIVE, "ignition_on": True},
    {"ignition_on": True},
    {"free_storage_bytes": 0},
    {"critical_dtcs": ("P0601",)},
]
T = TypeVar("T")
KINDS = (
    "notify",
    "redeliver",
    "conditions",
    "tick",
    "progress",
    "paused",
    "resumed",
    "finished",
    "step",
    "installed",
    "boot",
    "verify",
    "commit",
    "cancel",
    "restart",
    "cloud_timeout",
)


class Run:
    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.h = Harness()
        self.sent: list[OTAUpdateAvailable] = []

    def draw(self, strategy: st.SearchStrategy[T]) -> T:
        return self.data.draw(strategy)

    @property
    def uid(self) -> str:
        return self.h.agent.active_update_id or self.draw(st.sampled_from(UPDATES))

    def target(self) -> str:
        return VERSIONS.get(self.uid, "2.5.0")

    def boot_result(self) -> BootResult:
        old = self.h.conditions.installed_version
        choice = self.draw(st.sampled_from(["trial", "fell_back", "old", "committed", "odd"]))
        attempts = self.draw(st.integers(0, 3))
        return {
            "trial": BootResult(self.target(), trial=True, boot_attempts=attempts),
            "fell_back": BootResult(old, fell_back=True, boot_attempts=attempts),
            "old": BootResult(old),
            "committed": BootResult(self.target()),
            "odd": BootResult("9.9.9", trial=True),
        }[choice]

    # -- what a healthy port would do next -----------------------------------

    def healthy(self) -> None:
        h, phase = self.h, self.h.agent.phase
        uid = h.agent.active_update_id or "upd-1"
        if phase is None:
            self.notify()
        elif phase is Phase.DEFERRED:
            h.set(**_good())
        elif phase is Phase.DOWNLOADING:
            h.progress(uid, SIZE // 2)
            h.finished(uid)
        elif phase is Phase.PAUSED:
            h.resumed(uid)
        elif phase is Phase.INSTALLING:
            h.step(InstallStep.WRITE, uid)
            h.installed(uid)
        elif phase is Phase.REBOOTING:
            h.boot(VERSIONS[uid], trial=True, attempts=1)
        elif phase is Phase.VERIFYING:
            h.verify(uid)
        elif phase is Phase.COMMITTING:
            h.commit(uid)
            h.conditions = h.conditions.with_(installed_version=VERSIONS[uid])
        elif phase is Phase.ROLLING_BACK:
            h.boot(h.conditions.installed_version)

    # -- anything at all -----------------------------------------------------

    def notify(self) -> None:
        uid = self.draw(st.sampled_from(UPDATES))
        overrides: dict[str, Any] = {"update_id": uid, "version": VERSIONS[uid]}
        if uid == "upd-3":
            overrides["is_rollback"] = True
        if self.draw(st.booleans()):
            overrides["expires_at"] = self.h.now + self.draw(st.integers(1, 3 * 3600 * 1000))
        notification = self.h.notification(**overrides)
        if self.draw(st.integers(0, 9)) == 0:
            notification.signature = flip_bit(notification.signature, -2)
        self.sent.append(notification)
        self.h.notify(notification)

    def anything(self, kind: str) -> None:
        h, uid = self.h, self.uid
        if kind == "notify":
            self.notify()
        elif kind == "redeliver" and self.sent:
            h.redeliver(self.draw(st.sampled_from(self.sent)))
        elif kind == "conditions":
            h.set(**(_good() if self.draw(st.booleans()) else self._bad()))
        elif kind == "tick":
            h.advance(self.draw(st.integers(1000, 2 * 3600 * 1000)))
        elif kind == "progress":
            h.progress(uid, self.draw(st.integers(0, SIZE + MIB)))
        elif kind == "paused":
            h.paused(self.draw(st.integers(0, SIZE)), "lost", uid)
        elif kind == "resumed":
            h.resumed(uid)
        elif kind == "finished":
            failure = self.draw(st.sampled_from((None, *DOWNLOAD_FAILURES)))
            h.finished(uid, failure=failure)
        elif kind == "step":
            h.step(self.draw(st.sampled_from(list(InstallStep))), uid)
        elif kind == "installed":
            h.installed(uid, failure=self.draw(st.sampled_from((None, *INSTALL_FAILURES))))
        elif kind == "boot":
            r = self.boot_result()
            h.boot(
                r.running_version, trial=r.trial, fell_back=r.fell_back, attempts=r.boot_attempts
            )
        elif kind == "verify":
            h.verify(uid, ok=bool(self.draw(st.booleans())))
        elif kind == "commit":
            h.commit(uid)
        elif kind == "cancel":
            h.cancel(uid)
        elif kind == "restart":
            h.restart(self.boot_result())
        elif kind == "cloud_timeout":
            h.cloud_times_out(uid)

    def _bad(self) -> dict[str, object]:
        return self.draw(st.sampled_from(BAD_CONDITIONS))


def _good() -> dict[str, object]:
    good = good_conditions()
    return {
        "battery_percent": good.battery_percent,
        "speed_kmh": 0.0,
        "gear": Gear.PARK,
        "ignition_on": False,
        "free_storage_bytes": good.free_storage_bytes,
        "critical_dtcs": (),
    }


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_any_event_sequence_yields_numbered_reports_the_cloud_accepts(data: st.DataObject) -> None:
    run = Run(data)
    for _ in range(data.draw(st.integers(5, 60))):
        if data.draw(st.booleans()):
            run.healthy()
        else:
            run.anything(data.draw(st.sampled_from(KINDS)))
        snapshot = run.h.agent.snapshot()
        assert json.loads(json.dumps(snapshot)) == snapshot

    h = run.h
    assert h.cloud_refusals == []  # the harness also checked every sequence on the way
    for uid, last in h.last_sequence.items():
        sequences = [s.sequence for s in h.reports(uid) if not s.notification_unverified]
        assert sequences == list(range(1, last + 1))
    # reports of unverified notifications: numbered apart, never applied unless
    # the cloud recognised its own notification in them
    unverified = [s.sequence for s in h.reports() if s.notification_unverified]
    assert unverified == list(range(1, len(unverified) + 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_healthy_ports_always_finish_the_update(data: st.DataObject) -> None:
    """With healthy ports and conditions that clear, every accepted update ends."""
    run = Run(data)
    run.notify()
    for _ in range(30):
        if run.h.agent.phase is None:
            break
        run.healthy()
    h = run.h
    assert h.agent.phase is None
    finals = {S.State.Name(h.last(uid).state) for uid in h.last_sequence}
    assert finals <= {"COMPLETED", "REJECTED"}
    started = [e for e in h.effects if isinstance(e, StartDownload)]
    assert len({e.update_id for e in started}) == len(started)  # never downloaded twice
    assert h.cloud_refusals == []
