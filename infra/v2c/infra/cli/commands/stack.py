"""`v2c stack`: run the local stack in the foreground, look at it, stop it.

`up` owns its processes: it prints one status table once everything is ready,
then waits for Ctrl-C or SIGTERM and stops them in reverse order. `status`
and `down` work from another shell through `DIR/stack.json`. Exit codes:
0 done / all healthy, 1 a component failed or is down, 2 bad usage, 3 one
already running (up) or a stack.json that cannot be read or is invalid
(status), 4 no stack.json (status).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from v2c.contract.errors import V2CError
from v2c.infra.cli.errors import exit_code_for
from v2c.infra.cli.output import Format, Output, dump, wants_json
from v2c.infra.cli.tables import Column, Kind, fitted_table
from v2c.infra.local.stack import LocalStack, StackAlreadyRunning
from v2c.infra.local.stack_control import (
    ComponentStatus,
    component_statuses,
    leftovers,
    stop_described,
)
from v2c.infra.local.stack_layout import StackLayout
from v2c.infra.settings import DEFAULT_STACK_DIR, StackNotFound, read_settings

app = typer.Typer(
    name="stack",
    help="The local stack: mosquitto (mTLS + ACL), moto, the gateway.",
    no_args_is_help=True,
)

# soft_wrap: a long path stays on one line, so it can be copied (and grepped in tests).
_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)

_DirOption = Annotated[
    Path,
    typer.Option(
        "--dir",
        "--stack",
        help="The stack's state directory (holds stack.json).",
    ),
]
_STATE_STYLE = {"running": "green", "connected": "green"}
_EXAMPLE_VIN = "VIN-1HGBH41JXMN109186"


def status_table(rows: list[ComponentStatus], title: str) -> Table:
    columns = [
        Column("component", Kind.FIXED),
        Column("pid", Kind.FIXED, justify="right", drop=1),
        Column("address", Kind.ID),
        Column("state", Kind.FIXED),
    ]
    cells = [
        (
            Text(row.name, style="bold"),
            "-" if row.pid is None else str(row.pid),
            Text(row.address),
            Text(row.state, style=_STATE_STYLE.get(row.state, "red")),
        )
        for row in rows
    ]
    return fitted_table(columns, cells, title=title)


def status_json(rows: list[ComponentStatus], root: Path) -> dict[str, object]:
    return {
        "directory": str(root),
        "healthy": all(row.healthy for row in rows),
        "components": [
            {"name": r.name, "pid": r.pid, "address": r.address, "state": r.state} for r in rows
        ],
    }


def _fail(error: V2CError, code: int = 1) -> typer.Exit:
    _err.print(Text.assemble(("error: ", "bold red"), error.detail))
    return typer.Exit(code=code)


def _hints(layout: StackLayout) -> None:
    root = layout.root
    _out.print(Text.assemble(("stack.json  ", "bold"), str(layout.stack_file)))
    _out.print(Text.assemble(("logs        ", "bold"), f"{layout.logs}, {layout.broker}"))
    _out.print(f"vehicle certificate:  v2c pki issue --vin {_EXAMPLE_VIN} --stack {root}")
    _out.print(f"status / stop:        v2c stack status --dir {root} / Ctrl-C")


@app.command("up")
def up(
    directory: _DirOption = DEFAULT_STACK_DIR,
    mqtt_port: Annotated[
        int | None,
        typer.Option(
            "--mqtt-port", min=1, max=65535, help="Port of the mTLS listener [free, or last one]."
        ),
    ] = None,
) -> None:
    """Start mosquitto, moto and the gateway; stop them all on Ctrl-C or SIGTERM."""
    stop = threading.Event()
    starting = threading.Event()
    starting.set()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if starting.is_set():
            starting.clear()  # a second signal while cleaning up must not interrupt it
            raise KeyboardInterrupt  # LocalStack.start() stops what it started
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = LocalStack(directory, mqtt_port=mqtt_port)
    try:
        _out.print(f"starting the local stack in {stack.layout.root} …")
        try:
            settings = stack.start()
        except StackAlreadyRunning as error:
            raise _fail(error, code=3) from None
        except V2CError as error:
            raise _fail(error) from None
        except KeyboardInterrupt:
            _out.print("interrupted while starting; everything started so far is stopped")
            raise typer.Exit(code=130) from None
        starting.clear()
        rows = component_statuses(settings, stack.layout)
        _out.print(status_table(rows, "v2c local stack"))
        _hints(stack.layout)
        failed = _wait_for_stop(stack, stop)
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    left = leftovers(settings)
    if failed or left:
        if failed:
            _err.print(f"[bold red]error:[/] {', '.join(failed)} exited; stopped the rest")
        if left:
            _err.print(f"[bold red]error:[/] still there after stopping: {', '.join(left)}")
        raise typer.Exit(code=1)
    _out.print("stopped cleanly: every process ended, every port released")


def _wait_for_stop(stack: LocalStack, stop: threading.Event) -> list[str]:
    """Block until a signal arrives (returns []) or a component exits by itself."""
    while not stop.wait(1.0):
        failed = stack.exited()
        if failed:
            return failed
    _out.print("stopping …")
    return []


@app.command("status")
def status(directory: _DirOption = DEFAULT_STACK_DIR, output: Output = Format.TABLE) -> None:
    """Check each process and address recorded in DIR/stack.json."""
    layout = StackLayout.for_dir(directory)
    try:
        settings = read_settings(layout.stack_file)
    except StackNotFound as error:
        _err.print(f"no running stack in {layout.root} ({error.detail})")
        raise typer.Exit(code=exit_code_for(error)) from None
    except V2CError as error:  # corrupt or invalid: a stack is there, but unusable (3)
        raise _fail(error, code=exit_code_for(error)) from None
    rows = component_statuses(settings, layout)
    if wants_json(output):
        dump(status_json(rows, layout.root))
    else:
        _out.print(status_table(rows, f"v2c local stack in {layout.root}"))
    if not all(row.healthy for row in rows):
        raise typer.Exit(code=1)


@app.command("down")
def down(directory: _DirOption = DEFAULT_STACK_DIR, output: Output = Format.TABLE) -> None:
    """Stop the stack in DIR: its `stack up` if alive, else each process by its PID."""
    layout = StackLayout.for_dir(directory)
    as_json = wants_json(output)
    if not layout.stack_file.exists():
        if as_json:
            dump({"directory": str(layout.root), "stopped": True, "components": {}})
        else:
            _out.print(f"no stack description in {layout.root}: nothing to stop")
        return
    outcome = stop_described(layout)
    stopped = all(state == "stopped" for state in outcome.values())
    if as_json:
        dump({"directory": str(layout.root), "stopped": stopped, "components": outcome})
    else:
        for name, state in outcome.items():
            _out.print(f"{name:<10} {state}")
    if not stopped:
        raise typer.Exit(code=1)
    if not as_json:
        _out.print(f"stack in {layout.root} stopped")
