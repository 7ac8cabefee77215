"""The `v2c` command line: one typer app; each command group lives in its own
module under `v2c.infra.cli.commands` and is registered here.

Errors end every command the same way, in the root group (`V2CGroup`): one
line on stderr and a documented exit code (0 done, 1 failed, 2 usage,
3 refused or not found, 130 interrupted; see `v2c.infra.cli.errors`)."""

from __future__ import annotations

from importlib.metadata import version as package_version
from typing import Annotated

import typer

from v2c.infra.cli.errors import V2CGroup

app = typer.Typer(
    name="v2c",
    cls=V2CGroup,
    help="MQTT 5 vehicle-to-cloud platform: OTA campaigns, telemetry, a vehicle simulator.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold key material
    add_completion=False,
)


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


def _register() -> None:
    from v2c.infra.cli.commands import pki

    app.add_typer(pki.app, name="pki")
    from v2c.infra.cli.commands import gateway, selftest

    app.command(name="selftest")(selftest.selftest)
    app.add_typer(gateway.app, name="gateway")
    from v2c.infra.cli.commands import aws

    app.add_typer(aws.app, name="aws")
    from v2c.infra.cli.commands import dlq

    app.add_typer(dlq.app, name="dlq")
    from v2c.infra.cli.commands import bench

    app.add_typer(bench.app, name="bench")
    from v2c.infra.cli.commands import stack

    app.add_typer(stack.app, name="stack")
    from v2c.infra.cli.commands import api, campaign, demo

    app.command(name="demo")(demo.demo)

    app.add_typer(api.app, name="api")

    app.add_typer(campaign.app, name="campaign")
    app.add_typer(campaign.device_app, name="device")
    app.command(name="stats")(campaign.stats)
    from v2c.infra.cli.commands import firmware

    app.add_typer(firmware.app, name="firmware")
    from v2c.infra.cli.commands import sim

    app.command(name="sim")(sim.sim)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
