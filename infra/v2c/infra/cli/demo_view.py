"""`v2c demo`: the whole system, end to end, in one command.

1. the embedded stack: mosquitto (mTLS), moto, the gateway and the API;
2. a simulated fleet (default 200 vehicles, 3 regions, 2 models), each
   with its own certificate, MQTT session, A/B flash and update agent,
   registered in the cloud's vehicle registry;
3. firmware packages uploaded through the API (the new version for each
   model, and the installed one, so a rollback has somewhere to go);
4. one canary campaign per model created and started through the API;
5. live progress bars per state while the vehicles report, then a summary:
   per state and reason, each canary gate's decision, telemetry and DLQ
   depth, durations, and where to look next.

The exit code says whether each campaign behaved as the gate rules say.
`gate_problem` is a test oracle, not a second copy of the rules: it runs the
domain's own `evaluate_gate` again on the canary's counters and the
campaign's thresholds, as a reader would by hand, and checks the cloud acted
on the verdict (a passing gate released the next wave, a failing one paused
the campaign). It decides nothing for the campaign; if the cloud and this
re-evaluation disagree, the demo fails.

Every run starts fresh (`fresh_directory`): what an earlier run left in the
directory (the vehicles' flash and agent state, the packages, the broker's
sessions and the logs) is removed first, so the fleet runs 1.0.0 again and
the same campaigns to 2.0.0 can be made; only the stack's PKI (CA and
certificates, still valid) is kept, which saves issuing them again. The AWS
side (moto) lives in memory and is new with each stack anyway.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from v2c.contract.errors import Conflict, InvalidInput
from v2c.handlers.ota.domain.canary import GateThresholds, GateVerdict, evaluate_gate
from v2c.handlers.ota.domain.counters import CampaignCounters, Counter
from v2c.handlers.ota.domain.lifecycle import CampaignStatus
from v2c.infra.cli.api_client import ApiClient, ApiTarget
from v2c.infra.cli.commands.campaign import STYLE

BASE: Final = "/api/v1/ota"
OLD_VERSION: Final = "1.0.0"
NEW_VERSION: Final = "2.0.0"
COUNTERS: Final = tuple(Counter)  # in the order `v2c campaign watch` shows them
SETTLED: Final = frozenset({"completed", "cancelled", "rolled_back", "paused"})
# What a run makes in its directory; `stack/pki` survives a new run.
RUN_PARTS: Final = frozenset({"stack", "fleet", "packages"})
KEPT_IN_STACK: Final = frozenset({"pki"})


def fresh_directory(directory: Path) -> list[str]:
    """Make `directory` what a first run finds; returns what was removed.

    Refuses (without removing anything) a directory that holds anything a
    run does not make, since `--dir` may point anywhere, and one whose stack
    still runs (`--keep-running` in another shell).
    """
    from v2c.infra.local.stack_control import running_stack_pids
    from v2c.infra.local.stack_layout import StackLayout

    if not directory.exists():
        directory.mkdir(parents=True)
        return []
    if not directory.is_dir():
        raise InvalidInput(f"--dir {directory} is not a directory")
    foreign = sorted(p.name for p in directory.iterdir() if p.name not in RUN_PARTS)
    if foreign:
        raise InvalidInput(
            f"--dir {directory} holds files a demo run did not make "
            f"({', '.join(foreign[:5])}); give an empty or new directory"
        )
    layout = StackLayout.for_dir(directory / "stack")
    running = running_stack_pids(layout)
    if running:
        raise Conflict(
            f"a demo stack still runs in {layout.root} (pids {sorted(running.values())}): "
            f"stop it (Ctrl-C, or `v2c stack down --dir {layout.root}`) first"
        )
    removed = []
    for part in sorted(directory.iterdir()):
        stack = part.name == "stack" and part.is_dir() and not part.is_symlink()
        children = list(part.iterdir()) if stack else [part]
        for child in sorted(children):
            if stack and child.name in KEPT_IN_STACK:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
            removed.append(str(child.relative_to(directory)))
    return removed


@dataclass
class DemoOutcome:
    campaigns: list[dict[str, Any]] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)  # campaign id -> problem or ""
    fleet: dict[str, Any] = field(default_factory=dict)
    telemetry_stored: int = 0
    dlq_depth: dict[str, int] = field(default_factory=dict)
    dlq_reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.campaigns) and not any(self.verdicts.values())


def image_for(model: str, version: str, size: int = 256 * 1024) -> bytes:
    line = f"v2c demo image {model} {version}\n".encode()
    return (line * (size // len(line) + 1))[:size]


def upload_package(client: ApiClient, model: str, version: str, workdir: Path) -> str:
    """Build a real update package and upload it through the API (as a file,
    streamed with its length, as `v2c firmware upload` does); its firmware id."""
    from v2c.vehicle_sim.ota.device.package import build_package

    path = workdir / f"{model.lower()}-ecu-{version}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(build_package(version, image_for(model, version)))
    with path.open("rb") as package:
        answer = client.upload(
            f"{BASE}/firmware",
            package,
            params={
                "name": f"{model.lower()}-ecu",
                "version": version,
                "device_model": model,
                "manufacturer": "v2c demo",
                "filename": path.name,
            },
        )
    return str(answer["firmware_id"])


def campaign_spec(model: str, firmware_id: str, vehicles: int) -> dict[str, Any]:
    return {
        "name": f"{model} {NEW_VERSION} canary",
        "description": "v2c demo: canary first, the rest once the gate passes",
        "firmware_id": firmware_id,
        "target_filter": f"model = '{model}'",
        "deployment_strategy": "canary",
        "canary_size": max(5, vehicles // 5),
        "batch_size": 50,
        "max_concurrent_updates": 200,
        # The realistic fault mix fails a few percent of vehicles; 10 % keeps the
        # noise of a small sample from pausing a healthy rollout.
        "pause_threshold_percent": 10,
        "min_battery_level": 30,
    }


def gate_problem(campaign: dict[str, Any]) -> str:
    """Empty if the campaign did what its canary's counters call for."""
    canary = campaign["waves"][0]
    counters = CampaignCounters(**{name: canary["counters"].get(name, 0) for name in COUNTERS})
    spec = campaign["spec"]
    thresholds = GateThresholds(
        success_threshold_percent=float(spec.get("success_threshold_percent", 95.0)),
        failure_threshold_percent=float(spec.get("pause_threshold_percent", 5.0)),
    )
    decision = evaluate_gate(counters, thresholds)
    status, wave = campaign["status"], campaign["current_wave"]
    if (
        status == CampaignStatus.ROLLED_BACK
        and wave >= 1
        and _passed_on_record(campaign, thresholds)
    ):
        # The gate passed and released the rollout; a later wave's failures
        # then rolled the whole campaign back (BR-OTA-019/020), the canary's
        # completed vehicles with it, so its counters no longer show what the
        # gate saw: the rollback, not the gate, is what they now record.
        return ""
    if decision.verdict is GateVerdict.PASS and wave < 1 and status != CampaignStatus.PAUSED:
        return f"gate passes ({decision.reason}) but the rollout was not released"
    # A failing gate pauses; updates already in flight then finish, and if their
    # failures cross `failure_threshold_percent` the campaign rolls back on its own
    # (BR-OTA-019/020). Either way the rollout must not have gone past the canary.
    stopped = {CampaignStatus.PAUSED}
    if spec.get("auto_rollback", True):
        stopped.add(CampaignStatus.ROLLED_BACK)
    if decision.verdict is GateVerdict.FAIL_PAUSE and (status not in stopped or wave != 0):
        return f"gate fails ({decision.reason}) but the campaign is {status} at wave {wave}"
    if decision.verdict is GateVerdict.WAIT:
        return f"the canary has not finished ({decision.reason})"
    return ""


def _passed_on_record(campaign: dict[str, Any], thresholds: GateThresholds) -> bool:
    """Whether the counts the gate recorded when it released the rollout pass
    the gate rules, judged here again rather than taken on the gate's word."""
    gate = campaign.get("gate") or {}
    try:
        completed, failures = int(gate["completed"]), int(gate["failures"])
        pending = int(gate["eligible"]) - int(gate["finished"])
    except (KeyError, TypeError, ValueError):
        return False
    if min(completed, failures, pending) < 0:
        return False
    seen = CampaignCounters(pending=pending, completed=completed, failed=failures)
    return evaluate_gate(seen, thresholds).verdict is GateVerdict.PASS


class DemoView:
    """Progress bars per campaign counter, and the fleet's states."""

    def __init__(self, campaigns: list[dict[str, Any]]) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(bar_width=36),
            MofNCompleteColumn(),
        )
        self.tasks: dict[tuple[str, str], Any] = {}
        for campaign in campaigns:
            for name in COUNTERS:
                label = f"{campaign['name'][:16]} [{STYLE[name]}]{name}"
                self.tasks[(campaign["campaign_id"], name)] = self.progress.add_task(
                    label, total=max(1, campaign["target_count"])
                )
        self.fleet_line = Table.grid()

    def update(self, campaigns: list[dict[str, Any]], fleet: dict[str, int]) -> Group:
        for campaign in campaigns:
            for name in COUNTERS:
                self.progress.update(
                    self.tasks[(campaign["campaign_id"], name)],
                    completed=campaign["counters"][name],
                )
        states = "  ".join(f"{state.lower()} {n}" for state, n in fleet.items())
        line = Table.grid()
        line.add_row(f"vehicles by last report: {states or '-'}")
        return Group(self.progress, line)


def watch(
    client: ApiClient,
    campaign_ids: list[str],
    fleet_states: Callable[[], dict[str, int]],
    console: Console,
    timeout_s: float,
    interval_s: float = 0.5,
) -> list[dict[str, Any]]:
    campaigns = [client.get(f"{BASE}/campaigns/{cid}") for cid in campaign_ids]
    view = DemoView(campaigns)
    deadline = time.monotonic() + timeout_s
    with Live(
        view.update(campaigns, fleet_states()), console=console, refresh_per_second=4
    ) as live:
        while time.monotonic() < deadline:
            campaigns = [client.get(f"{BASE}/campaigns/{cid}") for cid in campaign_ids]
            live.update(view.update(campaigns, fleet_states()))
            if all(c["status"] in SETTLED for c in campaigns):
                break
            time.sleep(interval_s)
    return campaigns


def summary_tables(outcome: DemoOutcome) -> list[Table]:
    tables: list[Table] = []
    campaigns = Table(title="campaigns", title_justify="left")
    for column in ("campaign", "status", "targets", *COUNTERS):
        campaigns.add_column(column, overflow="fold")
    for c in outcome.campaigns:
        campaigns.add_row(
            c["name"],
            c["status"],
            str(c["target_count"]),
            *(str(c["counters"][n]) for n in COUNTERS),
        )
    tables.append(campaigns)
    gates = Table(title="canary gates", title_justify="left")
    for column in ("campaign", "decision", "why", "check"):
        gates.add_column(column, overflow="fold")
    for c in outcome.campaigns:
        gate = c.get("gate") or {}
        problem = outcome.verdicts.get(c["campaign_id"], "")
        gates.add_row(
            c["name"],
            str(gate.get("verdict", "-")),
            str(gate.get("reason") or c.get("status_reason") or "-"),
            "[green]as the gate rules say[/]" if not problem else f"[red]{problem}[/]",
        )
    tables.append(gates)
    states = Table(title="vehicles by state and reason", title_justify="left")
    states.add_column("state")
    states.add_column("reason")
    states.add_column("vehicles", justify="right")
    for row in outcome.fleet.get("by_state_reason", []):
        states.add_row(row["state"], row["reason"] or "-", str(row["vehicles"]))
    tables.append(states)
    facts = Table(title="and", title_justify="left", show_header=False)
    facts.add_row("telemetry samples stored", str(outcome.telemetry_stored))
    for queue, depth in outcome.dlq_depth.items():
        reasons = outcome.dlq_reasons.get(queue, {})
        detail = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
        facts.add_row(f"DLQ {queue}", f"{depth}" + (f" ({detail})" if detail else ""))
    facts.add_row("wall time", f"{outcome.seconds:.1f} s")
    simulated = outcome.fleet.get("simulated_seconds")
    if simulated is not None:
        facts.add_row("simulated time", f"{simulated / 60:.1f} min")
    tables.append(facts)
    return tables


def target_for(url: str, key_file: Path | None) -> ApiTarget:
    key = key_file.read_text().strip() if key_file is not None and key_file.exists() else None
    return ApiTarget(url, key)
