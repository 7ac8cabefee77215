"""`v2c campaign`, `v2c device`, `v2c stats`: the fleet manager's commands.

Each calls the HTTP API (`v2c.infra.cli.api_client`), so they work the same
against the local stack and a deployment. `v2c campaign watch` is the live
view: one progress bar per state, the current wave and the gate's verdict,
until the campaign reaches a final status (or Ctrl-C).

Exit codes (as every `v2c` command, `v2c.infra.cli.errors`): 0 done; 1 the
API failed (5xx) or could not be reached; 2 bad options; 3 the API refused
the request (4xx: invalid, credentials or role, not found, conflict) or
there is no stack.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from v2c.handlers.ota.domain.counters import Counter
from v2c.handlers.ota.domain.lifecycle import ACTIVE, CampaignStatus
from v2c.infra.cli.api_command import ApiKey, ApiUrl, AsJson, AsRole, Stack, api_client

app = typer.Typer(
    name="campaign", help="OTA campaigns: create, follow and steer.", no_args_is_help=True
)
device_app = typer.Typer(name="device", help="Updates of one vehicle.", no_args_is_help=True)

_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)
BASE = "/api/v1/ota"
# Read from the domain, so a new status or counter cannot be missed here: the
# statuses after which nothing moves any more, and the counters in their order.
FINAL: Final = frozenset(CampaignStatus) - ACTIVE
STATES: Final = tuple(Counter)
STYLE: Final[Mapping[Counter, str]] = {
    Counter.PENDING: "white",
    Counter.IN_PROGRESS: "cyan",
    Counter.COMPLETED: "green",
    Counter.FAILED: "red",
    Counter.ROLLED_BACK: "magenta",
    Counter.CANCELLED: "yellow",
    Counter.TIMED_OUT: "red3",
    Counter.WAITING: "blue",
}


def _counters_line(counters: dict[str, Any]) -> str:
    return "  ".join(f"{name} {counters.get(name, 0)}" for name in STATES)


def show_campaign(campaign: dict[str, Any]) -> None:
    table = Table(
        title=f"campaign {campaign['campaign_id']}", title_justify="left", show_header=False
    )
    for key in (
        "name",
        "status",
        "status_reason",
        "strategy",
        "version",
        "device_model",
        "target_count",
    ):
        table.add_row(key, Text(str(campaign.get(key, ""))))
    table.add_row("counters", _counters_line(campaign["counters"]))
    rate = campaign["counters"].get("success_rate")
    table.add_row("success rate", "-" if rate is None else f"{rate:.1f} %")
    waves = ", ".join(
        f"{w['name']} ({w['size']})" + (" <" if n == campaign["current_wave"] else "")
        for n, w in enumerate(campaign["waves"])
    )
    table.add_row("waves", waves)
    if campaign.get("gate"):
        gate = campaign["gate"]
        table.add_row("gate", Text(f"{gate.get('verdict')}: {gate.get('reason')}"))
    _out.print(table)


def _print(answer: Any, as_json: bool) -> None:
    if as_json or not isinstance(answer, dict) or "campaign_id" not in answer:
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
    else:
        show_campaign(answer)


@app.command("create")
def create(
    spec_file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Campaign JSON (PRD fields).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Campaign name.")] = None,
    firmware: Annotated[str | None, typer.Option("--firmware", help="Firmware id.")] = None,
    target_filter: Annotated[
        str | None, typer.Option("--filter", help="e.g. \"model = 'Accord' AND year >= 2023\"")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help="immediate|scheduled|staged|canary|blue_green")
    ] = None,
    canary_size: Annotated[int | None, typer.Option(min=1)] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Retry-safe creation key.")] = None,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    as_json: AsJson = False,
) -> None:
    """Create a campaign from a JSON file and/or options (options win)."""
    body: dict[str, Any] = {}
    if spec_file is not None:
        try:
            body = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"cannot read {spec_file}: {exc}") from exc
    for key, value in (
        ("name", name),
        ("firmware_id", firmware),
        ("target_filter", target_filter),
        ("deployment_strategy", strategy),
        ("canary_size", canary_size),
    ):
        if value is not None:
            body[key] = value
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    with api_client(stack, api_url, api_key, as_role) as client:
        _print(client.post(f"{BASE}/campaigns", body, headers=headers), as_json)


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="Only campaigns in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    as_json: AsJson = False,
) -> None:
    """List campaigns."""
    with api_client(stack, api_url, api_key, as_role) as client:
        page = client.get(f"{BASE}/campaigns", status=status, limit=limit)
    if as_json:
        sys.stdout.write(json.dumps(page, indent=2) + "\n")
        return
    table = Table("campaign", "name", "status", "strategy", "targets", "completed", "failed")
    for c in page["items"]:
        counters = c["counters"]
        table.add_row(
            c["campaign_id"],
            Text(c["name"]),
            c["status"],
            c["strategy"],
            str(c["target_count"]),
            str(counters["completed"]),
            str(counters["failed"] + counters["rolled_back"]),
        )
    _out.print(table)


def _command(verb: str, help_text: str) -> None:
    def run(
        campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
        stack: Stack = None,
        api_url: ApiUrl = None,
        api_key: ApiKey = None,
        as_role: AsRole = None,
        as_json: AsJson = False,
    ) -> None:
        with api_client(stack, api_url, api_key, as_role) as client:
            if verb == "show":
                answer = client.get(f"{BASE}/campaigns/{campaign_id}")
            else:
                answer = client.post(f"{BASE}/campaigns/{campaign_id}/{verb}")
        _print(answer, as_json)

    run.__doc__ = help_text
    app.command(verb)(run)


for _verb, _help in (
    ("show", "Show a campaign."),
    ("start", "Start a campaign."),
    ("pause", "Pause a campaign (in-flight updates finish)."),
    ("resume", "Resume a paused campaign."),
    ("cancel", "Cancel a campaign (pending updates cancelled)."),
):
    _command(_verb, _help)


@app.command("rollback")
def rollback(
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    reason: Annotated[str, typer.Option(help="Why (required and recorded: BR-OTA-035).")],
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    as_json: AsJson = False,
) -> None:
    """Roll back: vehicles in flight are told to stop; the completed get a signed rollback."""
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.post(f"{BASE}/campaigns/{campaign_id}/rollback", {"reason": reason})
    _print(answer, as_json)


@app.command("approve")
def approve(
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    comment: Annotated[str | None, typer.Option(help="A comment stored with the approval.")] = None,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    as_json: AsJson = False,
) -> None:
    """Approve a campaign that requires approval, as the stack's approver (default
    `--as approver`). The API records the credential's principal as the approver;
    the campaign's creator cannot approve it."""
    body = {"comment": comment} if comment else {}
    with api_client(stack, api_url, api_key, as_role, default_role="approver") as client:
        _print(client.post(f"{BASE}/campaigns/{campaign_id}/approve", body), as_json)


@app.command("reject")
def reject(
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    reason: Annotated[str, typer.Option(help="Why the campaign is rejected (required).")],
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    as_json: AsJson = False,
) -> None:
    """Reject a campaign awaiting approval, as the stack's approver (default `--as
    approver`): it ends `rejected` with the reason, and nobody is notified."""
    with api_client(stack, api_url, api_key, as_role, default_role="approver") as client:
        answer = client.post(f"{BASE}/campaigns/{campaign_id}/reject", {"reason": reason})
        _print(answer, as_json)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:>12}"),
        BarColumn(bar_width=40),
        MofNCompleteColumn(),
        console=_err,
    )


@app.command("watch")
def watch(
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between polls.")] = 1.0,
    timeout: Annotated[float, typer.Option(min=1, help="Give up after this many seconds.")] = 3600,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
) -> None:
    """Follow a campaign live until it reaches a final status."""
    deadline = time.monotonic() + timeout
    with api_client(stack, api_url, api_key, as_role) as client:
        campaign = client.get(f"{BASE}/campaigns/{campaign_id}")
        total = max(1, campaign["target_count"])
        progress = _progress()
        tasks = {s: progress.add_task(f"[{STYLE[s]}]{s}", total=total) for s in STATES}
        with Live(progress, console=_err, transient=False):
            while True:
                for state in STATES:
                    progress.update(tasks[state], completed=campaign["counters"][state])
                if campaign["status"] in FINAL or campaign["status"] == CampaignStatus.PAUSED:
                    break
                if time.monotonic() > deadline:
                    _err.print("timed out; the campaign goes on")
                    raise typer.Exit(1)
                time.sleep(interval)
                campaign = client.get(f"{BASE}/campaigns/{campaign_id}")
    show_campaign(campaign)


@device_app.command("update")
def device_update(
    device_id: Annotated[str, typer.Argument(help="Vehicle id (VIN-...).")],
    firmware: Annotated[str, typer.Option("--firmware", help="Firmware id.")],
    force: Annotated[bool, typer.Option(help="Also when it runs this version or newer.")] = False,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
) -> None:
    """Update one vehicle outside any campaign."""
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.post(
            f"{BASE}/devices/{device_id}/update", {"firmware_id": firmware, "force": force}
        )
    _print(answer, True)


@device_app.command("rollback")
def device_rollback(
    device_id: Annotated[str, typer.Argument(help="Vehicle id (VIN-...).")],
    version: Annotated[str | None, typer.Option(help="Default: the version before.")] = None,
    reason: Annotated[str, typer.Option(help="Recorded with the rollback.")] = "manual rollback",
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
) -> None:
    """Roll one vehicle back to an earlier version."""
    body: dict[str, Any] = {"reason": reason}
    if version:
        body["version"] = version
    with api_client(stack, api_url, api_key, as_role) as client:
        _print(client.post(f"{BASE}/devices/{device_id}/rollback", body), True)


@device_app.command("history")
def device_history(
    device_id: Annotated[str, typer.Argument(help="Vehicle id (VIN-...).")],
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    as_json: AsJson = False,
) -> None:
    """A vehicle's updates, oldest first."""
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.get(f"{BASE}/devices/{device_id}/updates")
    if as_json:
        _print(answer, True)
        return
    table = Table("update", "kind", "from", "to", "state", "reason")
    for u in answer["items"]:
        table.add_row(
            u["update_id"], u["kind"], u["from_version"], u["to_version"], u["state"], u["reason"]
        )
    _out.print(table)


def stats(
    campaign_id: Annotated[str | None, typer.Argument(help="A campaign; none: the fleet.")] = None,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
) -> None:
    """Update statistics, fleet-wide or for one campaign (JSON)."""
    path = f"{BASE}/stats" if campaign_id is None else f"{BASE}/stats/campaigns/{campaign_id}"
    with api_client(stack, api_url, api_key, as_role) as client:
        _print(client.get(path), True)
