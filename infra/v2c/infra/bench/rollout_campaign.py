"""The rollout bench's campaign: a package and a campaign through the API, watched to the end.

`CampaignRun` uploads the package (`POST /firmware`), creates the campaign
(`POST /campaigns`) and starts it, then polls the campaign's DynamoDB item
(strongly consistent GetItem, every `poll_s`) until every target is terminal
and the campaign completed, printing progress on stderr. The
poll reads the item rather than the API so that each poll is exactly one
request, made with this bench's user agent (`rollout_aws.BENCH_AGENT`) and so
left out of the system's AWS request count. The moto recorder runs from just
before the creation to the end; `marks` are its file sizes at the phase
boundaries: create, answered (the creation's answer; a large fleet may still
be planning then), planned (the first poll that sees the targets planned),
end. Every target is terminal when the terminal counters add up to the
planned target count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import requests
from botocore.config import Config
from rich.console import Console

from v2c.handlers.ota.ddb import from_item
from v2c.infra.bench.common import BenchError, JsonDict
from v2c.infra.bench.rollout_aws import BENCH_AGENT, MotoRecorder, RequestTally, tally
from v2c.infra.bench.rollout_stage import MODEL
from v2c.infra.settings import StackSettings
from v2c.vehicle_sim.ota.device.package import build_package

BASE: Final = "/api/v1/ota"
NEW_VERSION: Final = "2.0.0"
SETTLED_BADLY: Final = frozenset({"paused", "cancelled", "rolled_back", "planning_failed"})
TERMINAL_COUNTERS: Final = ("completed", "failed", "rolled_back", "cancelled")


class RolloutApi:
    """The few API calls the bench makes, with the fleet manager's key."""

    def __init__(self, settings: StackSettings) -> None:
        if settings.api is None or settings.api.key_file is None:
            raise BenchError("the stack has no API")
        self.url = settings.api.url
        self.http = requests.Session()
        self.http.headers["X-API-Key"] = settings.api.key_file.read_text().strip()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.http.request(method, f"{self.url}{path}", timeout=120, **kwargs)
        if answer.status_code >= 300:
            raise BenchError(f"{method} {path}: HTTP {answer.status_code} {answer.text[:500]}")
        return answer.json()


def campaign_spec(
    firmware_id: str,
    vehicles: int,
    stages: Sequence[int],
    *,
    batch_size: int,
    max_concurrent: int,
) -> JsonDict:
    """Staged over `stages` (cumulative percentages): the first stage is the
    canary, every stage but the last is gated."""
    return {
        "name": f"bench rollout {vehicles}",
        "description": "v2c bench rollout: a canary stage, then staged waves, each gated",
        "firmware_id": firmware_id,
        "target_filter": f"model = '{MODEL}'",
        "deployment_strategy": "staged",
        "stage_percentages": list(stages),
        "batch_size": batch_size,
        "max_concurrent_updates": max_concurrent,
        "min_battery_level": 30,
    }


@dataclass
class Window:
    """The rollout window's moments (`time.monotonic()`) and the recorder's marks."""

    create: float = 0.0
    created: float = 0.0  # the creation answered (possibly still planning)
    started: float = 0.0
    planned: float | None = None  # first poll that saw the targets planned
    all_terminal: float | None = None
    completed: float | None = None
    stopped: float | None = None  # gave up: timed out, or the campaign stopped itself
    why_stopped: str = ""
    marks: dict[str, int] = field(default_factory=dict)


class CampaignRun:
    """One campaign through the API, watched on its DynamoDB item until every
    target is terminal, inside the recorder's window."""

    def __init__(
        self,
        settings: StackSettings,
        console: Console,
        *,
        recording: Path | None,
        poll_s: float,
        timeout_s: float,
        progress_every_s: float,
        progress_extra: Callable[[], str] | None = None,
    ) -> None:
        self.settings = settings
        self.console = console
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.progress_every_s = progress_every_s
        self.progress_extra = progress_extra
        self.api = RolloutApi(settings)
        aws = settings.aws
        config = aws.botocore_config().merge(Config(user_agent_extra=BENCH_AGENT))
        self.ddb = aws.session().client("dynamodb", endpoint_url=aws.endpoint_url, config=config)
        self.recorder = (
            MotoRecorder(aws.endpoint_url, recording)
            if recording is not None and aws.endpoint_url is not None
            else None
        )
        self.window = Window()

    def upload(self, package_bytes: int) -> tuple[str, float]:
        """A package of about `package_bytes` through the API; its firmware id and seconds."""
        image = (b"v2c bench rollout image\n" * (package_bytes // 24 + 1))[:package_bytes]
        package = build_package(NEW_VERSION, image)
        began = time.perf_counter()
        answer = self.api.call(
            "POST",
            f"{BASE}/firmware",
            data=package,
            headers={"Content-Type": "application/octet-stream"},
            params={
                "name": "bench-rollout-ecu",
                "version": NEW_VERSION,
                "device_model": MODEL,
                "manufacturer": "v2c bench",
                "filename": f"bench-rollout-{NEW_VERSION}.bin",
            },
        )
        return str(answer["firmware_id"]), time.perf_counter() - began

    def _mark(self, name: str) -> None:
        if self.recorder is not None:
            self.window.marks[name] = self.recorder.mark()

    def run(self, spec: JsonDict) -> str:
        """Create and start the campaign; wait until every target is terminal
        and the campaign completed, or it stopped itself (paused, cancelled,
        rolled back), or `timeout_s` passed (`window.stopped` says so: the
        report then shows how far it got, and the exact check fails). The
        recorder keeps recording: `finish()`."""
        w = self.window
        if self.recorder is not None:
            self.recorder.start()
        self._mark("create")
        w.create = time.monotonic()
        created = self.api.call("POST", f"{BASE}/campaigns", json=spec)
        campaign_id = str(created["campaign_id"])
        w.created = time.monotonic()
        self._mark("answered")
        self.api.call("POST", f"{BASE}/campaigns/{campaign_id}/start", json={})
        w.started = time.monotonic()
        self._wait(campaign_id)
        return campaign_id

    def finish(self) -> None:
        """End the recorded window (after the last reports were handled)."""
        self._mark("end")
        if self.recorder is not None:
            self.recorder.stop()

    def _item(self, campaign_id: str) -> dict[str, Any]:
        answer = self.ddb.get_item(
            TableName=self.settings.resources.campaigns_table,
            Key={"campaign_id": {"S": campaign_id}},
            ConsistentRead=True,
        )
        return from_item(answer["Item"]) if "Item" in answer else {}

    def _wait(self, campaign_id: str) -> None:
        w = self.window
        deadline = w.create + self.timeout_s
        next_line = 0.0
        while True:
            now = time.monotonic()
            item = self._item(campaign_id)
            status = str(item.get("status", ""))
            targets = int(item.get("target_count", 0))
            outstanding = int(item.get("c_pending", 0)) + int(item.get("c_in_progress", 0))
            planned = targets > 0 and status not in ("", "planning")
            if w.planned is None and planned:
                w.planned = now
                self._mark("planned")
            terminal = sum(int(item.get(f"c_{name}", 0)) for name in TERMINAL_COUNTERS)
            if w.all_terminal is None and planned and terminal == targets:
                w.all_terminal = now
            if now >= next_line or w.all_terminal is not None:
                self._progress(item, now)
                next_line = now + self.progress_every_s
            if status == "completed" and w.all_terminal is not None:
                w.completed = now
                return
            if status in SETTLED_BADLY or now >= deadline:
                w.stopped = now
                w.why_stopped = (
                    f"the campaign is {status}: {item.get('status_reason', '')}"
                    if status in SETTLED_BADLY
                    else f"not all terminal after {self.timeout_s:g} s: status {status}, "
                    f"{outstanding} targets pending or in progress"
                )
                self._progress(item, now)
                return
            time.sleep(self.poll_s)

    def _progress(self, item: dict[str, Any], now: float) -> None:
        counters = {k[2:]: int(v) for k, v in item.items() if k.startswith("c_")}
        done = sum(counters.get(k, 0) for k in TERMINAL_COUNTERS)
        line = (
            f"[{now - self.window.create:7.1f} s] {item.get('status', '?')} "
            f"wave {int(item.get('current_wave', 0)) + 1}/{len(_waves(item))}: "
            f"notified {int(item.get('cursor', 0)):,}/{int(item.get('target_count', 0)):,}, "
            f"in progress {counters.get('in_progress', 0):,}, terminal {done:,}"
        )
        if self.progress_extra is not None:
            line += " | " + self.progress_extra()
        self.console.print(line, highlight=False, soft_wrap=True)

    def aws_tally(self) -> dict[str, RequestTally] | None:
        if self.recorder is None:
            return None
        m = self.window.marks
        planned = m.get("planned", m["end"])
        phases = {
            "create": (m["create"], m["answered"]),
            "planning": (m["answered"], planned),
            "dispatch": (planned, m["end"]),
        }
        return tally(self.recorder.path, phases)


def _waves(item: dict[str, Any]) -> list[Any]:
    raw = item.get("waves")
    return json.loads(raw) if isinstance(raw, str) else []
