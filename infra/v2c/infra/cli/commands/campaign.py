"""`v2c campaign`, `v2c device`, `v2c stats`: the fleet manager's commands.

Each calls the HTTP API (`v2c.infra.cli.api_client`), so they work the same
against the local stack and a deployment. `v2c campaign watch` is the live
view: one progress bar per state, the current wave and the gate's verdict,
until the campaign reaches a final status (or Ctrl-C).

Exit codes (as every `v2c` command, `v2c.infra.cli.errors`, docs/cli.md):
0 done; 1 the API failed (5xx) or could not be reached; 2 bad options; 3 the
API refused the request (4xx: invalid, credentials or role, not found,
conflict); 4 no stack. `watch` ends 0 only on `completed`: 10 paused, 11
failed, 12 cancelled, 13 rolled back, 14 rejected, 124 its timeout ran out.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from v2c.infra.cli.api_client import ApiError
from v2c.infra.cli.api_command import (
    ApiKey,
    ApiUrl,
    AsJson,
    AsRole,
    Format,
    Output,
    Stack,
    Wide,
    api_client,
)
from v2c.infra.cli.campaign_watch import STATES, STYLE, follow
from v2c.infra.cli.errors import TIMED_OUT
from v2c.infra.cli.output import dump, key_value_table, wants_json
from v2c.infra.cli.tables import Column, Kind, fitted_table

app = typer.Typer(
    name="campaign", help="OTA campaigns: create, follow and steer.", no_args_is_help=True
)
device_app = typer.Typer(name="device", help="Updates of one vehicle.", no_args_is_help=True)

_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)
BASE = "/api/v1/ota"
__all__ = ["STATES", "STYLE", "app", "device_app", "show_campaign", "stats"]
T = TypeVar("T")
# The API's field names, as the user typed them: an API 400 about `firmware_id`
# reads as the `--firmware` the user gave (or forgot).
FLAGS: Final[Mapping[str, str]] = {
    "firmware_id": "--firmware",
    "target_filter": "--filter",
    "deployment_strategy": "--strategy",
    "canary_size": "--canary-size",
    "name": "--name",
}


def _counters_line(counters: Mapping[str, Any]) -> str:
    return "  ".join(f"{name} {counters.get(name, 0)}" for name in STATES)


def show_campaign(campaign: Mapping[str, Any]) -> None:
    rows: list[tuple[str | Text, str | Text]] = [
        (key, Text(str(campaign.get(key, ""))))
        for key in (
            "name",
            "status",
            "status_reason",
            "strategy",
            "firmware_id",
            "version",
            "device_model",
            "target_count",
        )
    ]
    rows.append(("counters", Text(_counters_line(campaign["counters"]))))
    rate = campaign["counters"].get("success_rate")
    rows.append(("success rate", "-" if rate is None else f"{rate:.1f} %"))
    waves = ", ".join(
        f"{w['name']} ({w['size']})" + (" <" if n == campaign["current_wave"] else "")
        for n, w in enumerate(campaign["waves"])
    )
    rows.append(("waves", Text(waves)))
    if campaign.get("gate"):
        gate = campaign["gate"]
        rows.append(("gate", Text(f"{gate.get('verdict')}: {gate.get('reason')}")))
    columns = [Column("field", Kind.FIXED), Column("value", Kind.TEXT)]
    _out.print(fitted_table(columns, rows, title=f"campaign {campaign['campaign_id']}"))


def _print(answer: Any, as_json: bool) -> None:
    if as_json or not isinstance(answer, dict) or "campaign_id" not in answer:
        dump(answer)
    else:
        show_campaign(answer)


@contextmanager
def _spinner(what: str, quiet: bool) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while one long request runs
    (planning a large fleet takes a while); nothing on a pipe or with JSON."""
    if quiet or not _err.is_terminal:
        yield
        return
    with _err.status(what) as status:
        started = time.monotonic()
        done = threading.Event()

        def tick() -> None:
            while not done.wait(0.5):
                status.update(f"{what} {time.monotonic() - started:.0f} s")

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()


def _timed(call: Callable[[], T], what: str, quiet: bool) -> T:
    with _spinner(what, quiet):
        return call()


def _missing(body: Mapping[str, Any]) -> list[str]:
    """The flags a creation needs that neither the options nor the file gave."""
    return [FLAGS[key] for key in ("name", "firmware_id") if not body.get(key)]


def flags_for(detail: str) -> str:
    """An API error's field names as the flags the user typed (`firmware_id`
    -> `--firmware`), so the message points at the command line."""
    for field, flag in FLAGS.items():
        detail = detail.replace(f"{field}:", f"{flag}:")
    return detail


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
    start: Annotated[bool, typer.Option("--start", help="Start it once created.")] = False,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Create a campaign from a JSON file and/or options (options win)."""
    body: dict[str, Any] = {}
    if spec_file is not None:
        try:
            body = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:
            detail = f"cannot read {spec_file}: {exc}"
            raise typer.BadParameter(detail, param_hint="--file") from exc
        if not isinstance(body, dict):
            raise typer.BadParameter(f"{spec_file} is not a JSON object", param_hint="--file")
    for key, value in (
        ("name", name),
        ("firmware_id", firmware),
        ("target_filter", target_filter),
        ("deployment_strategy", strategy),
        ("canary_size", canary_size),
    ):
        if value is not None:
            body[key] = value
    missing = _missing(body)
    if missing:  # before any request: the flags, not the API's field names
        raise typer.BadParameter(
            f"missing {' and '.join(missing)} (or give them in --file as "
            f"{', '.join(k for k, f in FLAGS.items() if f in missing)})"
        )
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    quiet = wants_json(output, as_json)
    with api_client(stack, api_url, api_key, as_role) as client:
        try:
            answer = _timed(
                lambda: client.post(f"{BASE}/campaigns", body, headers=headers),
                "creating the campaign (planning its targets) ...",
                quiet,
            )
        except ApiError as exc:
            if exc.status == 400:
                detail = exc.detail.removeprefix(f"HTTP {exc.status}: ")
                raise ApiError(exc.status, flags_for(detail), exc.api_reason) from exc
            raise
        if start:
            answer = client.post(f"{BASE}/campaigns/{answer['campaign_id']}/start")
    _print(answer, quiet)


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="Only campaigns in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    wide: Wide = False,
    as_json: AsJson = False,
) -> None:
    """List campaigns."""
    with api_client(stack, api_url, api_key, as_role) as client:
        page = client.get(f"{BASE}/campaigns", status=status, limit=limit)
    if wants_json(output, as_json):
        dump(page)
        return
    columns = [
        Column("campaign", Kind.ID),
        Column("name"),
        Column("status", Kind.FIXED),
        Column("version", Kind.ID, drop=2),
        Column("strategy", Kind.FIXED, drop=3),
        Column("done", Kind.FIXED, justify="right"),
        Column("failed", Kind.FIXED, drop=1, justify="right"),
    ]
    rows = []
    for c in page["items"]:
        counters = c["counters"]
        rows.append(
            (
                c["campaign_id"],
                Text(c["name"]),
                c["status"],
                Text(c.get("version", "")),
                c["strategy"],
                f"{counters['completed']}/{c['target_count']}",
                str(counters["failed"] + counters["rolled_back"]),
            )
        )
    _out.print(fitted_table(columns, rows, wide=wide))
    if not rows:
        _err.print("no campaigns" + (f" in status {status}" if status else ""))


def _command(verb: str, help_text: str) -> None:
    def run(
        campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
        stack: Stack = None,
        api_url: ApiUrl = None,
        api_key: ApiKey = None,
        as_role: AsRole = None,
        output: Output = Format.TABLE,
        as_json: AsJson = False,
    ) -> None:
        with api_client(stack, api_url, api_key, as_role) as client:
            if verb == "show":
                answer = client.get(f"{BASE}/campaigns/{campaign_id}")
            else:
                answer = client.post(f"{BASE}/campaigns/{campaign_id}/{verb}")
        _print(answer, wants_json(output, as_json))

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
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Roll back: vehicles in flight are told to stop; the completed get a signed rollback."""
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.post(f"{BASE}/campaigns/{campaign_id}/rollback", {"reason": reason})
    _print(answer, wants_json(output, as_json))


@app.command("approve")
def approve(
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    comment: Annotated[str | None, typer.Option(help="A comment stored with the approval.")] = None,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Approve a campaign that requires approval, as the stack's approver (default
    `--as approver`). The API records the credential's principal as the approver;
    the campaign's creator cannot approve it."""
    body = {"comment": comment} if comment else {}
    with api_client(stack, api_url, api_key, as_role, default_role="approver") as client:
        answer = client.post(f"{BASE}/campaigns/{campaign_id}/approve", body)
    _print(answer, wants_json(output, as_json))


@app.command("reject")
def reject(
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    reason: Annotated[str, typer.Option(help="Why the campaign is rejected (required).")],
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Reject a campaign awaiting approval, as the stack's approver (default `--as
    approver`): it ends `rejected` with the reason, and nobody is notified."""
    with api_client(stack, api_url, api_key, as_role, default_role="approver") as client:
        answer = client.post(f"{BASE}/campaigns/{campaign_id}/reject", {"reason": reason})
    _print(answer, wants_json(output, as_json))


@app.command("watch")
def watch(
    campaign_id: Annotated[str, typer.Argument(help="Campaign id.")],
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between polls.")] = 1.0,
    timeout: Annotated[float, typer.Option(min=1, help="Give up after this many seconds.")] = 3600,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Follow a campaign live (stderr) until it stops, then print it (stdout).

    Exit code: 0 completed, 10 paused (a gate or health check, or by hand),
    11 failed, 12 cancelled, 13 rolled back, 14 rejected, 124 --timeout ran out.
    """
    with api_client(stack, api_url, api_key, as_role) as client:
        campaign, code = follow(
            lambda: client.get(f"{BASE}/campaigns/{campaign_id}"),
            _err,
            interval_s=interval,
            timeout_s=timeout,
        )
    _print(campaign, wants_json(output, as_json))
    if code is None:
        _err.print(f"timed out after {timeout:.0f} s; the campaign goes on ({campaign['status']})")
        raise typer.Exit(TIMED_OUT)
    if code:
        _err.print(f"campaign {campaign['status']}: {campaign.get('status_reason') or '-'}")
    raise typer.Exit(code)


@device_app.command("update")
def device_update(
    device_id: Annotated[str, typer.Argument(help="Vehicle id (VIN-...).")],
    firmware: Annotated[str, typer.Option("--firmware", help="Firmware id.")],
    force: Annotated[bool, typer.Option(help="Also when it runs this version or newer.")] = False,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Update one vehicle outside any campaign."""
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.post(
            f"{BASE}/devices/{device_id}/update", {"firmware_id": firmware, "force": force}
        )
    _show(answer, output, as_json, f"update of {device_id}")


@device_app.command("rollback")
def device_rollback(
    device_id: Annotated[str, typer.Argument(help="Vehicle id (VIN-...).")],
    version: Annotated[str | None, typer.Option(help="Default: the version before.")] = None,
    reason: Annotated[str, typer.Option(help="Recorded with the rollback.")] = "manual rollback",
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Roll one vehicle back to an earlier version."""
    body: dict[str, Any] = {"reason": reason}
    if version:
        body["version"] = version
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.post(f"{BASE}/devices/{device_id}/rollback", body)
    _show(answer, output, as_json, f"rollback of {device_id}")


def _show(answer: Any, output: Format, as_json: bool, title: str) -> None:
    if wants_json(output, as_json) or not isinstance(answer, dict):
        dump(answer)
    else:
        _out.print(key_value_table(answer, title=title))


@device_app.command("history")
def device_history(
    device_id: Annotated[str, typer.Argument(help="Vehicle id (VIN-...).")],
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    wide: Wide = False,
    as_json: AsJson = False,
) -> None:
    """A vehicle's updates, newest first."""
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.get(f"{BASE}/devices/{device_id}/updates")
    if wants_json(output, as_json):
        dump(answer)
        return
    columns = [
        Column("update", Kind.ID),
        Column("kind", Kind.FIXED, drop=2),
        Column("from", Kind.ID),
        Column("to", Kind.ID),
        Column("state", Kind.FIXED),
        Column("reason", drop=1),
    ]
    rows = [
        (
            u["update_id"],
            u["kind"],
            Text(u["from_version"]),
            Text(u["to_version"]),
            u["state"],
            Text(u["reason"] or "-"),
        )
        for u in answer["items"]
    ]
    _out.print(fitted_table(columns, rows, wide=wide))
    if not rows:
        _err.print(f"no updates for {device_id}")


def stats(
    campaign_id: Annotated[str | None, typer.Argument(help="A campaign; none: the fleet.")] = None,
    stack: Stack = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_role: AsRole = None,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Update statistics, fleet-wide or for one campaign."""
    path = f"{BASE}/stats" if campaign_id is None else f"{BASE}/stats/campaigns/{campaign_id}"
    with api_client(stack, api_url, api_key, as_role) as client:
        answer = client.get(path)
    title = "fleet statistics" if campaign_id is None else f"campaign {campaign_id}"
    _show(answer, output, as_json, title)
