"""The `v2c` command line: one typer app; each command group lives in its own
module under `v2c.infra.cli.commands` and is listed here, once, in `COMMANDS`.

Errors end every command the same way, in the root group (`V2CGroup`): one
line on stderr and a documented exit code (0 done, 1 failed, 2 usage,
3 refused, 4 no stack, 10-14 `campaign watch` outcomes, 124 timed out,
130 interrupted; see `v2c.infra.cli.errors` and docs/cli.md).

Shell completion is typer's: `v2c --install-completion` (bash, zsh, fish,
PowerShell) or `v2c --show-completion` to see the script first."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import version as package_version
from typing import Annotated, Any, Final

import typer
import typer.core

from v2c.infra.cli.commands import (
    api,
    aws,
    bench,
    campaign,
    demo,
    dlq,
    firmware,
    gateway,
    pki,
    selftest,
    sim,
    stack,
    vehicle,
)
from v2c.infra.cli.errors import V2CGroup

app = typer.Typer(
    name="v2c",
    cls=V2CGroup,
    help="MQTT 5 vehicle-to-cloud platform: OTA campaigns, telemetry, a vehicle simulator.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold key material
    add_completion=True,
)

# typer's private hook; a typer without it keeps its own help (cosmetic only).
_display_type_rich = getattr(typer.core.TyperOption, "display_type_rich", None)


def _no_flag_metavar(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """No `<bool>` after a flag in `--help`: a flag takes no value, and the
    metavar made `--json <bool>` read as if it wanted one."""
    if self.is_flag or _display_type_rich is None:
        return None
    shown: str | None = _display_type_rich(self, ctx)
    return shown


if _display_type_rich is not None:
    typer.core.TyperOption.display_type_rich = _no_flag_metavar  # type: ignore[method-assign]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"v2c {package_version('v2c')}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """v2c: the cloud side of OTA updates and vehicle telemetry, and a fleet to test it with."""


# Every command of `v2c`, sorted by name: a typer app is a group of
# subcommands, a function is one command (`v2c --help` shows the single
# commands first, then the groups, each in this order).
COMMANDS: Final[Mapping[str, typer.Typer | Callable[..., Any]]] = {
    "api": api.app,
    "aws": aws.app,
    "bench": bench.app,
    "campaign": campaign.app,
    "demo": demo.demo,
    "device": campaign.device_app,
    "dlq": dlq.app,
    "firmware": firmware.app,
    "gateway": gateway.app,
    "pki": pki.app,
    "selftest": selftest.selftest,
    "sim": sim.sim,
    "stack": stack.app,
    "stats": campaign.stats,
    "vehicle": vehicle.app,
}
for _name, _command in COMMANDS.items():
    if isinstance(_command, typer.Typer):
        app.add_typer(_command, name=_name)
    else:
        app.command(name=_name)(_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
