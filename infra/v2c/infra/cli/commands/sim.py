"""`v2c sim`: run a simulated fleet against a running stack.

`v2c sim --vehicles 500 --faults realistic --time-scale 0.01 --duration 120`
builds (or finds again) 500 vehicles under `<stack>/fleet`, gives each a
client certificate when the broker speaks mTLS, writes them to the vehicle
registry, connects them, and then lets them live: every campaign started
against them (`v2c campaign create ...`, the API) is downloaded, installed,
rebooted into and reported, with the fault profile's failures. A live view
shows how many vehicles are in each state; Ctrl-C (or `--duration`) stops
them, and a table counts them by state and reason.

Exit codes (as every `v2c` command, `v2c.infra.cli.errors`): 0 the fleet
ran and stopped; 1 it failed (broker unreachable, ...); 2 bad options; 4 no
stack in the directory. `-o json` prints the summary as JSON on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from v2c.contract.errors import V2CError
from v2c.infra.cli.errors import exit_code_for
from v2c.infra.cli.output import AsJson, Format, Output, dump, wants_json

if TYPE_CHECKING:
    from v2c.vehicle_sim.fleet.simulator import FleetSimulator
    from v2c.vehicle_sim.fleet.summary import FleetSummary

_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)
STYLE = {
    "IDLE": "white",
    "COMPLETED": "green",
    "FAILED": "red",
    "ROLLED_BACK": "magenta",
    "REJECTED": "yellow",
    "DEFERRED": "blue",
    "PAUSED": "blue",
}


def _stack_dir(stack: Path | None) -> Path:
    if stack is not None:
        return stack
    return Path(os.environ.get("V2C_STACK_DIR") or ".stack")


def sim(
    vehicles: Annotated[int, typer.Option(min=1, max=100_000, help="Fleet size.")] = 100,
    faults: Annotated[
        str, typer.Option(help="Fault profile: realistic, none, or a profile file.")
    ] = "none",
    time_scale: Annotated[
        float, typer.Option(min=1e-5, max=1.0, help="Real seconds per simulated second.")
    ] = 0.01,
    duration: Annotated[
        float | None, typer.Option(min=0.0, help="Stop after this many seconds (default: Ctrl-C).")
    ] = None,
    stack: Annotated[Path | None, typer.Option("--stack", help="Stack directory.")] = None,
    models: Annotated[str, typer.Option(help="Comma-separated models.")] = "Accord,Civic",
    regions: Annotated[int, typer.Option(min=1, max=3, help="How many regions.")] = 3,
    installed_version: Annotated[
        str, typer.Option(help="Version a new vehicle leaves the factory with.")
    ] = "1.0.0",
    output: Output = Format.TABLE,
    as_json: AsJson = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Serve the fleet's Prometheus metrics on 127.0.0.1:PORT/metrics."
        ),
    ] = None,
) -> None:
    """Run N simulated vehicles against the stack until Ctrl-C or --duration."""
    from v2c.infra.local.fleet_provisioning import stack_fleet
    from v2c.infra.settings import load_settings
    from v2c.vehicle_sim.fleet.identity import fleet_members
    from v2c.vehicle_sim.ota.device.faults import FaultProfile

    directory = _stack_dir(stack)
    model_names = tuple(m.strip() for m in models.split(",") if m.strip())
    try:
        profile = FaultProfile.resolve(faults)
        fleet_members(vehicles, models=model_names, regions=regions)  # the options are valid
        settings = load_settings(stack_dir=directory)
        settings.require_mqtt()
    except V2CError as exc:  # no stack (3), a bad option value (2): `cli_errors`
        _err.print(Text.assemble(("error: ", "bold red"), exc.detail))
        raise typer.Exit(exit_code_for(exc)) from exc
    from v2c.infra.local.process_logging import configure_process_logging

    # The vehicles' own log records as the stack's processes write them (JSON lines
    # on stderr, printed above the live view); INFO would be a line per connect.
    configure_process_logging("v2c-sim", level=logging.WARNING)
    try:
        # Certificates, broker admission and the trusted key come from the
        # stack; the vehicles know the contract only.
        fleet = stack_fleet(
            settings,
            vehicles,
            models=model_names,
            regions=regions,
            faults=profile,
            time_scale=time_scale,
            base_dir=directory / "fleet",
            installed_version=installed_version,
        )
        if metrics_port is not None:
            from v2c.vehicle_sim.metrics import SIM_METRICS

            SIM_METRICS.serve(metrics_port)  # connects, publishes, deepest buffer
        summary = asyncio.run(_run(fleet, duration))
    except (V2CError, OSError) as exc:
        _err.print(Text.assemble(("error: ", "bold red"), str(exc)))
        raise typer.Exit(1) from exc
    if wants_json(output, as_json):
        dump(summary.to_json())  # plain JSON on stdout: `v2c sim -o json | jq`
    else:
        _out.print(summary_table(summary))


async def _run(fleet: FleetSimulator, duration: float | None) -> FleetSummary:
    from v2c.vehicle_sim.fleet.summary import STATE_ORDER

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    total = len(fleet.specs)
    _err.print(f"starting {total} vehicles (faults: {fleet.profile.name}) ...")
    await fleet.start()
    _err.print(f"faults drawn: {fleet.fault_tally or 'none'}; Ctrl-C stops")
    progress = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=_err,
    )
    tasks = {s: progress.add_task(f"[{STYLE.get(s, 'cyan')}]{s}", total=total) for s in STATE_ORDER}
    status = Text(no_wrap=False, overflow="fold")  # wrapped at 80 columns, not cropped

    def show(summary: FleetSummary) -> None:
        for state, task in tasks.items():
            progress.update(task, completed=summary.by_state.get(state, 0))
        settled = sum(summary.by_state.get(s, 0) for s in STYLE)  # idle or finished
        status.plain = (
            f"connected {summary.connected}/{total}  "
            f"updated {summary.by_state.get('COMPLETED', 0)}/{total}  "
            f"updating {max(0, summary.vehicles - settled)}  reports {summary.reports}  "
            f"notifications {summary.notifications}  simulated "
            f"{summary.simulated_seconds / 3600:.1f} h in {summary.real_seconds:.0f} s"
        )

    deadline = None if duration is None else loop.time() + duration
    try:
        with Live(Group(progress, status), console=_err, refresh_per_second=4):
            while not stop.is_set():
                show(fleet.summary())
                if deadline is not None and loop.time() >= deadline:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
            show(fleet.summary())
    finally:
        summary = fleet.summary()
        _err.print("stopping the fleet ...")
        await fleet.stop()
    return summary


def summary_table(summary: FleetSummary) -> Table:
    """Vehicles by state and reason, with the run's totals in the caption."""
    table = Table(title="vehicles by state and reason")
    table.add_column("state")
    table.add_column("reason")
    table.add_column("vehicles", justify="right")
    for (state, reason), count in summary.by_state_reason.items():
        table.add_row(Text(state, style=STYLE.get(state, "cyan")), reason or "-", str(count))
    table.caption = (
        f"{summary.vehicles} vehicles, {summary.reports} reports "
        f"({summary.delivered} acknowledged), {summary.notifications} notifications, "
        f"{summary.power_cuts} power cuts, {summary.errors} errors; "
        f"{summary.simulated_seconds / 3600:.1f} simulated hours in {summary.real_seconds:.0f} s"
    )
    return table
