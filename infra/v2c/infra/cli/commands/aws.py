"""`v2c aws`: the AWS side of the stack from the shell.

`bootstrap` runs the same idempotent `ensure_resources` the stack and the
tests use, against moto (`--endpoint-url`, or the stack's endpoint) or, with
`--endpoint-url aws`, against the account the usual AWS credentials name.
`build` makes the Lambda artifact `template.yaml` deploys
(`v2c.infra.aws.artifact`) and shows what weighs what.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from v2c.contract.errors import V2CError
from v2c.infra.cli.errors import exit_code_for
from v2c.infra.cli.output import AsJson, Format, Output, dump, wants_json
from v2c.infra.cli.tables import Column, Kind, fitted_table

if TYPE_CHECKING:
    from v2c.infra.aws.artifact import ArtifactReport

app = typer.Typer(
    name="aws",
    help="AWS: bootstrap the resources (moto locally) and build the Lambda artifact.",
    no_args_is_help=True,
)

_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)

_STYLE = {"created": "green", "updated": "yellow", "exists": "dim"}


@app.command("bootstrap")
def bootstrap(
    endpoint_url: Annotated[
        str | None,
        typer.Option(help="AWS endpoint (the moto server); 'aws' for real AWS."),
    ] = None,
    region: Annotated[str | None, typer.Option(help="AWS region.")] = None,
    stack: Annotated[
        Path | None,
        typer.Option("--stack", "--stack-dir", help="Stack directory holding stack.json."),
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option(help="Name prefix instead of the stack's names (bucket names are global)."),
    ] = None,
    output: Output = Format.TABLE,
) -> None:
    """Create every table, bucket, queue, key, bus and database that is missing."""
    from v2c.infra.aws.resources import ensure_resources
    from v2c.infra.names import ResourceNames
    from v2c.infra.settings import load_settings

    try:
        settings = load_settings(stack, endpoint_url=endpoint_url, region=region)
        names = ResourceNames.with_prefix(prefix) if prefix else settings.resources
        report = ensure_resources(settings.aws, names)
    except V2CError as error:
        _err.print(Text.assemble(("error: ", "bold red"), error.detail))
        raise typer.Exit(code=exit_code_for(error)) from error
    except ValidationError as error:  # an invalid --prefix
        fields = ", ".join(str(e["loc"][0]) for e in error.errors())
        raise typer.BadParameter(
            f"{prefix!r} makes invalid names ({fields}); use lowercase letters, digits, '-'",
            param_hint="--prefix",
        ) from error

    where = settings.aws.endpoint_url or f"AWS {settings.aws.region}"
    if wants_json(output):
        dump(
            {
                "endpoint": where,
                "resources": [
                    {"kind": i.kind, "name": i.name, "action": i.action, "detail": i.detail}
                    for i in report.items
                ],
            }
        )
        return
    columns = [
        Column("kind", Kind.FIXED),
        Column("name", Kind.ID),
        Column("action", Kind.FIXED),
        Column("detail", drop=1),
    ]
    rows = [
        (item.kind, item.name, Text(item.action, _STYLE[item.action]), Text(item.detail))
        for item in report.items
    ]
    _out.print(fitted_table(columns, rows, title=f"v2c resources at {where}"))
    counts = {action: 0 for action in _STYLE}
    for item in report.items:
        counts[item.action] += 1
    _out.print(
        f"{counts['created']} created, {counts['updated']} updated, {counts['exists']} unchanged"
    )


_MIB = 2**20


@app.command("build")
def build(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Artifact directory (default: build/lambda in the checkout)."),
    ] = None,
    pip: Annotated[
        bool,
        typer.Option(
            "--pip",
            help="Fetch Lambda's manylinux2014 wheels with pip (network) instead of "
            "copying this environment's.",
        ),
    ] = False,
    output: Output = Format.TABLE,
    as_json: AsJson = False,
) -> None:
    """Build the Lambda artifact (the handlers and their runtime dependencies) and show its size."""
    as_json = wants_json(output, as_json)
    from v2c.infra.aws.artifact import build_artifact, manifest

    try:
        report = build_artifact(out, mode="pip" if pip else "copy")
    except V2CError as error:
        _err.print(Text.assemble(("error: ", "bold red"), error.detail))
        raise typer.Exit(code=exit_code_for(error)) from error
    if as_json:
        sys.stdout.write(json.dumps(manifest(report), indent=2) + "\n")
    else:
        _print_build(report)
    if report.not_loadable:
        _err.print(
            Text.assemble(
                ("warning: ", "bold yellow"),
                f"{', '.join(report.not_loadable)}: built for a newer glibc than Lambda's "
                "python3.11 has (Amazon Linux 2, glibc 2.26); build with --pip to deploy",
            )
        )
    if not report.fits:
        raise typer.Exit(code=1)


def _print_build(report: ArtifactReport) -> None:
    from v2c.infra.aws.artifact import LAMBDA_UNZIPPED_LIMIT_BYTES

    table = Table(title=f"Lambda artifact at {report.directory}", title_justify="left")
    table.add_column("distribution")
    table.add_column("version")
    table.add_column("MiB", justify="right")
    table.add_column("files", justify="right")
    table.add_column("note")
    for dist in sorted(report.distributions, key=lambda d: (-d.bytes, d.name)):
        note = Text(" ").join(
            [Text("AWS SDK", "dim")] * dist.aws_sdk
            + [Text("not loadable in Lambda", "bold yellow")] * (not dist.lambda_loadable)
        )
        table.add_row(dist.name, dist.version, f"{dist.bytes / _MIB:.2f}", str(dist.files), note)
    table.add_row(
        "v2c", report.version, f"{report.package_bytes / _MIB:.2f}", str(report.package_files), ""
    )
    _out.print(table)
    share = report.total_bytes / LAMBDA_UNZIPPED_LIMIT_BYTES
    limit = f"{LAMBDA_UNZIPPED_LIMIT_BYTES / _MIB:.0f} MiB"
    style = "green" if report.fits else "bold red"
    _out.print(
        Text.assemble(
            "total ",
            (f"{report.total_bytes / _MIB:.1f} MiB", style),
            f" in {report.file_count} files: {share:.0%} of Lambda's {limit} unzipped limit; "
            f"AWS SDK {report.aws_sdk_bytes / _MIB:.1f} MiB of it",
        )
    )
