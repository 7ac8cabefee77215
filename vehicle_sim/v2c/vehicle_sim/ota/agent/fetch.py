"""Downloading: the phases between ACCEPTED and DOWNLOADED.

The agent asks its runtime for a download (`StartDownload`, resumable from
the partial file) and a deadline tick; progress is reported every
`progress_step_percent`, a pause and a resume are reported as they happen,
and a finished package moves on to the install checks.
"""

from __future__ import annotations

from v2c.v1.ota_pb2 import OTAStatus
from v2c.vehicle_sim.ota.agent import install, reporting
from v2c.vehicle_sim.ota.agent.effects import Reason, ScheduleTick, StartDownload
from v2c.vehicle_sim.ota.agent.memory import DOWNLOAD_PHASES, ActiveUpdate, Phase
from v2c.vehicle_sim.ota.agent.state import AgentState, current

S = OTAStatus


def request_download(st: AgentState, a: ActiveUpdate, *, resume: bool) -> None:
    if a.phase not in DOWNLOAD_PHASES:
        a.phase = Phase.DOWNLOADING
    if not a.download_started_ms:
        a.download_started_ms = st.now
    manifest = a.parsed
    st.out.append(
        StartDownload(
            a.update_id, a.download_url, manifest.size_bytes, manifest.checksum_sha256, resume
        )
    )
    st.out.append(ScheduleTick(download_deadline(st, a)))


def download_deadline(st: AgentState, a: ActiveUpdate) -> int:
    return a.download_started_ms + st.policy.download_timeout_s * 1000


def progress(st: AgentState, update_id: str, bytes_downloaded: int) -> None:
    a = current(st, update_id, DOWNLOAD_PHASES)
    if a is None:
        return
    a.bytes_downloaded = _clamp(a, bytes_downloaded)
    percent = a.percent()
    if a.phase is Phase.PAUSED:  # data flows again: the download resumed
        a.phase = Phase.DOWNLOADING
        a.reported_percent = percent
        reporting.report_active(st, S.DOWNLOADING, progress=percent)
        return
    step = st.policy.progress_step_percent
    if percent < a.reported_percent:  # the downloader restarted the file
        a.reported_percent = percent - percent % step
    if percent >= (a.reported_percent // step + 1) * step:
        a.reported_percent = percent
        reporting.report_active(st, S.DOWNLOADING, progress=percent)


def _clamp(a: ActiveUpdate, bytes_downloaded: int) -> int:
    return max(0, min(bytes_downloaded, a.parsed.size_bytes))


def paused(st: AgentState, update_id: str, bytes_downloaded: int, detail: str) -> None:
    a = current(st, update_id, frozenset({Phase.DOWNLOADING}))
    if a is not None:
        a.bytes_downloaded = _clamp(a, bytes_downloaded)
        a.phase = Phase.PAUSED
        reporting.report_active(st, S.PAUSED, progress=a.percent(), detail=detail)


def resumed(st: AgentState, update_id: str) -> None:
    a = current(st, update_id, frozenset({Phase.PAUSED}))
    if a is not None:
        a.phase = Phase.DOWNLOADING
        a.reported_percent = a.percent()
        reporting.report_active(st, S.DOWNLOADING, progress=a.percent())


def downloaded(
    st: AgentState, update_id: str, failure: Reason | None, detail: str, attempts: int
) -> None:
    a = current(st, update_id, DOWNLOAD_PHASES)
    if a is None:
        return
    if failure is not None:
        reporting.fail(st, failure, detail, attempts=attempts)
        return
    a.bytes_downloaded = a.parsed.size_bytes
    a.download_finished_ms = st.now
    a.phase = Phase.DOWNLOADED
    reporting.report_active(st, S.DOWNLOADED, progress=100)
    install.try_install(st)
